"""What a synthesizer speaks: text into sentences, phonemes and chunks, and chunk audio back
into one recording with sentence cues."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from narrator.engine import SAMPLE_RATE, Speech, SynthesisError
from narrator.engine.g2p import Chunk, chunk_sentences, chunk_text, phonemize
from narrator.lexicon import Entry, Lexicon, punctuation
from narrator.splitting import sentences
from narrator.text import MAX_PAUSE_S, pause_runs


@dataclass(frozen=True)
class Script:
    """What a text becomes before any model runs: its spoken sentences, their phonemes
    joined, the chunks those are packed into (pieces as (sentence number, phonemes)), and
    the silence (samples) a pause mark puts before a chunk (or, at len(chunks), after the
    last)."""

    sentences: list[str]
    phonemes: str
    chunks: list[Chunk]
    silences: dict[int, int] = field(default_factory=dict)


def write_script(
    text: str, lang: str, backend: str | None, limit: int, lexicon: Lexicon | None = None
) -> Script:
    """Sentences, phonemized one at a time (after the lexicon), packed into chunks of at
    most `limit`; a pause mark ends a chunk and asks for silence."""
    lexicon = lexicon or Lexicon()
    spoken: list[str] = []
    shown: list[str] = []
    chunks: list[Chunk] = []
    silences: dict[int, int] = {}
    for run in pause_runs(text):
        if isinstance(run, float):
            if run > MAX_PAUSE_S:
                raise SynthesisError(
                    f"a pause of {run:g} s is longer than {MAX_PAUSE_S:g} s; shorten its mark"
                )
            silences[len(chunks)] = silences.get(len(chunks), 0) + round(run * SAMPLE_RATE)
            shown.append(f"[pause {run:g}s]")
            continue
        said = [(s, say(s, lang, backend, lexicon)) for s in sentences(run)]
        said = [(s, p) for s, p in said if p]
        first = len(spoken)
        chunks += [
            [(first + n, piece) for n, piece in chunk]
            for chunk in chunk_sentences([p for _, p in said], limit)
        ]
        spoken += [" ".join(s.split()) for s, _ in said]
        shown += [p for _, p in said]
    if not spoken:
        raise SynthesisError("nothing speakable in the text (no words after G2P)")
    return Script(spoken, " ".join(shown), chunks, silences)


def say(sentence: str, lang: str, backend: str | None, lexicon: Lexicon) -> str:
    """A sentence's phonemes: aliases are spoken in place of their words, and the words
    the lexicon gives phonemes for take them, between the phonemized text around them."""
    pieces = lexicon.pieces(sentence)
    if all(isinstance(piece, str) for piece in pieces):
        return phonemize("".join(pieces), lang, backend)  # type: ignore[arg-type]
    said: list[str] = []
    for piece in pieces:
        if isinstance(piece, Entry):
            said.append(piece.ipa or "")
            continue
        possessive = _POSSESSIVE.match(piece) if said else None
        if possessive:  # "Hermione's": the word's phonemes, then a z
            said[-1] += "z"
            piece = piece[possessive.end() :]
        phonemes = phonemize(piece, lang, backend)
        if phonemes:
            said.append(phonemes)
        elif said:  # only punctuation: it closes the word before it
            said[-1] += punctuation(piece)
    return " ".join(p for p in said if p)


_POSSESSIVE = re.compile(r"['’]s(?!\w)")


def perform(
    script: Script,
    run: Callable[[str], tuple[Any, list[int]]],
    vocab: dict[str, int],
    on_chunk: Callable[[int, int], None] | None = None,
) -> Speech:
    """Render each chunk with `run(phonemes) -> (float32 samples, token durations)` and
    place every sentence in the whole from the durations: the part every engine shares.
    `vocab`: the model's phoneme vocabulary (it skips phonemes outside it)."""

    pieces = []
    spans: dict[int, tuple[int, int]] = {}
    done = 0
    for number, chunk in enumerate(script.chunks, start=1):
        if on_chunk is not None:
            on_chunk(number, len(script.chunks))
        if number - 1 in script.silences:
            pieces.append(np.zeros(script.silences[number - 1], np.float32))
            done += pieces[-1].size
        audio, durations = run(chunk_text(chunk))
        for (sentence, _), (a, b) in zip(
            chunk,
            _piece_spans(chunk, durations, audio.size, vocab),
            strict=True,
        ):
            first, _ = spans.get(sentence, (done + a, 0))
            spans[sentence] = (first, done + b)
        pieces.append(audio)
        done += audio.size
    if len(script.chunks) in script.silences:
        pieces.append(np.zeros(script.silences[len(script.chunks)], np.float32))
    samples = np.concatenate(pieces)
    if not np.isfinite(samples).all():
        raise SynthesisError("the model produced invalid samples (NaN); check the weights")
    cues = [(a, b - a, script.sentences[n]) for n, (a, b) in sorted(spans.items())]
    return Speech(samples, cues)


def _piece_spans(
    chunk: Chunk,
    durations: list[int],
    samples: int,
    vocab: dict[str, int],
) -> list[tuple[int, int]]:
    """Where each piece of a chunk lies in its audio (samples), from the model's predicted
    duration of each token: the model drops phonemes outside its vocabulary and adds a
    boundary token at each end, which go to the first and last piece."""
    ends = []
    token = 1
    for k, (_, piece) in enumerate(chunk):
        token += sum(1 for ch in piece + (" " if k < len(chunk) - 1 else "") if ch in vocab)
        ends.append(token)
    ends[-1] = len(durations)
    elapsed = list(itertools.accumulate(durations, initial=0))
    scale = samples / max(elapsed[-1], 1)
    edges = [0] + [round(elapsed[end] * scale) for end in ends]
    edges[-1] = samples
    return list(itertools.pairwise(edges))
