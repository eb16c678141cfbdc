"""Progress views fed from task snapshots: a Rich live bar, plain lines, or nothing."""

from __future__ import annotations

import queue
import signal
import sys
from enum import StrEnum
from typing import TYPE_CHECKING, NoReturn, Protocol, TextIO

if TYPE_CHECKING:  # the CLI imports ProgressMode at start-up: keep this module light
    from narrator.batch import BatchRun
    from narrator.tasks import TaskSnapshot


class ProgressMode(StrEnum):
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



def follow_run(run: BatchRun, view: ProgressView, poll: float = 0.1) -> TaskSnapshot:
    """Draw a running batch until it ends. A first SIGINT lets the segment in hand finish;
    a first SIGTERM (what CI sends before a kill) abandons it at the next chunk boundary;
    a second signal of either kind stops at once. Every path ends CANCELLED, with only
    recorded files in the audio folder."""
    assert run.manager is not None and run.task_id is not None and run.future is not None
    manager, task_id, future = run.manager, run.task_id, run.future
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        # Only note it: the main thread may be anywhere, holding any lock, when one lands.
        received.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    updates = manager.subscribe(task_id)
    handled = 0
    try:
        while not future.done() or not updates.empty():
            if len(received) > handled:
                handled = len(received)
                if handled > 1:
                    _stop_at_once(run, view)
                if received[0] == signal.SIGTERM:
                    run.cancel(now=True)
                    view.note("Cancelling: stopping inside the segment in hand "
                              "(signal again: stop now)")
                else:
                    run.cancel()
                    view.note("Cancelling: the segment in hand will finish "
                              "(Ctrl-C again: stop now)")
            try:
                view.update(updates.get(timeout=poll))
            except queue.Empty:
                continue
        final = run.wait()
        assert final is not None
        return final
    finally:
        for sig, handler in previous.items():
            # once halted, the process is ending: later signals must not interrupt that
            signal.signal(sig, signal.SIG_IGN if len(received) > 1 else handler)
        view.close()


class Halted(Exception):
    """A second signal halted the worker where it was: the caller must end the process
    without waiting for it. Further signals are only counted."""


def _stop_at_once(run: BatchRun, view: ProgressView) -> NoReturn:
    run.halt("stopped at once by a second signal")
    view.close()
    raise Halted
