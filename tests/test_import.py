"""Books in, chapters kept: headings from Markdown, plain text and EPUB, clean text from
a Project Gutenberg book, and the `heading` command."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from conftest import invoke, invoke_json, make_project
from fakes import FakeSynthesizer
from typer.testing import CliRunner

from narrator.documents import split_document
from narrator.splitting import Block, Split, split_text

ALICE = Path(__file__).parent / "data" / "alice.txt"


def test_gutenberg_book_with_a_chapter_pattern(runner: CliRunner, tmp_path: Path) -> None:
    result = invoke(runner, "new", "alice.db", "--from", ALICE, "--chapter-pattern", "^CHAPTER")
    assert result.exit_code == 0, result.stderr
    rows = invoke_json(runner, "segments", "alice.db")
    headings = [(r["text_content"], r["heading_level"]) for r in rows if r["heading_level"]]
    assert headings == [
        ("CHAPTER I: Down the Rabbit-Hole", 1),
        ("CHAPTER II: The Pool of Tears", 1),
    ]
    texts = [r["text_content"] for r in rows]
    assert not any("[" in t or "]" in t or "_" in t for t in texts), texts
    assert not any("Gutenberg" in t or "PROJECT" in t for t in texts)
    assert "" in texts  # the row of asterisks: a scene break
    assert texts[texts.index("") - 1].endswith('"Oh dear! Oh dear! I shall be late!"')
    assert "nothing so very remarkable" in " ".join(texts)
    verse = next(t for t in texts if t.startswith('"How doth'))
    assert verse.split("\n") == [
        '"How doth the little crocodile',
        "Improve his shining tail,",
        "And pour the waters of the Nile",
        'On every golden scale!"',
    ]
    assert "1 heading" not in result.stdout and "2 headings" in result.stdout


def test_default_chapter_lines_for_txt_and_keep_markup(tmp_path: Path) -> None:
    blocks = split_document(ALICE)  # .txt: CHAPTER lines by default
    assert [b.text for b in blocks if b.heading_level] == [
        "CHAPTER I: Down the Rabbit-Hole",
        "CHAPTER II: The Pool of Tears",
    ]
    kept = split_document(ALICE, keep_markup=True)
    assert any("[Illustration" in b.text for b in kept)
    assert any("_very_" in b.text for b in kept)


def test_default_pattern_does_no_harm_to_prose() -> None:
    text = (
        "Chapter and verse were quoted at length by the vicar, who never tired of them.\n\n"
        "Part of the problem was the weather."
    )
    assert all(
        b.heading_level is None
        for b in split_text(
            text, chapter_pattern=r"^(?:CHAPTER|Chapter|PART|Part)\s+(?:[IVXLCDM]+|\d+)\b"
        )
    )


def test_bad_chapter_pattern_is_a_usage_error(runner: CliRunner) -> None:
    result = invoke(runner, "new", "x.db", "--from", ALICE, "--chapter-pattern", "(")
    assert result.exit_code == 2 and "regular expression" in result.stderr
    assert not Path("x.db").exists()


def test_markdown_headings_keep_their_level(tmp_path: Path) -> None:
    doc = tmp_path / "book.md"
    doc.write_text("# Part One\n\n## The Storm\n\nIt rained.\n\n* * *\n\nThen it stopped.\n")
    assert split_document(doc, Split.sentence) == [
        Block("Part One", 1),
        Block("The Storm", 2),
        Block("It rained."),
        Block(""),
        Block("Then it stopped."),
    ]


# ------------------------------------------------------------------------------- EPUB


def make_epub(path: Path, chapters: list[tuple[str, str]]) -> Path:
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("narrator-test")
    book.set_title("Three Chapters")
    book.set_language("en")
    items = []
    for number, (title, body) in enumerate(chapters, start=1):
        item = epub.EpubHtml(title=title, file_name=f"chap_{number}.xhtml", lang="en")
        item.content = f"<html><body>{body}</body></html>"
        book.add_item(item)
        items.append(item)
    book.toc = [
        epub.Link(i.file_name, t, f"c{n}")
        for n, (i, (t, _)) in enumerate(zip(items, chapters, strict=True))
    ]
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = ["nav", *items]
    epub.write_epub(str(path), book)
    return path


CHAPTERS = [
    (
        "Chapter One",
        "<h1>Chapter One</h1><p>It was a dark night.<sup><a href='#n1'>1</a></sup>"
        "</p><p>The <em>wind</em> blew.<span epub:type='pagebreak' id='p2'>2</span>"
        "</p><img src='x.png'/><script>alert(1)</script>"
        "<aside epub:type='footnote' id='n1'><p>A note.</p></aside>",
    ),
    ("Chapter Two", "<p>Morning came.</p><ul><li><p>One item.</p></li></ul>"),
    ("Chapter Three", "<h2>Epilogue</h2><p>The end, with E = mc<sup>2</sup>.</p>"),
]


def test_epub_chapters_in_order(runner: CliRunner, tmp_path: Path) -> None:
    make_epub(tmp_path / "book.epub", CHAPTERS)
    result = invoke(runner, "new", "book.db", "--from", "book.epub")
    assert result.exit_code == 0, result.stderr
    rows = invoke_json(runner, "segments", "book.db")
    assert [(r["text_content"], r["heading_level"]) for r in rows] == [
        ("Chapter One", 1),
        ("It was a dark night.", None),
        ("The wind blew.", None),
        ("Chapter Two", 1),
        ("Morning came.", None),
        ("One item.", None),
        ("Chapter Three", 1),
        ("Epilogue", 2),
        ("The end, with E = mc2.", None),
    ]


def test_drm_and_malformed_epub_are_65_and_leave_no_file(runner: CliRunner, tmp_path: Path) -> None:
    import zipfile

    book = make_epub(tmp_path / "drm.epub", CHAPTERS)
    with zipfile.ZipFile(book, "a") as archive:
        archive.writestr(
            "META-INF/encryption.xml",
            "<encryption><EncryptedData><CipherData><CipherReference "
            'URI="EPUB/chap_1.xhtml"/></CipherData></EncryptedData></encryption>',
        )
    (tmp_path / "broken.epub").write_bytes(b"PK\x03\x04 not really a zip")
    for name in ("drm", "broken"):
        result = invoke(runner, "new", f"{name}.db", "--from", f"{name}.epub")
        assert result.exit_code == 65, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
        assert not (tmp_path / f"{name}.db").exists()
    assert "DRM" in invoke(runner, "new", "drm.db", "--from", "drm.epub").stderr


# ------------------------------------------------------------------- headings by hand


def test_heading_command(runner: CliRunner, tmp_path: Path) -> None:
    make_project(tmp_path / "book.db", ["Chapter Two", "It rained."])
    assert invoke(runner, "heading", "book.db", "1").exit_code == 0
    assert invoke(runner, "heading", "book.db", "2", "--level", "3").exit_code == 0
    rows = invoke_json(runner, "segments", "book.db")
    assert [r["heading_level"] for r in rows] == [1, 3]
    table = invoke(runner, "segments", "book.db").stdout
    assert "h1" in table and "h3" in table
    assert invoke(runner, "heading", "book.db", "2", "--clear").exit_code == 0
    assert [r["heading_level"] for r in invoke_json(runner, "segments", "book.db")] == [1, None]
    assert invoke(runner, "heading", "book.db", "9").exit_code == 2
    assert invoke(runner, "heading", "book.db", "1", "--level", "7").exit_code == 2


def test_progress_names_the_chapter(tmp_path: Path) -> None:
    from narrator.batch import GenerateOptions, generate_all
    from narrator.progress import PlainView, follow_run
    from narrator.project import add_segments
    from narrator.splitting import Block
    from narrator.store import create_project

    store = create_project(tmp_path / "book.db", "book")
    add_segments(store, [Block("Chapter One", 1), Block("It rained.")])
    stream = io.StringIO()
    final = follow_run(generate_all(store, GenerateOptions(), FakeSynthesizer()), PlainView(stream))
    assert final.processed == 2  # a heading is spoken like any segment
    assert "[2/2] segment 2 (Chapter One): It rained." in stream.getvalue()
    from narrator.tasks import load_tasks

    assert json.loads(json.dumps(load_tasks(store)[0].as_dict()))["current_chapter"] == (
        "Chapter One"
    )


@pytest.mark.parametrize("split", [Split.paragraph, Split.sentence])
def test_headings_stay_whole_whatever_the_split(split: Split) -> None:
    text = "CHAPTER IV. The Rabbit Sends in a Little Bill\n\nIt was the White Rabbit. It ran."
    blocks = split_text(text, split, chapter_pattern="^CHAPTER")
    assert blocks[0] == Block("CHAPTER IV. The Rabbit Sends in a Little Bill", 1)
