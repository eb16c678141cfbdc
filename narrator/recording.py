"""Who renders and who records: the Runner protocol that the worker thread and Ray share,
handing a segment out (progress first, the plan's rules asked again) and taking its
render back (written, checked once more, recorded in one transaction)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol

from narrator.atomic import publish
from narrator.audiofiles import (
    audio_path,
    may_remove,
    recorded_name,
    render_target,
    seconds_of,
    write_temp_wav,
)
from narrator.engine import Speech, Synthesizer
from narrator.errors import ModelUnavailable
from narrator.models import Segment
from narrator.planning import Casting, Rules, SegmentState, Why, decide
from narrator.project import chapter_at, state_by_id
from narrator.store import ProjectStore, storage_error
from narrator.tasks import SegmentFailure, StopNow, TaskManager, TaskSnapshot, TaskStatus


@dataclass(frozen=True)
class RenderSpec:
    """What segments are rendered with, and the rules that let a segment be rendered."""

    casting: Casting
    rules: Rules


@dataclass(frozen=True)
class BatchJob:
    """Everything the worker needs, as plain values: no ORM object crosses threads."""

    db_path: str
    project_id: int
    task_id: str
    segment_ids: tuple[int, ...]
    audio_dir: str
    spec: RenderSpec


class Runner(Protocol):
    """Who renders a batch's segments: the worker thread (ThreadRunner) or Ray actors
    (narrator.cluster.RayRunner). Either way this process is the only writer: segments
    go out through hand_out() and every outcome comes back through take_back()."""

    def prepare(self) -> None:
        """Checks and connections, in the main thread before the task starts."""

    def close(self) -> None:
        """Undo prepare(): when no run follows (a dry run), or when a signal halts one."""

    def render_all(
        self, store: ProjectStore, job: BatchJob, manager: TaskManager, synthesizer: Synthesizer
    ) -> TaskStatus:
        """Render the job's segments; the task's final status (COMPLETED or CANCELLED)."""
        ...


class ThreadRunner:
    """One segment at a time, in order, in the batch's worker thread (the default)."""

    def prepare(self) -> None:
        pass

    def close(self) -> None:
        pass

    def render_all(
        self, store: ProjectStore, job: BatchJob, manager: TaskManager, synthesizer: Synthesizer
    ) -> TaskStatus:
        spec = job.spec

        def between_chunks(chunk: int, chunks: int) -> None:
            if manager.must_stop_now(job.task_id):
                raise StopNow
            manager.chunk_started(job.task_id, chunk, chunks)

        for position, segment_id in enumerate(job.segment_ids, start=1):
            if manager.is_cancelled(job.task_id):
                return TaskStatus.CANCELLED
            state = hand_out(store, job, manager, position, segment_id)
            if state is None:
                continue
            try:
                outcome = _speech_or_error(
                    partial(
                        synthesizer.render,
                        state.text,
                        *state.voicing(spec.casting).spoken(),
                        on_chunk=between_chunks,
                        lexicon=spec.casting.base.lexicon,
                    )
                )
                take_back(store, job, manager, state, outcome)
            except StopNow:  # abandoned, or halted before its recording: nothing recorded
                return TaskStatus.CANCELLED
            if manager.must_stop_now(job.task_id):
                return TaskStatus.CANCELLED
        return TaskStatus.COMPLETED


def _speech_or_error(render: Callable[[], Speech]) -> Speech | Exception:
    """The render's speech, or what it failed with (a stop-now request passes through)."""
    try:
        return render()
    except StopNow:
        raise
    except Exception as exc:
        return exc


def why_not(now: SegmentState | None, rendered: str | None, spec: RenderSpec) -> str | None:
    """The plan's rules, asked again of the segment as it is now: None to go ahead, or
    why to skip it. `rendered`: the text just rendered, which must still be its text."""
    if now is None:
        return Why.removed.value
    if rendered is not None and now.text != rendered:
        return Why.edited.value
    decision = decide(now, spec.casting, spec.rules)
    return None if decision.render else decision.why.value


def hand_out(
    store: ProjectStore, job: BatchJob, manager: TaskManager, position: int, segment_id: int
) -> SegmentState | None:
    """Progress first, then the plan's rules asked again of the segment as it is now: the
    segment to render, or None when it changed since planning (skipped and counted)."""
    with store.session() as session:
        state = state_by_id(session, store, segment_id)
        chapter = chapter_at(session, store, state.sequence_index) if state else None
    manager.update_task_progress(
        job.task_id,
        position,
        segment_id,
        state.sequence_index if state else -1,
        state.text if state else "",
        chapter,
        state.voicing(job.spec.casting).voice if state else None,
    )
    skip = why_not(state, None, job.spec)
    if skip is not None:
        manager.record_skip(job.task_id, skip)
        return None
    return state


def take_back(
    store: ProjectStore,
    job: BatchJob,
    manager: TaskManager,
    state: SegmentState,
    outcome: Speech | Exception,
    handed: TaskSnapshot | None = None,
) -> None:
    """Record a segment's render, or its failure, which is recorded and the batch goes on;
    a storage failure or the model failing ends the batch (raised). `handed`: the task as
    the segment was handed out, where several render at once (see TaskManager)."""
    try:
        if isinstance(outcome, Exception):
            raise outcome
        skip = record_render(
            store, Path(job.audio_dir), state, outcome, job.spec, manager.recording(job.task_id)
        )
    except (ModelUnavailable, StopNow):
        raise  # no segment can be rendered (exit 69); or halted before the recording
    except Exception as exc:
        problem = storage_error(exc, job.db_path, job.audio_dir)
        if problem is not None:
            raise problem from exc
        message = str(exc) or type(exc).__name__
        voice = state.voicing(job.spec.casting).voice
        if voice != job.spec.casting.base.voice:  # a cast voice: say which
            message = f"{message} (voice {voice})"
        manager.add_error(
            job.task_id, SegmentFailure(state.id, state.sequence_index, message), handed
        )
        return
    if skip is None:
        manager.record_success(job.task_id, seconds_of(outcome.samples), handed)
    else:
        manager.record_skip(job.task_id, skip)


def record_render(
    store: ProjectStore,
    folder: Path,
    state: SegmentState,
    speech: Speech,
    spec: RenderSpec,
    gate: AbstractContextManager[object],
) -> str | None:
    """Write a render beside its target, then in one write transaction: ask the plan's
    rules again of the segment as it is now; if it may still be rendered, move the file
    into place and record it, then drop the file it replaces. Returns why it was not
    recorded (the render is then discarded), or None."""
    stamp = state.voicing(spec.casting).fingerprint(state.text)
    target = render_target(store, folder, state.sequence_index, state.id, stamp)
    name = recorded_name(store, target)
    with gate:
        tmp = write_temp_wav(target, speech.samples)
        try:
            with store.writing() as session:
                why = why_not(state_by_id(session, store, state.id), state.text, spec)
                if why is not None:
                    return why
                segment = session.get(Segment, state.id)
                assert segment is not None
                old = segment.audio_file
                publish(tmp, target)
                try:
                    segment.audio_file, segment.audio_duration, segment.audio_fingerprint = (
                        name,
                        seconds_of(speech.samples),
                        stamp,
                    )
                    segment.audio_cues = [list(cue) for cue in speech.cues]
                    segment.verified_audio = segment.verify_findings = None  # judged afresh
                    session.add(segment)
                    session.commit()
                except BaseException:
                    if old != name:  # never recorded: leave no file behind
                        target.unlink(missing_ok=True)
                    raise
        finally:
            tmp.unlink(missing_ok=True)
    if old and old != name and may_remove(store, old):
        audio_path(store, old).unlink(missing_ok=True)
    return None
