"""A fake synthesizer: a real implementation of the engine's Synthesizer interface
that writes a tone instead of speech, for fast tests of batch logic."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from narrator.engine import SynthesisError
from narrator.engine.audio import SAMPLE_RATE, write_wav
from narrator.errors import ModelUnavailable


class FakeSynthesizer:
    def __init__(
        self,
        available: bool = True,
        fail_on: str | None = None,
        on_render: Callable[[str], None] | None = None,
    ) -> None:
        self.available = available
        self.fail_on = fail_on
        self.on_render = on_render
        self.rendered: list[str] = []
        self.threads: set[str] = set()

    def check(self, voice: str, lang: str) -> None:
        if not self.available:
            raise ModelUnavailable("fake model unavailable; run `narrator model pull`")

    def render(self, text: str, voice: str, speed: float, lang: str, output: Path) -> float:
        self.threads.add(threading.current_thread().name)
        if self.on_render:
            self.on_render(text)
        if self.fail_on and self.fail_on in text:
            raise SynthesisError(f"cannot say {text!r}")
        self.rendered.append(text)
        samples = 0.1 * np.sin(np.arange(int(SAMPLE_RATE * 0.01 * len(text))) / 10)
        return write_wav(output, samples)
