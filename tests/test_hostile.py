"""A hostile world, on real files and real mounts: a full disk mid-write, a zip bomb, a
second name for the project file, a cut-short recording, control characters in text.
Each failure ends in one line and its documented exit code, and nothing is lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile
from conftest import make_project


def narrator(cwd: Path, *args: object, model: Path | None = None,
             stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """narrator in a process of its own, as a user runs it."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}
    if model is not None:
        env["NARRATOR_MODEL_DIR"] = str(model)
    return subprocess.run([sys.executable, "-m", "narrator", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, input=stdin, timeout=300)


def one_error_line(stderr: str) -> str:
    """The run's error: exactly one `Error:` line, and no traceback anywhere."""
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, stderr
    return errors[0]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 512 KiB tmpfs (root only; skipped where mounting is refused)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    tried = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)],
                           capture_output=True, text=True)
    if tried.returncode:
        pytest.skip(f"cannot mount a small tmpfs here: {tried.stderr.strip() or 'refused'}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def wav_is_whole(path: Path) -> bool:
    """The header's frame count is what the file holds."""
    info = soundfile.info(str(path))
    return path.stat().st_size == 44 + 2 * info.frames and info.frames > 0


# --------------------------------------------------- 1. the audio folder fills up mid-write


def test_a_full_audio_folder_stops_the_run_with_73_and_a_rerun_renders_the_rest(
    tmp_path: Path, tiny_model: Path, small_disk: Path
) -> None:
    texts = [f"Sentence number {n} is a short one to speak." for n in range(1, 7)]
    make_project(tmp_path / "p.db", texts)
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * 390_000)  # room for about two of the six WAVs

    run = narrator(tmp_path, "generate-all", "p.db", "--audio-dir", small_disk, "--json",
                   "--progress", "none", model=tiny_model)
    assert run.returncode == 73, run.stderr
    line = one_error_line(run.stderr)
    assert str(small_disk) in line and "No space left" in line and "free some space" in line
    out = json.loads(run.stdout)
    assert out["failed"] == 0 and 0 < out["processed"] < len(texts)
    left = sorted(p.name for p in small_disk.iterdir())
    assert not [n for n in left if n.endswith(".partial")], left
    wavs = [small_disk / n for n in left if n.endswith(".wav")]
    assert len(wavs) == out["processed"] and all(wav_is_whole(w) for w in wavs)

    filler.unlink()
    again = narrator(tmp_path, "generate-all", "p.db", "--json", "--progress", "none",
                     model=tiny_model)
    assert again.returncode == 0, again.stderr
    rest = json.loads(again.stdout)
    assert rest["processed"] == len(texts) - out["processed"]
    assert rest["skipped"]["has_audio"] == out["processed"]
    assert all(wav_is_whole(w) for w in small_disk.glob("*.wav"))


def test_wavs_are_written_byte_for_byte_as_libsndfile_writes_them(tmp_path: Path) -> None:
    """narrator writes WAVs itself (so a full disk raises), with the bytes renders always
    had: the same input still gives the same file."""
    import io

    import numpy as np

    from narrator.audiofiles import write_wav

    rng = np.random.default_rng(7)
    samples = np.concatenate([
        rng.uniform(-1.2, 1.2, 50_000), rng.normal(0, 0.01, 50_000),
        np.arange(-70_000, 70_000) / 65_536, [1.0, -1.0, 0.0, 1e-30],
    ]).astype(np.float32)
    reference = io.BytesIO()
    soundfile.write(reference, np.clip(samples, -1, 1), 24_000, format="WAV", subtype="PCM_16")
    write_wav(tmp_path / "a.wav", samples)
    assert (tmp_path / "a.wav").read_bytes() == reference.getvalue()
