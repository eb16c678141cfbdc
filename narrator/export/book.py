"""Which recorded audio goes into which file of a book: pauses, chapters, caption cues, gaps."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from sqlmodel import col, select

from narrator.audiofiles import audio_path, recording_of
from narrator.engine import SAMPLE_RATE
from narrator.errors import BadDocument, NotReady
from narrator.export.codec import (
    Mark,
    _speech,
)
from narrator.export.options import ExportOptions, check_options, output_format
from narrator.models import Segment
from narrator.planning import AudioState, Cast, audio_state
from narrator.project import read_settings
from narrator.selection import select as select_segments
from narrator.store import ProjectStore
from narrator.text import printable_line, without_pauses

if TYPE_CHECKING:
    pass


# How many gap indices an error lists before it counts the rest.
LISTED = 10


@dataclass(frozen=True)
class Clip:
    """A run of samples in an output file: a segment's audio, or silence (path None)."""

    path: Path | None
    frames: int


@dataclass(frozen=True)
class Cue:
    """A caption: where a sentence lies in an output file (samples) and what it says."""

    start: int
    frames: int
    text: str


@dataclass
class Part:
    """One output file: its clips in order, chapter marks and captions."""

    path: Path
    title: str
    number: int = 0  # with --split chapters, the chapter's number; else 0
    clips: list[Clip] = field(default_factory=list)
    chapters: list[Mark] = field(default_factory=list)
    cues: list[Cue] = field(default_factory=list)
    frames: int = 0
    # the voices of each chapter (parallel to `chapters`), in order of appearance
    voices: list[list[str]] = field(default_factory=list)

    def add(self, clip: Clip) -> int:
        """Append a clip; return the sample it starts at."""
        start = self.frames
        if clip.frames:
            self.clips.append(clip)
            self.frames += clip.frames
        return start


@dataclass
class Gap:
    """A segment the export lacks or that is stale: why, and whether it was left out."""

    index: int
    why: str  # "no audio", "stale audio", "locked without audio"


@dataclass(frozen=True)
class GapRun:
    """Gaps of one kind with no other spoken segment between them: one warning each."""

    first: int
    last: int
    why: str

    def describe(self) -> str:
        which = (
            f"segment {self.first}"
            if self.first == self.last
            else f"segments {self.first}-{self.last}"
        )
        kept = "kept as it is" if self.why == "stale audio" else "left out"
        return f"{which}: {self.why}, {kept}"


def gap_runs(gaps: list[Gap], spoken: list[int]) -> list[GapRun]:
    """The gaps as runs: `spoken` lists every segment with text, in order, so that a run
    spans scene breaks but not a segment that is ready."""
    why = {gap.index: gap.why for gap in gaps}
    runs: list[GapRun] = []
    previous = None
    for index in spoken:
        here = why.get(index)
        if here is not None and here == previous:
            runs[-1] = replace(runs[-1], last=index)
        elif here is not None:
            runs.append(GapRun(index, index, here))
        previous = here
    return runs


@dataclass
class Book:
    """What an export writes, decided before any audio is read."""

    project: Path
    format: str
    parts: list[Part]
    gaps: list[Gap]
    seconds: float
    passes: int  # how many times the audio is read: measure, (limit,) encode
    gap_runs: list[GapRun] = field(default_factory=list)

    @property
    def voices(self) -> list[str]:
        """Every voice the book is spoken in, in order of appearance."""
        return list(dict.fromkeys(v for part in self.parts for vs in part.voices for v in vs))


def slug(title: str, limit: int = 40) -> str:
    """A file-name-safe ASCII slug of a title: 'Down the Rabbit-Hole' -> down-the-rabbit-hole."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    words = re.sub(r"[^a-z0-9]+", "-", ascii_title.lower()).strip("-")
    return words[:limit].rstrip("-") or "chapter"


def _frames(seconds: float) -> int:
    return round(seconds * SAMPLE_RATE)


def _damaged(path: Path, index: int, project: Path) -> BadDocument:
    return BadDocument(
        f"segment {index}'s audio {path.name} is damaged (cut short, or not narrator's "
        f"{SAMPLE_RATE} Hz mono WAV, or not as long as recorded); render it again with "
        f"`narrator generate {project} {index} --force`"
    )


def plan_book(store: ProjectStore, options: ExportOptions, project_name: str) -> Book:
    """Read the project: which file gets which audio, pauses, chapters and captions, and
    which segments are missing or stale. Refuses (NotReady) unless allow_missing."""
    settings = read_settings(store)
    output, fmt = output_format(
        options.output or store.path.with_suffix(f".{options.format or 'm4b'}"), options.format
    )
    check_options(options, fmt)
    title = options.title or project_name
    with store.session() as session:
        rows = session.exec(
            select(
                Segment.sequence_index,
                Segment.text_content,
                Segment.is_locked,
                Segment.audio_file,
                Segment.audio_duration,
                Segment.audio_fingerprint,
                Segment.heading_level,
                Segment.audio_cues,
                Segment.verified_audio,
                Segment.verify_findings,
                Segment.cast_voice,
                Segment.cast_speed,
                Segment.cast_lang,
            )
            .where(Segment.project_id == store.project_id)
            .order_by(col(Segment.sequence_index))
        ).all()
    gaps: list[Gap] = []
    spoken: list[int] = []
    parts: list[Part] = []
    part: Part | None = None
    pause = 0.0  # the pause owed before the next audio in this part
    chapter: str = title
    pending_chapter = True  # the next audio starts a chapter
    casting = settings.casting
    only = options.only
    chosen = set(select_segments(only, [(r[0], r[6]) for r in rows])) if only else None
    for index, text, locked, audio, seconds, stamp, level, cues, judged, verdict, *cast in rows:
        if chosen is not None and index not in chosen:
            continue
        if level is not None:
            chapter, pending_chapter = printable_line(text) or title, True
            pause = max(pause, options.pauses.heading)
            if options.split_chapters:
                part = None
        if not text.strip():
            pause = max(pause, options.pauses.scene)
            continue
        spoken.append(index)
        recording, frames = recording_of(store, audio, seconds)
        voicing = casting.voicing(Cast(*cast), level is not None)
        state = audio_state(recording, stamp, voicing, text)
        if state is AudioState.damaged:
            raise _damaged(audio_path(store, audio), index, store.path)
        if not frames:  # none recorded, its file gone, or an empty recording
            gaps.append(Gap(index, "locked without audio" if locked else "no audio"))
            continue
        if state is AudioState.stale and not locked:  # a locked take is approved as it is
            gaps.append(Gap(index, "stale audio"))
        elif options.require_verified and (judged != audio or verdict is None):
            gaps.append(Gap(index, "not verified"))
        elif options.require_verified and verdict:
            gaps.append(Gap(index, "flagged by verify"))
        path = audio_path(store, audio)
        if part is None:
            number = len(parts) + 1 if options.split_chapters else 0
            name = (
                output.with_name(f"{output.stem}-{number:02d}-{slug(chapter)}{output.suffix}")
                if options.split_chapters
                else output
            )
            part = Part(name, chapter if options.split_chapters else title, number)
            parts.append(part)
            part.add(Clip(None, _room_tone(options.head, path, at_end=False)))
        elif part.cues:  # audio before this in the file: pause
            part.add(Clip(None, _frames(max(pause, options.pauses.segment))))
        if pending_chapter:
            part.chapters.append(Mark(chapter, part.frames, 0))
            part.voices.append([])
            pending_chapter = False
        if voicing.voice not in part.voices[-1]:
            part.voices[-1].append(voicing.voice)
        start = part.add(Clip(path, frames))
        part.cues.extend(_cues(cues, text, start, frames))
        pause = 0.0
    for part in parts:
        last = next(c.path for c in reversed(part.clips) if c.path is not None)
        part.add(Clip(None, _room_tone(options.tail, last, at_end=True)))
        part.chapters = _closed(part.chapters, part.frames, part.title)
    if gaps and not options.allow_missing:
        raise NotReady(_not_ready(gaps, store.path))
    if not rows:
        raise NotReady(f"{store.path} has no segments; add text with `narrator add` first")
    if not parts:
        raise NotReady(
            f"{store.path} has no recorded audio to export; render it first with "
            f"`narrator generate-all {store.path}`"
        )
    seconds = sum(p.frames for p in parts) / SAMPLE_RATE
    return Book(
        store.path, fmt, parts, gaps, seconds, 3 if options.limit else 2, gap_runs(gaps, spoken)
    )


def _room_tone(seconds: float, path: Path, at_end: bool) -> int:
    """Samples of silence to add at a file's head or tail so that, with the quiet the
    recording itself starts or ends with, there are `seconds` before speech."""
    if not seconds:
        return 0
    import soundfile

    with soundfile.SoundFile(str(path)) as f:
        window = min(f.frames, _frames(seconds))
        if at_end:
            f.seek(f.frames - window)
        edge = f.read(window, dtype="float32")
    loud = _speech(edge)
    quiet = window if not loud.size else (window - 1 - loud[-1] if at_end else loud[0])
    return max(0, _frames(seconds) - int(quiet))


def _closed(marks: list[Mark], end: int, title: str) -> list[Mark]:
    """Each chapter runs to the next one's start (the first from the file's start)."""
    if not marks:
        return [Mark(title, 0, end)]
    starts = [0] + [m.start for m in marks[1:]] + [end]
    return [Mark(m.title, starts[i], starts[i + 1] - starts[i]) for i, m in enumerate(marks)]


def _cues(recorded: list | None, text: str, start: int, frames: int) -> list[Cue]:
    """The segment's sentence timings, recorded at render time, placed in the file; a
    segment rendered before timings were recorded is one cue."""
    if not recorded:
        return [Cue(start, frames, without_pauses(text))]
    return [
        Cue(start + min(at, frames), min(length, frames - min(at, frames)), words)
        for at, length, words in recorded
    ]


def _not_ready(gaps: list[Gap], project: Path) -> str:
    by_why: dict[str, list[int]] = {}
    for gap in gaps:
        by_why.setdefault(gap.why, []).append(gap.index)
    listed = "; ".join(
        f"{why}: {', '.join(map(str, indices[:LISTED]))}"
        + (f" and {len(indices) - LISTED} more" if len(indices) > LISTED else "")
        for why, indices in by_why.items()
    )
    fixes = []
    if set(by_why) - {"not verified", "flagged by verify"}:
        fixes.append(f"`narrator generate-all {project} --changed`")
        if "locked without audio" in by_why:
            fixes[-1] += " (unlock the locked ones first, or render them with --no-skip-locked)"
    if "flagged by verify" in by_why:
        flagged = ",".join(map(str, by_why["flagged by verify"][:LISTED]))
        fixes.append(f"`narrator generate-all {project} --only {flagged} --force`")
    if "not verified" in by_why or "flagged by verify" in by_why:
        fixes.append(f"`narrator verify {project}`")
    fix = " then ".join(fixes)
    return (
        f"{len(gaps)} segment{'s' if len(gaps) != 1 else ''} not ready to export "
        f"({listed}); run {fix}, or export what there is with --allow-missing"
    )
