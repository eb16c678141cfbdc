import threading
from dataclasses import FrozenInstanceError

import pytest

from narrator.tasks import SegmentFailure, TaskManager, TaskSnapshot, TaskStatus


def new_task(manager: TaskManager, n: int = 3) -> str:
    manager.create_task(
        TaskSnapshot(
            task_id="t",
            project_id=1,
            status=TaskStatus.PENDING,
            total_segments=n,
            segments_to_process=n,
            skipped={},
            voice="af_heart",
            speed=1.0,
            lang="a",
        )
    )
    return "t"


def test_snapshots_are_immutable_and_ordered() -> None:
    manager = TaskManager()
    task = new_task(manager)
    updates = manager.subscribe(task)
    manager.start(task)
    manager.update_task_progress(task, 1, 10, 1, "hello")
    manager.record_success(task, 1.5)
    manager.add_error(task, SegmentFailure(11, 2, "boom"))
    manager.finish(task, TaskStatus.COMPLETED)
    seen = [updates.get_nowait() for _ in range(6)]
    assert [s.status for s in seen] == [
        TaskStatus.PENDING,
        TaskStatus.RUNNING,
        *[TaskStatus.RUNNING] * 3,
        TaskStatus.COMPLETED,
    ]
    final = seen[-1]
    assert (final.processed, final.failed, final.audio_seconds) == (1, 1, 1.5)
    assert final.errors == (SegmentFailure(11, 2, "boom"),)
    with pytest.raises(FrozenInstanceError):
        final.processed = 5  # type: ignore[misc]


def test_cancel_flag() -> None:
    manager = TaskManager()
    task = new_task(manager)
    assert not manager.is_cancelled(task)
    manager.request_cancel(task)
    assert manager.is_cancelled(task) and manager.snapshot(task).cancel_requested


def test_concurrent_writers_lose_nothing() -> None:
    manager = TaskManager()
    task = new_task(manager, 4000)

    def work() -> None:
        for _ in range(1000):
            manager.record_success(task, 0.001)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # record_success reads then writes: it must do so atomically
    assert manager.snapshot(task).processed == 4000
