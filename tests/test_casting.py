"""Casting: a voice per segment or chapter, a voice for headings, cast from Markdown, and
staleness, rendering and export that follow each segment's voice."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import invoke, invoke_json
from fakes import FakeSynthesizer
from typer.testing import CliRunner

from narrator.batch import GenerateOptions, generate_all
from narrator.store import open_project

BOOK = """# The Letter

She opened it by the window.

<!-- voice: af_sky; speed: 0.9 -->

Dear Mara, I write to you from the harbour.

Yours, Ellis.

<!-- voice: af_heart -->

She folded it again.

# Evening

Night fell.
"""


@pytest.fixture
def cast_book(runner: CliRunner, tmp_path: Path) -> Path:
    (tmp_path / "book.md").write_text(BOOK)
    assert invoke(runner, "new", "book.db", "--from", "book.md").exit_code == 0
    assert invoke(runner, "settings", "book.db", "--heading-voice", "bf_emma").exit_code == 0
    return tmp_path / "book.db"


def spoken(path: Path, **options: object) -> dict[str, tuple[str, float, str]]:
    synth = FakeSynthesizer()
    generate_all(open_project(path), GenerateOptions(**options), synth).wait()  # type: ignore[arg-type]
    return synth.spoken_by


def test_each_segment_is_spoken_by_its_voice_in_the_documented_order(cast_book: Path) -> None:
    """A segment's cast, then the heading voice for headings, then the project's."""
    assert spoken(cast_book) == {
        "The Letter": ("bf_emma", 1.0, "b"),
        "She opened it by the window.": ("af_heart", 1.0, "a"),
        "Dear Mara, I write to you from the harbour.": ("af_sky", 0.9, "a"),
        "Yours, Ellis.": ("af_sky", 0.9, "a"),
        "She folded it again.": ("af_heart", 1.0, "a"),
        "Evening": ("bf_emma", 1.0, "b"),
        "Night fell.": ("af_heart", 1.0, "a"),
    }


def test_segments_show_the_voice_where_it_differs(runner: CliRunner, cast_book: Path) -> None:
    rows = invoke_json(runner, "segments", "book.db")
    assert [r["voice"] for r in rows] == [
        "bf_emma",
        None,
        "af_sky",
        "af_sky",
        None,
        "bf_emma",
        None,
    ]
    assert rows[2]["cast"] == {"voice": "af_sky", "speed": 0.9}
    table = invoke(runner, "segments", "book.db").stdout
    assert "voice" in table and "af_sky" in table


def test_a_voice_change_stales_what_it_touches_and_changed_renders_exactly_that(
    runner: CliRunner, cast_book: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NARRATOR_MODEL_DIR", str(tiny_model))
    spoken(cast_book)
    assert invoke(runner, "voice", "book.db", "ch2", "--voice", "af_sky").exit_code == 0
    # ch2 is the heading (6) and its paragraph (7): a cast comes before the heading voice
    rows = invoke_json(runner, "segments", "book.db")
    assert [r["sequence_index"] for r in rows if r["stale"]] == [6, 7]
    assert rows[5]["voice"] == "af_sky"
    plan = invoke_json(runner, "generate-all", "book.db", "--changed", "--dry-run")["plan"]
    assert [p["sequence_index"] for p in plan if p["action"] == "render"] == [6, 7]
    again = spoken(cast_book, changed=True)
    assert again == {"Evening": ("af_sky", 1.0, "a"), "Night fell.": ("af_sky", 1.0, "a")}
    assert invoke(runner, "voice", "book.db", "6-7", "--clear").exit_code == 0
    assert spoken(cast_book, changed=True) == {
        "Evening": ("bf_emma", 1.0, "b"),
        "Night fell.": ("af_heart", 1.0, "a"),
    }


def test_a_run_voice_replaces_the_projects_and_leaves_the_cast(cast_book: Path) -> None:
    said = spoken(cast_book, voice="am_adam", force=True)
    assert said["Night fell."] == ("am_adam", 1.0, "a")
    assert said["Yours, Ellis."] == ("af_sky", 0.9, "a")
    assert said["Evening"] == ("bf_emma", 1.0, "b")


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (("1", "--voice", "af_skyy"), 2, "did you mean af_sky"),
        (("1",), 2, "give --voice, --speed or --lang, or --clear"),
        (("1", "--voice", "af_sky", "--clear"), 2, "or --clear"),
        (("99", "--voice", "af_sky"), 2, "the segments are 1-7"),
        (("1", "--voice", ""), 2, "--voice is empty"),
    ],
)
def test_bad_casts_change_nothing(
    runner: CliRunner, cast_book: Path, args: tuple[str, ...], code: int, words: str
) -> None:
    before = invoke_json(runner, "segments", "book.db")
    result = invoke(runner, "voice", "book.db", *args)
    assert result.exit_code == code and words in result.stderr, result.stderr
    assert invoke_json(runner, "segments", "book.db") == before


def test_an_unknown_voice_in_a_document_is_refused_with_its_line(
    runner: CliRunner, tmp_path: Path
) -> None:
    (tmp_path / "bad.md").write_text(BOOK.replace("voice: af_heart", "voice: af_hart"))
    result = invoke(runner, "new", "bad.db", "--from", "bad.md")
    assert result.exit_code == 2 and "bad.md, line 11: unknown voice 'af_hart'" in result.stderr
    assert not (tmp_path / "bad.db").exists()
    (tmp_path / "slow.md").write_text("<!-- speed: fast -->\n\nHi.\n")
    assert (
        "line 1: speed 'fast' is not a number"
        in invoke(runner, "new", "s.db", "--from", "slow.md").stderr
    )


def test_a_voice_the_model_lacks_stops_the_run_before_anything_renders(
    runner: CliRunner, cast_book: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tiny model has af_heart and af_sky only: bf_emma, the heading voice, is missing."""
    monkeypatch.setenv("NARRATOR_MODEL_DIR", str(tiny_model))
    result = invoke(runner, "generate-all", "book.db")
    assert result.exit_code == 2 and "bf_emma" in result.stderr
    assert not any(r["audio_file"] for r in invoke_json(runner, "segments", "book.db"))


def test_the_engine_renders_each_voice_with_its_own_pack_and_export_names_the_cast(
    runner: CliRunner, cast_book: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each recording is byte for byte what its voice says alone: a mix-up fails."""
    from mutagen.mp4 import MP4

    from narrator.audiofiles import write_wav
    from narrator.engine.torch_engine import KokoroSynthesizer
    from narrator.weights.tiny import write_tiny_checkpoint

    model = write_tiny_checkpoint(tmp_path / "three", voices=("af_heart", "af_sky", "bf_emma"))
    monkeypatch.setenv("NARRATOR_MODEL_DIR", str(model))
    result = invoke(runner, "generate-all", "book.db", "--engine", "torch")
    assert result.exit_code == 0, result.stderr
    synth = KokoroSynthesizer(model_dir=model)
    by_voice = {"af_heart": 1.0, "af_sky": 0.9, "bf_emma": 1.0}
    for row in invoke_json(runner, "segments", "book.db"):
        voice = row["voice"] or "af_heart"
        lang = "b" if voice == "bf_emma" else "a"
        alone = synth.render(row["text_content"], voice, by_voice[voice], lang).samples
        write_wav(tmp_path / "alone.wav", alone)
        recorded = (tmp_path / row["audio_file"]).read_bytes()
        assert recorded == (tmp_path / "alone.wav").read_bytes(), row
    out = invoke_json(runner, "export", "book.db", "-o", "book.m4b")
    assert out["voices"] == ["bf_emma", "af_heart", "af_sky"]
    assert [c["voices"] for c in out["files"][0]["chapters"]] == [
        ["bf_emma", "af_heart", "af_sky"],
        ["bf_emma", "af_heart"],
    ]
    assert MP4(tmp_path / "book.m4b").tags["©wrt"] == ["bf_emma, af_heart, af_sky"]


def test_export_takes_a_selection(runner: CliRunner, cast_book: Path) -> None:
    spoken(cast_book)
    out = invoke_json(runner, "export", "book.db", "-o", "two.wav", "--only", "ch2")
    assert [c["title"] for c in out["files"][0]["chapters"]] == ["Evening"]
    assert out["voices"] == ["bf_emma", "af_heart"]
    bad = invoke(runner, "export", "book.db", "-o", "x.wav", "--only", "ch3")
    assert bad.exit_code == 2 and "the chapters are ch1-ch2" in bad.stderr
    assert not (cast_book.parent / "x.wav").exists()


def test_progress_events_and_errors_name_the_voice(
    runner: CliRunner, tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    monkeypatch.setenv("NARRATOR_MODEL_DIR", str(tiny_model))
    (tmp_path / "b.md").write_text("One.\n\n<!-- voice: af_sky -->\n\nTwo.\n")
    assert invoke(runner, "new", "b.db", "--from", "b.md").exit_code == 0
    result = invoke(runner, "generate-all", "b.db", "--progress", "jsonl", "--engine", "torch")
    assert result.exit_code == 0, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    started = [(e["sequence_index"], e["voice"]) for e in events if e["event"] == "segment_started"]
    assert started == [(1, "af_heart"), (2, "af_sky")]
    synth = FakeSynthesizer(fail_on="Two")
    run = generate_all(open_project(tmp_path / "b.db"), GenerateOptions(force=True), synth)
    final = run.wait()
    assert [e.message for e in final.errors] == ["cannot say 'Two.' (voice af_sky)"]
