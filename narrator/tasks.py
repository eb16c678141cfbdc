"""TaskManager: thread-safe batch task state, snapshots, and their mirror in the file."""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING

from sqlmodel import col, select

from narrator.errors import ProjectBusy, ProjectNotFound
from narrator.models import BatchError, BatchTask, utcnow
from narrator.store import ProjectStore, run_in_progress, take_run_lock

if TYPE_CHECKING:
    from filelock import FileLock


class TaskStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


ACTIVE = (TaskStatus.PENDING, TaskStatus.RUNNING)
INTERRUPTED = "interrupted: the narrator process running this task stopped before it finished"


class StopNow(Exception):
    """Raised in the worker when a stop-now was requested: the segment in hand is
    abandoned, nothing of it recorded."""


@dataclass(frozen=True)
class SegmentFailure:
    segment_id: int
    sequence_index: int
    message: str


@dataclass(frozen=True)
class TaskSnapshot:
    """An immutable view of one task: what displays and other threads read."""

    task_id: str
    project_id: int
    status: TaskStatus
    total_segments: int
    segments_to_process: int
    skipped: dict[str, int]
    voice: str
    speed: float
    lang: str
    current: int = 0
    current_segment_id: int | None = None
    current_index: int | None = None
    current_text: str = ""
    current_chapter: str | None = None  # the last heading at or before the segment in hand
    current_voice: str | None = None  # the voice that speaks the segment in hand
    processed: int = 0
    failed: int = 0
    audio_seconds: float = 0.0
    errors: tuple[SegmentFailure, ...] = ()
    # segments the worker found changed since planning, by reason (locked, removed...)
    skipped_during_run: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    error_kind: str | None = None  # the NarratorError type behind `error`, if any
    cancel_requested: bool = False
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    # what made this snapshot: task_created, task_started, segment_started, chunk,
    # segment_done, segment_failed, segment_skipped, cancel_requested, task_finished
    event: str = "task_created"
    chunk: int = 0  # chunk k of `chunks` of the segment in hand is rendering
    chunks: int = 0
    segment_started: float | None = None
    first_chunk_at: float | None = None  # after the model load, for x real time
    last_audio_seconds: float = 0.0  # the segment that just ended
    last_wall_seconds: float = 0.0
    last_render_seconds: float = 0.0
    render_seconds: float = 0.0  # time spent rendering, model load excluded

    @property
    def x_real_time(self) -> float | None:
        """Seconds of audio per second of rendering, model load excluded."""
        return self.audio_seconds / self.render_seconds if self.render_seconds else None

    @property
    def done(self) -> bool:
        return self.status not in ACTIVE

    @property
    def wall_seconds(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def as_dict(self) -> dict[str, object]:
        return {
            "task_id": self.task_id,
            "project_id": self.project_id,
            "status": self.status.value,
            "total_segments": self.total_segments,
            "segments_to_process": self.segments_to_process,
            "skipped": dict(self.skipped),
            "skipped_during_run": dict(self.skipped_during_run),
            "current": self.current,
            "current_index": self.current_index,
            "current_chapter": self.current_chapter,
            "processed": self.processed,
            "failed": self.failed,
            "voice": self.voice,
            "speed": self.speed,
            "lang": self.lang,
            "audio_seconds": round(self.audio_seconds, 3),
            "wall_seconds": round(self.wall_seconds, 3),
            "x_real_time": round(self.x_real_time, 3) if self.x_real_time else None,
            "error": self.error,
            "error_kind": self.error_kind,
            "errors": [vars(e) for e in self.errors],
        }


class TaskMirror:
    """Writes task state into BatchTask/BatchError so other processes can read it.
    Each call opens its own short session, so any thread may call it."""

    def __init__(self, store: ProjectStore) -> None:
        self._store = store

    def save(self, snap: TaskSnapshot) -> None:
        with self._store.writing() as session:
            row = session.get(BatchTask, snap.task_id) or BatchTask(
                task_id=snap.task_id,
                project_id=snap.project_id,
                status=snap.status.value,
                total_segments=snap.total_segments,
                segments_to_process=snap.segments_to_process,
                voice=snap.voice,
                speed=snap.speed,
                lang=snap.lang,
                pid=os.getpid(),
                skipped_locked=snap.skipped.get("locked", 0),
                skipped_has_audio=snap.skipped.get("has_audio", 0),
                skipped_empty=snap.skipped.get("empty", 0),
            )
            row.status = snap.status.value
            row.current = snap.current
            row.current_segment_id = snap.current_segment_id
            row.current_chapter = snap.current_chapter
            row.processed = snap.processed
            row.failed = snap.failed
            row.audio_seconds = snap.audio_seconds
            row.skipped_during_run = dict(snap.skipped_during_run)
            row.error = snap.error
            row.error_kind = snap.error_kind
            if snap.done:
                row.finished_at = utcnow()
            session.add(row)
            session.commit()

    def add_error(self, task_id: str, failure: SegmentFailure) -> None:
        with self._store.writing() as session:
            session.add(BatchError(task_id=task_id, **vars(failure)))
            session.commit()


class TaskManager:
    """Every task's state under one lock. Writers call the methods below; readers get
    snapshots, or subscribe to a queue that receives every snapshot in order."""

    def __init__(self, mirror: TaskMirror | None = None) -> None:
        self._lock = threading.Lock()
        self._tasks: dict[str, TaskSnapshot] = {}
        self._cancel: dict[str, threading.Event] = {}
        self._abort: dict[str, threading.Event] = {}
        self._recording: dict[str, threading.Lock] = {}
        self._subscribers: dict[str, list[queue.SimpleQueue[TaskSnapshot]]] = {}
        self._mirror = mirror
        self._mirror_lock = threading.Lock()

    def _set(self, task_id: str, event: str, **changes: object) -> TaskSnapshot:
        return self._update(task_id, event, lambda _snap: changes)

    def _update(
        self,
        task_id: str,
        event: str,
        change: Callable[[TaskSnapshot], dict[str, object]],
        save: bool = True,
    ) -> TaskSnapshot:
        """Apply `change` to the current snapshot atomically, then publish the result
        (and write it out, unless `save` is false)."""
        with self._lock:
            current = self._tasks[task_id]
            snap = replace(current, event=event, **change(current))  # type: ignore[arg-type]
            self._tasks[task_id] = snap
            for q in self._subscribers.get(task_id, []):
                q.put(snap)
        if save:
            self._save(task_id)
        return snap

    def _save(self, task_id: str) -> None:
        # Writers race to the database; whoever gets here writes the newest state.
        if self._mirror:
            with self._mirror_lock:
                self._mirror.save(self.snapshot(task_id))

    def create_task(self, snap: TaskSnapshot) -> TaskSnapshot:
        with self._lock:
            self._tasks[snap.task_id] = snap
            self._cancel[snap.task_id] = threading.Event()
            self._abort[snap.task_id] = threading.Event()
            self._recording[snap.task_id] = threading.Lock()
        self._save(snap.task_id)
        return snap

    def subscribe(self, task_id: str) -> queue.SimpleQueue[TaskSnapshot]:
        q: queue.SimpleQueue[TaskSnapshot] = queue.SimpleQueue()
        with self._lock:
            self._subscribers.setdefault(task_id, []).append(q)
            q.put(self._tasks[task_id])
        return q

    def snapshot(self, task_id: str) -> TaskSnapshot:
        with self._lock:
            return self._tasks[task_id]

    def start(self, task_id: str) -> TaskSnapshot:
        return self._set(task_id, "task_started", status=TaskStatus.RUNNING)

    def update_task_progress(
        self,
        task_id: str,
        current: int,
        segment_id: int,
        sequence_index: int,
        text: str,
        chapter: str | None = None,
        voice: str | None = None,
    ) -> TaskSnapshot:
        """Record the segment about to be rendered (before rendering it)."""
        return self._set(
            task_id,
            "segment_started",
            current=current,
            current_segment_id=segment_id,
            current_index=sequence_index,
            current_text=text,
            current_chapter=chapter,
            current_voice=voice,
            chunk=0,
            chunks=0,
            segment_started=time.monotonic(),
            first_chunk_at=None,
        )

    def chunk_started(self, task_id: str, chunk: int, chunks: int) -> TaskSnapshot:
        """Chunk `chunk` of `chunks` of the segment in hand starts (not written out)."""
        return self._update(
            task_id,
            "chunk",
            lambda snap: {
                "chunk": chunk,
                "chunks": chunks,
                "first_chunk_at": snap.first_chunk_at or time.monotonic(),
            },
            save=False,
        )

    @staticmethod
    def _segment_ended(snap: TaskSnapshot, handed: TaskSnapshot | None) -> dict[str, object]:
        """Timings of the segment that ended: the one in hand, or `handed` (the snapshot
        taken as it was handed out, where several render at once), which the event then
        names."""
        now = time.monotonic()
        named = {}
        ended = snap
        if handed is not None:
            named = {
                name: getattr(handed, name)
                for name in (
                    "current",
                    "current_segment_id",
                    "current_index",
                    "current_text",
                    "current_chapter",
                )
            }
            ended = handed
        began = ended.segment_started or now
        render = now - (ended.first_chunk_at or began)
        return named | {
            "last_wall_seconds": now - began,
            "last_render_seconds": render,
            "render_seconds": snap.render_seconds + render,
        }

    def record_success(
        self, task_id: str, audio_seconds: float, handed: TaskSnapshot | None = None
    ) -> TaskSnapshot:
        return self._update(
            task_id,
            "segment_done",
            lambda snap: {
                **self._segment_ended(snap, handed),
                "processed": snap.processed + 1,
                "audio_seconds": snap.audio_seconds + audio_seconds,
                "last_audio_seconds": audio_seconds,
            },
        )

    def add_error(
        self, task_id: str, failure: SegmentFailure, handed: TaskSnapshot | None = None
    ) -> TaskSnapshot:
        if self._mirror:
            self._mirror.add_error(task_id, failure)
        return self._update(
            task_id,
            "segment_failed",
            lambda snap: {
                **self._segment_ended(snap, handed),
                "failed": snap.failed + 1,
                "errors": (*snap.errors, failure),
            },
        )

    def record_skip(self, task_id: str, reason: str) -> TaskSnapshot:
        """A segment the worker found changed since planning (locked now, removed...)."""
        return self._update(
            task_id,
            "segment_skipped",
            lambda snap: {
                "skipped_during_run": snap.skipped_during_run
                | {reason: snap.skipped_during_run.get(reason, 0) + 1},
            },
        )

    def finish(
        self,
        task_id: str,
        status: TaskStatus,
        error: str | None = None,
        error_kind: str | None = None,
    ) -> TaskSnapshot:
        """End the task, once: a task already ended keeps how it ended. The state is set
        before it is written out: if the file cannot take the write, the task has still
        ended for this process."""
        return self._update(
            task_id,
            "task_finished",
            lambda snap: (
                {}
                if snap.done
                else {
                    "status": status,
                    "error": error,
                    "error_kind": error_kind,
                    "finished": time.monotonic(),
                }
            ),
        )

    def fail_storage(self, task_id: str, error: Exception) -> TaskSnapshot:
        """Storage refused a write: the run stops. Set in memory first, then written out
        if the file will take it; a task never finished on disk shows as interrupted."""
        snap = self._update(
            task_id,
            "task_finished",
            lambda snap: {
                "status": snap.status if snap.done else TaskStatus.FAILED,
                "error": str(error),
                "error_kind": type(error).__name__,
                "finished": snap.finished or time.monotonic(),
            },
            save=False,
        )
        with contextlib.suppress(Exception):  # the disk may have room again, or not
            self._save(task_id)
        return snap

    def request_cancel(self, task_id: str, now: bool = False) -> None:
        """Stop after the segment in hand; `now`: at the next chunk boundary inside it
        (the unfinished segment is discarded)."""
        self._cancel[task_id].set()
        if now:
            self._abort[task_id].set()
        # the worker meets any storage failure on its own next write and stops on it
        with contextlib.suppress(Exception):
            self._set(task_id, "cancel_requested", cancel_requested=True)

    def is_cancelled(self, task_id: str) -> bool:
        return self._cancel[task_id].is_set()

    def must_stop_now(self, task_id: str) -> bool:
        return self._abort[task_id].is_set()

    @contextlib.contextmanager
    def recording(self, task_id: str) -> Iterator[None]:
        """Held by the worker while it writes a render, moves it into place and records
        it. After halt() it is never granted again: StopNow."""
        gate, abort = self._recording[task_id], self._abort[task_id]
        while not gate.acquire(timeout=0.05):
            if abort.is_set() and gate.locked():
                raise StopNow
        try:
            yield
        finally:
            gate.release()

    def halt(self, task_id: str, timeout: float = 5.0) -> bool:
        """Stop at once: wait for a recording in progress, then keep the worker from
        starting another, or another segment. True when no recording can be half done."""
        self._cancel[task_id].set()
        self._abort[task_id].set()
        return self._recording[task_id].acquire(timeout=timeout)


def _from_row(row: BatchTask, errors: list[BatchError], running: bool | None) -> TaskSnapshot:
    wall = (row.finished_at or utcnow()).replace(tzinfo=None) - row.created_at.replace(tzinfo=None)
    status, error = TaskStatus(row.status), row.error
    if status in ACTIVE and running is False:
        # nobody holds the run lock: the process died; the next run records this too
        status, error = TaskStatus.FAILED, INTERRUPTED
    return TaskSnapshot(
        task_id=row.task_id,
        project_id=row.project_id,
        status=status,
        total_segments=row.total_segments,
        segments_to_process=row.segments_to_process,
        skipped={
            "locked": row.skipped_locked,
            "has_audio": row.skipped_has_audio,
            "empty": row.skipped_empty,
        },
        voice=row.voice,
        speed=row.speed,
        lang=row.lang,
        current=row.current,
        current_segment_id=row.current_segment_id,
        current_chapter=row.current_chapter,
        processed=row.processed,
        failed=row.failed,
        audio_seconds=row.audio_seconds,
        error=error,
        error_kind=row.error_kind,
        skipped_during_run=dict(row.skipped_during_run or {}),
        errors=tuple(SegmentFailure(e.segment_id, e.sequence_index, e.message) for e in errors),
        started=0.0,
        finished=wall.total_seconds(),
    )


def load_tasks(store: ProjectStore, task_id: str | None = None) -> list[TaskSnapshot]:
    """Tasks recorded in the file, newest first; only `task_id` when given. A task left
    PENDING or RUNNING while no process holds the run lock is shown as interrupted."""
    running = run_in_progress(store.path)
    with store.session() as session:
        query = select(BatchTask).where(BatchTask.project_id == store.project_id)
        if task_id:
            query = query.where(BatchTask.task_id == task_id)
        rows = list(session.exec(query.order_by(col(BatchTask.created_at).desc())))
        if task_id and not rows:
            raise ProjectNotFound(f"no task {task_id} in {store.path}; see `narrator tasks`")
        errors: dict[str, list[BatchError]] = {}
        for err in session.exec(
            select(BatchError).where(col(BatchError.task_id).in_([r.task_id for r in rows]))
        ):
            errors.setdefault(err.task_id, []).append(err)
        return [_from_row(r, errors.get(r.task_id, []), running) for r in rows]


def active_task(store: ProjectStore) -> BatchTask | None:
    with store.session() as session:
        return session.exec(
            select(BatchTask)
            .where(col(BatchTask.status).in_([s.value for s in ACTIVE]))
            .order_by(col(BatchTask.created_at).desc())
        ).first()


def mark_interrupted(store: ProjectStore) -> list[str]:
    """Tasks still PENDING/RUNNING when nobody holds the run lock were interrupted:
    mark them FAILED with the reason. Call only while holding the lock."""
    with store.writing() as session:
        rows = list(
            session.exec(
                select(BatchTask).where(col(BatchTask.status).in_([s.value for s in ACTIVE]))
            )
        )
        for row in rows:
            row.status = TaskStatus.FAILED.value
            row.error = INTERRUPTED
            row.finished_at = utcnow()
            session.add(row)
        session.commit()
        return [r.task_id for r in rows]


def run_lock(store: ProjectStore) -> FileLock:
    """One run at a time per project file, whatever path names it."""
    lock = take_run_lock(store.path)
    if lock is None:
        running = active_task(store)
        who = (
            f"task {running.task_id} (pid {running.pid}) is rendering"
            if running
            else "another narrator command (a run or an export) holds"
        )
        raise ProjectBusy(f"{who} {store.path}; wait for it, or see `narrator status`")
    return lock
