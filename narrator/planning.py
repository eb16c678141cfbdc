"""Which segments a run renders and why the others are skipped. Pure: no I/O."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum

from narrator.lexicon import Lexicon
from narrator.voices import language_of

SKIP_REASONS = ("locked", "has_audio", "empty")


class Recording(StrEnum):
    """What a segment's recorded audio file is on disk."""

    none = "none"  # no audio recorded
    missing = "missing"  # recorded, but the file is gone
    damaged = "damaged"  # cut short, not narrator's WAV, or not as long as recorded
    whole = "whole"


class Why(StrEnum):
    """Why a segment is rendered or skipped."""

    no_audio = "no_audio"
    audio_missing = "audio_missing"
    audio_damaged = "audio_damaged"
    stale = "stale"
    forced = "forced"
    locked = "locked"
    has_audio = "has_audio"
    empty = "empty"
    removed = "removed"
    edited = "edited"


@dataclass(frozen=True)
class Rules:
    """The seed's options: which segments a run may render."""

    skip_locked: bool = True
    force: bool = False
    changed: bool = False


@dataclass(frozen=True)
class Voicing:
    """How text is spoken: voice, speed, language and the project's lexicon, passed whole;
    it owns the fingerprint that tells a render made another way."""

    voice: str
    speed: float
    lang: str
    lexicon: Lexicon = Lexicon()

    def spoken(self) -> tuple[str, float, str]:
        """Voice, speed and language, as the engine's render takes them."""
        return self.voice, self.speed, self.lang

    def fingerprint(self, text: str) -> str:
        """What a render of `text` is made from; audio whose fingerprint differs is stale.
        Of the lexicon, only the entries that match `text` count, so an entry stales
        exactly the segments that hold its word."""
        made = [text.strip(), self.voice, round(float(self.speed), 4), self.lang]
        said = [e.as_list() for e in self.lexicon.matching(text)]
        payload = json.dumps(made + [said] if said else made)
        return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class Cast:
    """A segment's own voice, speed or language, over the project's (None: the project's)."""

    voice: str | None = None
    speed: float | None = None
    lang: str | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.voice, self.speed, self.lang))


@dataclass(frozen=True)
class Casting:
    """Who speaks what. A segment is spoken by its own cast, else (a heading) by the
    heading voice, else by `base`: the project's voicing, or this run's. A voice brings
    its own language unless the project's language was chosen (`lang_set`)."""

    base: Voicing
    heading_voice: str | None = None
    lang_set: bool = False

    def voicing(self, cast: Cast = Cast(), heading: bool = False) -> Voicing:
        voice, speed, lang = self.base.voice, self.base.speed, self.base.lang
        chosen = cast.voice or (self.heading_voice if heading else None)
        if chosen and chosen != voice:
            voice = chosen
            lang = lang if self.lang_set else language_of(voice)
        if cast.speed is not None:
            speed = cast.speed
        if cast.lang is not None:
            lang = cast.lang
        if (voice, speed, lang) == self.base.spoken():
            return self.base
        return Voicing(voice, speed, lang, self.base.lexicon)


class AudioState(StrEnum):
    """A segment's audio, all told: none recorded, its file missing or damaged, made
    another way than asked (stale), or current."""

    none = "none"
    missing = "missing"
    damaged = "damaged"
    stale = "stale"
    current = "current"


_NOT_WHOLE = {
    Recording.none: AudioState.none,
    Recording.missing: AudioState.missing,
    Recording.damaged: AudioState.damaged,
}


def audio_state(
    recording: Recording, recorded: str | None, voicing: Voicing, text: str
) -> AudioState:
    """The one rule for a segment's audio: the file on disk (`recording`), then whether
    what it was made from (`recorded`) is what `voicing` would make of `text` now (only
    asked of a whole file: listing a long book hashes no text it need not)."""
    if recording is not Recording.whole:
        return _NOT_WHOLE[recording]
    return AudioState.current if recorded == voicing.fingerprint(text) else AudioState.stale


@dataclass(frozen=True)
class SegmentState:
    """The plain facts about one segment that planning needs."""

    id: int
    sequence_index: int
    text: str
    is_locked: bool
    audio_file: str | None
    recording: Recording
    audio_fingerprint: str | None
    heading_level: int | None = None
    cast: Cast = Cast()

    @property
    def audio_exists(self) -> bool:
        """Whether its audio is there to keep: a missing or damaged file is rendered again
        as if it had none."""
        return self.recording is Recording.whole

    def voicing(self, casting: Casting) -> Voicing:
        """How this segment is spoken."""
        return casting.voicing(self.cast, self.heading_level is not None)

    def audio(self, casting: Casting) -> AudioState:
        """Its audio's state, were it spoken as `casting` casts it."""
        return audio_state(self.recording, self.audio_fingerprint, self.voicing(casting), self.text)


@dataclass(frozen=True)
class Decision:
    segment_id: int
    sequence_index: int
    render: bool
    why: Why
    stale: bool = False


@dataclass(frozen=True)
class Plan:
    decisions: tuple[Decision, ...]
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return len(self.decisions)

    @property
    def to_process(self) -> list[int]:
        return [d.segment_id for d in self.decisions if d.render]

    def rows(self) -> list[dict[str, object]]:
        """Each segment's decision as plain values, in order (`generate-all --dry-run`)."""
        return [
            {
                "sequence_index": d.sequence_index,
                "segment_id": d.segment_id,
                "action": "render" if d.render else "skip",
                "why": d.why.value,
                "stale": d.stale,
            }
            for d in self.decisions
        ]

    @property
    def stale_kept(self) -> int:
        """Segments whose audio is stale but which this run leaves alone."""
        return sum(1 for d in self.decisions if d.stale and not d.render)


def decide(seg: SegmentState, casting: Casting, rules: Rules) -> Decision:
    """Whether a run renders this segment, and why: the planner asks it of every segment,
    and the worker asks it again of each one just before rendering and recording it."""
    stale = seg.audio(casting) is AudioState.stale

    def decision(render: bool, why: Why) -> Decision:
        return Decision(seg.id, seg.sequence_index, render, why, stale)

    if rules.skip_locked and seg.is_locked:
        return decision(False, Why.locked)
    if seg.audio_exists and not rules.force and not (rules.changed and stale):
        return decision(False, Why.has_audio)
    if not seg.text.strip():
        return decision(False, Why.empty)
    if rules.force and seg.audio_exists:
        return decision(True, Why.forced)
    if seg.audio_exists:
        return decision(True, Why.stale)
    return decision(True, _NEEDS_AUDIO[seg.recording])


_NEEDS_AUDIO = {
    Recording.none: Why.no_audio,
    Recording.missing: Why.audio_missing,
    Recording.damaged: Why.audio_damaged,
}


def plan_generation(
    segments: list[SegmentState],
    *,
    casting: Casting,
    rules: Rules = Rules(),
) -> Plan:
    """Decide for each segment, in sequence order, whether this run renders it."""
    decisions = tuple(
        decide(seg, casting, rules) for seg in sorted(segments, key=lambda s: s.sequence_index)
    )
    counts = Counter(d.why.value for d in decisions if not d.render)
    return Plan(decisions, {reason: counts.get(reason, 0) for reason in SKIP_REASONS})
