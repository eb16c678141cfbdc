"""The ACX profile: its numbers, the options it sets, and the checks of a written file."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from narrator.errors import BadInput
from narrator.export.codec import (
    FORMATS,
    LoudnessMeter,
    _speech,
    metered,
)
from narrator.export.options import ExportOptions

if TYPE_CHECKING:
    pass


ACX_RMS = (-23.0, -18.0)


ACX_PEAK = -3.0


ACX_HEAD = (0.5, 1.0)


ACX_TAIL = (1.0, 5.0)


ACX_MINUTES = 120


# Aim for the middle of ACX's RMS window, and keep peaks clear of -3 dB: MP3 encoding
# overshoots the source's peaks a little.
ACX_RMS_TARGET = -20.0


ACX_PEAK_TARGET = -3.5


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
        rms=ACX_RMS_TARGET,
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

    from narrator.export.codec import decode

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
