"""Turning a text or Markdown document into segment texts."""

from __future__ import annotations

import re
import unicodedata
from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from narrator.errors import BadInput


class Split(StrEnum):
    paragraph = "paragraph"
    line = "line"
    sentence = "sentence"


MARKDOWN_SUFFIXES = {".md", ".markdown"}
_BLANK_LINES = re.compile(r"\n\s*\n")
_SPACES = re.compile(r"\s+")


def normalise(text: str) -> str:
    """NFC, no BOM, Unix newlines, no trailing spaces on lines."""
    text = unicodedata.normalize("NFC", text.lstrip("\ufeff"))
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(line.rstrip() for line in text.split("\n"))


def _one_line(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def _markdown_blocks(text: str) -> list[str]:
    """Paragraphs of a Markdown document as plain text; a thematic break (`* * *`)
    becomes an empty block so that a scene break stays in the narration's order."""
    from markdown_it import MarkdownIt

    blocks: list[str] = []
    for token in MarkdownIt("commonmark").parse(text):
        if token.type == "hr":
            blocks.append("")
        elif token.type == "inline":
            parts = [
                child.content if child.type in ("text", "code_inline") else " "
                for child in token.children or []
                if child.type in ("text", "code_inline", "softbreak", "hardbreak")
            ]
            blocks.append(_one_line("".join(parts)))
        elif token.type in ("fence", "code_block"):
            blocks.append(_one_line(token.content))
    return blocks


@lru_cache(maxsize=1)
def _sentencizer():  # noqa: ANN202 - spaCy's Language, imported lazily
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    return nlp


def sentences(paragraph: str) -> list[str]:
    """Split one paragraph into sentences with spaCy's rule-based sentencizer."""
    return [s.text.strip() for s in _sentencizer()(paragraph).sents if s.text.strip()]


def split_text(text: str, split: Split = Split.paragraph, markdown: bool = False) -> list[str]:
    """Split a document into segment texts, in order."""
    text = normalise(text)
    if split is Split.line:
        return [line.strip() for line in text.split("\n") if line.strip()]
    if markdown:
        paragraphs = _markdown_blocks(text)
    else:
        paragraphs = [_one_line(p) for p in _BLANK_LINES.split(text) if p.strip()]
    if split is Split.sentence:
        return [s for p in paragraphs for s in (sentences(p) if p else [p])]
    return paragraphs


def read_document(path: str | Path) -> str:
    """Read a UTF-8 document (`-` is standard input); a clear error otherwise."""
    import sys

    if str(path) == "-":
        data = sys.stdin.buffer.read()
        name = "standard input"
    else:
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise BadInput(f"cannot read {path}: {exc.strerror}; check the path") from exc
        name = str(path)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadInput(
            f"{name} is not UTF-8 text (byte {exc.start}); convert it, e.g. with iconv"
        ) from exc


def split_document(path: str | Path, split: Split = Split.paragraph) -> list[str]:
    markdown = Path(str(path)).suffix.lower() in MARKDOWN_SUFFIXES
    return split_text(read_document(path), split, markdown=markdown)
