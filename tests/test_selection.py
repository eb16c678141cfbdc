"""One selection grammar for every command that takes segments."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import invoke, invoke_json
from typer.testing import CliRunner

from narrator.errors import BadInput
from narrator.selection import chapters, select

# 1 h1 Book, 2 h2 One, 3, 4, 5 h2 Two, 6, 7 h3 Two-a, 8, 9 h1 Appendix, 10
BOOK = [
    (1, 1),
    (2, 2),
    (3, None),
    (4, None),
    (5, 2),
    (6, None),
    (7, 3),
    (8, None),
    (9, 1),
    (10, None),
]


def test_chapters_run_to_the_next_heading_of_the_same_or_a_higher_level() -> None:
    assert chapters(BOOK) == [
        [1, 2, 3, 4, 5, 6, 7, 8],
        [2, 3, 4],
        [5, 6, 7, 8],
        [7, 8],
        [9, 10],
    ]
    assert chapters([(1, None), (2, None)]) == []


@pytest.mark.parametrize(
    ("specs", "chosen"),
    [
        (["3"], [3]),
        (["3-5"], [3, 4, 5]),
        (["3,5,9-10"], [3, 5, 9, 10]),
        (["ch2"], [2, 3, 4]),
        (["CH3-4"], [5, 6, 7, 8]),
        (["ch5", "1"], [1, 9, 10]),
        (["4, 3 ,4"], [3, 4]),
        (["8-20"], [8, 9, 10]),  # a range that runs past the end takes what exists
    ],
)
def test_every_form(specs: list[str], chosen: list[int]) -> None:
    assert select(specs, BOOK) == chosen


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("11", "no segment 11: the segments are 1-10"),
        ("11-20", "no segment 11-20: the segments are 1-10"),
        ("0", "no segment 0"),
        ("ch6", "no chapter ch6: the chapters are ch1-ch5"),
        ("ch0", "no chapter ch0"),
        ("5-3", "'5-3' runs backwards; write 3-5"),
        ("ch4-2", "write ch2-4"),
        ("x", "cannot read the selection 'x'"),
        ("3,,4", "cannot read the selection ''"),
        ("-3", "cannot read"),
        ("c2", "cannot read"),
    ],
)
def test_every_error(spec: str, words: str) -> None:
    with pytest.raises(BadInput, match=words.replace("(", r"\(")):
        select([spec], BOOK)


def test_no_headings_says_how_to_make_one() -> None:
    with pytest.raises(BadInput, match="`narrator heading` marks one"):
        select(["ch1"], [(1, None)])


def test_commands_take_the_selection_and_change_nothing_on_a_bad_one(
    runner: CliRunner, tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NARRATOR_MODEL_DIR", str(tiny_model))
    doc = tmp_path / "b.md"
    doc.write_text("# One\n\nA.\n\nB.\n\n# Two\n\nC.\n\nD.\n")
    assert invoke(runner, "new", "b.db", "--from", str(doc)).exit_code == 0
    assert invoke(runner, "lock", "b.db", "ch2", "1").exit_code == 0
    rows = invoke_json(runner, "segments", "b.db")
    assert [r["sequence_index"] for r in rows if r["is_locked"]] == [1, 4, 5, 6]
    bad = invoke(runner, "unlock", "b.db", "2", "ch3")
    assert bad.exit_code == 2 and "no chapter ch3: the chapters are ch1-ch2" in bad.stderr
    assert [r["is_locked"] for r in invoke_json(runner, "segments", "b.db")] == [
        r["is_locked"] for r in rows
    ]
    only = invoke_json(runner, "segments", "b.db", "--only", "2-3")
    assert [r["sequence_index"] for r in only] == [2, 3]
    plan = invoke_json(runner, "generate-all", "b.db", "--dry-run", "--only", "ch1")["plan"]
    assert [p["sequence_index"] for p in plan] == [1, 2, 3]
    said = invoke_json(runner, "phonemes", "b.db", "ch2")
    assert [s["index"] for s in said] == [4, 5, 6]
    assert invoke(runner, "remove", "b.db", "ch1", "--force").exit_code == 0
    assert [r["text_content"] for r in invoke_json(runner, "segments", "b.db")] == [
        "Two",
        "C.",
        "D.",
    ]
