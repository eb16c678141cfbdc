"""The pronunciation lexicon: whole-word matching, exact staleness, what the model is given,
and lexicon files (PLS, CSV) read safely."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import invoke, invoke_json, make_project
from fakes import FakeSynthesizer
from typer.testing import CliRunner

from narrator.batch import GenerateOptions, generate_all
from narrator.engine.script import write_script
from narrator.lexicon import Entry, Lexicon, entry, read_pls, write_pls
from narrator.planning import Voicing
from narrator.project import add_entries, list_segments, read_lexicon
from narrator.splitting import sentences

PROSE = Path(__file__).parent.parent / "bench" / "data" / "prose.txt"


def words(lexicon: Lexicon, text: str) -> list[str]:
    return [text[a:b] for a, b, _ in lexicon.find(text)]


def test_entries_match_whole_words_the_longest_first() -> None:
    lexicon = Lexicon(
        (
            entry("Pan", say="pan"),
            entry("Pan Am", say="Pan American"),
            entry("US", say="United States", case_sensitive=True),
            entry("Dr.", say="Doctor"),
            entry("café", ipa="kæfˈA"),
        )
    )
    text = "Dr. Pan flew Pan  Am to the US with us; a Panama café, cafés, and Dr.No."
    assert words(lexicon, text) == ["Dr.", "Pan", "Pan  Am", "US", "café", "Dr."]
    assert [e.grapheme for e in lexicon.matching("PAN AM and pan")] == ["Pan", "Pan Am"]
    assert lexicon.matching("Panama, us, cafés") == []


def test_aliases_are_spoken_and_phonemes_spliced_in_while_the_sentences_stay() -> None:
    lexicon = Lexicon((entry("Hermione", ipa="hɜɹmˈIəni"), entry("WWII", say="World War Two")))
    script = write_script("In WWII, Hermione's father flew. Hermione!", "a", None, 250, lexicon)
    assert "hɜɹmˈIəniz" in script.phonemes and script.phonemes.endswith("hɜɹmˈIəni!")
    plain = write_script("In World War Two, the father flew.", "a", None, 250)
    assert script.phonemes.split(",")[0] == plain.phonemes.split(",")[0]
    # captions are timed from the sentences, which keep the words as written
    assert script.sentences == ["In WWII, Hermione's father flew.", "Hermione!"]


def test_an_entry_that_matches_nothing_changes_no_fingerprint() -> None:
    """Upgrading, or adding a word a segment lacks, stales nothing."""
    plain = Voicing("af_heart", 1.0, "a")
    other = Voicing("af_heart", 1.0, "a", Lexicon((entry("Hermione", say="her my oh knee"),)))
    assert other.fingerprint("Harry ran.") == plain.fingerprint("Harry ran.")
    assert other.fingerprint("Hermione ran.") != plain.fingerprint("Hermione ran.")


def test_adding_an_entry_stales_exactly_the_segments_that_hold_the_word(
    runner: CliRunner, tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NARRATOR_MODEL_DIR", str(tiny_model))  # --dry-run checks the model
    prose = sentences(" ".join(PROSE.read_text().split()))
    texts = [f"{prose[i % len(prose)]} ({i})" for i in range(600)]
    store = make_project(tmp_path / "book.db", texts)
    generate_all(store, GenerateOptions(), FakeSynthesizer()).wait()
    word = "night"
    holding = {i + 1 for i, t in enumerate(texts) if re.search(rf"\b{word}\b", t, re.I)}
    assert 0 < len(holding) < 60  # a word of some segments, not most
    added = invoke(runner, "lexicon", "book.db", "add", word, "--say", "nite")
    assert added.exit_code == 0, added.stderr
    assert f"It changes {len(holding)} segments" in added.stdout
    assert {row.sequence_index for row in list_segments(store) if row.stale} == holding
    plan = invoke_json(runner, "generate-all", "book.db", "--changed", "--dry-run")["plan"]
    assert {p["sequence_index"] for p in plan if p["action"] == "render"} == holding
    synth = FakeSynthesizer()
    generate_all(store, GenerateOptions(changed=True), synth).wait()
    assert len(synth.rendered) == len(holding)
    assert all(lx is not None and lx.matching(word) for lx in synth.lexicons)


def test_the_cli_adds_lists_replaces_and_removes(runner: CliRunner, tmp_path: Path) -> None:
    make_project(tmp_path / "book.db", ["Dr. Watson met Hermione."])
    assert (
        invoke(runner, "lexicon", "book.db", "add", "Hermione", "--ipa", "/hɜɹmˈIəni/").exit_code
        == 0
    )
    again = invoke(runner, "lexicon", "book.db", "add", "hermione", "--say", "her my oh nee")
    assert again.exit_code == 0 and "replaced the entry for 'Hermione'" in again.stderr
    invoke(runner, "lexicon", "book.db", "add", "Dr.", "--say", "Doctor")
    listed = invoke_json(runner, "lexicon", "book.db", "list")
    assert [(e["word"], e["say"], e["ipa"]) for e in listed] == [
        ("hermione", "her my oh nee", None),
        ("Dr.", "Doctor", None),
    ]
    said = invoke_json(runner, "phonemes", "book.db")[0]
    assert [(c["word"], c["say"]) for c in said["changes"]] == [
        ("Dr.", "Doctor"),
        ("Hermione", "her my oh nee"),
    ]
    assert said["text"] == "Dr. Watson met Hermione."
    assert invoke(runner, "lexicon", "book.db", "remove", "HERMIONE").exit_code == 0
    missing = invoke(runner, "lexicon", "book.db", "remove", "Hermione")
    assert missing.exit_code == 2 and "not in the lexicon" in missing.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("Foo", "--ipa", "fʊ§ ǂo"), "no phoneme § ǂ"),
        (("", "--say", "x"), "the word is empty"),
        (("...", "--say", "x"), "the word is empty"),
        (("foo", "--say", " "), "the alias is empty"),
        (("foo",), "give either --say ALIAS or --ipa PHONEMES"),
        (("foo", "--say", "a", "--ipa", "b"), "give either"),
    ],
)
def test_bad_entries_are_exit_2_and_change_nothing(
    runner: CliRunner, tmp_path: Path, args: tuple[str, ...], words: str
) -> None:
    store = make_project(tmp_path / "book.db", ["Foo."])
    result = invoke(runner, "lexicon", "book.db", "add", *args)
    assert result.exit_code == 2 and words in result.stderr
    assert "Traceback" not in result.stderr and read_lexicon(store).entries == ()


def test_a_pls_export_imports_into_a_new_project_as_the_same_entries(
    runner: CliRunner, tmp_path: Path
) -> None:
    first = make_project(tmp_path / "a.db", ["x"])
    entries = [
        entry("Hermione", ipa="hɜɹmˈIəni"),
        entry("Pan Am", say="Pan American"),
        entry("US", say="United States", case_sensitive=True),
        entry("R&D", say='and "quoted" & <more>'),
    ]
    add_entries(first, entries)
    assert invoke(runner, "lexicon", "a.db", "export", "names.pls").exit_code == 0
    second = make_project(tmp_path / "b.db", ["y"])
    result = invoke(runner, "lexicon", "b.db", "import", "names.pls")
    assert result.exit_code == 0 and "Imported 4 entries" in result.stdout
    assert read_lexicon(second).entries == tuple(entries)


def pls(body: str, head: str = "", alphabet: str = "ipa") -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>{head}\n'
        f'<lexicon version="1.0" xmlns="http://www.w3.org/2005/01/pronunciation-lexicon" '
        f'alphabet="{alphabet}" xml:lang="en-US">{body}</lexicon>'
    ).encode()


GOOD = "<lexeme><grapheme>Good</grapheme><alias>fine</alias></lexeme>"


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (
            pls(
                GOOD + "<lexeme><grapheme>Bad</grapheme><phoneme>bæd</phoneme></lexeme>",
                alphabet="x-sampa",
            ),
            "lexeme 2 ('Bad'): alphabet 'x-sampa'; narrator reads IPA only",
        ),
        (
            pls(GOOD + "<lexeme><alias>nothing</alias></lexeme>"),
            "lexeme 2: a lexeme without a grapheme",
        ),
        (pls(GOOD + "<lexeme><grapheme>Odd</grapheme></lexeme>"), "neither an alias nor a phoneme"),
        (pls(GOOD + "<lexeme><grapheme>x"), "not well-formed XML"),
        (
            pls(GOOD, head='<!DOCTYPE lexicon [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'),
            "declares a DTD or entities",
        ),
        (b"<html><body>not a lexicon</body></html>", "is not a PLS lexicon"),
    ],
)
def test_bad_pls_is_one_line_65_and_imports_nothing(
    runner: CliRunner, tmp_path: Path, data: bytes, words: str
) -> None:
    store = make_project(tmp_path / "book.db", ["x"])
    (tmp_path / "in.pls").write_bytes(data)
    result = invoke(runner, "lexicon", "book.db", "import", "in.pls")
    assert result.exit_code == 65 and words in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert read_lexicon(store).entries == ()


def test_an_entity_is_never_expanded(tmp_path: Path) -> None:
    """Even past the quick DTD check (a DOCTYPE after 4 KiB of comment), defusedxml
    refuses it."""
    from narrator.errors import BadDocument

    data = pls(GOOD).replace(
        b"?>", b"?><!--" + b"x" * 5000 + b'--><!DOCTYPE l [<!ENTITY a "aaaa">]>', 1
    )
    with pytest.raises(BadDocument):
        read_pls("deep.pls", data)


def test_csv_and_tsv_import(runner: CliRunner, tmp_path: Path) -> None:
    store = make_project(tmp_path / "book.db", ["x"])
    (tmp_path / "names.csv").write_text(
        'word,say\n# a comment\n\nHermione,/hɜɹmˈIəni/\n"St.",Saint\n', encoding="utf-8"
    )
    assert invoke(runner, "lexicon", "book.db", "import", "names.csv").exit_code == 0
    (tmp_path / "more.tsv").write_text("Pan Am\tPan American\n", encoding="utf-8")
    assert invoke(runner, "lexicon", "book.db", "import", "more.tsv").exit_code == 0
    assert read_lexicon(store).entries == (
        Entry("Hermione", ipa="hɜɹmˈIəni"),
        Entry("St.", say="Saint"),
        Entry("Pan Am", say="Pan American"),
    )
    (tmp_path / "bad.csv").write_text("Good,fine\nOnly one column\n", encoding="utf-8")
    bad = invoke(runner, "lexicon", "book.db", "import", "bad.csv")
    assert bad.exit_code == 65 and "bad.csv, line 2: expected two columns" in bad.stderr
    assert len(read_lexicon(store).entries) == 3


def test_say_shows_phonemes_without_a_model(runner: CliRunner) -> None:
    result = invoke(
        runner, "say", "Hello there.", "--phonemes", "--voice", "jm_kumo", "--lang", "en-us"
    )
    assert result.exit_code == 0 and "ðˈɛɹ" in result.stdout
    assert invoke(runner, "say", "Hello").exit_code == 2  # neither -o nor --phonemes


def test_the_pls_writer_escapes_and_declares_ipa() -> None:
    data = write_pls([entry("a<b", say="x & y")])
    assert b'alphabet="ipa"' in data and b"a&lt;b" in data and b"x &amp; y" in data
    assert read_pls("x.pls", data) == [entry("a<b", say="x & y")]
    assert json.loads(json.dumps(entry("a", say="b").as_dict())) == {
        "word": "a",
        "say": "b",
        "ipa": None,
        "case_sensitive": False,
    }


def test_the_engine_speaks_the_entry_and_captions_keep_the_word(tiny_model: Path) -> None:
    from narrator.engine.torch_engine import KokoroSynthesizer

    synth = KokoroSynthesizer(model_dir=tiny_model)
    text = "Hermione spoke."
    plain = synth.render(text, "af_heart", 1.0, "a")
    lexicon = Lexicon((entry("Hermione", ipa="hɜɹmˈIəni"),))
    said = synth.render(text, "af_heart", 1.0, "a", lexicon=lexicon)
    assert said.samples.tobytes() != plain.samples.tobytes()
    assert [cue[2] for cue in said.cues] == [text]
    again = synth.render(text, "af_heart", 1.0, "a", lexicon=lexicon)
    assert again.samples.tobytes() == said.samples.tobytes()


def test_a_pause_mark_is_silence_of_that_length_and_never_spoken(tiny_model: Path) -> None:
    import numpy as np

    from narrator.engine.torch_engine import KokoroSynthesizer

    text = "One more time. [pause 1.5s] And then [Pause 250ms] two."
    script = write_script(text, "a", None, 250)
    assert "pɔːz" not in script.phonemes and "[pause 1.5s]" in script.phonemes
    assert script.sentences == ["One more time.", "And then", "two."]
    speech = KokoroSynthesizer(model_dir=tiny_model).render(text, "af_heart", 1.0, "a")
    silent = np.flatnonzero(speech.samples != 0)
    gaps = np.diff(silent)
    assert sorted(gaps[gaps > 1000])[-2:] == [6001, 36001]  # 0.25 s and 1.5 s of zeros
    (a, n, first), (b, _, second), (c, _, third) = speech.cues
    assert b >= a + n + 36000 and (first, second, third) == ("One more time.", "And then", "two.")
    with pytest.raises(Exception, match="longer than 60 s"):
        write_script("Wait [pause 61s] here.", "a", None, 250)


DATA = Path(__file__).parent / "data"


def test_the_audit_finds_the_labelled_traps_and_few_else(runner: CliRunner, tmp_path: Path) -> None:
    """tests/data/traps.labels lists, by hand, what a reader would flag in traps.md
    (bench/audit.py prints the figures)."""
    assert invoke(runner, "new", "t.db", "--from", str(DATA / "traps.md")).exit_code == 0
    found = invoke_json(runner, "lexicon", "t.db", "audit")
    got = {(f["kind"], f["token"]) for f in found}
    rows = (DATA / "traps.labels").read_text(encoding="utf-8").splitlines()
    wanted = {tuple(r.split("\t", 1)) for r in rows if r and not r.startswith("#")}
    assert len(wanted) >= 40
    assert len(wanted & got) / len(wanted) >= 0.95  # recall
    assert len(wanted & got) / len(got) >= 0.9  # precision
    assert [f["count"] for f in found] == sorted((f["count"] for f in found), reverse=True)
    xiv = next(f for f in found if f["token"] == "Chapter XIV")
    assert xiv["first_segment"] == 2 and xiv["command"] == (
        "narrator lexicon t.db add 'Chapter XIV' --say 'Chapter fourteen'"
    )
    # the ready command works, and what the lexicon says is no longer listed
    import shlex

    assert invoke(runner, *shlex.split(xiv["command"])[1:]).exit_code == 0
    again = {f["token"] for f in invoke_json(runner, "lexicon", "t.db", "audit")}
    assert "Chapter XIV" not in again and "Chapter XV" in again


def test_the_audit_leaves_ordinary_prose_alone(tmp_path: Path) -> None:
    """1,900 words of nineteenth-century novels: only names, never a dictionary word."""
    from narrator.audit import find_traps

    text = PROSE.read_text()
    found = find_traps(enumerate(text.split("\n\n"), 1))
    assert {f.kind for f in found} <= {"unknown"}
    assert all(f.token[0].isupper() for f in found) and len(found) <= 10
