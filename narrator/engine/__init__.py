"""Everything Kokoro, behind the small Synthesizer interface that the batch uses."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from narrator.errors import NarratorError


class SynthesisError(NarratorError):
    """One text could not be rendered; the batch records it and goes on."""


class Synthesizer(Protocol):
    """What the batch needs from a text-to-speech engine."""

    def check(self, voice: str, lang: str) -> None:
        """Raise ModelUnavailable (or BadInput for a voice it lacks) before any work.
        Must answer quickly, without loading the model."""

    def render(self, text: str, voice: str, speed: float, lang: str, output: Path) -> float:
        """Speak `text` into a WAV at `output`, written atomically; return its seconds."""
