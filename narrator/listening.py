"""`narrator verify`: judge each segment's current audio (narrator.verify) and record the
verdict with the audio it judged, so that a new render is judged afresh."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from sqlmodel import col, select

from narrator.audiofiles import audio_path
from narrator.errors import MissingExtra
from narrator.models import Segment
from narrator.planning import AudioState
from narrator.project import only, read_settings, segment_states
from narrator.store import ProjectStore
from narrator.verify import RATE, Finding, hear, judge, recogniser_missing

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
    listens = [s.voicing(casting).lang in HEARD_LANGS for s in todo]
    if any(listens) and (missing := recogniser_missing()):
        raise MissingExtra(missing)
    samples = [_read(store, s.audio_file) for s in todo]  # type: ignore[arg-type]
    workers = min(os.cpu_count() or 1, max(sum(listens), 1))
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        heard = pool.map(hear, [a for a, listen in zip(samples, listens, strict=True) if listen])
        verdicts = []
        for state, audio, listen in zip(todo, samples, listens, strict=True):
            findings = judge(
                audio,
                state.text,
                extra[state.id][0],
                settings.lexicon,
                next(heard) if listen else None,
            )
            verdict = Verdict(state.sequence_index, len(audio) / RATE, findings, listen)
            _record(store, state.id, state.audio_file, findings)  # type: ignore[arg-type]
            on_verdict(verdict)
            verdicts.append(verdict)
    return verdicts


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
