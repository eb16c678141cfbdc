"""Rendering only: the Synthesizer protocol that the batch and the Ray runner use."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple, Protocol

from narrator.errors import NarratorError

if TYPE_CHECKING:
    import numpy as np

    from narrator.lexicon import Lexicon

# Kokoro-82M speaks at 24 kHz, mono.
SAMPLE_RATE = 24_000


class SynthesisError(NarratorError):
    """One text could not be rendered; the batch records it and goes on."""


class Speech(NamedTuple):
    """A render: mono float32 samples at SAMPLE_RATE, and where each sentence lies in
    them as (first sample, samples, sentence text), for captions."""

    samples: np.ndarray
    cues: list[tuple[int, int, str]]


class Synthesizer(Protocol):
    """What the batch needs from a text-to-speech engine. It renders; it never writes
    files, so whoever records the audio is the only writer of the audio folder."""

    def check(self, voice: str, lang: str) -> None:
        """Raise ModelUnavailable (or BadInput for a voice it lacks) before any work.
        Must answer quickly, without loading the model."""

    def render(
        self,
        text: str,
        voice: str,
        speed: float,
        lang: str,
        on_chunk: Callable[[int, int], None] | None = None,
        lexicon: Lexicon | None = None,
    ) -> Speech:
        """Speak `text`, its words said as `lexicon` says. `on_chunk(k, n)` is called
        before chunk k of n is rendered; an exception it raises stops the render."""
