"""`narrator verify`: judge each segment's current audio (narrator.verify) and record the
verdict with the audio it judged, so that a new render is judged afresh."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlmodel import col, select

from narrator.audiofiles import audio_path
from narrator.errors import MissingExtra
from narrator.models import Segment
from narrator.planning import AudioState, Casting, SegmentState
from narrator.project import only, read_settings, segment_states, state_by_id
from narrator.store import ProjectStore
from narrator.verify import RATE, Finding, Heard, hear, judge, recogniser_missing

# The languages the recogniser (pocketsphinx's US English model) can follow.
HEARD_LANGS = "ab"


@dataclass(frozen=True)
class Verdict:
    """One segment's audio, judged: its findings (none: it passes)."""

    index: int
    seconds: float
    findings: list[Finding] = field(default_factory=list)
    heard: bool = True  # False: the signal checks only (a language the recogniser lacks)

    @property
    def ok(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict[str, object]:
        return {
            "index": self.index,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "heard": self.heard,
            "findings": [f.as_dict() for f in self.findings],
        }


def verify_project(
    store: ProjectStore,
    specs: Sequence[str] = (),
    again: bool = False,
    on_verdict: Callable[[Verdict], None] = lambda verdict: None,
) -> list[Verdict]:
    """Judge the current audio of the selected segments (all by default) that has no verdict
    yet (`again`: every one), and record each verdict. MissingExtra (69) when English audio
    is to be heard and the recogniser is not installed."""
    settings = read_settings(store)
    casting = settings.casting
    with store.session() as session:
        rows = session.exec(
            select(Segment.id, Segment.audio_cues, Segment.verified_audio).where(
                Segment.project_id == store.project_id
            )
        ).all()
    extra = {id_: (cues, judged) for id_, cues, judged in rows}
    states = segment_states(store)
    todo = [
        s
        for s in (only(states, specs) if specs else states)
        if s.audio(casting) is AudioState.current and (again or extra[s.id][1] != s.audio_file)
    ]
    require_recogniser(s.voicing(casting).lang for s in todo)
    with Listener(store, casting) as listener:
        for state in todo:
            listener.submit(state, extra[state.id][0])
        while listener.pending:
            for verdict in listener.ready(wait=True):
                on_verdict(verdict)
    return listener.verdicts


def require_recogniser(langs: Iterable[str]) -> None:
    """MissingExtra (69) when any of these languages is to be heard and the recogniser is
    not installed."""
    if any(lang in HEARD_LANGS for lang in langs) and (missing := recogniser_missing()):
        raise MissingExtra(missing)


def summarise(
    verdicts: list[Verdict], unjudged: int = 0, trouble: str | None = None
) -> dict[str, object]:
    """Verdicts counted, as `verify --json` and `generate-all --verify --json` give them."""
    return {
        "checked": len(verdicts),
        "flagged": sum(not v.ok for v in verdicts),
        "by_signal_only": sum(not v.heard for v in verdicts),
        "not_checked": unjudged,
        "trouble": trouble,
        "segments": [v.as_dict() for v in verdicts],
    }


class Listener:
    """Judges recorded audio as it is handed in: the recogniser runs in worker processes
    (it is CPU-bound), and each verdict is judged and recorded on the thread that asks for
    it, in the order the segments came."""

    def __init__(self, store: ProjectStore, casting: Casting, beside: bool = False) -> None:
        """`casting`: who speaks what (a segment's language says whether it is heard; the
        lexicon, what it should say). `beside`: a render runs beside it, and comes first:
        the recogniser takes only the CPU time the render leaves."""
        self._store = store
        self._casting = casting
        self._beside = beside
        self._pool: ProcessPoolExecutor | None = None
        self._queue: deque[_Hearing] = deque()
        self.verdicts: list[Verdict] = []  # every verdict given, in order
        self.unjudged = 0  # segments handed in and never judged
        self.trouble: str | None = None  # why one could not be judged (the first reason)
        self.stopped = False  # closed before it had judged all it was handed
        self._closed = False

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pending(self) -> int:
        return len(self._queue)

    def recorded(self, segment_id: int) -> None:
        """The segment was just recorded: judge its audio (once closed, it stays
        unjudged; removed meanwhile, there is nothing to judge)."""
        if self._closed:
            self.unjudged += 1
            self.stopped = True
            return
        with self._store.session() as session:  # the state and its cues, as one
            state = state_by_id(session, self._store, segment_id)
            cues = session.exec(select(Segment.audio_cues).where(Segment.id == segment_id)).first()
        if state is not None:
            self.submit(state, cues)

    def submit(self, state: SegmentState, cues: list | None) -> None:
        """Judge this segment's current audio (`cues`: its recorded sentence timings)."""
        path = audio_path(self._store, state.audio_file)  # type: ignore[arg-type]
        heard = None
        if state.voicing(self._casting).lang in HEARD_LANGS:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    os.cpu_count() or 1,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_worker_start,
                    initargs=(os.getpid(), self._beside),
                )
            heard = self._pool.submit(hear_file, path)
        self._queue.append(_Hearing(state, cues, path, heard))

    def ready(self, wait: bool = False) -> list[Verdict]:
        """The verdicts whose hearing is done, in order, each recorded; `wait`: at least
        the next one. One that cannot be judged (the recogniser or its file failed) stays
        unjudged, and `trouble` says why."""
        verdicts = []
        while self._queue and (wait or self._queue[0].done):
            wait = False
            hearing = self._queue.popleft()
            state = hearing.state
            try:
                samples = _read(hearing.path)
                heard = hearing.heard.result() if hearing.heard else None
            except Exception as exc:  # noqa: BLE001 - said in `trouble`, and not recorded
                self.unjudged += 1
                self.trouble = self.trouble or f"segment {state.sequence_index}: {exc}"
                continue
            findings = judge(samples, state.text, hearing.cues, self._casting.base.lexicon, heard)
            _record(self._store, state.id, state.audio_file, findings)  # type: ignore[arg-type]
            verdicts.append(
                Verdict(state.sequence_index, len(samples) / RATE, findings, bool(heard))
            )
        self.verdicts += verdicts
        return verdicts

    def summary(self) -> dict[str, object]:
        """The verdicts given, as `--json` prints them."""
        return summarise(self.verdicts, self.unjudged, self.trouble)

    def close(self) -> None:
        """Stop: what is not judged yet stays unjudged; the workers end once the hearing
        in hand is done."""
        if self._queue:
            self.stopped = True
            self.unjudged += len(self._queue)
            self._queue.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self._closed = True


def hear_file(path: Path) -> Heard:
    """What the recogniser hears in a WAV file (in a worker process)."""
    return hear(_read(path))


@dataclass(frozen=True)
class _Hearing:
    state: SegmentState
    cues: list | None
    path: Path
    heard: Future[Heard] | None  # None: the signal checks only

    @property
    def done(self) -> bool:
        return self.heard is None or self.heard.done()


def _worker_start(parent: int, beside: bool) -> None:
    """A recogniser worker: Ctrl-C is the parent's to handle; it ends when the parent
    does, however that ends (a process halted by a second Ctrl-C does not wait for it)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if beside:
        os.nice(19)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def _read(path: Path) -> np.ndarray:
    import soundfile

    samples, _ = soundfile.read(path, dtype="float32")
    return samples


def _record(store: ProjectStore, segment_id: int, audio_file: str, findings: list[Finding]) -> None:
    """The verdict, unless the segment was re-rendered meanwhile."""
    with store.writing() as session:
        row = session.exec(
            select(Segment).where(Segment.id == segment_id, col(Segment.audio_file) == audio_file)
        ).first()
        if row is not None:
            row.verified_audio = audio_file
            row.verify_findings = [f.as_dict() for f in findings]
            session.add(row)
            session.commit()
