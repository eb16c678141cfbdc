"""generate_all(): check, plan, start the worker, hand back the running task."""

from __future__ import annotations

import contextlib
import queue
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

from filelock import FileLock

from narrator.audiofiles import (
    audio_folder,
    check_writable,
    seconds_of,
    sweep,
)
from narrator.engine import Synthesizer
from narrator.errors import (
    BadInput,
    NarratorError,
    SegmentLocked,
    refuse_blank,
)
from narrator.planning import Casting, Plan, Rules, SegmentState, Voicing, Why, plan_generation
from narrator.project import (
    Settings,
    only,
    read_settings,
    recorded_files,
    segment_state,
    segment_states,
    update_settings,
)
from narrator.recording import (
    BatchJob,
    RenderSpec,
    Runner,
    ThreadRunner,
    record_render,
    why_not,
)
from narrator.store import ProjectStore, open_project, storage_error
from narrator.tasks import (
    TaskManager,
    TaskMirror,
    TaskSnapshot,
    TaskStatus,
    mark_interrupted,
    run_lock,
)
from narrator.voices import check_speed, language_of, parse_voice

NOTHING_TO_DO = "No segments to process"
SKIP_WORDS = {
    "locked": "locked",
    "has_audio": "with audio",
    "empty": "empty",
    "removed": "removed",
    "edited": "edited while rendering",
}


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
    # a selection (narrator.selection): only these segments are planned
    only: tuple[str, ...] = ()
    # each recorded segment is then judged (narrator.listening): the recogniser must be here
    verify: bool = False

    @property
    def rules(self) -> Rules:
        return Rules(skip_locked=self.skip_locked, force=self.force, changed=self.changed)


@dataclass
class BatchRun:
    """What generate_all() hands back: the plan, and the running task if one started."""

    plan: Plan
    casting: Casting  # who speaks what in this run
    message: str
    project_id: int
    dry_run: bool = False
    task_id: str | None = None
    store: ProjectStore | None = None
    audio_dir: Path | None = None
    manager: TaskManager | None = None
    future: Future[None] | None = None
    updates: queue.SimpleQueue[TaskSnapshot] | None = field(default=None, repr=False)
    lock: FileLock | None = field(default=None, repr=False)
    runner: Runner | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, object]:
        """What `generate-all --json` prints before the run (the seed's 202 body); a dry run
        adds the plan, segment by segment."""
        head: dict[str, object] = {
            "task_id": self.task_id,
            "project_id": self.project_id,
            "status": "PENDING" if self.task_id else None,
            "dry_run": self.dry_run,
            "total_segments": self.plan.total,
            "segments_to_process": len(self.plan.to_process),
            "skipped": self.plan.skipped,
            "stale": self.plan.stale_kept,
            "message": self.message,
            "voice": self.casting.base.voice,
            "speed": self.casting.base.speed,
            "lang": self.casting.base.lang,
        }
        if self.dry_run:
            head["plan"] = self.plan.rows()
        return head

    def result(self, final: TaskSnapshot) -> dict[str, object]:
        """What `generate-all --json` prints at the end: the head, then the task as it
        ended, under the plan's message."""
        return self.as_dict() | final.as_dict() | {"message": self.message}

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

    def cancel(self, now: bool = False) -> None:
        """Stop after the segment in hand; `now`: at the next chunk boundary inside it."""
        if self.manager and self.task_id:
            self.manager.request_cancel(self.task_id, now=now)

    def halt(self, reason: str) -> None:
        """Stop at once, without waiting for the worker: the task is CANCELLED and the
        audio folder keeps only recorded files. The caller then ends the process."""
        assert self.manager and self.task_id and self.store and self.audio_dir
        clean = self.manager.halt(self.task_id)
        with contextlib.suppress(Exception):
            self.manager.finish(self.task_id, TaskStatus.CANCELLED, error=reason)
        if self.runner is not None:  # a cluster this run started goes with it
            with contextlib.suppress(Exception):
                self.runner.close()
        if clean:
            with contextlib.suppress(Exception):
                tidy_audio_folder(self.store, self.audio_dir)


def describe_skips(counts: dict[str, int], *, all_reasons: bool = True) -> str:
    """ "2 locked, 0 with audio, 1 empty": the seed's skip counts in words."""
    return ", ".join(
        f"{n} {SKIP_WORDS[reason]}" for reason, n in counts.items() if n or all_reasons
    )


def describe_plan(plan: Plan) -> str:
    """The seed's message: what will be rendered and the skip counts."""
    head = (
        f"Generating audio for {len(plan.to_process)} of {plan.total} segments"
        if plan.to_process
        else NOTHING_TO_DO
    )
    message = f"{head} (skipped: {describe_skips(plan.skipped)})"
    if plan.stale_kept:
        message += (
            f"; {plan.stale_kept} with stale audio (text, voice or speed changed): "
            "re-render with --changed"
        )
    return message


def _tidy(store: ProjectStore, folder: Path) -> None:
    """First thing under the run lock: whatever the last run left is put right."""
    mark_interrupted(store)
    tidy_audio_folder(store, folder)


def tidy_audio_folder(store: ProjectStore, folder: Path) -> list[Path]:
    """Remove this project's files in `folder` that no segment records, however the last
    run ended. Call while holding the run lock, or once the worker is halted."""
    with store.session() as session:
        recorded = recorded_files(session)
    return sweep(store, folder, recorded)


def _resolve(store: ProjectStore, options: GenerateOptions) -> tuple[Settings, Casting]:
    """Settings with this run's overrides, as plain values; nothing is stored."""
    refuse_blank(
        {"--voice": options.voice, "--lang": options.lang, "--audio-dir": options.audio_dir}
    )
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
    run = Voicing(voice, speed, lang, settings.lexicon)
    return settings, Casting(run, settings.heading_voice, settings.lang_set or bool(options.lang))


def generate_all(
    store: ProjectStore,
    options: GenerateOptions,
    synthesizer: Synthesizer,
    manager: TaskManager | None = None,
    runner: Runner | None = None,
) -> BatchRun:
    """Plan a run and, unless there is nothing to do or it is a dry run, start rendering
    in one worker thread (`runner`: who renders, the thread itself by default).
    `synthesizer` checks the voice and model here first. The returned BatchRun holds the
    project lock until wait()."""
    runner = runner or ThreadRunner()
    settings, casting = _resolve(store, options)
    voicing = casting.base
    lock = None if options.dry_run else run_lock(store)
    try:
        folder = audio_folder(store, settings.audio_dir)
        if lock is not None:
            _tidy(store, folder)
        states = segment_states(store)
        if options.only:
            states = only(states, options.only)
        plan = plan_generation(states, casting=casting, rules=options.rules)
        run = BatchRun(plan, casting, describe_plan(plan), store.project_id, options.dry_run)
        if not plan.to_process:
            if lock is not None:
                lock.release()
            return run
        # every check a run makes before rendering, dry run or not: same codes, same words
        rendered = set(plan.to_process)
        voices = _voices(casting, [s for s in states if s.id in rendered])
        for voice, lang in voices:
            synthesizer.check(voice, lang)
        if options.verify:
            from narrator.listening import require_recogniser

            require_recogniser(lang for _, lang in voices)
        check_writable(store, folder, dry_run=options.dry_run)
        runner.prepare()
        if options.dry_run:
            runner.close()
            return run
        if options.audio_dir is not None:
            update_settings(store, audio_dir=options.audio_dir)  # remembered once it works
        manager = manager or TaskManager(TaskMirror(store))
        run.task_id = f"tts_batch_{store.project_id}_{uuid.uuid4().hex[:8]}"
        manager.create_task(
            TaskSnapshot(
                task_id=run.task_id,
                project_id=store.project_id,
                status=TaskStatus.PENDING,
                total_segments=plan.total,
                segments_to_process=len(plan.to_process),
                skipped=dict(plan.skipped),
                voice=voicing.voice,
                speed=voicing.speed,
                lang=voicing.lang,
            )
        )
        job = BatchJob(
            db_path=str(store.path),
            project_id=store.project_id,
            task_id=run.task_id,
            segment_ids=tuple(plan.to_process),
            audio_dir=str(folder),
            spec=RenderSpec(casting, options.rules),
        )
        run.updates = manager.subscribe(run.task_id)  # before the worker: every event
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="narrator-batch")
        run.future = pool.submit(run_batch, job, manager, synthesizer, runner)
        pool.shutdown(wait=False)
        run.manager, run.lock, run.store, run.audio_dir = manager, lock, store, folder
        run.runner = runner
        return run
    except BaseException:
        if lock is not None and lock.is_locked:
            lock.release()
        raise


def _voices(casting: Casting, states: list[SegmentState]) -> list[tuple[str, str]]:
    """Each voice (with its language) that speaks these segments, in order of appearance."""
    return list(dict.fromkeys(s.voicing(casting).spoken()[::2] for s in states))


def run_batch(
    job: BatchJob, manager: TaskManager, synthesizer: Synthesizer, runner: Runner
) -> None:
    """The worker: its own engine and sessions; segments re-fetched by id."""
    try:
        store = open_project(job.db_path, job.project_id)
        manager.start(job.task_id)
        manager.finish(job.task_id, runner.render_all(store, job, manager, synthesizer))
    except Exception as exc:
        _end_with_error(job, manager, exc)


def _end_with_error(job: BatchJob, manager: TaskManager, exc: Exception) -> None:
    """The batch stopped outside the per-segment rules: storage refused a write (the run
    stops, what was recorded stays), the model failed, or narrator crashed (FAILED)."""
    problem = storage_error(exc, job.db_path)
    try:
        if problem is not None:
            manager.fail_storage(job.task_id, problem)
        elif isinstance(exc, NarratorError):  # the model or the cluster failed (exit 69)
            manager.finish(
                job.task_id, TaskStatus.FAILED, error=str(exc), error_kind=type(exc).__name__
            )
        else:
            manager.finish(job.task_id, TaskStatus.FAILED, error=f"{type(exc).__name__}: {exc}")
    except Exception as again:  # the file cannot take even that: say why, in memory
        manager.fail_storage(job.task_id, storage_error(again, job.db_path) or again)


def generate_one(
    store: ProjectStore,
    index: int,
    synthesizer: Synthesizer,
    force: bool = False,
    voice: str | None = None,
    speed: float | None = None,
    lang: str | None = None,
) -> tuple[int, float | None]:
    """Render a single segment in this thread. Locked: SegmentLocked (the seed's 409).
    Returns (segment id, seconds), seconds None when its audio exists and not forced."""
    options = GenerateOptions(voice=voice, speed=speed, lang=lang, force=force)
    settings, casting = _resolve(store, options)
    state = segment_state(store, index)
    voicing = state.voicing(casting)
    lock = run_lock(store)
    try:
        spec = RenderSpec(casting, options.rules)
        why = why_not(state, None, spec)
        if why == Why.has_audio.value:
            return state.id, None
        _refuse(index, why)
        synthesizer.check(voicing.voice, voicing.lang)
        folder = audio_folder(store, settings.audio_dir)
        _tidy(store, folder)
        check_writable(store, folder)
        speech = synthesizer.render(state.text, *voicing.spoken(), lexicon=voicing.lexicon)
        _refuse(index, record_render(store, folder, state, speech, spec, nullcontext()))
        return state.id, seconds_of(speech.samples)
    finally:
        lock.release()


def _refuse(index: int, why: str | None) -> None:
    """Single generate's answer when the rules say no: locked is the seed's 409."""
    if why == Why.locked.value:
        raise SegmentLocked(f"segment {index} is locked; unlock it with `narrator unlock`")
    if why == Why.empty.value:
        raise BadInput(f"segment {index} has no text; give it some with `narrator edit`")
    if why is not None:
        raise BadInput(
            f"segment {index} was {SKIP_WORDS[why]} during the render, so nothing "
            "was recorded; run the command again"
        )
