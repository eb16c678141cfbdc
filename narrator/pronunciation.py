"""What the model is given to say for each segment: its phonemes after the lexicon, and the
words the lexicon changed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from narrator.audit import Finding, find_traps, known
from narrator.engine.g2p import CHUNK_TARGET
from narrator.engine.script import write_script
from narrator.lexicon import Entry, Lexicon
from narrator.project import read_settings, segment_state, segment_states
from narrator.store import ProjectStore
from narrator.text import printable_line


@dataclass(frozen=True)
class Change:
    """A word of the text (as written there) and the entry that says it."""

    word: str
    entry: Entry

    def as_dict(self) -> dict[str, object]:
        return {"word": self.word, "entry": self.entry.grapheme} | {
            k: v for k, v in self.entry.as_dict().items() if k in ("say", "ipa")
        }


@dataclass(frozen=True)
class Said:
    """One segment as the model is given it."""

    index: int
    text: str
    phonemes: str
    changes: list[Change]

    def as_dict(self) -> dict[str, object]:
        return {
            "index": self.index,
            "text": self.text,
            "phonemes": self.phonemes,
            "changes": [c.as_dict() for c in self.changes],
        }


def phonemes(text: str, lang: str, lexicon: Lexicon | None = None) -> str:
    """The phonemes the model is given for `text` (sentences joined), '' for none."""
    if not text.strip():
        return ""
    from narrator.engine import SynthesisError

    try:
        return write_script(text, lang, None, CHUNK_TARGET, lexicon).phonemes
    except SynthesisError:  # nothing speakable
        return ""


def changes(text: str, lexicon: Lexicon) -> list[Change]:
    return [Change(text[start:end], e) for start, end, e in lexicon.find(text)]


def segment_phonemes(store: ProjectStore, indices: Sequence[int] = ()) -> list[Said]:
    """Every segment (or those at `indices`, which must exist) as the model is given it,
    with the project's language and lexicon."""
    settings = read_settings(store)
    states = [segment_state(store, i) for i in indices] if indices else segment_states(store)
    return [
        Said(
            s.sequence_index,
            printable_line(s.text),
            phonemes(s.text, settings.lang, settings.lexicon),
            changes(s.text, settings.lexicon),
        )
        for s in states
    ]


def audit_project(store: ProjectStore) -> list[Finding]:
    """The project's tokens likely to be misread (narrator.audit), each with the phonemes
    narrator would give the model now. Words outside the dictionary are looked for in
    English projects only (the dictionary is English)."""
    settings = read_settings(store)
    texts = [(s.sequence_index, s.text) for s in segment_states(store)]
    english = settings.lang in "ab"
    found = find_traps(texts, settings.lexicon, known if english else lambda word: True)
    for finding in found:
        finding.phonemes = phonemes(finding.token, settings.lang)
    return found
