"""EPUB books into segments: chapters in spine order, each titled by the navigation
document (or its first heading) as a heading segment, then its paragraphs. What is not
read aloud is dropped: images, scripts, footnote markers and notes, page-number anchors.

ebooklib reads the package; lxml (which ebooklib already requires) parses each chapter's
XHTML: one C parser, no second HTML library to install.
"""

from __future__ import annotations

import posixpath
import re
import zipfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from narrator.archive import BoundedArchive
from narrator.errors import BadDocument, BadInput, MissingExtra
from narrator.splitting import Block, Split, by_sentence, one_line

if TYPE_CHECKING:
    from lxml.html import HtmlElement

_BLOCKS = ("p", "h1", "h2", "h3", "h4", "h5", "h6", "li", "blockquote", "pre", "dt", "dd")
_HEADINGS = {f"h{n}": n for n in range(1, 7)}
# epub:type / role values of what a listener should not hear
_UNSPOKEN_TYPES = {
    "noteref",
    "footnote",
    "endnote",
    "rearnote",
    "pagebreak",
    "annoref",
    "doc-noteref",
    "doc-footnote",
    "doc-endnote",
    "doc-pagebreak",
}
_UNSPOKEN_TAGS = ("script", "style", "img", "svg", "math", "audio", "video", "object", "head")
_NOTE_MARK = re.compile(r"[*†‡§¶]+")  # a bare number may be an exponent: it stays
# An entity reference the HTML parser left as text: defined in the document's own DTD
# (which is never loaded: no file, no network, no expansion) or not at all. Not spoken.
_UNRESOLVED_ENTITY = re.compile(r"&[A-Za-z_][\w.-]*;")


def _check_not_encrypted(archive: BoundedArchive) -> None:
    """DRM: content documents listed as encrypted (font obfuscation alone is fine)."""
    names = set(archive.archive.namelist())
    if "META-INF/rights.xml" in names:
        raise BadDocument(
            f"{archive.path} is DRM-protected (Adobe ADEPT rights); narrator "
            "can only read EPUBs without DRM"
        )
    if "META-INF/encryption.xml" not in names:
        return
    listing = archive.read("META-INF/encryption.xml").decode("utf-8", "replace")
    encrypted = re.findall(r'CipherReference[^>]*URI="([^"]+)"', listing)
    if any(
        PurePosixPath(uri).suffix.lower() in (".xhtml", ".html", ".htm", ".xml")
        for uri in encrypted
    ):
        raise BadDocument(
            f"{archive.path} is DRM-protected (its chapters are encrypted); "
            "narrator can only read EPUBs without DRM"
        )


def _read_book(path: Path) -> Any:
    """ebooklib's EpubBook, every file of it read through the archive's limits."""
    from ebooklib import epub

    with zipfile.ZipFile(path) as zipped:
        _check_not_encrypted(BoundedArchive(zipped, path))

    class Reader(epub.EpubReader):  # ebooklib reads every file through read_file()
        bounded: BoundedArchive | None = None

        def read_file(self, name: str) -> bytes:
            if self.bounded is None or self.bounded.archive is not self.zf:
                self.bounded = BoundedArchive(self.zf, path)
            return self.bounded.read(posixpath.normpath(name))

    reader = Reader(str(path), {"ignore_ncx": False})
    book = reader.load()
    reader.process()
    return book


def _toc_titles(toc: Any, found: dict[str, str] | None = None) -> dict[str, str]:
    """Chapter file -> title, from the navigation document (the first title wins)."""
    found = {} if found is None else found
    for entry in toc:
        link, children = (entry[0], entry[1]) if isinstance(entry, tuple) else (entry, [])
        href = getattr(link, "href", None)
        title = one_line(getattr(link, "title", "") or "")
        if href and title:
            found.setdefault(href.split("#")[0], title)
        _toc_titles(children, found)
    return found


def _spoken(root: HtmlElement) -> HtmlElement:
    """The document without the parts nobody reads aloud (their tails, the text after
    them, stay)."""
    for element in list(root.iter(*_UNSPOKEN_TAGS)):
        element.drop_tree()
    for mark in list(root.iter("sup")):  # a footnote marker: linked, or a reference sign
        if mark.find(".//a") is not None or _NOTE_MARK.fullmatch(mark.text_content().strip()):
            mark.drop_tree()
    for element in list(root.iter()):
        kinds = set(
            (
                element.get("{http://www.idpf.org/2007/ops}type") or element.get("epub:type") or ""
            ).split()
        ) | {element.get("role") or ""}
        if kinds & _UNSPOKEN_TYPES and element.getparent() is not None:
            element.drop_tree()
    return root


def _same_title(a: str, b: str) -> bool:
    a, b = a.casefold(), b.casefold()
    return a in b or b in a


def _chapter_blocks(root: HtmlElement, title: str | None) -> list[Block]:
    texts: list[tuple[str, int | None]] = []
    for element in root.iter(*_BLOCKS):
        if any(a.tag in _BLOCKS for a in element.iterancestors()):
            continue  # a paragraph inside a list item or quotation: read with it
        text = one_line(_UNRESOLVED_ENTITY.sub(" ", element.text_content()))
        if text:
            texts.append((text, _HEADINGS.get(element.tag)))
    if not texts:
        return []
    first, level = texts[0]
    if level is not None and (not title or _same_title(first, title)):
        title = title or first  # the chapter opens with its own title: said once
        texts = texts[1:]
    blocks = [Block(title, 1)] if title else []
    return blocks + [Block(text, max(level, 2) if level else None) for text, level in texts]


def epub_blocks(path: Path, split: Split = Split.paragraph) -> list[Block]:
    """The book's blocks, chapter by chapter in reading order."""
    try:
        from ebooklib import ITEM_DOCUMENT
        from lxml import html
    except ImportError as exc:
        raise MissingExtra(
            f"reading EPUB needs ebooklib ({exc}); install it with `pip install 'narrator[epub]'`"
        ) from exc
    try:
        book = _read_book(path)
    except BadDocument:
        raise
    except FileNotFoundError as exc:
        raise BadInput(f"cannot read {path}: no such file; check the path") from exc
    except Exception as exc:  # zipfile, XML and ebooklib errors alike: not a usable EPUB
        raise BadDocument(
            f"{path} is not a readable EPUB ({type(exc).__name__}: {exc}); "
            "check the file, or convert it with Calibre"
        ) from exc
    titles = _toc_titles(book.toc)
    blocks: list[Block] = []
    for idref, *_ in book.spine:
        item = book.get_item_with_id(idref)
        if item is None or item.get_type() != ITEM_DOCUMENT or not item.is_chapter():
            continue  # the navigation document is a table of contents, not a chapter
        try:
            root = html.fromstring(item.get_content())
        except Exception as exc:  # noqa: BLE001 - lxml's parse errors vary
            raise BadDocument(
                f"{path}: chapter {item.get_name()} is not readable XHTML ({exc}); check the file"
            ) from exc
        name = item.get_name()
        title = titles.get(name) or titles.get(PurePosixPath(name).name)
        blocks += _chapter_blocks(_spoken(root), title)
    if not blocks:
        raise BadDocument(f"{path} has no text to read (images only?)")
    return by_sentence(blocks) if split is Split.sentence else blocks
