"""What an export is asked for: output, format, pauses, levels, tags; checked up front."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from narrator.errors import BadInput
from narrator.export.codec import (
    FORMATS,
    Format,
    cover_kind,
)

if TYPE_CHECKING:
    pass


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
    # every exported segment's audio must have passed `narrator verify`
    require_verified: bool = False
    # a selection (narrator.selection): only these segments are exported
    only: tuple[str, ...] = ()
    bit_rate: int | None = None
    # Room tone (silence) at the head and tail of each file, in seconds.
    head: float = 0.0
    tail: float = 0.0
    profile: str | None = None  # "acx"
    # An RMS target (dB) that replaces the loudness target (the ACX profile sets one).
    rms: float | None = None
    # Bring peaks above `peak` down with a look-ahead limiter, so the gain can reach the
    # loudness target; without it the ceiling holds the gain back.
    limit: bool = False


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


# ACX's audio submission requirements: https://www.acx.com/help/acx-audio-submission-requirements/201456300
ACX_FORMAT = Format("mp3", "libmp3lame", 192_000, 320_000, 44_100)
