"""A pronunciation lexicon: words spoken as an alias or as given phonemes, matched as whole
words; read from and written to W3C PLS 1.0 files and two-column CSV or TSV."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from xml.etree import ElementTree

from narrator.errors import BadDocument, BadInput
from narrator.text import clean

PLS_NS = "http://www.w3.org/2005/01/pronunciation-lexicon"
# narrator's one extension to PLS: a lexeme's graphemes match in their case only.
NARRATOR_NS = "https://github.com/narrator/pls"
# A lexicon file larger than this is refused before it is parsed.
MAX_FILE_BYTES = 16 << 20
# Phonemes that may stand between words though they are not letters: Kokoro reads these.
_WORDLIKE = re.compile(r"\w")
_PUNCTUATION = set(';:,.!?—…"()“”')


@dataclass(frozen=True)
class Entry:
    """One word (or several: "Pan Am") and how to say it: an alias, spoken instead of the
    word, or phonemes in Kokoro's alphabet (IPA), given to the model as the word's."""

    grapheme: str
    say: str | None = None
    ipa: str | None = None
    case_sensitive: bool = False

    @property
    def key(self) -> str:
        """What makes two entries the same word."""
        words = " ".join(self.grapheme.split())
        return words if self.case_sensitive else words.casefold()

    @property
    def how(self) -> str:
        return f"/{self.ipa}/" if self.ipa is not None else f"{self.say!r}"

    def as_dict(self) -> dict[str, object]:
        return {
            "word": self.grapheme,
            "say": self.say,
            "ipa": self.ipa,
            "case_sensitive": self.case_sensitive,
        }

    def as_list(self) -> list[object]:
        """What a render depends on (the fingerprint's part of it)."""
        return [self.key, self.say, self.ipa]


def entry(
    word: str, say: str | None = None, ipa: str | None = None, case_sensitive: bool = False
) -> Entry:
    """An entry from user input: BadInput (exit 2) for an empty word, an empty alias, both
    or neither of alias and phonemes."""
    word = " ".join(clean(word)[0].split())
    if not word or not any(ch.isalnum() for ch in word):
        raise BadInput("the word is empty; give the word to say differently")
    if (say is None) == (ipa is None):
        raise BadInput(f"{word!r}: give either --say ALIAS or --ipa PHONEMES")
    if say is not None:
        say = " ".join(clean(say)[0].split())
        if not any(ch.isalnum() for ch in say):
            raise BadInput(f"{word!r}: the alias is empty; give the words to say instead")
    if ipa is not None:
        ipa = " ".join(clean(ipa)[0].strip().strip("/").split())
        if not ipa:
            raise BadInput(f"{word!r}: the phonemes are empty; give them with --ipa")
    return Entry(word, say, ipa, case_sensitive)


def check_phonemes(entries: Iterable[Entry], vocab: Iterable[str]) -> None:
    """BadInput naming every phoneme symbol the model cannot read, and the word it is in."""
    known = set(vocab) | {" "}
    for e in entries:
        unknown = sorted(set(e.ipa or "") - known)
        if unknown:
            raise BadInput(
                f"{e.grapheme!r}: the model has no phoneme {' '.join(unknown)}; use the "
                "symbols `narrator phonemes` prints (Kokoro's IPA)"
            )


@dataclass(frozen=True)
class Lexicon:
    """Entries matched as whole words (Unicode word boundaries), the longest first,
    ignoring case unless an entry asks otherwise."""

    entries: tuple[Entry, ...] = ()

    @cached_property
    def _pattern(self) -> re.Pattern[str] | None:
        if not self.entries:
            return None
        alternatives = []
        for number, e in sorted(enumerate(self.entries), key=lambda item: -len(item[1].key)):
            words = r"\s+".join(re.escape(w) for w in e.grapheme.split())
            body = words if e.case_sensitive else f"(?i:{words})"
            # a boundary where the word begins or ends with a letter or digit ("Dr." ends
            # with its period, so "Dr.No" holds it)
            start = r"(?<!\w)" if _WORDLIKE.match(e.grapheme) else ""
            end = r"(?!\w)" if _WORDLIKE.match(e.grapheme[-1]) else ""
            alternatives.append(f"(?P<e{number}>{start}{body}{end})")
        return re.compile("|".join(alternatives))

    def find(self, text: str) -> Iterator[tuple[int, int, Entry]]:
        """Each match in `text`: (start, end, entry)."""
        if self._pattern is None:
            return
        for match in self._pattern.finditer(text):
            assert match.lastgroup is not None
            yield match.start(), match.end(), self.entries[int(match.lastgroup[1:])]

    def matching(self, text: str) -> list[Entry]:
        """The entries that match `text`, each once, in the lexicon's order."""
        found = {e.key: e for _, _, e in self.find(text)}
        return [e for e in self.entries if e.key in found]

    def pieces(self, text: str) -> list[str | Entry]:
        """`text` with every alias spoken in place, cut around the words given as
        phonemes (as their entries)."""
        out: list[str | Entry] = []
        at = 0
        for start, end, e in self.find(text):
            before = text[at:start]
            if e.ipa is not None:
                out += [before, e] if before else [e]
            else:
                out.append(before + e.say)  # type: ignore[operator]
            at = end
        out.append(text[at:])
        merged: list[str | Entry] = []
        for piece in out:
            if isinstance(piece, str) and merged and isinstance(merged[-1], str):
                merged[-1] += piece
            elif piece != "":
                merged.append(piece)
        return merged


def punctuation(text: str) -> str:
    """The punctuation Kokoro reads in a piece of text that has no words."""
    return "".join(ch for ch in text if ch in _PUNCTUATION)


# ------------------------------------------------------------------------------ files


def read_file(name: str, data: bytes) -> list[Entry]:
    """Entries from a PLS (.pls, .xml) or a two-column .csv or .tsv file; BadDocument (65)
    naming the entry for anything malformed or unsupported, BadInput (2) for an entry
    narrator refuses. Nothing is returned unless every entry is good."""
    if len(data) > MAX_FILE_BYTES:
        raise BadDocument(f"{name} is larger than {MAX_FILE_BYTES >> 20} MiB; split it")
    suffix = name.rsplit(".", 1)[-1].lower()
    if suffix in ("pls", "xml"):
        return read_pls(name, data)
    if suffix in ("csv", "tsv", "txt"):
        return read_table(name, data, "\t" if suffix == "tsv" else ",")
    raise BadInput(f"{name}: import reads .pls, .csv or .tsv files")


def _text(name: str, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadDocument(f"{name} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from exc


def read_table(name: str, data: bytes, delimiter: str) -> list[Entry]:
    """Rows of WORD and what to say: an alias, or phonemes between slashes (/həˈloʊ/).
    Blank lines and lines that start with # are skipped; so is a header row."""
    entries = []
    rows = csv.reader(io.StringIO(_text(name, data)), delimiter=delimiter)
    for line, row in enumerate(rows, start=1):
        cells = [c.strip() for c in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if line == 1 and [c.lower() for c in cells[:2]] in (["word", "say"], ["word", "ipa"]):
            continue
        if len(cells) != 2:
            raise BadDocument(
                f"{name}, line {line}: expected two columns (word, then an alias or "
                f"/phonemes/), found {len(cells)}"
            )
        word, how = cells
        is_ipa = len(how) > 1 and how.startswith("/") and how.endswith("/")
        try:
            entries.append(entry(word, None if is_ipa else how, how if is_ipa else None))
        except BadInput as exc:
            raise BadInput(f"{name}, line {line}: {exc}") from exc
    return entries


def _no_dtd(data: bytes, name: str) -> None:
    head = data[:4096].lstrip()
    if b"<!DOCTYPE" in head.upper() or b"<!ENTITY" in head.upper():
        raise BadDocument(f"{name} declares a DTD or entities, which PLS import does not read")


def read_pls(name: str, data: bytes) -> list[Entry]:
    """A PLS 1.0 lexicon: each lexeme's graphemes with its first alias or IPA phoneme.
    No DTD, entity or network access: a document that declares one is refused."""
    import defusedxml.ElementTree as safe

    _no_dtd(data, name)
    try:
        root = safe.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (ElementTree.ParseError, ValueError) as exc:
        raise BadDocument(f"{name} is not well-formed XML ({exc}); fix or re-export it") from exc
    except Exception as exc:  # defusedxml's refusals
        raise BadDocument(f"{name}: {type(exc).__name__}; PLS import reads no DTD") from exc
    if root.tag != f"{{{PLS_NS}}}lexicon":
        raise BadDocument(f"{name} is not a PLS lexicon (its root is {root.tag!r})")
    alphabet = root.get("alphabet", "ipa")
    entries = []
    for number, lexeme in enumerate(root.iter(f"{{{PLS_NS}}}lexeme"), start=1):
        graphemes = [" ".join((g.text or "").split()) for g in lexeme.iter(f"{{{PLS_NS}}}grapheme")]
        where = (
            f"{name}, lexeme {number} ({graphemes[0]!r})"
            if graphemes
            else f"{name}, lexeme {number}"
        )
        if not any(graphemes):
            raise BadDocument(f"{where}: a lexeme without a grapheme")
        say = ipa = None
        alias = lexeme.find(f"{{{PLS_NS}}}alias")
        phoneme = lexeme.find(f"{{{PLS_NS}}}phoneme")
        if phoneme is not None:
            kind = phoneme.get("alphabet", alphabet)
            if kind.lower() != "ipa":
                raise BadDocument(f"{where}: alphabet {kind!r}; narrator reads IPA only")
            ipa = phoneme.text or ""
        elif alias is not None:
            say = alias.text or ""
        else:
            raise BadDocument(f"{where}: neither an alias nor a phoneme")
        sensitive = lexeme.get(f"{{{NARRATOR_NS}}}case-sensitive") == "true"
        for grapheme in graphemes:
            try:
                entries.append(entry(grapheme, say, ipa, sensitive))
            except BadInput as exc:
                raise BadDocument(f"{where}: {exc}") from exc
    return entries


def write_pls(entries: Iterable[Entry], lang: str = "en-US") -> bytes:
    """The entries as a PLS 1.0 document (IPA alphabet); case-sensitive entries carry
    narrator's attribute, which other readers ignore."""
    ElementTree.register_namespace("", PLS_NS)
    ElementTree.register_namespace("narrator", NARRATOR_NS)
    root = ElementTree.Element(
        f"{{{PLS_NS}}}lexicon",
        {"version": "1.0", "alphabet": "ipa", "{http://www.w3.org/XML/1998/namespace}lang": lang},
    )
    for e in entries:
        lexeme = ElementTree.SubElement(root, f"{{{PLS_NS}}}lexeme")
        if e.case_sensitive:
            lexeme.set(f"{{{NARRATOR_NS}}}case-sensitive", "true")
        ElementTree.SubElement(lexeme, f"{{{PLS_NS}}}grapheme").text = e.grapheme
        if e.ipa is not None:
            ElementTree.SubElement(lexeme, f"{{{PLS_NS}}}phoneme").text = e.ipa
        else:
            ElementTree.SubElement(lexeme, f"{{{PLS_NS}}}alias").text = e.say
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
