"""Progress views fed from task snapshots: a Rich live bar, plain lines, JSON lines, or
nothing; and following a run, signals included."""

from __future__ import annotations

import json
import queue
import signal
import sys
import time
from enum import StrEnum
from typing import TYPE_CHECKING, NoReturn, Protocol, TextIO

from narrator.text import printable_line

if TYPE_CHECKING:  # the CLI imports ProgressMode at start-up: keep this module light
    from narrator.batch import BatchRun
    from narrator.listening import Listener, Verdict
    from narrator.tasks import TaskSnapshot
    from narrator.verify import Finding


class ProgressMode(StrEnum):
    auto = "auto"
    bar = "bar"
    plain = "plain"
    jsonl = "jsonl"
    none = "none"


# Plain mode says something at least this often while a long segment renders.
HEARTBEAT_S = 30.0


def preview(text: str, width: int = 40) -> str:
    """The text on one line, cut to `width` characters, with nothing a terminal would
    take as a command."""
    text = printable_line(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def describe_finding(finding: Finding) -> str:
    """ "missing_end at 4.2 s: 3 words not heard: ...", on one line."""
    return f"{finding.kind} at {finding.at:.1f} s: {printable_line(finding.detail)}"


def _speed(audio: float, seconds: float) -> str:
    return f"{audio / seconds:.2f}x real time" if seconds > 0 and audio else "-"


class ProgressView(Protocol):
    def update(self, snap: TaskSnapshot) -> None:
        """Every snapshot, in order; `snap.event` says what changed."""

    def tick(self, snap: TaskSnapshot) -> None:
        """Called a few times a second between updates (for heartbeats)."""

    def verdict(self, verdict: Verdict) -> None:
        """A recorded segment, judged (generate-all --verify)."""

    def note(self, message: str) -> None: ...
    def close(self) -> None: ...


class SilentView:
    def update(self, snap: TaskSnapshot) -> None:
        pass

    def tick(self, snap: TaskSnapshot) -> None:
        pass

    def verdict(self, verdict: Verdict) -> None:
        pass

    def note(self, message: str) -> None:
        pass

    def close(self) -> None:
        pass


class PlainView:
    """Lines on stderr for logs and CI: when a segment starts, when it ends (audio, time,
    speed), and a heartbeat while a long one renders."""

    def __init__(self, stream: TextIO | None = None, heartbeat: float | None = None) -> None:
        self._stream = stream or sys.stderr
        self._heartbeat = HEARTBEAT_S if heartbeat is None else heartbeat
        self._last_line = time.monotonic()

    def _print(self, line: str) -> None:
        print(line, file=self._stream, flush=True)
        self._last_line = time.monotonic()

    @staticmethod
    def _head(snap: TaskSnapshot) -> str:
        return f"[{snap.current}/{snap.segments_to_process}] segment {snap.current_index}"

    def update(self, snap: TaskSnapshot) -> None:
        head = self._head(snap)
        if snap.event == "segment_started":
            chapter = snap.current_chapter
            inside = chapter and chapter != snap.current_text
            where = f" ({preview(chapter, 30)})" if inside else ""
            self._print(f"{head}{where}: {preview(snap.current_text)}")
        elif snap.event == "segment_done":
            speed = _speed(snap.last_audio_seconds, snap.last_render_seconds)
            self._print(
                f"{head} done: {snap.last_audio_seconds:.1f}s of audio in "
                f"{snap.last_wall_seconds:.1f}s ({speed})"
            )
        elif snap.event == "segment_failed":
            self._print(f"{head} failed: {snap.errors[-1].message}")
        elif snap.event == "segment_skipped":
            self._print(f"{head} skipped: changed during the run")

    def tick(self, snap: TaskSnapshot) -> None:
        if snap.done or snap.segment_started is None:
            return
        now = time.monotonic()
        if now - self._last_line >= self._heartbeat:
            where = f"chunk {snap.chunk} of {snap.chunks}" if snap.chunks else "starting"
            self._print(
                f"{self._head(snap)} still rendering: {where}, "
                f"{now - snap.segment_started:.0f}s so far"
            )

    def verdict(self, verdict: Verdict) -> None:
        if verdict.ok:
            self._print(f"segment {verdict.index} verified")
        for finding in verdict.findings:
            self._print(f"segment {verdict.index} flagged: {describe_finding(finding)}")

    def note(self, message: str) -> None:
        self._print(message)

    def close(self) -> None:
        pass


class JsonlView:
    """One JSON object per event on stderr, for programs that follow a run."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._started = False
        self._task_id: str | None = None

    def _emit(self, record: dict[str, object]) -> None:
        print(json.dumps(record, ensure_ascii=False), file=self._stream, flush=True)

    def update(self, snap: TaskSnapshot) -> None:
        self._task_id = snap.task_id
        if not self._started:  # subscribed late: the first snapshot may be past the start
            self._started = True
            if snap.event not in ("task_created", "task_started"):
                self._emit(
                    {"event": "task_started", "time": round(time.time(), 3)} | snap.as_dict()
                )
        record: dict[str, object] = {
            "event": snap.event,
            "task_id": snap.task_id,
            "time": round(time.time(), 3),
        }
        if snap.event in ("task_created", "task_started", "task_finished"):
            record |= snap.as_dict()
        elif snap.event in ("cancel_requested",):
            pass
        else:
            record |= {
                "position": snap.current,
                "of": snap.segments_to_process,
                "segment_id": snap.current_segment_id,
                "sequence_index": snap.current_index,
                "chapter": snap.current_chapter,
                "voice": snap.current_voice,
            }
            if snap.event == "chunk":
                record |= {"chunk": snap.chunk, "chunks": snap.chunks}
            elif snap.event == "segment_done":
                record |= {
                    "audio_seconds": round(snap.last_audio_seconds, 3),
                    "wall_seconds": round(snap.last_wall_seconds, 3),
                    "render_seconds": round(snap.last_render_seconds, 3),
                }
            elif snap.event == "segment_failed":
                record |= {"message": snap.errors[-1].message}
            elif snap.event == "segment_skipped":
                record |= {"skipped_during_run": dict(snap.skipped_during_run)}
        self._emit(record)

    def tick(self, snap: TaskSnapshot) -> None:
        pass

    def verdict(self, verdict: Verdict) -> None:
        record = verdict.as_dict()
        record["sequence_index"] = record.pop("index")  # as in the other segment events
        event = "segment_verified" if verdict.ok else "segment_flagged"
        self._emit(
            {"event": event, "task_id": self._task_id, "time": round(time.time(), 3)} | record
        )

    def note(self, message: str) -> None:
        self._emit({"event": "note", "message": message})

    def close(self) -> None:
        pass


class BarView:
    """A Rich live display: bar, i/N, segment and chunk, elapsed, ETA, audio, speed."""

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
        speed = f" {snap.x_real_time:.2f}x real time" if snap.x_real_time else ""
        segment = (
            f"#{snap.current_index} {preview(snap.current_text, 30)}"
            if snap.current_index is not None
            else "starting"
        )
        if snap.chunks > 1:
            segment += f" ({snap.chunk}/{snap.chunks})"
        if snap.cancel_requested and not snap.done:
            segment = f"cancelling: finishing #{snap.current_index}"
        done = snap.processed + snap.failed + sum(snap.skipped_during_run.values())
        self._progress.update(
            self._task,
            total=snap.segments_to_process,
            completed=done,
            description=segment,
            audio=f"{snap.audio_seconds:.1f}s audio{speed}",
        )

    def tick(self, snap: TaskSnapshot) -> None:
        pass

    def verdict(self, verdict: Verdict) -> None:
        for finding in verdict.findings:
            self.note(f"segment {verdict.index} flagged: {describe_finding(finding)}")

    def note(self, message: str) -> None:
        self._progress.console.print(message, markup=False, highlight=False)

    def close(self) -> None:
        self._progress.stop()


def make_view(mode: ProgressMode) -> ProgressView:
    """`auto`: the live bar on a terminal, plain lines elsewhere."""
    if mode is ProgressMode.auto:
        mode = ProgressMode.bar if sys.stderr.isatty() else ProgressMode.plain
    views = {
        ProgressMode.bar: BarView,
        ProgressMode.plain: PlainView,
        ProgressMode.jsonl: JsonlView,
    }
    return views.get(mode, SilentView)()


def follow_run(
    run: BatchRun, view: ProgressView, poll: float = 0.1, listener: Listener | None = None
) -> TaskSnapshot:
    """Draw a running batch until it ends. A first SIGINT lets the segment in hand finish;
    SIGTERM (what CI sends before a kill), or a second signal of either kind, stops at
    once: the segment in hand is abandoned wherever its render is (a recording under way
    completes first). Every path ends CANCELLED, with only recorded files in the audio
    folder. `listener`: each recorded segment is handed to it, its verdicts shown as they
    come, and the last ones waited for; a signal stops it (what it has not judged stays
    unjudged)."""
    assert run.manager is not None and run.task_id is not None and run.future is not None
    manager, task_id, future = run.manager, run.task_id, run.future
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        # Only note it: the main thread may be anywhere, holding any lock, when one lands.
        received.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    updates = run.updates
    assert updates is not None
    handled = 0
    halted = False
    told = False  # that the render is done and the last recordings are being heard
    try:
        while not future.done() or not updates.empty() or (listener and listener.pending):
            if len(received) > handled:
                handled = len(received)
                if listener is not None:
                    if listener.pending:
                        view.note(
                            f"Stopped listening: {listener.pending} recorded segments not "
                            "checked (`narrator verify` checks them)"
                        )
                    listener.close()
                if not future.done():
                    if handled > 1 or received[0] == signal.SIGTERM:
                        view.note("Stopping now: the segment in hand is abandoned")
                        halted = True
                        _stop_at_once(run, view)
                    run.cancel()
                    view.note(
                        "Cancelling: the segment in hand will finish (Ctrl-C again: stop now)"
                    )
            try:
                snap = updates.get(timeout=poll)
            except queue.Empty:
                view.tick(manager.snapshot(task_id))
            else:
                view.update(snap)
                if listener is not None and snap.event == "segment_done":
                    listener.recorded(snap.current_segment_id)  # type: ignore[arg-type]
            if listener is not None and len(received) == handled:  # a signal comes first
                for verdict in listener.ready():
                    view.verdict(verdict)
                if not told and future.done() and updates.empty() and listener.pending:
                    told = True
                    view.note(f"Listening to the last {listener.pending} recorded segments")
        final = run.wait()
        assert final is not None
        return final
    finally:
        for sig, handler in previous.items():
            # once halted, the process is ending: later signals must not interrupt that
            signal.signal(sig, signal.SIG_IGN if halted else handler)
        view.close()


class Halted(Exception):
    """A signal halted the worker where it was: the caller must end the process without
    waiting for it. Further signals are ignored."""


def _stop_at_once(run: BatchRun, view: ProgressView) -> NoReturn:
    run.halt("stopped at once by a signal")
    view.close()
    raise Halted


class ExportMeter:
    """An export's progress through its passes over the audio (measuring, limiting,
    encoding): a Rich bar, plain lines (every tenth, or a heartbeat), JSON lines, or
    nothing. Call it with (stage, samples done since the last call)."""

    def __init__(
        self,
        mode: ProgressMode,
        seconds: float,
        rate: int,
        passes: int = 2,
        stream: TextIO | None = None,
    ) -> None:
        if mode is ProgressMode.auto:
            mode = ProgressMode.bar if sys.stderr.isatty() else ProgressMode.plain
        self._mode, self._rate = mode, rate
        self._total = passes * seconds  # each second of audio is read `passes` times
        self._stream = stream or sys.stderr
        self._done = self._said = 0.0
        self._started = self._last_line = time.monotonic()
        self._bar = None
        if mode is ProgressMode.bar:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("{task.description:<9}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self._task = self._bar.add_task("measuring", total=self._total)
            self._bar.start()

    def __call__(self, stage: str, samples: int) -> None:
        self._done += samples / self._rate
        now = time.monotonic()
        if self._bar is not None:
            self._bar.update(self._task, completed=min(self._done, self._total), description=stage)
        elif self._mode is ProgressMode.plain and (
            self._done - self._said >= self._total / 10 or now - self._last_line >= HEARTBEAT_S
        ):
            print(
                f"{stage}: {100 * self._done / self._total:.0f}% "
                f"({_speed(self._done, now - self._started)})",
                file=self._stream,
                flush=True,
            )
            self._said, self._last_line = self._done, now
        elif self._mode is ProgressMode.jsonl and self._done - self._said >= self._total / 20:
            print(
                json.dumps(
                    {
                        "event": "export_progress",
                        "stage": stage,
                        "done": round(self._done / self._total, 3),
                        "time": round(time.time(), 3),
                    }
                ),
                file=self._stream,
                flush=True,
            )
            self._said = self._done

    def __enter__(self) -> ExportMeter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
