"""Audio in and out of FFmpeg (through PyAV, whose wheels bundle it): loudness and level
measurement, encoding with chapters and tags, decoding for checks; covers through
mutagen. Blocks of float32 mono samples stream through; nothing holds a whole book."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from narrator.engine import SAMPLE_RATE
from narrator.errors import BadInput, MissingExtra

if TYPE_CHECKING:
    import numpy as np

INSTALL = "pip install 'narrator[export]'"
# Below this integrated loudness (EBU R128's absolute gate) there is nothing to measure.
SILENT_LUFS = -70.0


class Format(NamedTuple):
    """How one output format is written: FFmpeg's muxer and encoder, bit rate (None:
    lossless) and the highest the encoder takes at this rate, rate, encoder options."""

    muxer: str
    codec: str
    bit_rate: int | None
    max_bit_rate: int | None = None
    sample_rate: int = SAMPLE_RATE
    options: tuple[tuple[str, str], ...] = ()


# FFmpeg's AAC encoder with its fast coder: 2.7x the speed of the default (twoloop) on
# narrator's speech at 64 kbps, and a higher signal-to-noise ratio (34 dB against 27).
# Mono AAC at 24 kHz carries at most 6,144 bits a frame of 1,024 samples: 144 kbps.
AAC = Format("ipod", "aac", 64_000, 144_000, options=(("aac_coder", "fast"),))
FORMATS: dict[str, Format] = {
    "m4b": AAC,
    "m4a": AAC,
    "mp3": Format("mp3", "libmp3lame", 64_000, 160_000),  # MPEG-2 layer III at 24 kHz
    "flac": Format("flac", "flac", None),
    "opus": Format("ogg", "libopus", 48_000, 256_000),
    "wav": Format("wav", "pcm_s16le", None),
}


def clock(frames: int, separator: str = ".") -> str:
    """HH:MM:SS.mmm of a sample position (SRT wants a comma before the milliseconds)."""
    ms = round(frames * 1000 / SAMPLE_RATE)
    return (
        f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}"
        f"{separator}{ms % 1000:03d}"
    )


def av_module() -> Any:
    """PyAV, or MissingExtra (exit 69) with the command that installs it."""
    try:
        import av
    except ImportError as exc:
        raise MissingExtra(f"export needs PyAV and mutagen; install them with `{INSTALL}`") from exc
    return av


def db(linear: float) -> float:
    return 20 * math.log10(linear) if linear > 0 else -math.inf


@dataclass(frozen=True)
class Levels:
    """What a stream of samples measures: EBU R128 integrated loudness (LUFS), sample
    peak (dBFS), and RMS over all samples (dBFS)."""

    loudness: float
    peak: float
    rms: float

    def gained(self, gain_db: float) -> Levels:
        """The same audio after a gain that clips nothing: every figure moves by exactly
        the gain (EBU R128's gates are relative)."""
        return Levels(self.loudness + gain_db, self.peak + gain_db, self.rms + gain_db)


def _frame(av: Any, block: np.ndarray, pts: int, rate: int = SAMPLE_RATE) -> Any:
    frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="flt", layout="mono")
    frame.sample_rate = rate
    frame.pts = pts
    frame.time_base = Fraction(1, rate)
    return frame


class LoudnessMeter:
    """Integrated loudness and sample peak with FFmpeg's ebur128 filter, RMS by summing
    squares, fed block by block of mono float32 samples at `rate`."""

    def __init__(self, rate: int = SAMPLE_RATE) -> None:
        self._av = av_module()
        self._rate = rate
        self._graph = _graph(self._av, "ebur128", "metadata=1:peak=sample", rate)
        self._last: dict[str, str] = {}
        self._frames = 0
        self._squares = 0.0

    def _drain(self) -> None:
        for frame in _pulled(self._av, self._graph):
            self._last.update(frame.metadata)

    def add(self, block: np.ndarray) -> None:
        import numpy as np

        self._graph.push(_frame(self._av, block, self._frames, self._rate))
        self._frames += block.size
        self._squares += float(np.dot(block, block))
        self._drain()

    def levels(self) -> Levels:
        self._graph.push(None)
        self._drain()
        loudness = float(self._last.get("lavfi.r128.I", SILENT_LUFS))
        peak = db(float(self._last.get("lavfi.r128.sample_peak", 0.0)))
        rms = db(math.sqrt(self._squares / self._frames)) if self._frames else -math.inf
        return Levels(max(loudness, SILENT_LUFS), peak, rms)


def metered(blocks: Iterable[np.ndarray], meter: LoudnessMeter) -> Iterator[np.ndarray]:
    """The blocks, unchanged, each measured on its way through."""
    for block in blocks:
        meter.add(block)
        yield block


def limited(blocks: Iterable[np.ndarray], ceiling_db: float) -> Iterator[np.ndarray]:
    """The blocks through FFmpeg's look-ahead peak limiter (alimiter: 5 ms attack, 50 ms
    release, its delay compensated, so every sample stays where it was): peaks above the
    ceiling come down, nothing else changes."""
    av = av_module()
    graph = _graph(
        av,
        "alimiter",
        f"limit={10 ** (ceiling_db / 20)}:level=false:latency=true:attack=5:release=50",
    )
    frames = 0
    for block in blocks:
        graph.push(_frame(av, block, frames))
        frames += block.size
        yield from (f.to_ndarray().reshape(-1) for f in _pulled(av, graph))
    graph.push(None)
    yield from (f.to_ndarray().reshape(-1) for f in _pulled(av, graph))


def _graph(av: Any, name: str, args: str, rate: int = SAMPLE_RATE) -> Any:
    """A filter graph: float32 mono at `rate` -> one filter -> out."""
    graph = av.filter.Graph()
    source = graph.add_abuffer(
        format="flt", sample_rate=rate, layout="mono", time_base=Fraction(1, rate)
    )
    node = graph.add(name, args)
    sink = graph.add("aformat", "sample_fmts=flt")
    out = graph.add("abuffersink")
    source.link_to(node)
    node.link_to(sink)
    sink.link_to(out)
    graph.configure()
    return graph


def _pulled(av: Any, graph: Any) -> Iterator[Any]:
    while True:
        try:
            yield graph.pull()
        except (av.BlockingIOError, av.EOFError):
            return


@dataclass(frozen=True)
class Mark:
    """A chapter mark: title, start and length in samples at SAMPLE_RATE."""

    title: str
    start: int
    frames: int


def encode(
    path: Path,
    fmt: Format,
    blocks: Iterable[np.ndarray],
    tags: dict[str, str],
    chapters: list[Mark],
) -> None:
    """Encode float32 mono blocks at SAMPLE_RATE into `path` (resampled to the format's
    rate), with tags and chapter marks. Written bit-exact: the same input gives the same
    bytes."""
    av = av_module()
    with av.open(str(path), "w", format=fmt.muxer, options={"fflags": "+bitexact"}) as out:
        stream = out.add_stream(
            fmt.codec, rate=fmt.sample_rate, layout="mono", options=dict(fmt.options)
        )
        if fmt.bit_rate:
            stream.bit_rate = fmt.bit_rate
        stream.codec_context.flags |= av.codec.context.Flags.bitexact
        out.metadata.update(tags)
        # Before the first packet: MP3 writes them in the ID3 header. Ogg and FLAC get
        # theirs from mutagen (see finish): FFmpeg leaves them out of FLAC and rounds
        # Ogg's chapter starts to whole seconds.
        if chapters and fmt.muxer in CHAPTERS_BY_FFMPEG:
            out.set_chapters(
                [
                    {
                        "id": n,
                        "start": mark.start,
                        "end": mark.start + mark.frames,
                        "time_base": Fraction(1, SAMPLE_RATE),
                        "metadata": {"title": mark.title},
                    }
                    for n, mark in enumerate(chapters, start=1)
                ]
            )
        pts = 0
        for block in blocks:
            out.mux(stream.encode(_frame(av, block, pts)))
            pts += block.size
        out.mux(stream.encode(None))


def decode(path: Path) -> tuple[Any, Iterable[np.ndarray]]:
    """An encoded file's audio stream and its samples as float32 mono blocks, at the
    file's own rate."""
    av = av_module()
    container = av.open(str(path))
    stream = container.streams.audio[0]
    resampler = av.AudioResampler(format="flt", layout="mono", rate=stream.rate)

    def blocks() -> Iterable[np.ndarray]:
        with container:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    yield out.to_ndarray().reshape(-1)
            for out in resampler.resample(None):
                yield out.to_ndarray().reshape(-1)

    return stream, blocks()


# The largest cover narrator embeds (a 3000x3000 JPEG is a few MiB). The image is never
# decoded here, so a decompression bomb costs only its file's bytes.
MAX_COVER_BYTES = 16 << 20


def cover_kind(path: Path) -> str:
    """'jpeg' or 'png' from the file's first bytes; BadInput for anything else, or for a
    file larger than MAX_COVER_BYTES."""
    try:
        with path.open("rb") as f:
            head = f.read(8)
            size = os.fstat(f.fileno()).st_size
    except OSError as exc:
        raise BadInput(
            f"cannot read the cover {path}: {exc.strerror}; check --cover's path"
        ) from exc
    if size > MAX_COVER_BYTES:
        raise BadInput(
            f"the cover {path} is {size / 2**20:.1f} MiB, more than the "
            f"{MAX_COVER_BYTES >> 20} MiB narrator embeds; make it smaller"
        )
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    raise BadInput(f"the cover {path} is not a JPEG or PNG image; convert it first")


# Formats whose chapters FFmpeg writes (M4B's Nero chpl atom, MP3's ID3 CHAP/CTOC).
CHAPTERS_BY_FFMPEG = ("ipod", "mp3")


def vorbis_chapters(chapters: list[Mark]) -> dict[str, str]:
    """Chapter marks as Vorbis comments, numbered from 000 as FFmpeg writes them in Ogg."""
    comments = {}
    for n, mark in enumerate(chapters):
        comments[f"CHAPTER{n:03d}"] = clock(mark.start)
        comments[f"CHAPTER{n:03d}NAME"] = mark.title
    return comments


def finish(path: Path, fmt: Format, chapters: list[Mark], cover: Path | None) -> None:
    """What FFmpeg leaves out or gets wrong, added with mutagen: FLAC's and Ogg's chapter
    comments, and a JPEG or PNG cover in the format's own way."""
    import base64

    if fmt.muxer in ("flac", "ogg") and chapters:
        from mutagen.flac import FLAC
        from mutagen.oggopus import OggOpus

        audio = FLAC(path) if fmt.muxer == "flac" else OggOpus(path)
        audio.tags.update(vorbis_chapters(chapters))
        audio.save()
    if cover is None:
        return
    kind = cover_kind(cover)
    data = cover.read_bytes()
    mime = f"image/{kind}"
    if fmt.muxer == "ipod":
        from mutagen.mp4 import MP4, MP4Cover

        audio = MP4(path)
        image = MP4Cover.FORMAT_JPEG if kind == "jpeg" else MP4Cover.FORMAT_PNG
        audio["covr"] = [MP4Cover(data, imageformat=image)]
        audio.save()
    elif fmt.muxer == "mp3":
        from mutagen.id3 import APIC, ID3, PictureType

        tags = ID3(path)
        tags.add(APIC(encoding=3, mime=mime, type=PictureType.COVER_FRONT, desc="Cover", data=data))
        tags.save(path)
    elif fmt.muxer in ("flac", "ogg"):
        from mutagen.flac import FLAC, Picture
        from mutagen.oggopus import OggOpus

        picture = Picture()
        picture.type, picture.mime, picture.desc, picture.data = 3, mime, "Cover", data
        if fmt.muxer == "flac":
            audio = FLAC(path)
            audio.add_picture(picture)
        else:
            audio = OggOpus(path)
            audio["metadata_block_picture"] = [base64.b64encode(picture.write()).decode()]
        audio.save()


def _speech(block: np.ndarray) -> np.ndarray:
    """Where in a block the samples are speech, not room tone (indices)."""
    import numpy as np

    return np.flatnonzero(np.abs(block) > 10 ** (SPEECH_DBFS / 20))


# A sample below this is room tone, not speech.
SPEECH_DBFS = -50.0
