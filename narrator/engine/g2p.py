"""Text to phonemes (misaki, or misaki's espeak-ng backend offline) and phoneme chunking."""

from __future__ import annotations

import importlib.util
import re
import threading
import warnings
from collections.abc import Callable
from functools import cache

from narrator.errors import ModelUnavailable
from narrator.voices import LANGUAGES

# KModel takes at most 510 phonemes per call (its BERT has 512 positions).
MAX_PHONEMES = 510
# Chunks of up to 250 phonemes (a sentence or a few) render faster than up to 510 and read
# as well (bench/chunking.py).
CHUNK_TARGET = 250
SPACY_ENGLISH = "en_core_web_sm"

_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")
_CLAUSE_END = re.compile(r"(?<=[,;:—])\s+")
_lock = threading.Lock()


class G2PWarning(UserWarning):
    """A lesser G2P backend is in use; the message says how to get the better one."""


def english_backend() -> str:
    """`misaki` when spaCy's English model is installed, else `espeak` (works offline)."""
    return "misaki" if importlib.util.find_spec(SPACY_ENGLISH) else "espeak"


def backend_for(lang: str) -> str:
    if lang in "ab":
        return english_backend()
    return {"j": "misaki-ja", "z": "misaki-zh"}.get(lang, "espeak")


def backends_available(lang: str) -> list[str]:
    """The G2P backends that work here, offline, for `lang`."""
    if lang in "ab":
        return ["misaki", "espeak"] if english_backend() == "misaki" else ["espeak"]
    return [backend_for(lang)]


@cache
def _phonemizer(lang: str, backend: str) -> Callable[[str], str]:
    if backend == "misaki":
        from misaki import en, espeak

        g2p = en.G2P(
            trf=False,
            british=lang == "b",
            fallback=espeak.EspeakFallback(british=lang == "b"),
            unk="",
        )
        return lambda text: g2p(text)[0]
    if backend == "espeak":
        from misaki import espeak

        if lang in "ab" and english_backend() != "misaki":
            warnings.warn(
                f"English G2P uses espeak-ng: {SPACY_ENGLISH} is not installed "
                "(`narrator model pull` installs it where the network allows)",
                G2PWarning,
                stacklevel=2,
            )
        g2p = espeak.EspeakG2P(language=LANGUAGES[lang][2])
        return lambda text: g2p(text)[0]
    module = {"misaki-ja": ("ja", "JAG2P"), "misaki-zh": ("zh", "ZHG2P")}[backend]
    try:
        g2p = getattr(importlib.import_module(f"misaki.{module[0]}"), module[1])()
    except Exception as exc:  # ImportError, or a dictionary it would download
        raise ModelUnavailable(
            f"{LANGUAGES[lang][1]} G2P is not available ({exc}); "
            f"install it with `pip install 'misaki[{module[0]}]'`"
        ) from exc
    return lambda text: g2p(text)[0]


def check_g2p(lang: str, backend: str | None = None) -> None:
    """Build the G2P for `lang` now: ModelUnavailable if it cannot work here."""
    with _lock:
        _phonemizer(lang, backend or backend_for(lang))


def phonemize(text: str, lang: str, backend: str | None = None) -> str:
    """Phonemes for `text` in Kokoro's alphabet ('' when nothing is speakable)."""
    with _lock:  # misaki and phonemizer keep state; one caller at a time
        phonemes = _phonemizer(lang, backend or backend_for(lang))(text) or ""
    phonemes = " ".join(phonemes.split())
    return phonemes if any(ch.isalpha() for ch in phonemes) else ""


def _pieces(phonemes: str, limit: int) -> list[str]:
    """Cut at sentence ends, then clause ends, then spaces, until each piece fits."""
    pieces = [phonemes]
    for pattern in (_SENTENCE_END, _CLAUSE_END, re.compile(r"\s+")):
        pieces = [
            part
            for piece in pieces
            for part in (pattern.split(piece) if len(piece) > limit else [piece])
        ]
    # A single word longer than the window is cut; nothing else ever is.
    return [p[i : i + limit] for p in pieces for i in range(0, len(p), limit)]


Chunk = list[tuple[int, str]]


def chunk_sentences(sentences: list[str], limit: int = MAX_PHONEMES) -> list[Chunk]:
    """Pack sentences' phonemes into chunks of at most `limit` phonemes, never cutting a
    word; each chunk lists its pieces as (sentence number, phonemes)."""
    chunks: list[Chunk] = []
    for number, sentence in enumerate(sentences):
        for part in _pieces(sentence, limit):
            if not part.strip():
                continue
            if chunks and len(chunk_text(chunks[-1])) + 1 + len(part) <= limit:
                chunks[-1].append((number, part))
            else:
                chunks.append([(number, part)])
    return chunks


def chunk_text(chunk: Chunk) -> str:
    return " ".join(piece for _, piece in chunk)
