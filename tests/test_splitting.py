from pathlib import Path

import pytest

from narrator.documents import split_document
from narrator.errors import BadInput
from narrator.splitting import Block, Split, split_text


def texts(blocks: list[Block]) -> list[str]:
    return [b.text for b in blocks]


def test_paragraphs_with_crlf_bom_trailing_spaces_and_blank_lines() -> None:
    text = "\ufeffFirst line  \r\nstill first.\r\n\r\n\r\n\r\n  Second.   \r\n\n\n"
    assert texts(split_text(text)) == ["First line still first.", "Second."]


def test_lines() -> None:
    assert texts(split_text("a\n\n b \nc", Split.line)) == ["a", "b", "c"]


def test_sentences_keep_abbreviations() -> None:
    text = "Dr. Smith came at 3 p.m. on Monday. He left! Did he?\n\nNew one."
    assert texts(split_text(text, Split.sentence)) == [
        "Dr. Smith came at 3 p.m. on Monday.",
        "He left!",
        "Did he?",
        "New one.",
    ]


def test_an_opening_quote_goes_with_the_sentence_it_opens() -> None:
    text = 'Nobody slept so well in years. "You can hear a lamp," he said. "Don\'t ask."'
    assert texts(split_text(text, Split.sentence)) == [
        "Nobody slept so well in years.",
        '"You can hear a lamp," he said.',
        '"Don\'t ask."',
    ]


def test_unicode_is_normalised() -> None:
    decomposed = "Cafe\u0301 «déjà vu» — 東京"
    assert texts(split_text(decomposed)) == ["Café «déjà vu» — 東京"]


def test_markdown_blocks_and_scene_break(tmp_path: Path) -> None:
    doc = tmp_path / "c.md"
    doc.write_text("# Chapter *One*\n\nA [link](http://x) and `code`.\n\n* * *\n\n- item\n")
    assert texts(split_document(doc)) == ["Chapter One", "A link and code.", "", "item"]


def test_not_utf8_is_a_clear_error(tmp_path: Path) -> None:
    doc = tmp_path / "latin1.txt"
    doc.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(BadInput, match="not UTF-8"):
        split_document(doc)


def test_missing_document(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="cannot read"):
        split_document(tmp_path / "missing.txt")


def test_sentences_as_spacy_blank_english_splits_them_without_loading_plugins() -> None:
    """The splitter is spaCy's English tokenizer and sentencizer, built without a Language
    (which would load every spaCy plugin, Hugging Face transformers among them): the same
    sentences as `spacy.blank("en")` with a sentencizer, on a book chapter with its markup."""
    import subprocess
    import sys

    import spacy

    from narrator.splitting import _sentencizer

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    book = (Path(__file__).parent / "data" / "alice.txt").read_text(encoding="utf-8")
    book += "\n\n" + (Path(__file__).parents[1] / "bench" / "data" / "prose.txt").read_text()
    paragraphs = [" ".join(p.split()) for p in book.split("\n\n") if p.strip()]
    ours = [[s.text for s in _sentencizer()(p).sents] for p in paragraphs]
    assert ours == [[s.text for s in nlp(p).sents] for p in paragraphs]
    assert sum(map(len, ours)) > 100
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from narrator.splitting import sentences; "
            "sentences('One. Two.'); print(sorted({'transformers', 'curated_transformers', "
            "'spacy_curated_transformers'} & set(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.strip() == "[]"
