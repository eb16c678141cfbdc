"""generate_all(): check, plan, start the worker, hand back the running task."""

from __future__ import annotations

import contextlib
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from filelock import FileLock, Timeout

from narrator.engine import Synthesizer
from narrator.engine.audio import remove_temp_files, temp_path
from narrator.engine.voices import check_speed, language_of, parse_voice
from narrator.errors import (
    AudioDirUnwritable,
    BadInput,
    ModelUnavailable,
    ProjectBusy,
    SegmentLocked,
)
from narrator.models import Segment
from narrator.planning import Plan, fingerprint, plan_generation
from narrator.project import (
    Settings,
    audio_folder,
    audio_path,
    audio_target,
    read_settings,
    recorded_name,
    remove_orphan_audio,
    segment_state,
    segment_states,
    update_settings,
)
from narrator.store import ProjectStore, open_project
from narrator.tasks import (
    SegmentFailure,
    TaskManager,
    TaskMirror,
    TaskSnapshot,
    TaskStatus,
    active_task,
    mark_interrupted,
)

NOTHING_TO_DO = "No segments to process"


@dataclass(frozen=True)
class GenerateOptions:
    skip_locked: bool = True
    force: bool = False
    changed: bool = False
    voice: str | None = None
    speed: float | None = None
    lang: str | None = None
    audio_dir: str | None = None
    dry_run: bool = False


@dataclass(frozen=True)
class BatchJob:
    """Everything the worker needs, as plain values: no ORM object crosses threads."""

    db_path: str
    project_id: int
    task_id: str
    segment_ids: tuple[int, ...]
    voice: str
    speed: float
    lang: str
    audio_dir: str


@dataclass
class BatchRun:
    """What generate_all() hands back: the plan, and the running task if one started."""

    plan: Plan
    voice: str
    speed: float
    lang: str
    message: str
    task_id: str | None = None
    audio_dir: Path | None = None
    manager: TaskManager | None = None
    future: Future[None] | None = None
    lock: FileLock | None = field(default=None, repr=False)

    def wait(self, timeout: float | None = None) -> TaskSnapshot | None:
        """Block until the worker is done; release the project lock."""
        if self.future is None or self.manager is None or self.task_id is None:
            return None
        try:
            self.future.result(timeout)
        finally:
            if self.future.done() and self.lock is not None:
                self.lock.release()
        return self.manager.snapshot(self.task_id)

    def cancel(self) -> None:
        if self.manager and self.task_id:
            self.manager.request_cancel(self.task_id)


def describe_plan(plan: Plan) -> str:
    """The seed's message: what will be rendered and the skip counts."""
    skipped = plan.skipped
    parts = [f"{skipped['locked']} locked", f"{skipped['has_audio']} with audio",
             f"{skipped['empty']} empty"]
    head = (
        f"Generating audio for {len(plan.to_process)} of {plan.total} segments"
        if plan.to_process else NOTHING_TO_DO
    )
    message = f"{head} (skipped: {', '.join(parts)})"
    if plan.stale_kept:
        message += (
            f"; {plan.stale_kept} segments have stale audio (text, voice or speed changed): "
            "re-render them with --changed"
        )
    return message


def run_lock(store: ProjectStore) -> FileLock:
    """One run at a time per project file; the OS drops the lock if the process dies."""
    # not thread-local: wait() may release it from another thread than the one that took it
    lock = FileLock(f"{store.path}.lock", timeout=0, thread_local=False)
    try:
        lock.acquire()
    except Timeout:
        running = active_task(store)
        who = f"task {running.task_id} (pid {running.pid})" if running else "another narrator"
        raise ProjectBusy(
            f"{who} is rendering {store.path}; wait for it, or see `narrator status`"
        ) from None
    return lock


def _resolve(store: ProjectStore, options: GenerateOptions) -> tuple[Settings, str, float, str]:
    """Settings with this run's overrides, as plain values; nothing is stored."""
    settings = read_settings(store)
    if options.audio_dir is not None:
        settings = replace(settings, audio_dir=options.audio_dir)
    voice = options.voice or settings.voice_id
    parse_voice(voice)
    speed = check_speed(options.speed if options.speed is not None else settings.speed)
    if options.lang:
        lang = language_of(voice, options.lang)
    elif options.voice:
        lang = language_of(voice, settings.lang if settings.lang_set else None)
    else:
        lang = settings.lang
    return settings, voice, speed, lang


def _check_audio_folder(folder: Path) -> None:
    probe = temp_path(folder / "probe")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise AudioDirUnwritable(
            f"cannot write audio to {folder} ({exc.strerror}); "
            "fix its permissions or choose another with --audio-dir"
        ) from exc


def generate_all(
    store: ProjectStore,
    options: GenerateOptions,
    synthesizer: Synthesizer,
    manager: TaskManager | None = None,
) -> BatchRun:
    """Plan a run and, unless there is nothing to do or it is a dry run, start rendering
    in one worker thread. The returned BatchRun holds the project lock until wait()."""
    settings, voice, speed, lang = _resolve(store, options)
    lock = None if options.dry_run else run_lock(store)
    try:
        folder = audio_folder(store, settings)
        if lock is not None and mark_interrupted(store) and folder.is_dir():
            # what the interrupted run left: temporary files, and renders it never recorded
            remove_temp_files(folder)
            remove_orphan_audio(store, folder)
        plan = plan_generation(
            segment_states(store), voice=voice, speed=speed, lang=lang,
            skip_locked=options.skip_locked, force=options.force, changed=options.changed,
        )
        run = BatchRun(plan, voice, speed, lang, describe_plan(plan))
        if not plan.to_process or options.dry_run:
            if lock is not None:
                lock.release()
            return run
        synthesizer.check(voice, lang)
        _check_audio_folder(folder)
        if options.audio_dir is not None:
            update_settings(store, audio_dir=options.audio_dir)  # remembered once it works
        manager = manager or TaskManager(TaskMirror(store))
        run.task_id = f"tts_batch_{store.project_id}_{uuid.uuid4().hex[:8]}"
        manager.create_task(
            TaskSnapshot(
                task_id=run.task_id, project_id=store.project_id, status=TaskStatus.PENDING,
                total_segments=plan.total, segments_to_process=len(plan.to_process),
                skipped=dict(plan.skipped), voice=voice, speed=speed, lang=lang,
            )
        )
        job = BatchJob(
            db_path=str(store.path), project_id=store.project_id, task_id=run.task_id,
            segment_ids=tuple(plan.to_process), voice=voice, speed=speed, lang=lang,
            audio_dir=str(folder),
        )
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="narrator-batch")
        run.future = pool.submit(run_batch, job, manager, synthesizer)
        pool.shutdown(wait=False)
        run.manager, run.lock, run.audio_dir = manager, lock, folder
        return run
    except BaseException:
        if lock is not None and lock.is_locked:
            lock.release()
        raise


def run_batch(job: BatchJob, manager: TaskManager, synthesizer: Synthesizer) -> None:
    """The worker: its own engine and sessions; segments re-fetched by id."""
    try:
        store = open_project(job.db_path, job.project_id)
        manager.start(job.task_id)
        cancelled = False
        for position, segment_id in enumerate(job.segment_ids, start=1):
            if manager.is_cancelled(job.task_id):
                cancelled = True
                break
            render_segment(store, job, manager, synthesizer, position, segment_id)
        manager.finish(job.task_id, TaskStatus.CANCELLED if cancelled else TaskStatus.COMPLETED)
    except Exception as exc:  # a crash outside the per-segment loop fails the task
        # finish() sets the in-memory state before writing it out: if the file cannot take
        # the write, the task is still FAILED for the process that waits on it
        with contextlib.suppress(Exception):
            manager.finish(job.task_id, TaskStatus.FAILED, error=f"{type(exc).__name__}: {exc}")


def render_segment(
    store: ProjectStore,
    job: BatchJob,
    manager: TaskManager,
    synthesizer: Synthesizer,
    position: int,
    segment_id: int,
) -> None:
    """Render one segment; any failure is recorded for it and the batch goes on."""
    with store.session() as session:
        segment = session.get(Segment, segment_id)
        index = segment.sequence_index if segment else -1
        text = segment.text_content if segment else ""
    manager.update_task_progress(job.task_id, position, segment_id, index, text)
    try:
        if segment is None:
            raise LookupError("the segment was removed during the run")
        seconds = render_and_record(
            store, synthesizer, Path(job.audio_dir), segment_id, index, text,
            job.voice, job.speed, job.lang,
        )
    except ModelUnavailable:
        raise  # no segment can be rendered: the batch fails (exit 69), not each segment
    except Exception as exc:
        message = str(exc) or type(exc).__name__
        manager.add_error(job.task_id, SegmentFailure(segment_id, index, message))
    else:
        manager.record_success(job.task_id, seconds)


def render_and_record(
    store: ProjectStore, synthesizer: Synthesizer, folder: Path, segment_id: int, index: int,
    text: str, voice: str, speed: float, lang: str,
) -> float:
    """Render one segment's text to a new file, then record it; return its seconds."""
    stamp = fingerprint(text, voice, speed, lang)
    target = audio_target(folder, index, segment_id, stamp)
    seconds = synthesizer.render(text, voice, speed, lang, target)
    record_audio(store, segment_id, target, seconds, stamp)
    return seconds


def record_audio(
    store: ProjectStore, segment_id: int, target: Path, seconds: float, stamp: str
) -> None:
    """Point the segment at its new audio (already in place), then drop the old file."""
    name = recorded_name(store, target)
    with store.session() as session:
        segment = session.get(Segment, segment_id)
        if segment is None:
            target.unlink(missing_ok=True)
            raise LookupError("the segment was removed during the run")
        old = segment.audio_file
        segment.audio_file, segment.audio_duration, segment.audio_fingerprint = (
            name, seconds, stamp,
        )
        session.add(segment)
        session.commit()
    if old and old != name:
        audio_path(store, old).unlink(missing_ok=True)


def generate_one(
    store: ProjectStore, index: int, synthesizer: Synthesizer, force: bool = False,
    voice: str | None = None, speed: float | None = None, lang: str | None = None,
) -> tuple[int, float | None]:
    """Render a single segment in this thread. Locked: SegmentLocked (the seed's 409).
    Returns (segment id, seconds), seconds None when its audio exists and not forced."""
    options = GenerateOptions(voice=voice, speed=speed, lang=lang)
    settings, voice, speed, lang = _resolve(store, options)
    state = segment_state(store, index)
    if state.is_locked:
        raise SegmentLocked(f"segment {index} is locked; unlock it with `narrator unlock`")
    if not state.text.strip():
        raise BadInput(f"segment {index} has no text; give it some with `narrator edit`")
    if state.audio_exists and not force:
        return state.id, None
    lock = run_lock(store)
    try:
        synthesizer.check(voice, lang)
        folder = audio_folder(store, settings)
        _check_audio_folder(folder)
        seconds = render_and_record(
            store, synthesizer, folder, state.id, index, state.text, voice, speed, lang
        )
        return state.id, seconds
    finally:
        lock.release()
