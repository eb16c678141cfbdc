"""TaskManager: thread-safe batch task state, snapshots, and their mirror in the file."""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum

from sqlmodel import col, select

from narrator.errors import ProjectNotFound
from narrator.models import BatchError, BatchTask, utcnow
from narrator.store import ProjectStore


class TaskStatus(str, Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


ACTIVE = (TaskStatus.PENDING, TaskStatus.RUNNING)
INTERRUPTED = "interrupted: the narrator process running this task stopped before it finished"


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
    processed: int = 0
    failed: int = 0
    audio_seconds: float = 0.0
    errors: tuple[SegmentFailure, ...] = ()
    error: str | None = None
    cancel_requested: bool = False
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

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
            "current": self.current,
            "current_index": self.current_index,
            "processed": self.processed,
            "failed": self.failed,
            "voice": self.voice,
            "speed": self.speed,
            "lang": self.lang,
            "audio_seconds": round(self.audio_seconds, 3),
            "wall_seconds": round(self.wall_seconds, 3),
            "error": self.error,
            "errors": [vars(e) for e in self.errors],
        }


class TaskMirror:
    """Writes task state into BatchTask/BatchError so other processes can read it.
    Each call opens its own short session, so any thread may call it."""

    def __init__(self, store: ProjectStore) -> None:
        self._store = store

    def save(self, snap: TaskSnapshot) -> None:
        with self._store.session() as session:
            row = session.get(BatchTask, snap.task_id) or BatchTask(
                task_id=snap.task_id, project_id=snap.project_id, status=snap.status.value,
                total_segments=snap.total_segments, segments_to_process=snap.segments_to_process,
                voice=snap.voice, speed=snap.speed, lang=snap.lang, pid=os.getpid(),
                skipped_locked=snap.skipped.get("locked", 0),
                skipped_has_audio=snap.skipped.get("has_audio", 0),
                skipped_empty=snap.skipped.get("empty", 0),
            )
            row.status = snap.status.value
            row.current = snap.current
            row.current_segment_id = snap.current_segment_id
            row.processed = snap.processed
            row.failed = snap.failed
            row.audio_seconds = snap.audio_seconds
            row.error = snap.error
            if snap.done:
                row.finished_at = utcnow()
            session.add(row)
            session.commit()

    def add_error(self, task_id: str, failure: SegmentFailure) -> None:
        with self._store.session() as session:
            session.add(BatchError(task_id=task_id, **vars(failure)))
            session.commit()


class TaskManager:
    """Every task's state under one lock. Writers call the methods below; readers get
    snapshots, or subscribe to a queue that receives every snapshot in order."""

    def __init__(self, mirror: TaskMirror | None = None) -> None:
        self._lock = threading.Lock()
        self._tasks: dict[str, TaskSnapshot] = {}
        self._cancel: dict[str, threading.Event] = {}
        self._subscribers: dict[str, list[queue.SimpleQueue[TaskSnapshot]]] = {}
        self._mirror = mirror
        self._mirror_lock = threading.Lock()

    def _set(self, task_id: str, **changes: object) -> TaskSnapshot:
        return self._update(task_id, lambda _snap: changes)

    def _update(
        self, task_id: str, change: Callable[[TaskSnapshot], dict[str, object]]
    ) -> TaskSnapshot:
        """Apply `change` to the current snapshot atomically, then publish the result."""
        with self._lock:
            current = self._tasks[task_id]
            snap = replace(current, **change(current))  # type: ignore[arg-type]
            self._tasks[task_id] = snap
            for q in self._subscribers.get(task_id, []):
                q.put(snap)
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
        return self._set(task_id, status=TaskStatus.RUNNING)

    def update_task_progress(
        self, task_id: str, current: int, segment_id: int, sequence_index: int, text: str
    ) -> TaskSnapshot:
        """Record the segment about to be rendered (before rendering it)."""
        return self._set(
            task_id, current=current, current_segment_id=segment_id,
            current_index=sequence_index, current_text=text,
        )

    def record_success(self, task_id: str, audio_seconds: float) -> TaskSnapshot:
        return self._update(task_id, lambda snap: {
            "processed": snap.processed + 1, "audio_seconds": snap.audio_seconds + audio_seconds,
        })

    def add_error(self, task_id: str, failure: SegmentFailure) -> TaskSnapshot:
        if self._mirror:
            self._mirror.add_error(task_id, failure)
        return self._update(task_id, lambda snap: {
            "failed": snap.failed + 1, "errors": (*snap.errors, failure),
        })

    def finish(self, task_id: str, status: TaskStatus, error: str | None = None) -> TaskSnapshot:
        return self._set(task_id, status=status, error=error, finished=time.monotonic())

    def request_cancel(self, task_id: str) -> None:
        self._cancel[task_id].set()
        self._set(task_id, cancel_requested=True)

    def is_cancelled(self, task_id: str) -> bool:
        return self._cancel[task_id].is_set()


def _from_row(row: BatchTask, errors: list[BatchError]) -> TaskSnapshot:
    wall = (row.finished_at or utcnow()).replace(tzinfo=None) - row.created_at.replace(
        tzinfo=None
    )
    return TaskSnapshot(
        task_id=row.task_id, project_id=row.project_id, status=TaskStatus(row.status),
        total_segments=row.total_segments, segments_to_process=row.segments_to_process,
        skipped={"locked": row.skipped_locked, "has_audio": row.skipped_has_audio,
                 "empty": row.skipped_empty},
        voice=row.voice, speed=row.speed, lang=row.lang, current=row.current,
        current_segment_id=row.current_segment_id, processed=row.processed, failed=row.failed,
        audio_seconds=row.audio_seconds, error=row.error,
        errors=tuple(SegmentFailure(e.segment_id, e.sequence_index, e.message) for e in errors),
        started=0.0, finished=wall.total_seconds(),
    )


def load_tasks(store: ProjectStore, task_id: str | None = None) -> list[TaskSnapshot]:
    """Tasks recorded in the file, newest first; only `task_id` when given."""
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
        return [_from_row(r, errors.get(r.task_id, [])) for r in rows]


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
    with store.session() as session:
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

