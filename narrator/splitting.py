"""Text and Markdown into blocks (the segments to be, some of them headings), with the
markup of scanned books (Project Gutenberg's) taken out; paragraphs into sentences."""

from __future__ import annotations

import importlib.abc
import re
import sys
import threading
import unicodedata
from collections.abc import Callable
from enum import StrEnum
from functools import lru_cache
from typing import Any, NamedTuple

from narrator.errors import BadInput


class Split(StrEnum):
    paragraph = "paragraph"
    line = "line"
    sentence = "sentence"


class Block(NamedTuple):
    """One segment to be: its text, its level when it is a heading (1-6), and the voice or
    speed a document casts it in (None: the project's)."""

    text: str
    heading_level: int | None = None
    voice: str | None = None
    speed: float | None = None


_BLANK_LINES = re.compile(r"\n\s*\n")
_SPACES = re.compile(r"\s+")
# A chapter line of a plain-text book ("CHAPTER IV.", "Chapter 12: The Storm", "BOOK II"),
# when it stands as a short paragraph of its own: ordinary prose never looks like that.
DEFAULT_CHAPTER_PATTERN = (
    r"^(?:CHAPTER|Chapter|BOOK|Book|PART|Part)\s+(?:[IVXLCDM]+|\d+|[A-Z][a-z]+)\b"
)
_GUTENBERG_START = re.compile(r"^\*\*\* ?START OF (?:THE|THIS) PROJECT GUTENBERG.*$", re.M)
_GUTENBERG_END = re.compile(r"^\*\*\* ?END OF (?:THE|THIS) PROJECT GUTENBERG.*$", re.M)
# Each span a pattern may match is bounded, so that hostile text (a megabyte of ' _a')
# costs a linear scan, not one scan to the end per opening mark.
MARKUP_SPAN = 500
_ILLUSTRATION = re.compile(rf"\[Illustration[^\]]{{0,{MARKUP_SPAN}}}\]", re.S)
_SIDENOTE = re.compile(rf"\[Sidenote:\s*([^\]]{{0,{MARKUP_SPAN}}})\]", re.S)
_EMPHASIS = re.compile(rf"(?<![\w*_])([_*])(?=\S)(.{{1,{MARKUP_SPAN}}}?)(?<=\S)\1(?![\w*_])", re.S)
_SCENE_BREAK = re.compile(r"[\s*]*")  # a paragraph of asterisks and spaces only


def normalise(text: str) -> str:
    """NFC, no BOM, Unix newlines, no trailing spaces on lines."""
    text = unicodedata.normalize("NFC", text.lstrip("\ufeff"))
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(line.rstrip() for line in text.split("\n"))


def one_line(text: str) -> str:
    """All whitespace runs as one space, trimmed."""
    return _SPACES.sub(" ", text).strip()


def _markdown_blocks(text: str) -> list[Block]:
    """Headings and paragraphs of a Markdown document as plain text; a thematic break
    (`* * *`) becomes an empty block so that a scene break stays in the narration's order.
    A line break or inline HTML is a space, an HTML block is read without its tags, a
    table row by row (its cells' text, comma-separated) and a paragraph with nothing to
    say (an image alone) is dropped."""
    from markdown_it import MarkdownIt

    blocks: list[Block] = []
    level = None
    row: list[str] | None = None  # the cells of the table row being read
    cast: dict[str, object] = {}  # from the last cast comment, until the next or a heading
    for token in MarkdownIt("commonmark").enable("table").parse(text):
        if token.type == "html_block" and _CAST_LINE.fullmatch(token.content.strip()):
            line = token.map[0] + 1 if token.map else 0
            cast = _cast(_CAST_LINE.fullmatch(token.content.strip())[1], line)  # type: ignore[index]
            continue
        if token.type == "heading_open":
            cast = {}
            level = int(token.tag[1])
        elif token.type == "heading_close":
            level = None
        elif token.type == "hr":
            blocks.append(Block(""))
        elif token.type == "tr_open":
            row = []
        elif token.type == "tr_close" and row is not None:
            if any(row):
                blocks.append(Block(", ".join(cell for cell in row if cell)))
            row = None
        elif token.type == "inline":
            said = one_line(
                "".join(
                    child.content if child.type in ("text", "code_inline") else " "
                    for child in token.children or []
                    if child.type
                    in ("text", "code_inline", "softbreak", "hardbreak", "html_inline")
                )
            )
            if row is not None:
                row.append(said)
            elif said:
                blocks.append(Block(said, level, **cast))  # type: ignore[arg-type]
        elif token.type in ("fence", "code_block"):
            blocks.append(Block(one_line(token.content)))
        elif token.type == "html_block" and (said := one_line(_html_text(token.content))):
            blocks.append(Block(said))
    return blocks


# `<!-- voice: bf_emma -->`, `<!-- speed: 1.1 -->`, or both: `<!-- voice: bf_emma; speed: 1.1 -->`
_CAST_LINE = re.compile(r"<!--\s*((?:voice|speed)\s*:[^>]*?)\s*-->", re.IGNORECASE)


def _cast(spec: str, line: int) -> dict[str, object]:
    """A cast comment's voice and speed, checked: BadInput naming the line."""
    from narrator.voices import canonical_voice, check_speed, parse_voice

    cast: dict[str, object] = {}
    try:
        for item in spec.split(";"):
            key, _, value = item.partition(":")
            key, value = key.strip().lower(), value.strip()
            if key == "voice":
                parse_voice(value, check_files=False)
                cast["voice"] = canonical_voice(value)
            elif key == "speed":
                try:
                    cast["speed"] = check_speed(float(value))
                except ValueError:
                    raise BadInput(f"speed {value!r} is not a number") from None
            else:
                raise BadInput(f"{key!r} is not voice or speed")
    except BadInput as exc:
        raise BadInput(f"line {line}: {exc}") from exc
    return cast


def _html_text(markup: str) -> str:
    """The text of an HTML fragment, without its tags, scripts and styles."""
    from html.parser import HTMLParser

    class Text(HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.parts: list[str] = []
            self.hidden = 0

        def handle_starttag(self, tag: str, attrs: object) -> None:
            if tag in ("script", "style"):
                self.hidden += 1
            self.parts.append(" ")

        def handle_endtag(self, tag: str) -> None:
            if tag in ("script", "style") and self.hidden:
                self.hidden -= 1
            self.parts.append(" ")

        def handle_data(self, data: str) -> None:
            if not self.hidden:
                self.parts.append(data)

    parser = Text()
    parser.feed(markup)
    parser.close()
    return "".join(parser.parts)


def _without_book_markup(text: str) -> str:
    """A scanned book's text without what is not read aloud: Project Gutenberg's header
    and licence, [Illustration] notes, and _emphasis_ / *emphasis* markers. Sidenotes
    stay, marked, for _text_blocks to place."""
    if start := _GUTENBERG_START.search(text):
        text = text[start.end() :]
    if end := _GUTENBERG_END.search(text):
        text = text[: end.start()]
    text = _ILLUSTRATION.sub("", text)
    return _EMPHASIS.sub(r"\2", text)


def _paragraph_text(paragraph: str) -> str:
    """Hard-wrapped lines joined; verse (every line indented) kept as lines."""
    lines = [line for line in paragraph.split("\n") if line.strip()]
    if len(lines) > 1 and all(line[:1].isspace() for line in lines):
        return "\n".join(one_line(line) for line in lines)
    return one_line(paragraph)


def _text_blocks(text: str, chapter: re.Pattern[str] | None, clean: bool) -> list[Block]:
    """Paragraphs of a plain-text book: a short paragraph matching `chapter` is a level-1
    heading; with `clean`, a row of asterisks is a scene break (an empty block) and a
    sidenote right after a heading becomes its subtitle (elsewhere it is dropped)."""
    if clean:
        text = _without_book_markup(text)
    blocks: list[Block] = []
    for paragraph in _BLANK_LINES.split(text):
        if not paragraph.strip():
            continue
        if clean and "*" in paragraph and _SCENE_BREAK.fullmatch(paragraph):
            blocks.append(Block(""))
            continue
        if clean and (note := _SIDENOTE.fullmatch(paragraph.strip())):
            if blocks and blocks[-1].heading_level:
                blocks[-1] = Block(f"{blocks[-1].text.rstrip('.')}: {one_line(note[1])}", 1)
            continue
        if clean:
            paragraph = _SIDENOTE.sub("", paragraph)
        line = one_line(paragraph)
        blocks.append(
            Block(line, 1) if _is_chapter(line, chapter) else Block(_paragraph_text(paragraph))
        )
    return blocks


def _is_chapter(line: str, chapter: re.Pattern[str] | None) -> bool:
    """A chapter line: short, and matching the pattern."""
    return chapter is not None and len(line) <= 100 and bool(chapter.search(line))


class _WithoutTorch(importlib.abc.MetaPathFinder):
    """An import finder that answers "no such module" to torch, for one thread only."""

    def __init__(self) -> None:
        self._thread = threading.get_ident()

    def find_spec(self, name: str, path: object, target: object = None) -> None:
        if name.partition(".")[0] == "torch" and threading.get_ident() == self._thread:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def _import_spacy() -> None:
    """Import spaCy without torch where torch is not loaded yet. spaCy's thinc imports torch when
    it is installed (time and memory: bench/startup.py), for models the tokenizer and the
    sentencizer never run; the onnx engine with the espeak G2P then runs without torch at
    all. Only this thread's imports are refused torch, only while spaCy loads: torch stays
    importable (the torch engine imports it as usual). thinc has noted it absent, which only
    its torch-backed layers (transformer pipelines) would mind; its own layers, as in
    spaCy's small English model, run on numpy."""
    if "spacy" in sys.modules or "torch" in sys.modules:
        return
    finder = _WithoutTorch()
    sys.meta_path.insert(0, finder)
    try:
        import spacy  # noqa: F401
    finally:
        sys.meta_path.remove(finder)


@lru_cache(maxsize=1)
def _sentencizer() -> Callable[[str], Any]:
    """spaCy's English tokenizer and rule-based sentencizer, as `spacy.blank("en")` with a
    sentencizer pipe builds them, but without a `Language`: building one loads every
    installed spaCy plugin's entry points (spacy-curated-transformers, which kokoro brings,
    imports Hugging Face transformers), about a second before the first chunk."""
    _import_spacy()
    from spacy.lang.en import English
    from spacy.pipeline import Sentencizer
    from spacy.tokenizer import Tokenizer
    from spacy.util import compile_infix_regex, compile_prefix_regex, compile_suffix_regex
    from spacy.vocab import create_vocab

    rules = English.Defaults
    tokenizer = Tokenizer(
        create_vocab("en", rules),
        rules=rules.tokenizer_exceptions,
        prefix_search=compile_prefix_regex(rules.prefixes).search,
        suffix_search=compile_suffix_regex(rules.suffixes).search,
        infix_finditer=compile_infix_regex(rules.infixes).finditer,
        token_match=rules.token_match,
        url_match=rules.url_match,
    )
    sentencizer = Sentencizer()
    return lambda text: sentencizer(tokenizer(text))


# An opening quote or bracket the sentencizer left at the end of the previous sentence.
_OPENING_LEFT_BEHIND = re.compile(r"\s+([\"“‘(\[]+)$")


def sentences(paragraph: str) -> list[str]:
    """Split one paragraph into sentences with spaCy's rule-based sentencizer; an opening
    quote goes with the sentence it opens."""
    found: list[str] = []
    carried = ""
    for sent in _sentencizer()(paragraph).sents:
        text = carried + sent.text.strip()
        left = _OPENING_LEFT_BEHIND.search(text)
        carried = left.group(1) if left else ""
        text = text[: left.start()] if left else text
        if text.strip():
            found.append(text)
    return found + [carried] if carried else found


def split_text(
    text: str,
    split: Split = Split.paragraph,
    markdown: bool = False,
    chapter_pattern: str | None = None,
    clean: bool = True,
) -> list[Block]:
    """Split a document into blocks, in order. Headings stay whole whatever `split` says."""
    text = normalise(text)
    chapter = _compile(chapter_pattern)
    if split is Split.line:
        if clean and not markdown:
            text = _without_book_markup(text)
        lines = (line.strip() for line in text.split("\n") if line.strip())
        return [Block(line, 1 if _is_chapter(line, chapter) else None) for line in lines]
    blocks = _markdown_blocks(text) if markdown else _text_blocks(text, chapter, clean)
    return by_sentence(blocks) if split is Split.sentence else blocks


def by_sentence(blocks: list[Block]) -> list[Block]:
    """Each paragraph cut into its sentences; headings and scene breaks stay whole."""
    return [
        piece
        for b in blocks
        for piece in (
            [b]
            if b.heading_level or not b.text
            else [b._replace(text=s) for s in sentences(b.text)]
        )
    ]


def _compile(pattern: str | None) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    try:
        return re.compile(pattern, re.M)
    except re.error as exc:
        raise BadInput(
            f"--chapter-pattern {pattern!r} is not a valid regular expression "
            f"({exc}); e.g. '^CHAPTER [IVXLC]+'"
        ) from exc
