"""The seed's validation list, on the library with a fake synthesizer."""

import threading
import warnings
from pathlib import Path

import pytest
from conftest import make_project
from fakes import FakeSynthesizer
from sqlalchemy.exc import SAWarning
from sqlmodel import Session, SQLModel

from narrator import batch as batch_module
from narrator.batch import GenerateOptions, generate_all, generate_one
from narrator.errors import (
    AudioDirUnwritable,
    BadInput,
    ModelUnavailable,
    ProjectBusy,
    SegmentLocked,
)
from narrator.models import BatchTask
from narrator.planning import Rules
from narrator.project import edit_segment, list_segments, read_settings, set_locked
from narrator.recording import RenderSpec
from narrator.store import ProjectStore, open_project
from narrator.tasks import TaskManager, TaskMirror, TaskStatus, load_tasks, run_lock

TEXTS = ["One.", "Two.", "", "Four.", "   "]


@pytest.fixture
def store(tmp_path: Path) -> ProjectStore:
    return make_project(tmp_path / "book.db", TEXTS)


def run(store: ProjectStore, synth: FakeSynthesizer, **options: object):  # noqa: ANN201
    started = generate_all(store, GenerateOptions(**options), synth)  # type: ignore[arg-type]
    return started, started.wait(timeout=30)


def test_counts_and_audio(store: ProjectStore) -> None:
    synth = FakeSynthesizer()
    started, final = run(store, synth)
    assert started.task_id and started.task_id.startswith("tts_batch_1_")
    assert len(started.task_id) == len("tts_batch_1_") + 8
    assert started.plan.skipped == {"locked": 0, "has_audio": 0, "empty": 2}
    assert final.status is TaskStatus.COMPLETED
    assert (final.processed, final.failed, final.segments_to_process) == (3, 0, 3)
    assert synth.rendered == ["One.", "Two.", "Four."]
    rows = {r.sequence_index: r for r in list_segments(store)}
    assert rows[1].audio_file.startswith("book_audio/0001-s1-")
    assert (store.path.parent / rows[1].audio_file).is_file()
    assert rows[1].audio_duration == pytest.approx(0.04)
    assert rows[3].audio_file is None


def test_locked_skipped_then_rendered_with_no_skip_locked(store: ProjectStore) -> None:
    set_locked(store, [1], True)
    started, _ = run(store, FakeSynthesizer())
    assert started.plan.skipped["locked"] == 1
    synth = FakeSynthesizer()
    started, _ = run(store, synth, skip_locked=False)
    assert synth.rendered == ["One."]


def test_existing_audio_skipped_unless_forced(store: ProjectStore) -> None:
    run(store, FakeSynthesizer())
    old = {r.sequence_index: r.audio_file for r in list_segments(store)}
    again = generate_all(store, GenerateOptions(), FakeSynthesizer())
    assert again.task_id is None and again.message.startswith("No segments to process")
    assert again.plan.skipped["has_audio"] == 3
    synth = FakeSynthesizer()
    run(store, synth, force=True)
    assert synth.rendered == ["One.", "Two.", "Four."]
    new = {r.sequence_index: r.audio_file for r in list_segments(store)}
    assert new == old  # same input, same file name, replaced atomically


def test_nothing_to_process_starts_no_task_and_skips_model_check(tmp_path: Path) -> None:
    store = make_project(tmp_path / "empty.db", ["", "  "])
    started = generate_all(store, GenerateOptions(), FakeSynthesizer(available=False))
    assert started.task_id is None and started.plan.total == 2
    assert load_tasks(store) == []


def test_missing_model_before_any_work(store: ProjectStore) -> None:
    with pytest.raises(ModelUnavailable):
        generate_all(store, GenerateOptions(), FakeSynthesizer(available=False))
    assert load_tasks(store) == []
    assert not (store.path.parent / "book_audio").exists()
    run_lock(store).release()  # the lock was given back


def test_progress_is_recorded_before_each_segment(store: ProjectStore) -> None:
    manager = TaskManager(TaskMirror(store))
    seen = []
    synth = FakeSynthesizer(on_render=lambda text: seen.append(manager.snapshot(started.task_id)))
    started = generate_all(store, GenerateOptions(), synth, manager)
    started.wait(timeout=30)
    assert [(s.current, s.current_text, s.processed) for s in seen] == [
        (1, "One.", 0),
        (2, "Two.", 1),
        (3, "Four.", 2),
    ]
    assert all(s.status is TaskStatus.RUNNING for s in seen)


def test_failing_segment_does_not_stop_the_batch(store: ProjectStore) -> None:
    synth = FakeSynthesizer(fail_on="Two")
    started, final = run(store, synth)
    assert final.status is TaskStatus.COMPLETED
    assert (final.processed, final.failed) == (2, 1)
    assert final.errors[0].sequence_index == 2 and "Two" in final.errors[0].message
    (recorded,) = load_tasks(store)
    assert recorded.status is TaskStatus.COMPLETED and recorded.errors == final.errors


def test_cancellation_between_segments(store: ProjectStore) -> None:
    manager = TaskManager(TaskMirror(store))

    def cancel_during_first(text: str) -> None:
        if text == "One.":
            manager.request_cancel(started.task_id)

    synth = FakeSynthesizer(on_render=cancel_during_first)
    started = generate_all(store, GenerateOptions(), synth, manager)
    final = started.wait(timeout=30)
    assert final.status is TaskStatus.CANCELLED
    assert synth.rendered == ["One."]  # the segment in hand finished; no other started
    assert list_segments(store)[0].audio_file is not None
    assert load_tasks(store)[0].status is TaskStatus.CANCELLED


def test_crash_outside_the_loop_fails_the_task(
    store: ProjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> ProjectStore:
        raise RuntimeError("database went away")

    monkeypatch.setattr(batch_module, "open_project", broken)
    _, final = run(store, FakeSynthesizer())
    assert final.status is TaskStatus.FAILED and "database went away" in final.error


def test_worker_gets_plain_values_only(
    store: ProjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    submitted = []
    real_submit = batch_module.ThreadPoolExecutor.submit

    def spy(self, fn, *args):  # noqa: ANN001, ANN202
        submitted.append(args)
        return real_submit(self, fn, *args)

    monkeypatch.setattr(batch_module.ThreadPoolExecutor, "submit", spy)
    synth = FakeSynthesizer()
    with warnings.catch_warnings():
        warnings.simplefilter("error", SAWarning)
        run(store, synth)
    (args,) = submitted
    job = args[0]
    for value in vars(job).values():
        if isinstance(value, RenderSpec):  # frozen plain values, and the seed's three options
            voicing = value.casting.base  # frozen plain values too
            assert isinstance(voicing.voice, str) and isinstance(voicing.speed, float)
            assert isinstance(voicing.lang, str)
            assert isinstance(value.rules, Rules)
            assert all(isinstance(v, bool) for v in vars(value.rules).values())
            continue
        assert isinstance(value, (int, float, str, tuple)), value
    assert all(isinstance(i, int) for i in job.segment_ids)
    for arg in args:
        assert not isinstance(arg, (SQLModel, Session, ProjectStore))
    assert synth.threads == {"narrator-batch_0"}


def test_concurrent_run_is_refused(store: ProjectStore) -> None:
    gate = threading.Event()
    first = generate_all(
        store, GenerateOptions(), FakeSynthesizer(on_render=lambda text: gate.wait(10))
    )
    try:
        with pytest.raises(ProjectBusy, match=first.task_id):
            generate_all(open_project(store.path), GenerateOptions(), FakeSynthesizer())
    finally:
        gate.set()
        first.wait(timeout=30)
    run(store, FakeSynthesizer(), force=True)  # free again


def test_stale_running_task_is_marked_interrupted(store: ProjectStore) -> None:
    with store.session() as session:
        session.add(
            BatchTask(
                task_id="tts_batch_1_deadbeef",
                project_id=1,
                status="RUNNING",
                total_segments=5,
                segments_to_process=3,
                voice="af_heart",
                speed=1.0,
                lang="a",
            )
        )
        session.commit()
    audio = store.path.parent / "book_audio"
    audio.mkdir()
    ours = audio / f".0001-s1-0badc0de-{store.uid}.wav.1234abcd.partial"
    ours.write_bytes(b"half")
    run(store, FakeSynthesizer())
    old = load_tasks(store, "tts_batch_1_deadbeef")[0]
    assert old.status is TaskStatus.FAILED and "interrupted" in old.error
    assert not ours.exists()


def test_dry_run_changes_nothing(store: ProjectStore) -> None:
    before = store.path.read_bytes()
    synth = FakeSynthesizer()
    started = generate_all(store, GenerateOptions(dry_run=True), synth)
    assert started.task_id is None and len(started.plan.to_process) == 3
    assert synth.rendered == [] and load_tasks(store) == []
    assert not (store.path.parent / "book_audio").exists()
    assert store.path.read_bytes() == before


def test_changed_rerenders_only_edited(store: ProjectStore) -> None:
    run(store, FakeSynthesizer())
    edit_segment(store, 2, "Two, edited.")
    plain = generate_all(store, GenerateOptions(), FakeSynthesizer())
    assert plain.task_id is None and plain.plan.stale_kept == 1 and "--changed" in plain.message
    synth = FakeSynthesizer()
    run(store, synth, changed=True)
    assert synth.rendered == ["Two, edited."]
    files = sorted(p.name for p in (store.path.parent / "book_audio").iterdir())
    assert len(files) == 3  # the old render of segment 2 was removed


def test_voice_and_speed_are_read_once(store: ProjectStore) -> None:
    _, final = run(store, FakeSynthesizer(), voice="af_sky", speed=1.5)
    assert (final.voice, final.speed, final.lang) == ("af_sky", 1.5, "a")


def test_unwritable_audio_folder(store: ProjectStore, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(AudioDirUnwritable):
        generate_all(store, GenerateOptions(audio_dir=str(blocker / "sub")), FakeSynthesizer())
    assert load_tasks(store) == []


def test_single_generate(store: ProjectStore) -> None:
    set_locked(store, [1], True)
    with pytest.raises(SegmentLocked):
        generate_one(store, 1, FakeSynthesizer())
    seg_id, seconds = generate_one(store, 2, FakeSynthesizer())
    assert seconds and seg_id == 2
    assert generate_one(store, 2, FakeSynthesizer()) == (2, None)
    assert generate_one(store, 2, FakeSynthesizer(), force=True)[1]


def test_dry_run_does_not_remember_audio_dir(store: ProjectStore) -> None:
    generate_all(store, GenerateOptions(dry_run=True, audio_dir="elsewhere"), FakeSynthesizer())
    assert read_settings(store).audio_dir is None
    run(store, FakeSynthesizer(), audio_dir="elsewhere")
    assert read_settings(store).audio_dir == "elsewhere"
    assert len(list((store.path.parent / "elsewhere").glob("*.wav"))) == 3


def test_lock_released_from_another_thread(store: ProjectStore) -> None:
    started = generate_all(store, GenerateOptions(), FakeSynthesizer())
    waiter = threading.Thread(target=started.wait)
    waiter.start()
    waiter.join(30)
    run_lock(store).release()


def test_model_failure_fails_the_batch_once(store: ProjectStore) -> None:
    class Broken(FakeSynthesizer):
        def render(self, *args: object, **kwargs: object) -> float:
            self.rendered.append("tried")
            raise ModelUnavailable("cannot load the Kokoro model")

    synth = Broken()
    _, final = run(store, synth)
    assert final.status is TaskStatus.FAILED and final.error_kind == "ModelUnavailable"
    assert final.error == "cannot load the Kokoro model"
    assert synth.rendered == ["tried"]


def test_a_python_caller_gets_the_objects_generate_all_json_prints(tmp_path: Path) -> None:
    """The library owns the shape of `--json`: the plan before the run, the result after."""
    store = make_project(tmp_path / "p.db", ["One.", "", "Two."])
    planned = generate_all(store, GenerateOptions(dry_run=True), FakeSynthesizer())
    head = planned.as_dict()
    assert head["dry_run"] is True and head["task_id"] is None and head["project_id"] == 1
    assert [row["action"] for row in head["plan"]] == ["render", "skip", "render"]
    run = generate_all(store, GenerateOptions(), FakeSynthesizer())
    result = run.result(run.wait(timeout=30))
    assert result["task_id"] == run.task_id and result["status"] == "COMPLETED"
    assert (result["processed"], result["skipped"]["empty"]) == (2, 1)
    assert "plan" not in result and result["message"] == run.message


@pytest.mark.parametrize(
    ("ray", "workers", "gpus", "engine", "expected"),
    [
        (None, None, 0.0, "auto", (False, "auto")),
        ("local", None, 1.0, "auto", (True, "torch")),
        ("local", 2, 0.0, "onnx", (True, "onnx")),
    ],
)
def test_the_run_policy_picks_the_runner_and_engine(
    ray: str | None, workers: int | None, gpus: float, engine: str, expected: tuple
) -> None:
    from narrator.cluster import runner_for

    runner, picked = runner_for(ray, workers, gpus, engine)
    assert (runner is not None, picked) == expected


@pytest.mark.parametrize(
    ("ray", "workers", "gpus", "engine"),
    [
        (None, 2, 0.0, "auto"),
        (None, None, 1.0, "auto"),
        ("local", None, 1.0, "onnx"),
    ],
)
def test_the_run_policy_refuses_what_cannot_run(
    ray: str | None, workers: int | None, gpus: float, engine: str
) -> None:
    from narrator.cluster import runner_for

    with pytest.raises(BadInput):
        runner_for(ray, workers, gpus, engine)
