"""Writing a planned book: measure, gain, limit and encode each file in two streaming passes;
captions and tags; each file published whole."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from narrator.atomic import claim_temp, publish, sync
from narrator.engine import SAMPLE_RATE
from narrator.errors import BadDocument, CannotWrite, NarratorError
from narrator.export.book import Book, Cue, Part
from narrator.export.codec import (
    Format,
    Levels,
    LoudnessMeter,
    Mark,
    clock,
    encode,
    finish,
    limited,
    metered,
)
from narrator.export.options import ExportOptions, _format_spec
from narrator.text import printable

if TYPE_CHECKING:
    import numpy as np


# Samples per block streamed through the passes: ~2.7 s, a few hundred KB.
BLOCK = 1 << 16


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
    # the voices of each chapter, in order of appearance
    voices: list[list[str]] = field(default_factory=list)

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
                | ({"voices": self.voices[i]} if i < len(self.voices) else {})
                for i, m in enumerate(self.chapters)
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
                part.voices,
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

    from narrator.export.codec import av_module

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
    if options.rms is not None:
        return options.rms - levels.rms
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


def book_tags(options: ExportOptions, title: str, voices: list[str]) -> dict[str, str]:
    """The tags every file carries (FFmpeg's names: it maps them to each format's own); the
    narrator is the cast, in order of appearance, unless one is named."""
    tags = {
        "title": title,
        "album": title,
        "artist": options.author,
        "album_artist": options.author,
        "composer": options.narrator or ", ".join(voices),
        "date": options.year,
        "genre": options.genre or "Audiobook",
    }
    return {k: printable(v) for k, v in tags.items() if v}
