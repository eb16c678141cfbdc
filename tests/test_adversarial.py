"""Hostile inputs beyond the reported ones: odd encodings, huge single lines, patterns
that make a regular expression scan once per mark (ReDoS), deeply nested HTML, an EPUB
whose spine names a missing file, an oversized cover, a project file on a full disk; and
property-based tests (Hypothesis, which shrinks a failing input to a small one) that no
text or document ever ends in a traceback."""

from __future__ import annotations

import json
import subprocess
import unicodedata
from pathlib import Path

import pytest
from conftest import CONTROL, make_project, narrator, one_error_line, peak_rss_mib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_hostile import raw_epub

from narrator.errors import BadDocument, BadInput
from narrator.splitting import Split, split_text
from narrator.text import clean

# -------------------------------------------------------------------------- properties

# Text that looks like what importers meet: markup marks, brackets, entities, controls.
MARKUP = st.lists(
    st.sampled_from(
        list("ab _*#[]|<>/&;:-!.\n\t\r \x00\x1b\u200b\ufeffé")
        + [
            "CHAPTER ",
            "[Sidenote: ",
            "[Illustration",
            "<br>",
            "<p>",
            "</p>",
            "| --- |",
            "* * *",
            "&amp;",
            "&xxe;",
            "\x1b[2J",
            "e\u0301",
        ]
    ),
    max_size=200,
).map("".join)
ANY_TEXT = st.one_of(st.text(max_size=400), MARKUP)


@settings(max_examples=300, deadline=None)
@given(
    text=ANY_TEXT,
    markdown=st.booleans(),
    split=st.sampled_from([Split.paragraph, Split.line]),
    keep=st.booleans(),
)
def test_any_text_splits_into_blocks(text: str, markdown: bool, split: Split, keep: bool) -> None:
    blocks = split_text(text, split, markdown=markdown, chapter_pattern=r"^CHAPTER", clean=not keep)
    assert all(isinstance(b.text, str) for b in blocks)
    assert all(b.heading_level in (None, 1, 2, 3, 4, 5, 6) for b in blocks)


@settings(max_examples=60, deadline=None)
@given(text=ANY_TEXT)
def test_any_text_splits_into_sentences(text: str) -> None:
    assert all(isinstance(b.text, str) for b in split_text(text, Split.sentence))


@settings(max_examples=500, deadline=None)
@given(text=ANY_TEXT)
def test_clean_text_has_no_control_characters_and_is_stable(text: str) -> None:
    kept, removed = clean(text)
    assert not CONTROL.search(kept) and "\r" not in kept
    assert unicodedata.is_normalized("NFC", kept)
    assert clean(kept) == (kept, 0) and removed >= 0


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.one_of(
        st.binary(max_size=2000),
        MARKUP.map(lambda t: f"<html><body><p>{t}</p></body></html>".encode()),
    )
)
def test_any_chapter_bytes_import_or_are_refused(tmp_path: Path, body: bytes) -> None:
    pytest.importorskip("ebooklib", reason="the epub extra is not installed")
    from narrator.epub import epub_blocks

    book = raw_epub(tmp_path / "any.epub", {"ch1.xhtml": body})
    try:
        blocks = epub_blocks(book)
    except (BadDocument, BadInput):
        return
    assert blocks and all(isinstance(b.text, str) for b in blocks)


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("end.\x0cCHAPTER II\x85Next\x0bline\x1fend", "end.\nCHAPTER II\nNext\nline end"),
        ("Chapter one.\x1b]stray\n\nMany paragraphs.", "Chapter one.\n\nMany paragraphs."),
        ("e\u200b\u0301", "é"),  # normalised after the removal: stable
        ("می\u200cخواهم", "می\u200cخواهم"),  # a joiner shapes the word: kept
    ],
    ids=["separators", "unterminated-osc", "nfc-after", "joiner"],
)
def test_clean_keeps_words_apart_and_text_after_a_stray_escape(text: str, kept: str) -> None:
    assert clean(text)[0] == kept


def test_a_paragraph_of_invisible_characters_is_not_a_scene_break(tmp_path: Path) -> None:
    (tmp_path / "book.txt").write_text("First.\n\n\u200b\ufeff\n\nSecond.\n\n* * *\n\nThird.")
    done = narrator(tmp_path, "new", "b.db", "--from", "book.txt")
    assert done.returncode == 0 and "with 4 segments" in done.stdout, done.stdout
    rows = json.loads(narrator(tmp_path, "segments", "b.db", "--json").stdout)
    assert [r["text_content"] for r in rows] == ["First.", "Second.", "", "Third."]


# ------------------------------------------------------------------ concrete hostiles


@pytest.mark.parametrize(
    "text",
    [
        " _a" * 330_000,  # an emphasis mark that never closes, a million times
        "[Sidenote:" * 100_000,
        "[Illustration" * 100_000,  # brackets that never close
        "* " * 500_000 + "x",  # almost a scene break, a megabyte long
    ],
    ids=["emphasis", "sidenote", "illustration", "scene-break"],
)
def test_markup_patterns_scan_hostile_text_in_linear_time(tmp_path: Path, text: str) -> None:
    """Each of these took hours before the patterns' spans were bounded (quadratic)."""
    (tmp_path / "book.txt").write_text(text)
    try:
        done = narrator(tmp_path, "new", "b.db", "--from", "book.txt", timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("importing took over 2 minutes: a pattern scans once per mark")
    assert done.returncode == 0, done.stderr


def test_a_huge_single_line_imports_in_bounded_memory(tmp_path: Path) -> None:
    line = "A sentence that goes on, and on, and on without a break. " * 150_000  # 8.5 MB
    (tmp_path / "book.txt").write_text(line)
    done, peak = peak_rss_mib(tmp_path, "new", "b.db", "--from", "book.txt")
    assert done.returncode == 0, done.stderr
    assert peak < 1024, peak
    rows = json.loads(narrator(tmp_path, "segments", "b.db", "--json").stdout)
    assert len(rows) == 1 and len(rows[0]["text_content"]) == len(line.strip())


@pytest.mark.parametrize("encoding", ["utf-16", "latin-1", "cp1252"])
def test_a_document_not_in_utf8_is_one_line_and_leaves_no_file(
    tmp_path: Path, encoding: str
) -> None:
    (tmp_path / "book.txt").write_bytes("Café, déjà vu. “Quoted.”".encode(encoding, "replace"))
    done = narrator(tmp_path, "new", "b.db", "--from", "book.txt")
    assert done.returncode == 2
    assert "not UTF-8" in one_error_line(done.stderr) and "iconv" in done.stderr
    assert not (tmp_path / "b.db").exists()


def test_utf8_with_a_byte_order_mark_imports(tmp_path: Path) -> None:
    (tmp_path / "book.txt").write_bytes("\ufeffCafé first.\n\nSecond.".encode())
    assert narrator(tmp_path, "new", "b.db", "--from", "book.txt").returncode == 0
    rows = json.loads(narrator(tmp_path, "segments", "b.db", "--json").stdout)
    assert [r["text_content"] for r in rows] == ["Café first.", "Second."]


def test_deeply_nested_html_is_refused_or_read_never_a_crash(tmp_path: Path) -> None:
    pytest.importorskip("ebooklib", reason="the epub extra is not installed")
    deep = b"<html><body>" + b"<div>" * 100_000 + b"<p>Deep.</p>" + b"</div>" * 100_000
    quotes = b"<html><body>" + b"<blockquote><p>Quote.</p>" * 20_000 + b"</body></html>"
    for name, body in (("deep", deep), ("quotes", quotes)):
        book = raw_epub(tmp_path / f"{name}.epub", {"ch1.xhtml": body})
        done = narrator(tmp_path, "new", f"{name}.db", "--from", book)
        if done.returncode:
            assert done.returncode == 65 and one_error_line(done.stderr)
            assert not (tmp_path / f"{name}.db").exists()
        else:
            assert "Traceback" not in done.stderr


def test_an_epub_whose_spine_names_a_missing_file_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("ebooklib", reason="the epub extra is not installed")
    import zipfile

    book = raw_epub(
        tmp_path / "gap.epub", {"ch1.xhtml": b"<p>Here.</p>", "ch2.xhtml": b"<p>Gone.</p>"}
    )
    with zipfile.ZipFile(book) as archive:
        kept = [
            (info, archive.read(info))
            for info in archive.infolist()
            if not info.filename.endswith("ch2.xhtml")
        ]
    with zipfile.ZipFile(book, "w") as archive:
        for info, data in kept:
            archive.writestr(info, data)
    done = narrator(tmp_path, "new", "g.db", "--from", book)
    assert done.returncode == 65
    assert "OEBPS/ch2.xhtml" in one_error_line(done.stderr)
    assert not (tmp_path / "g.db").exists()


def test_an_oversized_cover_is_refused_before_anything_is_read(tmp_path: Path) -> None:
    pytest.importorskip("av", reason="the export extra is not installed")
    from fakes import FakeSynthesizer

    from narrator.batch import generate_one
    from narrator.export.codec import MAX_COVER_BYTES

    generate_one(make_project(tmp_path / "p.db", ["Words."]), 1, FakeSynthesizer())
    cover = tmp_path / "cover.png"
    with cover.open("wb") as f:  # a sparse file: its size without its bytes
        f.write(b"\x89PNG\r\n\x1a\n")
        f.truncate(MAX_COVER_BYTES + 1)
    done = narrator(tmp_path, "export", "p.db", "-o", "b.m4b", "--cover", cover)
    assert done.returncode == 2 and "MiB" in one_error_line(done.stderr)
    assert not (tmp_path / "b.m4b").exists()


def test_a_project_file_on_a_full_disk_is_73_and_loses_nothing(
    tmp_path: Path, small_disk: Path
) -> None:
    """`new` on a full disk leaves no file; `add` to a project on it keeps the project
    as it was."""
    (tmp_path / "book.txt").write_text(
        "\n\n".join(f"Paragraph {n} of a long book, with words." for n in range(20_000))
    )
    (tmp_path / "sm.txt").write_text("One.\n\nTwo.")
    assert narrator(small_disk, "new", "p.db", "--from", tmp_path / "sm.txt").returncode == 0
    full = narrator(small_disk, "new", "q.db", "--from", tmp_path / "book.txt")
    assert full.returncode == 73 and "q.db" in one_error_line(full.stderr)
    assert sorted(p.name for p in small_disk.iterdir()) == ["p.db"]
    added = narrator(small_disk, "add", "p.db", "--from", tmp_path / "book.txt")
    assert added.returncode == 73 and "p.db" in one_error_line(added.stderr)
    rows = json.loads(narrator(small_disk, "segments", "p.db", "--json").stdout)
    assert [r["text_content"] for r in rows] == ["One.", "Two."]


def test_new_on_a_disk_that_fills_while_folding_its_log_is_73_never_a_bad_file(
    tmp_path: Path, small_disk: Path
) -> None:
    """The import fits in the write-ahead log but the disk fills as the log is folded into
    the file: that must fail as a full disk, not leave a project that reads as damaged."""
    for n in (1850, 2000, 2300, 2800, 3300, 3800):
        (tmp_path / "book.txt").write_text(
            "\n\n".join(f"Paragraph {i} of a long book, with words." for i in range(n))
        )
        done = narrator(small_disk, "new", f"q{n}.db", "--from", tmp_path / "book.txt")
        if done.returncode:
            assert done.returncode == 73 and f"q{n}.db" in one_error_line(done.stderr)
            assert list(small_disk.iterdir()) == []
            continue
        rows = narrator(small_disk, "segments", f"q{n}.db", "--json")
        assert rows.returncode == 0, (n, rows.stderr)
        assert len(json.loads(rows.stdout)) == n
        for made in small_disk.iterdir():
            made.unlink()


def test_new_where_the_file_system_has_no_hard_links_renames_instead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FAT, exFAT and some network mounts refuse link(): the project still appears."""
    import errno
    import os

    from narrator import store as store_module

    def no_links(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(store_module.os, "link", no_links)
    made = make_project(tmp_path / "p.db", ["One."])
    assert made.path == tmp_path / "p.db" and (tmp_path / "p.db").is_file()
    assert not [p.name for p in tmp_path.iterdir() if ".partial" in p.name]
