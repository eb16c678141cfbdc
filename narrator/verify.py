"""Proof-listening: an offline recogniser hears a segment's audio, and what it hears is
aligned with the words the segment should say; signal checks find silence, clipping, a fade
and a length the recorded sentence timings do not predict. Each limit is a named constant,
chosen by measurement (bench/verify.py; see bench/RESULTS.md)."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from narrator.errors import MissingExtra
from narrator.lexicon import Entry, Lexicon
from narrator.text import without_pauses

INSTALL = "pip install 'narrator[quality]'"
RATE = 24_000
FRAME_S = 0.02  # the signal checks' frame
# A frame quieter than this is silence.
SILENCE_DBFS = -50.0
# Silence inside the speech longer than this (seconds) is a gap (Kokoro's pause between
# sentences stays well below it).
MAX_GAP_S = 1.2
# Silence before the first word or after the last.
MAX_LEAD_S = 1.0
MAX_TAIL_S = 1.5
# Samples at full scale in a row: clipped (Kokoro's own peaks pass full scale for up to 6).
CLIPPED_RUN = 12
FULL_SCALE = 0.999
# The audio's length may differ from where its recorded sentence timings end by this.
MAX_LENGTH_DRIFT_S = 0.25
# A fade out: how much better a level falling to silence at the end of the audio explains
# the late syllable peaks than the steady level of the early ones (dB of error saved, summed
# over the late peaks, over the root of their count). Clean renders stay below it.
FADE_SCORE = 9.0
# Syllable peaks: the loudest FADE_FRAME_S frame within FADE_SYLLABLE_S either side.
FADE_FRAME_S = 0.03
FADE_SYLLABLE_S = 0.15
# Fewer than this share of the words heard: the audio is not this segment's.
MIN_HEARD = 0.35
# A run of this many words or more not heard, with less than this share of the time they
# take left for them, is missing (a dropped sentence, or the end cut off).
MISSING_WORDS = 3
MISSING_TIME_SHARE = 0.35
# Segments with fewer words than this are judged by the signal checks only.
MIN_WORDS = 4
KINDS = (
    "missing_end",
    "missing_middle",
    "not_this_segment",
    "gap",
    "leading_silence",
    "trailing_silence",
    "clipped",
    "length",
    "fades_out",
)


@dataclass(frozen=True)
class Finding:
    """Something wrong with a segment's audio, and where (seconds into it)."""

    kind: str
    at: float
    detail: str

    def as_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "at": round(self.at, 2), "detail": self.detail}


@dataclass(frozen=True)
class Heard:
    """What the recogniser heard: words with their start and end (seconds)."""

    words: list[tuple[str, float, float]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(w for w, _, _ in self.words)


def recogniser_missing() -> str | None:
    try:
        import pocketsphinx  # noqa: F401
        import scipy.signal  # noqa: F401
    except ImportError:
        return f"the recogniser (pocketsphinx) is not installed: {INSTALL}"
    return None


def hear(samples: np.ndarray) -> Heard:
    """pocketsphinx's US English model on the audio (resampled to 16 kHz)."""
    missing = recogniser_missing()
    if missing:
        raise MissingExtra(missing)
    from scipy.signal import resample_poly

    pcm = (np.clip(resample_poly(samples, 2, 3), -1, 1) * 32767).astype(np.int16)
    decoder = _decoder()
    decoder.start_utt()
    decoder.process_raw(pcm.tobytes(), full_utt=True)
    decoder.end_utt()
    words = [
        (re.sub(r"\(\d+\)$", "", s.word), s.start_frame / 100, (s.end_frame + 1) / 100)
        for s in decoder.seg()
        if not (s.word.startswith("<") or s.word.startswith("[") or s.word.startswith("++"))
    ]
    return Heard(words)


_DECODERS: dict[int, object] = {}


def _decoder():  # noqa: ANN202 - pocketsphinx's Decoder, one per process
    import os

    from pocketsphinx import Decoder

    if os.getpid() not in _DECODERS:
        _DECODERS[os.getpid()] = Decoder(samprate=16000, logfn="/dev/null")
    return _DECODERS[os.getpid()]


def words_of(text: str) -> list[str]:
    """Words as the recogniser spells them: lower case, numbers as words."""
    from num2words import num2words

    text = re.sub(
        r"\d+(?:\.\d+)?",
        lambda m: f" {num2words(float(m[0]) if '.' in m[0] else int(m[0]))} ",
        text.replace(",", ""),
    )
    return [w for w in re.sub(r"[^\w']+", " ", text.lower()).split() if w.strip("'")]


def expected_words(text: str, lexicon: Lexicon | None = None) -> list[str | None]:
    """The words a segment should say: its aliases in place; a word given phonemes is
    None (any word the recogniser hears there will do)."""
    said: list[str | None] = []
    for piece in (lexicon or Lexicon()).pieces(without_pauses(text)):
        if isinstance(piece, Entry):
            said += [None] * len(piece.grapheme.split())
        else:
            said += words_of(piece)
    return said


def _frames_db(samples: np.ndarray, frame_s: float = FRAME_S) -> np.ndarray:
    """The level of each frame (dBFS, RMS)."""
    step = int(RATE * frame_s)
    count = len(samples) // step
    if count == 0:
        return np.array([])
    frames = samples[: count * step].astype(np.float64).reshape(count, step)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    return 20 * np.log10(np.maximum(rms, 1e-9))


def signal_findings(samples: np.ndarray, cues: Sequence[Sequence[object]] | None) -> list[Finding]:
    """Checks that need no recogniser: silences, clipping, a fade, the length."""
    found: list[Finding] = []
    seconds = len(samples) / RATE
    if cues:
        predicted = _timed_end(cues)
        if abs(predicted - seconds) > MAX_LENGTH_DRIFT_S:
            found.append(
                Finding(
                    "length",
                    min(predicted, seconds),
                    f"{seconds:.2f} s of audio; its sentence timings end at {predicted:.2f} s",
                )
            )
    peak = np.abs(samples) >= FULL_SCALE
    if peak.any():
        runs = np.flatnonzero(np.convolve(peak, np.ones(CLIPPED_RUN, int), "valid") == CLIPPED_RUN)
        if runs.size:
            found.append(
                Finding("clipped", runs[0] / RATE, f"{int(peak.sum())} samples at full scale")
            )
    db = _frames_db(samples)
    loud = np.flatnonzero(db > SILENCE_DBFS)
    if loud.size == 0:
        return found + [Finding("not_this_segment", 0.0, "the audio is silent")]
    lead, tail = loud[0] * FRAME_S, seconds - (loud[-1] + 1) * FRAME_S
    if lead > MAX_LEAD_S:
        found.append(Finding("leading_silence", 0.0, f"{lead:.1f} s of silence before speech"))
    if tail > MAX_TAIL_S:
        found.append(
            Finding(
                "trailing_silence",
                (loud[-1] + 1) * FRAME_S,
                f"{tail:.1f} s of silence after speech",
            )
        )
    fade = _fade(samples)
    if fade is not None:
        found.append(fade)
    gaps = np.diff(loud)
    for at in np.flatnonzero(gaps * FRAME_S > MAX_GAP_S):
        length = (gaps[at] - 1) * FRAME_S
        found.append(
            Finding("gap", (loud[at] + 1) * FRAME_S, f"{length:.1f} s of silence inside speech")
        )
    return found


def heard_findings(expected: list[str | None], heard: Heard, samples: np.ndarray) -> list[Finding]:
    """Words that are not in the audio: a missing end or middle, or another text."""
    words = list(expected)
    seconds = len(samples) / RATE
    if sum(w is not None for w in words) < MIN_WORDS:
        return []
    got = [w for w, _, _ in heard.words]
    matcher = difflib.SequenceMatcher(None, [w or "\0" for w in words], got, autojunk=False)
    blocks = [b for b in matcher.get_matching_blocks() if b.size]
    matched = sum(b.size for b in blocks) + sum(w is None for w in words)
    share = matched / len(words)
    if share < MIN_HEARD:
        return [
            Finding(
                "not_this_segment",
                0.0,
                f"{share:.0%} of its words heard (heard: {' '.join(got[:12])}...)"
                if got
                else "no words heard",
            )
        ]
    per_word = seconds / max(len(words), 1)
    found = []
    # between matched runs, and after the last one: words not heard with too little time
    edges = [(b.a + b.size, b.b + b.size) for b in blocks]
    starts = [(b.a, b.b) for b in blocks[1:]] + [(len(words), len(got))]
    for (a_end, b_end), (a_next, b_next) in zip(edges, starts, strict=True):
        missing = a_next - a_end
        if missing < MISSING_WORDS:
            continue
        since = heard.words[b_end - 1][2] if b_end else 0.0
        until = heard.words[b_next][1] if b_next < len(got) else seconds
        lost = " ".join(w or "?" for w in words[a_end:a_next])[:80]
        at_end = a_next == len(words)
        if until - since < MISSING_TIME_SHARE * missing * per_word:
            kind, at = ("missing_end", since) if at_end else ("missing_middle", until)
            found.append(Finding(kind, at, f"{missing} words not heard: {lost}"))
    if blocks and blocks[0].a >= MISSING_WORDS and heard.words:
        first = heard.words[blocks[0].b][1]
        if first < MISSING_TIME_SHARE * blocks[0].a * per_word:
            found.append(Finding("missing_middle", 0.0, f"the first {blocks[0].a} words not heard"))
    return found


def _fade(samples: np.ndarray) -> Finding | None:
    """The level of the syllables falling away to the end of the audio: the fade to silence
    that best explains the late syllable peaks, if it explains them well, placed where it has
    taken 3 dB."""
    db = _frames_db(samples, FADE_FRAME_S)
    if db.size == 0:
        return None
    half = int(FADE_SYLLABLE_S / FADE_FRAME_S)
    around = np.lib.stride_tricks.sliding_window_view(
        np.pad(db, half, constant_values=-np.inf), 2 * half + 1
    ).max(axis=1)
    at = np.flatnonzero((db == around) & (db > max(db.max() - 50, SILENCE_DBFS)))
    times, peaks = (at + 0.5) * FADE_FRAME_S, db[at]
    seconds = len(samples) / RATE
    best, onset = 0.0, 0.0
    for share in np.arange(0.3, 0.85, 0.05):
        start = share * seconds
        early, late = peaks[times < start], peaks[times >= start]
        if len(early) < 4 or len(late) < 3:
            continue
        faded = 20 * np.log10(
            np.clip(1 - (times[times >= start] - start) / (seconds - start), 1e-3, 1)
        )
        steady = float(np.median(early))
        saved = np.abs(late - steady) - np.abs(late - steady - faded)
        score = float(saved.sum()) / np.sqrt(len(late))
        if score > best:
            best, onset = score, start
    if best <= FADE_SCORE:
        return None
    audible = float(onset + (1 - 10 ** (-3 / 20)) * (seconds - onset))  # 3 dB down
    return Finding("fades_out", audible, "the speech fades away from here to the end")


def _timed_end(cues: Sequence[Sequence[object]]) -> float:
    """Where the recorded sentence timings say the audio ends (seconds)."""
    return max(int(c[0]) + int(c[1]) for c in cues) / RATE  # type: ignore[call-overload]


def _cut_at(cues: Sequence[Sequence[object]], heard: Heard, short: float) -> float | None:
    """Where audio that is `short` seconds shorter than its sentence timings lost them: the
    first word heard that much earlier than the timings place it."""
    timeline: list[tuple[str, float]] = []  # each word of the cues, and when it should start
    for first, length, sentence in cues:
        said = words_of(str(sentence))
        for k, word in enumerate(said):
            timeline.append((word, (int(first) + int(length) * k / len(said)) / RATE))  # type: ignore[call-overload]
    got = [w for w, _, _ in heard.words]
    matcher = difflib.SequenceMatcher(None, [w for w, _ in timeline], got, autojunk=False)
    early = [
        (timeline[block.a + k][1] - heard.words[block.b + k][1] > short / 2, block.b + k)
        for block in matcher.get_matching_blocks()
        for k in range(block.size)
    ]
    for (now, index), (after, _), (last, _) in zip(early, early[1:], early[2:], strict=False):
        if now and after and last:  # three words in a row: not a stray match
            return heard.words[index][1]
    return None


def judge(
    samples: np.ndarray,
    text: str,
    cues: Sequence[Sequence[object]] | None,
    lexicon: Lexicon | None = None,
    heard: Heard | None = None,
) -> list[Finding]:
    """Every finding for one segment's audio; `heard` None: the signal checks only."""
    found = signal_findings(samples, cues)
    if heard is not None and not any(f.kind == "not_this_segment" for f in found):
        found += heard_findings(expected_words(text, lexicon), heard, samples)
        short = _timed_end(cues) - len(samples) / RATE if cues else 0.0
        at = _cut_at(cues, heard, short) if cues and short > MAX_LENGTH_DRIFT_S else None
        if at is not None:  # the audio lost time its timings promise: place it where
            found = [Finding(f.kind, at, f.detail) if f.kind == "length" else f for f in found]
    return sorted(found, key=lambda f: f.at)
