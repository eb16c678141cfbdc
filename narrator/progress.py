"""Progress views fed from task snapshots: a Rich live bar, plain lines, or nothing."""

from __future__ import annotations

import os
import queue
import signal
import sys
from enum import Enum
from typing import TYPE_CHECKING, Protocol, TextIO

if TYPE_CHECKING:  # the CLI imports ProgressMode at start-up: keep this module light
    from narrator.batch import BatchRun
    from narrator.tasks import TaskSnapshot


class ProgressMode(str, Enum):
    auto = "auto"
    bar = "bar"
    plain = "plain"
    none = "none"


def _preview(text: str, width: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


class ProgressView(Protocol):
    def update(self, snap: TaskSnapshot) -> None: ...
    def note(self, message: str) -> None: ...
    def close(self) -> None: ...


class SilentView:
    def update(self, snap: TaskSnapshot) -> None:
        pass

    def note(self, message: str) -> None:
        pass

    def close(self) -> None:
        pass


class PlainView:
    """One line per segment on stderr, for logs and CI."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._current = 0
        self._failed = 0

    def _print(self, line: str) -> None:
        print(line, file=self._stream, flush=True)

    def update(self, snap: TaskSnapshot) -> None:
        if snap.current != self._current and snap.current_index is not None:
            self._current = snap.current
            self._print(
                f"[{snap.current}/{snap.segments_to_process}] segment {snap.current_index}: "
                f"{_preview(snap.current_text)}"
            )
        for failure in snap.errors[self._failed :]:
            self._print(f"  segment {failure.sequence_index} failed: {failure.message}")
        self._failed = len(snap.errors)

    def note(self, message: str) -> None:
        self._print(message)

    def close(self) -> None:
        pass


class BarView:
    """A Rich live display: bar, i/N, segment, elapsed, ETA, audio seconds, x real time."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[audio]}"),
            console=Console(stderr=True),
            transient=False,
        )
        self._task = self._progress.add_task("starting", total=None, audio="")
        self._progress.start()

    def update(self, snap: TaskSnapshot) -> None:
        wall = snap.wall_seconds
        speed = f" {snap.audio_seconds / wall:.2f}x real time" if snap.audio_seconds else ""
        segment = (
            f"#{snap.current_index} {_preview(snap.current_text, 30)}"
            if snap.current_index is not None else "starting"
        )
        if snap.cancel_requested and not snap.done:
            segment = f"cancelling: finishing #{snap.current_index}"
        self._progress.update(
            self._task, total=snap.segments_to_process, completed=snap.processed + snap.failed,
            description=segment, audio=f"{snap.audio_seconds:.1f}s audio{speed}",
        )

    def note(self, message: str) -> None:
        self._progress.console.print(message)

    def close(self) -> None:
        self._progress.stop()


def make_view(mode: ProgressMode) -> ProgressView:
    """`auto`: the live bar on a terminal, plain lines elsewhere."""
    if mode is ProgressMode.auto:
        mode = ProgressMode.bar if sys.stderr.isatty() else ProgressMode.plain
    if mode is ProgressMode.bar:
        return BarView()
    if mode is ProgressMode.plain:
        return PlainView()
    return SilentView()



class _StopNow(Exception):
    """A second Ctrl-C: stop without waiting for the segment in hand."""


def follow_run(run: BatchRun, view: ProgressView, poll: float = 0.1) -> TaskSnapshot:
    """Draw a running batch until it ends. The first SIGINT/SIGTERM asks the worker to
    stop after the segment in hand; a second one ends the process at once."""
    from narrator.engine.audio import remove_temp_files
    from narrator.tasks import TaskStatus

    assert run.manager is not None and run.task_id is not None and run.future is not None
    manager, task_id, future = run.manager, run.task_id, run.future
    interrupts = 0

    def on_signal(_signum: int, _frame: object) -> None:
        # Only count here: the main thread may hold the manager's lock when a signal lands.
        nonlocal interrupts
        interrupts += 1
        if interrupts > 1:
            raise _StopNow

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    updates = manager.subscribe(task_id)
    announced = False
    try:
        while not future.done() or not updates.empty():
            if interrupts and not announced:
                announced = True
                run.cancel()
                view.note("Cancelling: the segment in hand will finish (Ctrl-C again: stop now)")
            try:
                view.update(updates.get(timeout=poll))
            except queue.Empty:
                continue
        final = run.wait()
        assert final is not None
        return final
    except _StopNow:
        manager.finish(task_id, TaskStatus.CANCELLED, error="stopped at once by a second interrupt")
        view.close()
        if run.audio_dir is not None:
            remove_temp_files(run.audio_dir)
        print("Stopped.", file=sys.stderr, flush=True)
        os._exit(130)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        view.close()
