"""Reading a document (a file, or standard input) and cutting it into blocks by its kind:
plain text, Markdown or EPUB."""

from __future__ import annotations

import sys
from pathlib import Path

from narrator.errors import BadInput
from narrator.splitting import DEFAULT_CHAPTER_PATTERN, Block, Split, split_text

MARKDOWN_SUFFIXES = {".md", ".markdown"}
EPUB_SUFFIXES = {".epub"}


def read_document(path: str | Path) -> str:
    """Read a UTF-8 document (`-` is standard input); a clear error otherwise."""
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


def split_document(
    path: str | Path,
    split: Split = Split.paragraph,
    chapter_pattern: str | None = None,
    keep_markup: bool = False,
) -> list[Block]:
    """Blocks of a text, Markdown or EPUB file, by its suffix. Plain text finds chapter
    lines by DEFAULT_CHAPTER_PATTERN unless `chapter_pattern` says otherwise."""
    suffix = Path(str(path)).suffix.lower()
    if suffix in EPUB_SUFFIXES:
        from narrator.epub import epub_blocks

        return epub_blocks(Path(path), split)
    if suffix in MARKDOWN_SUFFIXES:
        try:
            return split_text(read_document(path), split, markdown=True)
        except BadInput as exc:  # a cast comment naming an unknown voice, at its line
            raise BadInput(f"{path}, {exc}") from exc
    return split_text(
        read_document(path),
        split,
        chapter_pattern=chapter_pattern or (DEFAULT_CHAPTER_PATTERN if suffix == ".txt" else None),
        clean=not keep_markup,
    )
