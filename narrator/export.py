"""Export: a project's recorded audio as a finished book (one file, or one per chapter)
with pauses, chapter marks, tags, a cover, one loudness gain per file and caption
sidecars. It reads recorded audio only and never renders. Two streaming passes per file
(measure, then gain and encode), so memory stays flat however long the book is."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from sqlmodel import col, select

from narrator.atomic import claim_temp, publish, sync
from narrator.audiofiles import audio_path, recording_of
from narrator.encode import (
    FORMATS,
    Format,
    Levels,
    LoudnessMeter,
    Mark,
    clock,
    cover_kind,
    encode,
    finish,
    limited,
    metered,
)
from narrator.engine import SAMPLE_RATE
from narrator.errors import BadDocument, BadInput, CannotWrite, NarratorError, NotReady
from narrator.models import Project, Segment
from narrator.planning import AudioState, audio_state
from narrator.project import read_settings
from narrator.store import ProjectStore
from narrator.tasks import run_lock
from narrator.text import printable, printable_line

if TYPE_CHECKING:
    import numpy as np

# Samples per block streamed through the passes: ~2.7 s, a few hundred KB.
BLOCK = 1 << 16
# How many gap indices an error lists before it counts the rest.
LISTED = 10


@dataclass(frozen=True)
class Pauses:
    """Seconds of silence: between segments, at a scene break (an empty segment), and
    before a heading."""

    segment: float = 0.75
    scene: float = 2.0
    heading: float = 2.0


@dataclass(frozen=True)
class ExportOptions:
    output: Path | None = None
    format: str | None = None
    pauses: Pauses = Pauses()
    split_chapters: bool = False
    loudness: float = -18.0
    peak: float = -3.0
    title: str | None = None
    author: str | None = None
    narrator: str | None = None
    year: str | None = None
    genre: str | None = None
    cover: Path | None = None
    captions: str | None = None
    allow_missing: bool = False
    bit_rate: int | None = None
    # Room tone (silence) at the head and tail of each file, in seconds.
    head: float = 0.0
    tail: float = 0.0
    profile: str | None = None  # "acx"
    # Bring peaks above `peak` down with a look-ahead limiter, so the gain can reach the
    # loudness target; without it the ceiling holds the gain back.
    limit: bool = False


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


@dataclass(frozen=True)
class Written:
    """One file written: where, its chapters, and its levels before and after the gain."""

    path: Path
    seconds: float
    chapters: list[Mark]
    measured: Levels
    gain: float
    levels: Levels
    captions: Path | None
    # The peak ceiling held the gain back by more than 1 dB from what the target asks.
    held_back: bool = False

    def as_dict(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "duration": round(self.seconds, 3),
            "chapters": [
                {
                    "title": m.title,
                    "start": round(m.start / SAMPLE_RATE, 3),
                    "duration": round(m.frames / SAMPLE_RATE, 3),
                }
                for m in self.chapters
            ],
            "loudness": _round(self.levels.loudness),
            "peak": _round(self.levels.peak),
            "rms": _round(self.levels.rms),
            "gain": round(self.gain, 2),
            "measured_loudness": _round(self.measured.loudness),
            "captions": str(self.captions) if self.captions else None,
        }


def _round(value: float) -> float | None:
    return round(value, 2) if math.isfinite(value) else None


def slug(title: str, limit: int = 40) -> str:
    """A file-name-safe ASCII slug of a title: 'Down the Rabbit-Hole' -> down-the-rabbit-hole."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    words = re.sub(r"[^a-z0-9]+", "-", ascii_title.lower()).strip("-")
    return words[:limit].rstrip("-") or "chapter"


def output_format(output: Path, fmt: str | None) -> tuple[Path, str]:
    """The output and its format: the one asked for (the output gains its suffix), else
    the output's suffix. BadInput for a format we cannot write, or two that disagree."""
    suffix = output.suffix.lstrip(".").lower()
    name = (fmt or suffix).lower()
    if name not in FORMATS:
        raise BadInput(
            f"cannot export to {name or output.name!r}; choose one of "
            f"{', '.join(FORMATS)} (--format or the output's suffix)"
        )
    if suffix in FORMATS and suffix != name:
        raise BadInput(
            f"{output.name} is not a .{name} file; give -o a .{name} name, or leave --format out"
        )
    return (output if suffix == name else output.with_name(f"{output.name}.{name}")), name


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
    for index, text, locked, audio, seconds, stamp, level, cues in rows:
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
        state = audio_state(recording, stamp, settings.voicing, text)
        if state is AudioState.damaged:
            raise _damaged(audio_path(store, audio), index, store.path)
        if not frames:  # none recorded, its file gone, or an empty recording
            gaps.append(Gap(index, "locked without audio" if locked else "no audio"))
            continue
        if state is AudioState.stale and not locked:  # a locked take is approved as it is
            gaps.append(Gap(index, "stale audio"))
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
            pending_chapter = False
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


def _speech(block: np.ndarray) -> np.ndarray:
    """Where in a block the samples are speech, not room tone (indices)."""
    import numpy as np

    return np.flatnonzero(np.abs(block) > 10 ** (SPEECH_DBFS / 20))


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
        return [Cue(start, frames, " ".join(text.split()))]
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
    fix = f"`narrator generate-all {project} --changed`"
    if "locked without audio" in by_why:
        fix += " (unlock the locked ones first, or render them with --no-skip-locked)"
    return (
        f"{len(gaps)} segment{'s' if len(gaps) != 1 else ''} not ready to export "
        f"({listed}); run {fix}, or export what there is with --allow-missing"
    )


def _blocks(part: Part, gain_db: float = 0.0) -> Iterator[np.ndarray]:
    """The part's samples as float32 blocks, gain applied. Nothing is clipped: the gain
    keeps peaks under the ceiling, or the limiter that follows brings them down."""
    import numpy as np
    import soundfile

    gain = np.float32(10 ** (gain_db / 20))
    for clip in part.clips:
        if clip.path is None:
            for done in range(0, clip.frames, BLOCK):
                yield np.zeros(min(BLOCK, clip.frames - done), dtype=np.float32)
            continue
        with soundfile.SoundFile(str(clip.path)) as f:
            for block in f.blocks(BLOCK, dtype="float32"):
                yield block * gain if gain != 1 else block


Progress = Callable[[str, int], None]


def write_book(
    book: Book,
    options: ExportOptions,
    tags: dict[str, str],
    on_progress: Progress,
) -> list[Written]:
    """Measure and write each part (and its captions): temporary files beside the
    targets, renamed into place when complete, the audio first. `on_progress(stage,
    samples)` follows every pass."""
    fmt = _format_spec(options, book.format)
    if options.bit_rate:
        fmt = fmt._replace(bit_rate=options.bit_rate)
    written = []
    for part in book.parts:
        captions = part.path.with_suffix(f".{options.captions}") if options.captions else None
        temps = {target: _claim(target) for target in (part.path, captions) if target}
        try:
            measured, gain, levels = _write_audio(
                part, book, fmt, options, tags, temps[part.path], on_progress
            )
            held_back = not options.limit and gain < _wanted_gain(measured, options) - 1
            if captions is not None:
                temps[captions].write_text(
                    captions_text(part.cues, options.captions), encoding="utf-8"
                )
            for target, tmp in temps.items():
                sync(tmp)
                publish(tmp, target)
        except Exception as exc:
            raise _export_error(exc, part.path, book.project) from exc
        finally:
            for tmp in temps.values():
                tmp.unlink(missing_ok=True)
        written.append(
            Written(
                part.path,
                part.frames / SAMPLE_RATE,
                part.chapters,
                measured,
                gain,
                levels,
                captions,
                held_back,
            )
        )
    return written


def _write_audio(
    part: Part,
    book: Book,
    fmt: Format,
    options: ExportOptions,
    tags: dict[str, str],
    tmp: Path,
    on_progress: Progress,
) -> tuple[Levels, float, Levels]:
    """Measure the part, then gain (and limit) and encode it into `tmp`: the levels as
    measured, the gain, and the levels written."""
    measured = _measured(_blocks(part), "measuring", on_progress)
    gain = _gain(measured, options)
    if options.limit:  # the limiter takes a little loudness: measure it, make it up
        trial = _measured(limited(_blocks(part, gain), options.peak), "limiting", on_progress)
        gain += _gain(trial, options)
    out = _blocks(part, gain)
    after = LoudnessMeter() if options.limit else None
    if after is not None:  # what the limiter leaves is measured on its way out
        out = metered(limited(out, options.peak), after)
    if part.number:
        tags = tags | {"title": part.title, "track": f"{part.number}/{len(book.parts)}"}
    encode(tmp, fmt, _counted(out, lambda n: on_progress("encoding", n)), tags, part.chapters)
    finish(tmp, fmt, part.chapters, options.cover)
    return measured, gain, after.levels() if after is not None else measured.gained(gain)


def _claim(target: Path) -> Path:
    try:
        return claim_temp(target)
    except OSError as exc:
        raise CannotWrite(
            f"cannot write {target}: {exc.strerror}; choose another place with -o"
        ) from exc


def _export_error(exc: Exception, path: Path, project: Path) -> Exception:
    """What a failure while writing `path` means to the user: storage (73), a damaged
    recording (65), or the encoder refusing (1); anything else as it is."""
    import soundfile
    from mutagen import MutagenError

    from narrator.encode import av_module

    if isinstance(exc, MutagenError) and isinstance(exc.__context__, OSError):
        exc = exc.__context__  # mutagen wraps the OSError (a full disk, say)
    if isinstance(exc, OSError):
        return CannotWrite(
            f"cannot write {path}: {exc.strerror or exc}; free some space or "
            "choose another place with -o"
        )
    if isinstance(exc, soundfile.SoundFileError):
        return BadDocument(
            f"a recording cannot be read ({exc}); render it again with "
            f"`narrator generate-all {project} --force`"
        )
    if isinstance(exc, av_module().FFmpegError):
        return NarratorError(
            f"FFmpeg could not write {path.name} ({exc}); try another --bitrate or --format"
        )
    return exc


def _counted(
    blocks: Iterator[np.ndarray],
    on_block: Callable[[int], None],
) -> Iterator[np.ndarray]:
    for block in blocks:
        on_block(block.size)
        yield block


def _measured(blocks: Iterator[np.ndarray], stage: str, on_progress: Progress) -> Levels:
    meter = LoudnessMeter()
    for _ in _counted(metered(blocks, meter), lambda n: on_progress(stage, n)):
        pass
    return meter.levels()


def _wanted_gain(levels: Levels, options: ExportOptions) -> float:
    """The gain (dB) the loudness target asks for (ACX: the RMS target); none for silence."""
    if not math.isfinite(levels.peak):
        return 0.0  # silence: nothing to bring up
    if options.profile == "acx":
        return ACX_RMS_TARGET - levels.rms
    return options.loudness - levels.loudness


def _gain(levels: Levels, options: ExportOptions) -> float:
    """One gain (dB) for a whole file: the one the target asks for, held back so no peak
    passes the ceiling unless a limiter takes the peaks."""
    wanted = _wanted_gain(levels, options)
    return wanted if options.limit else min(wanted, options.peak - levels.peak)


def captions_text(cues: list[Cue], kind: str) -> str:
    """SRT or WebVTT: one cue per sentence."""
    separator = "," if kind == "srt" else "."
    blocks = [
        (f"{n}\n" if kind == "srt" else "")
        + f"{clock(c.start, separator)} --> {clock(c.start + c.frames, separator)}\n"
        + printable(c.text)
        for n, c in enumerate(cues, start=1)
    ]
    head = ["WEBVTT"] if kind == "vtt" else []
    return "\n\n".join(head + blocks) + "\n"


def book_tags(options: ExportOptions, title: str, voice: str) -> dict[str, str]:
    """The tags every file carries (FFmpeg's names: it maps them to each format's own)."""
    tags = {
        "title": title,
        "album": title,
        "artist": options.author,
        "album_artist": options.author,
        "composer": options.narrator or voice,
        "date": options.year,
        "genre": options.genre or "Audiobook",
    }
    return {k: printable(v) for k, v in tags.items() if v}


def _format_spec(options: ExportOptions, fmt: str) -> Format:
    """How `fmt` is written under these options (the ACX profile has its own MP3)."""
    return ACX_FORMAT if options.profile == "acx" else FORMATS[fmt]


def check_options(options: ExportOptions, fmt: str) -> None:
    """Refuse options that cannot work, before anything is read."""
    for name, seconds in vars(options.pauses).items():
        if not 0 <= seconds <= 60:
            raise BadInput(f"the {name} pause must be 0-60 seconds, not {seconds}")
    if not -40 <= options.loudness <= -5:
        raise BadInput(
            f"--loudness {options.loudness} is outside -40..-5 LUFS; "
            "spoken word is usually -18 to -16"
        )
    if not -20 <= options.peak <= 0:
        raise BadInput(f"--peak {options.peak} is outside -20..0 dBFS")
    if options.captions not in (None, "srt", "vtt"):
        raise BadInput(f"--captions {options.captions}: choose srt or vtt")
    fmt_spec = _format_spec(options, fmt)
    if options.bit_rate is not None:
        if fmt_spec.max_bit_rate is None:
            raise BadInput(f"{fmt.upper()} is lossless: it takes no --bitrate")
        if not 16_000 <= options.bit_rate <= fmt_spec.max_bit_rate:
            raise BadInput(
                f"--bitrate {options.bit_rate // 1000} is outside what {fmt.upper()} "
                f"takes here: 16-{fmt_spec.max_bit_rate // 1000} kbps"
            )
    if options.cover is not None:
        if FORMATS[fmt].muxer == "wav":
            raise BadInput("WAV files hold no cover; choose m4b, mp3, flac or opus")
        cover_kind(options.cover)


# ------------------------------------------------------------------------------- ACX

# ACX's audio submission requirements: https://www.acx.com/help/acx-audio-submission-requirements/201456300
ACX_FORMAT = Format("mp3", "libmp3lame", 192_000, 320_000, 44_100)
ACX_RMS = (-23.0, -18.0)
ACX_PEAK = -3.0
ACX_HEAD = (0.5, 1.0)
ACX_TAIL = (1.0, 5.0)
ACX_MINUTES = 120
# Aim for the middle of ACX's RMS window, and keep peaks clear of -3 dB: MP3 encoding
# overshoots the source's peaks a little.
ACX_RMS_TARGET = -20.0
ACX_PEAK_TARGET = -3.5
# A sample below this is room tone, not speech.
SPEECH_DBFS = -50.0


def acx_options(options: ExportOptions) -> ExportOptions:
    """Everything ACX asks of the files: MP3 44.1 kHz 192 kbps CBR mono, one per chapter,
    RMS by one gain and a limiter, 0.75 s of room tone at the head and 2 s at the tail.
    Refuses a format or bit rate of its own."""
    suffix = options.output.suffix.lower() if options.output else ""
    if options.format not in (None, "mp3") or suffix in {f".{f}" for f in FORMATS} - {".mp3"}:
        raise BadInput("--profile acx writes MP3: give -o a .mp3 name and no other --format")
    if options.bit_rate is not None:
        raise BadInput("--profile acx sets the bit rate (192 kbps CBR): leave --bitrate out")
    return replace(
        options,
        format="mp3",
        split_chapters=True,
        head=0.75,
        tail=2.0,
        peak=ACX_PEAK_TARGET,
        limit=True,
    )


@dataclass(frozen=True)
class Check:
    """One ACX requirement, measured on a written file."""

    name: str
    value: str
    wanted: str
    ok: bool

    def as_dict(self) -> dict[str, object]:
        return dict(vars(self))


def acx_checks(path: Path) -> list[Check]:
    """Measure a written MP3 against ACX's numbers: decode it, and read its header with
    mutagen (an independent reader)."""
    from mutagen.mp3 import MP3, BitrateMode

    from narrator.encode import decode

    info = MP3(path).info
    stream, blocks = decode(path)
    rate, bit_rate = stream.rate, stream.codec_context.bit_rate  # the frame headers' rate
    meter = LoudnessMeter(rate)
    frames = 0
    first = last = None  # the first and last sample of speech
    for block in metered(blocks, meter):
        loud = _speech(block)
        if loud.size:
            first = frames + int(loud[0]) if first is None else first
            last = frames + int(loud[-1])
        frames += block.size
    levels = meter.levels()
    rms, peak = levels.rms, levels.peak
    head = (first if first is not None else frames) / rate
    tail = (frames - 1 - last if last is not None else frames) / rate
    cbr = info.bitrate_mode in (BitrateMode.CBR, BitrateMode.UNKNOWN) and not getattr(
        info, "sketchy", False
    )
    return [
        Check(
            "format",
            f"MP3 {info.sample_rate} Hz, {info.channels} ch, "
            f"{bit_rate // 1000} kbps {'CBR' if cbr else 'VBR'}",
            "MP3 44100 Hz, 1 ch, 192 kbps CBR",
            info.sample_rate == 44_100 and info.channels == 1 and bit_rate == 192_000 and cbr,
        ),
        Check("rms", f"{rms:.1f} dB", "-23 to -18 dB", ACX_RMS[0] <= rms <= ACX_RMS[1]),
        Check("peak", f"{peak:.1f} dB", "at most -3 dB", peak <= ACX_PEAK),
        Check("head", f"{head:.2f} s", "0.5-1 s of room tone", ACX_HEAD[0] <= head <= ACX_HEAD[1]),
        Check("tail", f"{tail:.2f} s", "1-5 s of room tone", ACX_TAIL[0] <= tail <= ACX_TAIL[1]),
        Check(
            "length",
            f"{frames / rate / 60:.1f} min",
            f"at most {ACX_MINUTES} min",
            frames / rate <= ACX_MINUTES * 60,
        ),
    ]


# ----------------------------------------------------------------------------- export


@dataclass
class Exported:
    book: Book
    files: list[Written]
    acx: dict[Path, list[Check]]

    @property
    def acx_passed(self) -> bool:
        return all(c.ok for checks in self.acx.values() for c in checks)


def export_project(
    store: ProjectStore,
    options: ExportOptions,
    on_progress: Progress,
    on_plan: Callable[[Book], None] = lambda book: None,
) -> Exported:
    """Plan the book, write its files (and captions), and with the ACX profile measure
    each file against ACX's numbers. Holds the project's run lock throughout, so no run
    replaces audio under it (ProjectBusy, exit 75, while one renders)."""
    if options.profile == "acx":
        options = acx_options(options)
    with store.session() as session:
        project = session.get(Project, store.project_id)
        assert project is not None
        name = project.name
    lock = run_lock(store)
    try:
        book = plan_book(store, options, name)
        on_plan(book)
        tags = book_tags(options, options.title or name, read_settings(store).voice_id)
        files = write_book(book, options, tags, on_progress)
    finally:
        lock.release()
    acx = {w.path: acx_checks(w.path) for w in files} if options.profile == "acx" else {}
    return Exported(book, files, acx)
