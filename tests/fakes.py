"""A fake synthesizer: a real implementation of the engine's Synthesizer interface
that renders a tone instead of speech, for fast tests of batch logic."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from narrator.engine import SAMPLE_RATE, Speech, SynthesisError
from narrator.errors import ModelUnavailable
from narrator.lexicon import Lexicon


class FakeSynthesizer:
    def __init__(
        self,
        available: bool = True,
        fail_on: str | None = None,
        on_render: Callable[[str], None] | None = None,
        chunks: int = 1,
    ) -> None:
        self.available = available
        self.fail_on = fail_on
        self.on_render = on_render
        self.chunks = chunks
        self.rendered: list[str] = []
        self.lexicons: list[Lexicon | None] = []
        self.spoken_by: dict[str, tuple[str, float, str]] = {}  # text -> voice, speed, lang
        self.threads: set[str] = set()

    def check(self, voice: str, lang: str) -> None:
        if not self.available:
            raise ModelUnavailable("fake model unavailable; run `narrator model pull`")

    def render(
        self,
        text: str,
        voice: str,
        speed: float,
        lang: str,
        on_chunk: Callable[[int, int], None] | None = None,
        lexicon: Lexicon | None = None,
    ) -> Speech:
        """10 ms of tone per character, in `chunks` pieces; a cue per sentence (cut after
        '. '), each as long as its share of the characters."""
        self.threads.add(threading.current_thread().name)
        if self.on_render:
            self.on_render(text)
        if self.fail_on and self.fail_on in text:
            raise SynthesisError(f"cannot say {text!r}")
        pieces = []
        for k in range(1, self.chunks + 1):
            if on_chunk:
                on_chunk(k, self.chunks)
            n = int(SAMPLE_RATE * 0.01 * len(text)) // self.chunks
            pieces.append(0.1 * np.sin(np.arange(n) / 10))
        self.rendered.append(text)
        self.lexicons.append(lexicon)
        self.spoken_by[text] = (voice, speed, lang)
        samples = np.concatenate(pieces).astype(np.float32)
        cues, at = [], 0
        said = [s for s in text.replace(". ", ".\n").split("\n") if s.strip()]
        for k, sentence in enumerate(said):
            share = samples.size * len(sentence) // len(text)
            end = samples.size if k == len(said) - 1 else at + share
            cues.append((at, end - at, sentence.strip()))
            at = end
        return Speech(samples, cues)
