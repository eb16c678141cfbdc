"""Real signals sent to a real `narrator generate-all` process mid-batch: SIGINT, SIGTERM,
a second and a third signal, and SIGKILL with two project files sharing one audio folder."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_project

from narrator.audiofiles import audio_path
from narrator.project import list_segments
from narrator.store import open_project

SENTENCES = [f"Sentence number {i}, spoken." for i in range(40)]


def start(tmp_path: Path, tiny_model: Path, db: str = "book.db", *args: str) -> subprocess.Popen:
    env = os.environ | {"NARRATOR_MODEL_DIR": str(tiny_model)}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "narrator",
            "generate-all",
            db,
            "--json",
            "--progress",
            "plain",
            *args,
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_segment(proc: subprocess.Popen, n: int) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith(f"[{n}/"):
            return
    pytest.fail(f"the batch ended before segment {n}: {proc.wait()}")


def only_recorded_files(db: Path, folder: Path) -> None:
    """The folder holds exactly the files the project records, and each one exists."""
    names = [row.audio_file for row in list_segments(open_project(db)) if row.audio_file]
    store = open_project(db)
    assert {audio_path(store, n) for n in names} == set(folder.iterdir())


def test_sigint_finishes_the_segment_in_hand(tmp_path: Path, tiny_model: Path) -> None:
    make_project(tmp_path / "book.db", SENTENCES)
    proc = start(tmp_path, tiny_model)
    wait_for_segment(proc, 3)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    result = json.loads(stdout)
    assert result["status"] == "CANCELLED"
    assert 3 <= result["processed"] < 40
    only_recorded_files(tmp_path / "book.db", tmp_path / "book_audio")
    assert "the segment in hand will finish" in stderr


def test_sigterm_stops_inside_the_segment_in_hand(tmp_path: Path, tiny_model: Path) -> None:
    long = "The keeper climbed the stairs to light the lamp before the storm. " * 6
    make_project(tmp_path / "book.db", [long] * 3)
    proc = start(tmp_path, tiny_model)
    wait_for_segment(proc, 2)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    took = time.monotonic() - sent
    assert proc.returncode == 130, stderr
    result = json.loads(stdout)
    assert result["status"] == "CANCELLED" and result["processed"] in (1, 2)
    only_recorded_files(tmp_path / "book.db", tmp_path / "book_audio")
    assert "the segment in hand is abandoned" in stderr
    assert took < 30  # a bound for a loaded CI machine; bench/sigterm.py measures it


def test_more_signals_stop_at_once_and_leave_a_clean_folder(
    tmp_path: Path, tiny_model: Path
) -> None:
    make_project(tmp_path / "book.db", SENTENCES)
    proc = start(tmp_path, tiny_model)
    wait_for_segment(proc, 2)
    for sig in (signal.SIGINT, signal.SIGINT, signal.SIGTERM, signal.SIGINT):
        proc.send_signal(sig)
        time.sleep(0.05)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "internal error" not in stderr and "Traceback" not in stderr
    assert json.loads(stdout)["status"] == "CANCELLED"
    status = subprocess.run(
        [sys.executable, "-m", "narrator", "status", "book.db", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(status.stdout)["status"] == "CANCELLED"
    only_recorded_files(tmp_path / "book.db", tmp_path / "book_audio")


def test_kill_mid_run_with_a_shared_audio_folder_loses_nothing(
    tmp_path: Path, tiny_model: Path
) -> None:
    """Two project files, one audio folder; one run is SIGKILLed; each is then run
    again: every file either project records still exists."""
    make_project(tmp_path / "a.db", SENTENCES[:3])
    make_project(tmp_path / "b.db", SENTENCES[:12])
    first = start(tmp_path, tiny_model, "a.db", "--audio-dir", "shared")
    first.communicate(timeout=120)
    assert first.returncode == 0
    victim = start(tmp_path, tiny_model, "b.db", "--audio-dir", "shared")
    wait_for_segment(victim, 4)
    victim.kill()
    victim.wait()
    for db in ("b.db", "a.db"):
        again = start(tmp_path, tiny_model, db)
        out, err = again.communicate(timeout=180)
        assert again.returncode == 0, err
    for db in ("a.db", "b.db"):
        store = open_project(tmp_path / db)
        rows = list_segments(store)
        assert all(row.audio_file and audio_path(store, row.audio_file).is_file() for row in rows)
    assert len(list((tmp_path / "shared").iterdir())) == 15


def children(pid: int) -> set[int]:
    """The processes whose parent is `pid` (from /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def gone(pids: set[int], within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not any(Path(f"/proc/{p}").exists() for p in pids):
            return True
        time.sleep(0.2)
    return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_listening_too_and_no_recogniser_stays_behind(
    tmp_path: Path, tiny_model: Path, sig: signal.Signals
) -> None:
    """generate-all --verify: every recorded segment is judged or counted as not checked,
    and the recogniser's worker processes end with the command (a halted one too)."""
    pytest.importorskip("pocketsphinx", reason="the quality extra is not installed")
    make_project(tmp_path / "book.db", SENTENCES)
    proc = start(tmp_path, tiny_model, "book.db", "--verify")
    wait_for_segment(proc, 4)
    workers = children(proc.pid)
    assert workers, "the recogniser's workers should be running by now"
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    result = json.loads(stdout)
    heard = result["verify"]
    assert heard["checked"] + heard["not_checked"] == result["processed"]
    assert gone(workers), "recogniser workers outlived the command"
