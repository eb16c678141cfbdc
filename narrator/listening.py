"""`narrator verify`: judge each segment's current audio (narrator.verify) and record the
verdict with the audio it judged, so that a new render is judged afresh."""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from sqlmodel import col, select

from narrator.audiofiles import audio_path
from narrator.errors import MissingExtra
from narrator.models import Segment
from narrator.planning import AudioState, Casting, SegmentState
from narrator.project import only, read_settings, segment_state, segment_states
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


class Listener:
    """Judges recorded audio as it is handed in: the recogniser runs in worker processes
    (it is CPU-bound), and each verdict is judged and recorded on the thread that asks for
    it, in the order the segments came."""

    def __init__(self, store: ProjectStore, casting: Casting, workers: int | None = None) -> None:
        """`casting`: who speaks what (a segment's language says whether it is heard; the
        lexicon, what it should say)."""
        self._store = store
        self._casting = casting
        self._workers = workers or os.cpu_count() or 1
        self._pool: ProcessPoolExecutor | None = None
        self._queue: deque[_Hearing] = deque()
        self.verdicts: list[Verdict] = []  # every verdict given, in order
        self.unjudged = 0  # segments handed in and never judged: it was closed first
        self.closed = False

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pending(self) -> int:
        return len(self._queue)

    def recorded(self, index: int) -> None:
        """The segment at `index` was just recorded: judge its audio (once closed, it
        stays unjudged)."""
        if self.closed:
            self.unjudged += 1
            return
        state = segment_state(self._store, index)
        with self._store.session() as session:
            cues = session.exec(select(Segment.audio_cues).where(Segment.id == state.id)).one()
        self.submit(state, cues)

    def submit(self, state: SegmentState, cues: list | None) -> None:
        """Judge this segment's current audio (`cues`: its recorded sentence timings)."""
        samples = _read(self._store, state.audio_file)  # type: ignore[arg-type]
        heard = None
        if state.voicing(self._casting).lang in HEARD_LANGS:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    self._workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_ignore_interrupts,  # Ctrl-C is the parent's to handle
                )
            heard = self._pool.submit(hear, samples)
        self._queue.append(_Hearing(state, cues, samples, heard))

    def ready(self, wait: bool = False) -> list[Verdict]:
        """The verdicts whose hearing is done, in order, each recorded; `wait`: at least
        the next one."""
        verdicts = []
        while self._queue and (wait or self._queue[0].done):
            wait = False
            hearing = self._queue.popleft()
            state = hearing.state
            findings = judge(
                hearing.samples,
                state.text,
                hearing.cues,
                self._casting.base.lexicon,
                hearing.heard.result() if hearing.heard else None,
            )
            seconds = len(hearing.samples) / RATE
            _record(self._store, state.id, state.audio_file, findings)  # type: ignore[arg-type]
            verdicts.append(Verdict(state.sequence_index, seconds, findings, bool(hearing.heard)))
        self.verdicts += verdicts
        return verdicts

    def summary(self) -> dict[str, object]:
        """The verdicts given, as `generate-all --verify --json` prints them."""
        return {
            "checked": len(self.verdicts),
            "flagged": sum(not v.ok for v in self.verdicts),
            "not_checked": self.unjudged,
            "segments": [v.as_dict() for v in self.verdicts],
        }

    def close(self) -> None:
        """Stop: what is not judged yet stays unjudged."""
        self.closed = True
        self.unjudged += len(self._queue)
        self._queue.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


@dataclass(frozen=True)
class _Hearing:
    state: SegmentState
    cues: list | None
    samples: np.ndarray
    heard: Future[Heard] | None  # None: the signal checks only

    @property
    def done(self) -> bool:
        return self.heard is None or self.heard.done()


def _ignore_interrupts() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _read(store: ProjectStore, audio_file: str) -> np.ndarray:
    import soundfile

    samples, _ = soundfile.read(audio_path(store, audio_file), dtype="float32")
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
