"""A real SIGINT / SIGTERM sent to a real `narrator generate-all` process mid-batch."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_project


def start(tmp_path: Path, tiny_model: Path) -> subprocess.Popen:
    make_project(tmp_path / "book.db", [f"Sentence number {i}, spoken." for i in range(40)])
    env = os.environ | {"NARRATOR_MODEL_DIR": str(tiny_model)}
    return subprocess.Popen(
        [sys.executable, "-m", "narrator", "generate-all", "book.db", "--json",
         "--progress", "plain"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for_segment(proc: subprocess.Popen, n: int) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith(f"[{n}/"):
            return
    pytest.fail(f"the batch ended before segment {n}: {proc.wait()}")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_cancels_after_the_segment_in_hand(
    tmp_path: Path, tiny_model: Path, sig: signal.Signals
) -> None:
    proc = start(tmp_path, tiny_model)
    wait_for_segment(proc, 3)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    result = json.loads(stdout)
    assert result["status"] == "CANCELLED"
    assert 3 <= result["processed"] < 40
    audio = tmp_path / "book_audio"
    assert len(list(audio.glob("*.wav"))) == result["processed"]
    assert not list(audio.glob(".*"))  # no temporary or half-written file
    assert "Cancelling" in stderr


def test_second_interrupt_stops_at_once(tmp_path: Path, tiny_model: Path) -> None:
    proc = start(tmp_path, tiny_model)
    wait_for_segment(proc, 2)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    status = subprocess.run(
        [sys.executable, "-m", "narrator", "status", "book.db", "--json"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    )
    assert json.loads(status.stdout)["status"] == "CANCELLED"
    assert not list((tmp_path / "book_audio").glob(".*"))
