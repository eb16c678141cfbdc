"""Nothing lost, whatever happens around a run: segments changed mid-run, shared audio
folders, leftovers of stopped runs, storage errors and concurrent commands (library and
CliRunner; real processes stopped by signals are in test_signals.py)."""

from __future__ import annotations

import errno
import gc
import json
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest
from conftest import invoke, make_project
from fakes import FakeSynthesizer
from typer.testing import CliRunner

from narrator import store as store_module
from narrator.audiofiles import audio_path, render_target
from narrator.batch import GenerateOptions, generate_all, generate_one
from narrator.errors import CannotWrite, ProjectBusy, SegmentLocked
from narrator.models import BatchTask
from narrator.project import (
    add_segments,
    edit_segment,
    list_segments,
    remove_segments,
    set_locked,
)
from narrator.store import ProjectStore, open_project, take_run_lock
from narrator.tasks import TaskStatus, load_tasks

TEXTS = ["One.", "Two.", "Three."]


@pytest.fixture
def store(tmp_path: Path) -> ProjectStore:
    return make_project(tmp_path / "book.db", TEXTS)


def run(store: ProjectStore, synth: FakeSynthesizer, **options: object):  # noqa: ANN201
    started = generate_all(store, GenerateOptions(**options), synth)  # type: ignore[arg-type]
    return started.wait(timeout=30)


def recorded(store: ProjectStore) -> dict[int, str | None]:
    return {row.sequence_index: row.audio_file for row in list_segments(store)}


def on_text(text: str, action):  # noqa: ANN001, ANN201 - a hook for one segment's render
    def hook(rendering: str) -> None:
        if rendering == text:
            action()

    return hook


# ----------------------------------------------------------- 1. the worker re-checks rows


def test_segment_locked_during_its_render_keeps_its_approved_take(store: ProjectStore) -> None:
    run(store, FakeSynthesizer())
    take = audio_path(store, recorded(store)[2])
    take.write_bytes(b"the approved take")
    other = open_project(store.path)  # another command, as `narrator lock` would be
    synth = FakeSynthesizer(on_render=on_text("Two.", lambda: set_locked(other, [2], True)))
    final = run(store, synth, force=True)
    assert synth.rendered == ["One.", "Two.", "Three."]
    assert final.status is TaskStatus.COMPLETED and final.processed == 2
    assert final.skipped_during_run == {"locked": 1}
    assert take.read_bytes() == b"the approved take"
    assert recorded(store)[2] == take.relative_to(store.path.parent).as_posix()
    assert len(list(take.parent.iterdir())) == 3  # the discarded render left nothing


def test_segment_locked_before_its_turn_is_not_rendered(store: ProjectStore) -> None:
    other = open_project(store.path)
    synth = FakeSynthesizer(on_render=on_text("One.", lambda: set_locked(other, [3], True)))
    final = run(store, synth)
    assert synth.rendered == ["One.", "Two."]
    assert final.skipped_during_run == {"locked": 1} and final.processed == 2
    row = load_tasks(store, final.task_id)[0]  # what `narrator status` reads
    assert row.skipped_during_run == {"locked": 1}


def test_edit_during_render_records_nothing_for_the_old_text(store: ProjectStore) -> None:
    other = open_project(store.path)
    synth = FakeSynthesizer(
        on_render=on_text("Two.", lambda: edit_segment(other, 2, "Two, rewritten."))
    )
    final = run(store, synth)
    assert final.skipped_during_run == {"edited": 1} and final.failed == 0
    assert recorded(store)[2] is None
    folder = store.path.parent / "book_audio"
    assert sorted(p.name.split("-")[1] for p in folder.iterdir()) == ["s1", "s3"]
    again = FakeSynthesizer()
    run(store, again)
    assert again.rendered == ["Two, rewritten."]


def test_removed_during_render_is_a_skip_not_an_error(store: ProjectStore) -> None:
    other = open_project(store.path)
    synth = FakeSynthesizer(on_render=on_text("Two.", lambda: remove_segments(other, [2])))
    final = run(store, synth)
    assert final.failed == 0 and final.skipped_during_run == {"removed": 1}
    folder = store.path.parent / "book_audio"
    assert sorted(p.name.split("-")[1] for p in folder.iterdir()) == ["s1", "s3"]


def test_single_generate_refuses_a_segment_locked_during_its_render(
    store: ProjectStore,
) -> None:
    other = open_project(store.path)
    synth = FakeSynthesizer(on_render=on_text("Two.", lambda: set_locked(other, [2], True)))
    with pytest.raises(SegmentLocked):
        generate_one(store, 2, synth)
    assert recorded(store)[2] is None
    assert not (store.path.parent / "book_audio").exists() or not list(
        (store.path.parent / "book_audio").iterdir()
    )


# -------------------------------------------------- 2. one audio folder, two project files


def test_projects_sharing_a_folder_never_touch_each_others_files(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    a = make_project(tmp_path / "a.db", TEXTS)
    b = make_project(tmp_path / "b.db", TEXTS)
    assert a.uid != b.uid
    run(a, FakeSynthesizer(), audio_dir=str(shared))
    # what a run of b killed mid-render would leave: a temporary file and a render
    # moved into place but never recorded, for segment ids a also has
    stray = render_target(b, shared, 1, 1, "0badc0de" * 8)
    stray.write_bytes(b"b's unrecorded render")
    temp = shared / f".{stray.name}.1234abcd.partial"
    temp.write_bytes(b"half")
    a_files = {audio_path(a, name) for name in recorded(a).values()}
    run(b, FakeSynthesizer(), audio_dir=str(shared))  # b's next run sweeps its own leftovers
    assert not stray.exists() and not temp.exists()
    run(a, FakeSynthesizer(), audio_dir=str(shared), force=True)
    assert all(audio_path(b, name).is_file() for name in recorded(b).values())
    assert all(path.is_file() for path in a_files)
    assert len(list(shared.iterdir())) == 6


# --------------------------------------- 3. cleanup does not depend on how a run ended


def test_unrecorded_render_is_swept_after_a_cancelled_run(store: ProjectStore) -> None:
    final = run(store, FakeSynthesizer())
    with store.writing() as session:  # a second Ctrl-C leaves the task CANCELLED
        row = session.get(BatchTask, final.task_id)
        row.status = TaskStatus.CANCELLED.value
        session.add(row)
        session.commit()
    folder = store.path.parent / "book_audio"
    kept = sorted(p.name for p in folder.iterdir())
    orphan = render_target(store, folder, 1, 1, "0badc0de" * 8)
    orphan.write_bytes(b"moved into place, never recorded")
    foreign = folder / "0001-s1-0badc0de.wav"  # no uid: not a file this project made
    foreign.write_bytes(b"someone else's")
    run(store, FakeSynthesizer())  # nothing to render; the sweep runs anyway
    assert sorted(p.name for p in folder.iterdir()) == sorted([*kept, foreign.name])


def test_stop_now_abandons_the_segment_in_hand_at_a_chunk_boundary(
    store: ProjectStore,
) -> None:
    holder: dict = {}

    def stop_during_two(text: str) -> None:
        if text == "Two.":
            holder["run"].cancel(now=True)

    synth = FakeSynthesizer(on_render=stop_during_two, chunks=4)
    holder["run"] = generate_all(store, GenerateOptions(), synth)
    final = holder["run"].wait(timeout=30)
    assert final.status is TaskStatus.CANCELLED and final.processed == 1
    assert synth.rendered == ["One."]  # "Two." never got past its first chunk
    assert recorded(store)[2] is None
    assert len(list((store.path.parent / "book_audio").iterdir())) == 1


def test_a_render_that_comes_back_after_a_halt_is_dropped_not_failed(
    store: ProjectStore,
) -> None:
    """A render returning once halt() holds the recording gate (a Ray actor's, or the
    worker thread's right after its last chunk): StopNow, nothing recorded, no error."""
    import numpy as np

    from narrator.engine import Speech
    from narrator.planning import Casting, Rules, Voicing
    from narrator.project import segment_state
    from narrator.recording import BatchJob, RenderSpec, take_back
    from narrator.tasks import StopNow, TaskManager, TaskSnapshot

    manager = TaskManager()
    manager.create_task(
        TaskSnapshot(
            task_id="t",
            project_id=store.project_id,
            status=TaskStatus.RUNNING,
            total_segments=1,
            segments_to_process=1,
            skipped={},
            voice="af_heart",
            speed=1.0,
            lang="a",
        )
    )
    spec = RenderSpec(Casting(Voicing("af_heart", 1.0, "a")), Rules())
    folder = store.path.parent / "book_audio"
    folder.mkdir()
    job = BatchJob(str(store.path), store.project_id, "t", (1,), str(folder), spec)
    assert manager.halt("t")
    with pytest.raises(StopNow):
        take_back(
            store,
            job,
            manager,
            segment_state(store, 1),
            Speech(np.zeros(2400, dtype=np.float32), []),
        )
    assert manager.snapshot("t").failed == 0 and not manager.snapshot("t").errors
    assert recorded(store)[1] is None and not any(folder.iterdir())


def test_halt_waits_for_a_recording_then_leaves_only_recorded_files(
    store: ProjectStore,
) -> None:
    gate = threading.Event()
    synth = FakeSynthesizer(on_render=on_text("Two.", lambda: gate.wait(10)))
    started = generate_all(store, GenerateOptions(), synth)
    while started.manager.snapshot(started.task_id).current < 2:
        threading.Event().wait(0.01)
    started.halt("stopped at once")
    gate.set()
    snap = started.manager.snapshot(started.task_id)
    assert snap.status is TaskStatus.CANCELLED
    folder = store.path.parent / "book_audio"
    files = {p for p in folder.iterdir()}
    assert files == {audio_path(store, n) for n in recorded(store).values() if n}
    started.future.result(timeout=10)  # the worker gave up on recording: StopNow
    after = started.manager.snapshot(started.task_id)
    assert after.failed == 0 and not after.errors  # halted, not a failed segment
    assert recorded(store)[2] is None
    assert load_tasks(store, started.task_id)[0].status is TaskStatus.CANCELLED


# ------------------------------------------------------------- 4 and 5. storage failures


def test_writers_wait_for_a_busy_file_instead_of_failing(store: ProjectStore) -> None:
    """Another command holding the write lock for a moment delays the batch; it never
    fails it (BEGIN IMMEDIATE waits within the busy timeout)."""
    add_segments(store, [f"Segment {i}." for i in range(30)])
    stop = threading.Event()

    def other_writer() -> None:
        other = open_project(store.path)
        while not stop.is_set():
            set_locked(other, [1], True)
            set_locked(other, [1], False)

    thread = threading.Thread(target=other_writer)
    thread.start()
    try:
        final = run(store, FakeSynthesizer(), skip_locked=False)
    finally:
        stop.set()
        thread.join()
    assert final.status is TaskStatus.COMPLETED, final.error
    assert (final.processed, final.failed) == (33, 0)


def test_busy_past_the_timeout_is_75(
    runner: CliRunner, store: ProjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_S", 0.2)
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        result = invoke(runner, "add", "book.db", "More words.")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.exit_code == 75, result.stderr
    assert "busy" in result.stderr and "Traceback" not in result.stderr


def test_read_only_project_file_is_73(runner: CliRunner, store: ProjectStore) -> None:
    invoke(runner, "segments", "book.db")  # the WAL and its index exist, as after any use
    # No connection of this process may stay open across the change: SQLite hands a new
    # connection a file descriptor an old one left open, read-write (another process, as
    # a real `narrator add` is, has none).
    gc.collect()
    store.engine.dispose()
    done = subprocess.run(["chattr", "+i", str(store.path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"chattr +i is not available here: {done.stderr.decode().strip()}")
    try:
        listed = invoke(runner, "segments", "book.db", "--json")
        added = invoke(runner, "add", "book.db", "More words.")
    finally:
        subprocess.run(["chattr", "-i", str(store.path)], check=True)
    assert listed.exit_code == 0, listed.stderr
    assert added.exit_code == 73, added.stderr
    assert "cannot write" in added.stderr and "damaged" not in added.stderr


def test_full_project_file_is_73(
    runner: CliRunner, store: ProjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's own "database or disk is full", made by capping the file's pages."""
    real_connect = store_module._connect

    def capped(path: Path) -> sqlite3.Connection:
        con = real_connect(path)
        con.execute("PRAGMA max_page_count=8")
        return con

    monkeypatch.setattr(store_module, "_connect", capped)
    result = invoke(runner, "add", "book.db", "x" * 100_000)
    assert result.exit_code == 73, result.stderr
    assert "full" in result.stderr and "damaged" not in result.stderr


def test_damaged_file_is_66(runner: CliRunner, store: ProjectStore) -> None:
    store.engine.dispose()  # the last connection out folds the WAL into the file
    data = bytearray(store.path.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # the schema page, after the header
    store.path.write_bytes(bytes(data))
    result = invoke(runner, "segments", "book.db")
    assert result.exit_code == 66, result.stderr
    assert "damaged" in result.stderr and "Traceback" not in result.stderr


def test_full_disk_stops_the_run_at_the_first_failure(
    runner: CliRunner, store: ProjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import narrator.audiofiles as audiofiles

    real = audiofiles.os.fsync
    calls = {"n": 0}

    def full(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] >= 3:  # the second WAV (each write syncs the file, then the folder)
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(audiofiles.os, "fsync", full)
    synth = FakeSynthesizer()
    final = run(store, synth)
    assert synth.rendered == ["One.", "Two."]  # stopped: "Three." was never tried
    assert final.processed == 1 and final.failed == 0 and final.error_kind == "CannotWrite"
    assert "No space left" in final.error
    folder = store.path.parent / "book_audio"
    assert [p.name for p in folder.iterdir()] == [Path(recorded(store)[1]).name]


def test_storage_failure_at_the_end_keeps_every_render(
    store: ProjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The task's last write fails (a full disk): the run says so with its own error;
    every segment it rendered stays recorded, and the task is not turned into a crash."""
    from narrator.tasks import TaskMirror

    real_save = TaskMirror.save

    def save(self: TaskMirror, snap: object) -> None:
        if snap.done:  # type: ignore[attr-defined]
            error = sqlite3.OperationalError("database or disk is full")
            error.sqlite_errorcode = sqlite3.SQLITE_FULL
            raise error
        real_save(self, snap)

    monkeypatch.setattr(TaskMirror, "save", save)
    final = run(store, FakeSynthesizer())
    assert final.processed == 3 and final.error_kind == "CannotWrite"
    assert all(audio_path(store, n).is_file() for n in recorded(store).values())


def test_full_disk_exit_code_through_the_cli(
    runner: CliRunner, store: ProjectStore, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import narrator.audiofiles as audiofiles

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(audiofiles.os, "fsync", full)
    monkeypatch.setenv("NARRATOR_MODEL_DIR", str(tiny_model))
    result = invoke(runner, "generate-all", "book.db", "--json", "--progress", "none")
    assert result.exit_code == 73, result.stderr
    out = json.loads(result.stdout)
    assert out["processed"] == 0 and out["error_kind"] == "CannotWrite"


# ---------------------------------------------------------------- 6. concurrent commands


def test_concurrent_appends_all_land(store: ProjectStore) -> None:
    failures: list[BaseException] = []

    def append(n: int) -> None:
        mine = open_project(store.path)
        for i in range(40):
            try:
                add_segments(mine, [f"writer {n}, line {i}"])
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                failures.append(exc)

    threads = [threading.Thread(target=append, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    indices = [row.sequence_index for row in list_segments(store)]
    assert indices == list(range(1, 3 + 3 * 40 + 1))


def test_run_lock_follows_symlinks(store: ProjectStore, tmp_path: Path) -> None:
    alias = tmp_path / "alias.db"
    alias.symlink_to(store.path)
    lock = take_run_lock(store.path)
    try:
        with pytest.raises(ProjectBusy):
            generate_all(open_project(alias), GenerateOptions(), FakeSynthesizer())
    finally:
        lock.release()


# ------------------------------------------------------------ 7. status of a dead run


def test_running_task_without_a_live_process_shows_interrupted(
    runner: CliRunner, store: ProjectStore
) -> None:
    with store.writing() as session:
        session.add(
            BatchTask(
                task_id="tts_batch_1_deadbeef",
                project_id=1,
                status="RUNNING",
                total_segments=3,
                segments_to_process=3,
                voice="af_heart",
                speed=1.0,
                lang="a",
            )
        )
        session.commit()
    shown = json.loads(invoke(runner, "status", "book.db", "--json").stdout)
    assert shown["status"] == "FAILED" and shown["error"].startswith("interrupted")
    listed = json.loads(invoke(runner, "tasks", "book.db", "--json").stdout)
    assert listed[0]["status"] == "FAILED"
    lock = take_run_lock(store.path)  # a live run holds the lock: it is running
    try:
        assert (
            json.loads(invoke(runner, "status", "book.db", "--json").stdout)["status"] == "RUNNING"
        )
    finally:
        lock.release()


# ------------------------------------------------------------------------ schema upgrade


def test_a_version_1_file_upgrades_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    make_project(path, TEXTS)
    con = sqlite3.connect(path)  # back to what the first release wrote
    con.execute("ALTER TABLE project DROP COLUMN uid")
    con.execute("ALTER TABLE project DROP COLUMN file_identity")
    con.execute("ALTER TABLE project DROP COLUMN file_path")
    con.execute("ALTER TABLE batchtask DROP COLUMN error_kind")
    con.execute("ALTER TABLE batchtask DROP COLUMN skipped_during_run")
    con.execute("ALTER TABLE segment DROP COLUMN heading_level")
    con.execute("ALTER TABLE batchtask DROP COLUMN current_chapter")
    con.execute("ALTER TABLE segment DROP COLUMN audio_cues")
    con.execute("DROP TABLE lexiconentry")
    for column in ("cast_voice", "cast_speed", "cast_lang", "verified_audio", "verify_findings"):
        con.execute(f"ALTER TABLE segment DROP COLUMN {column}")
    con.execute("ALTER TABLE globalsettings DROP COLUMN heading_voice")
    con.execute("PRAGMA user_version=1")
    con.commit()
    con.close()
    upgraded = open_project(path)
    assert len(upgraded.uid) == 8
    assert open_project(path).uid == upgraded.uid  # stored, not made up on each open
    final = run(upgraded, FakeSynthesizer())
    assert final.processed == 3
    assert all(n.endswith(f"-{upgraded.uid}.wav") for n in recorded(upgraded).values())


def test_cannot_write_is_what_storage_errors_become() -> None:
    error = sqlite3.OperationalError("attempt to write a readonly database")
    error.sqlite_errorcode = sqlite3.SQLITE_READONLY
    assert isinstance(store_module.storage_error(error), CannotWrite)
    busy = sqlite3.OperationalError("database is locked")
    busy.sqlite_errorcode = sqlite3.SQLITE_BUSY_SNAPSHOT
    assert isinstance(store_module.storage_error(busy), ProjectBusy)
    assert store_module.storage_error(ValueError("x")) is None


def test_stop_now_during_the_last_segment_is_still_cancelled(tmp_path: Path) -> None:
    store = make_project(tmp_path / "one.db", ["Only one."])
    holder: dict = {}
    synth = FakeSynthesizer(on_render=lambda _text: holder["run"].cancel(now=True), chunks=3)
    holder["run"] = generate_all(store, GenerateOptions(), synth)
    final = holder["run"].wait(timeout=30)
    assert final.status is TaskStatus.CANCELLED and final.processed == 0
    assert recorded(store)[1] is None


def test_a_copied_project_file_never_deletes_the_originals_audio(tmp_path: Path) -> None:
    import shutil

    original = make_project(tmp_path / "book.db", TEXTS)
    run(original, FakeSynthesizer())
    files = {audio_path(original, n) for n in recorded(original).values()}
    for suffix in ("", "-wal"):  # what `cp book.db* ` copies while nothing runs
        if (tmp_path / f"book.db{suffix}").exists():
            shutil.copy(tmp_path / f"book.db{suffix}", tmp_path / f"backup.db{suffix}")
    copy = open_project(tmp_path / "backup.db")
    assert copy.uid != original.uid and open_project(tmp_path / "book.db").uid == original.uid
    final = run(copy, FakeSynthesizer(), force=True)  # renders into backup_audio/
    assert final.processed == 3
    remove_segments(copy, [1])
    assert all(path.is_file() for path in files)  # what book.db records is all still there
    moved = tmp_path / "moved.db"
    for suffix in ("", "-wal", "-shm"):  # `mv book.db* ` while nothing runs
        if (tmp_path / f"book.db{suffix}").exists():
            (tmp_path / f"book.db{suffix}").rename(tmp_path / f"moved.db{suffix}")
    assert open_project(moved).uid == original.uid


def test_a_finished_command_leaves_the_project_as_one_file(
    tmp_path: Path,
    tiny_model: Path,
) -> None:
    """A real process, ended as narrator ends (its objects frozen, not collected): the
    write-ahead log is folded back, so book.db alone holds every recording."""
    import os
    import sys

    env = os.environ | {"NARRATOR_MODEL_DIR": str(tiny_model)}
    for command in (
        ["new", "book.db"],
        ["add", "book.db", "One.", "Two."],
        ["generate-all", "book.db", "--progress", "none"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "narrator", *command],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        assert not (tmp_path / "book.db-wal").exists(), command
    alone = tmp_path / "copy" / "book.db"
    alone.parent.mkdir()
    alone.write_bytes((tmp_path / "book.db").read_bytes())
    assert all(row.audio_file for row in list_segments(open_project(alone)))
