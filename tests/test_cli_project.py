import subprocess
import sys
from pathlib import Path

from conftest import invoke, invoke_json, make_project
from typer.testing import CliRunner


def test_new_imports_document(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "story.txt").write_text("One.\n\nTwo.\n\nThree.")
    result = invoke(runner, "new", "story.db", "--from", "story.txt", "--name", "Story")
    assert result.exit_code == 0, result.stderr
    rows = invoke_json(runner, "segments", "story.db")
    assert [r["text_content"] for r in rows] == ["One.", "Two.", "Three."]
    assert [r["sequence_index"] for r in rows] == [1, 2, 3]
    assert set(rows[0]) == {
        "id",
        "sequence_index",
        "text_content",
        "is_locked",
        "audio_file",
        "audio_duration",
        "stale",
        "heading_level",
        "recording",
        "voice",
        "cast",
        "verify",
    }


def test_new_refuses_overwrite(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "p.db").write_text("precious")
    result = invoke(runner, "new", "p.db")
    assert result.exit_code == 73
    assert "already exists" in result.stderr
    assert (tmp_path / "p.db").read_text() == "precious"


def test_add_texts_stdin_and_file(runner: CliRunner, tmp_path: Path) -> None:
    make_project(tmp_path / "p.db", ["first"])
    (tmp_path / "more.txt").write_text("s1. s2.", encoding="utf-8")
    assert invoke(runner, "add", "p.db", "second", "third").exit_code == 0
    assert invoke(runner, "add", "p.db", "-", input="from stdin\n\nand more\n").exit_code == 0
    result = invoke(runner, "add", "p.db", "--from", "more.txt", "--split", "sentence")
    assert result.exit_code == 0
    texts = [r["text_content"] for r in invoke_json(runner, "segments", "p.db")]
    assert texts == ["first", "second", "third", "from stdin", "and more", "s1.", "s2."]
    assert invoke(runner, "add", "p.db").exit_code == 2


def test_edit_remove_and_locks(runner: CliRunner, tmp_path: Path) -> None:
    make_project(tmp_path / "p.db", ["a", "b", "c"])
    assert invoke(runner, "lock", "p.db", "2").exit_code == 0
    refused = invoke(runner, "edit", "p.db", "2", "B")
    assert refused.exit_code == 65 and "locked" in refused.stderr
    assert invoke(runner, "remove", "p.db", "2").exit_code == 65
    assert invoke(runner, "edit", "p.db", "2", "B", "--force").exit_code == 0
    assert invoke(runner, "unlock", "p.db", "2").exit_code == 0
    assert invoke(runner, "remove", "p.db", "1").exit_code == 0
    rows = invoke_json(runner, "segments", "p.db")
    assert [(r["sequence_index"], r["text_content"], r["is_locked"]) for r in rows] == [
        (2, "B", False),
        (3, "c", False),
    ]


def test_bad_index_changes_nothing(runner: CliRunner, tmp_path: Path) -> None:
    make_project(tmp_path / "p.db", ["a", "b"])
    result = invoke(runner, "lock", "p.db", "1", "9")
    assert result.exit_code == 2
    assert "9" in result.stderr and "Traceback" not in result.output + result.stderr
    assert not any(r["is_locked"] for r in invoke_json(runner, "segments", "p.db"))


def test_remove_deletes_audio_only_it_used(runner: CliRunner, tmp_path: Path) -> None:
    store = make_project(tmp_path / "p.db", ["a", "b"])
    from narrator.audiofiles import render_target
    from narrator.models import Segment

    audio = tmp_path / "p_audio"
    audio.mkdir()
    own, shared = (render_target(store, audio, i, i, "0badc0de" * 8) for i in (1, 2))
    for path in (own, shared):
        path.write_bytes(b"x")
    with store.writing() as session:
        first, second = session.get(Segment, 1), session.get(Segment, 2)
        first.audio_file = f"p_audio/{own.name}"
        second.audio_file = f"p_audio/{shared.name}"
        session.add_all([first, second])
        session.commit()
    assert invoke(runner, "remove", "p.db", "1").exit_code == 0
    assert not own.exists() and shared.exists()


def test_settings(runner: CliRunner, tmp_path: Path) -> None:
    make_project(tmp_path / "p.db", ["a"])
    shown = invoke_json(runner, "settings", "p.db")
    assert shown["voice_id"] == "af_heart" and shown["speed"] == 1.0 and shown["lang"] == "a"
    changed = invoke_json(runner, "settings", "p.db", "--voice", "jm_kumo", "--speed", "1.2")
    assert changed["voice_id"] == "jm_kumo" and changed["lang"] == "j"
    assert invoke_json(runner, "settings", "p.db", "--lang", "en-us")["lang"] == "a"
    for bad in (
        ["--speed", "3"],
        ["--speed", "0.1"],
        ["--voice", "xx_nobody"],
        ["--lang", "klingon"],
    ):
        result = invoke(runner, "settings", "p.db", *bad)
        assert result.exit_code == 2, bad
    assert invoke_json(runner, "settings", "p.db")["speed"] == 1.2


def test_settings_blend_and_weights(runner: CliRunner, tmp_path: Path) -> None:
    make_project(tmp_path / "p.db", ["a"])
    shown = invoke_json(runner, "settings", "p.db", "--voice", "af_bella:2,af_sky:1")
    assert shown["voice_id"] == "af_bella:2,af_sky" and shown["lang"] == "a"
    for bad in ("af_bella:nan", "af_bella:inf", "af_bella:-1", "af_bella:x"):
        assert invoke(runner, "settings", "p.db", "--voice", bad).exit_code == 2, bad


def test_errors_for_missing_and_foreign_files(runner: CliRunner, tmp_path: Path) -> None:
    missing = invoke(runner, "segments", "missing.db")
    assert missing.exit_code == 66 and "narrator new" in missing.stderr
    assert not (tmp_path / "missing.db").exists()
    (tmp_path / "text.db").write_text("not a database")
    assert invoke(runner, "segments", "text.db").exit_code == 66
    assert len(missing.stderr.strip().splitlines()) == 1


def test_segments_table(runner: CliRunner, tmp_path: Path) -> None:
    make_project(tmp_path / "p.db", ["A long text " * 20])
    result = invoke(runner, "segments", "p.db")
    assert result.exit_code == 0 and "A long text" in result.stdout


def test_cli_import_does_not_load_torch() -> None:
    code = (
        "import sys, narrator.cli; print(sorted(m for m in ('torch', 'kokoro', 'spacy', "
        "'sqlmodel') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_help_and_version(runner: CliRunner) -> None:
    assert invoke(runner, "--help").exit_code == 0
    assert "narrator" in invoke(runner, "--version").stdout


def test_damaged_file_is_66_without_traceback(runner: CliRunner, tmp_path: Path) -> None:
    make_project(tmp_path / "p.db", ["a"])
    data = bytearray((tmp_path / "p.db").read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # keep the header, wreck the schema page
    (tmp_path / "bad.db").write_bytes(bytes(data))
    result = invoke(runner, "segments", "bad.db")
    assert result.exit_code == 66 and "Traceback" not in result.stderr


def test_relative_voice_file_is_stored_absolute(runner: CliRunner, tmp_path: Path) -> None:
    make_project(tmp_path / "p.db", ["a"])
    (tmp_path / "mine.pt").write_bytes(b"")
    shown = invoke_json(runner, "settings", "p.db", "--voice", "mine.pt", "--lang", "en-gb")
    assert shown["voice_id"] == str(tmp_path / "mine.pt") and shown["lang"] == "b"
    (tmp_path / "mine.pt").unlink()
    assert invoke(runner, "segments", "p.db").exit_code == 0  # listing still works


def test_usage_lines_use_plain_metavars(runner: CliRunner) -> None:
    import re

    from typer.main import get_command

    from narrator.cli import app

    group = get_command(app)
    names = [n for n in group.commands if n != "model"] + ["model pull"]
    for name in names:
        result = invoke(runner, *name.split(), "--help")
        usage = result.stdout.splitlines()[0]
        assert not re.search(r"\{[a-z_]+\}|\[[a-z_]+\]|<", usage), usage
        options = [line for line in result.stdout.splitlines() if line.strip().startswith("--")]
        assert not any(re.search(r"<[a-z]", line) for line in options), (name, options)


def test_human_output_has_no_python_reprs(runner: CliRunner, tmp_path: Path) -> None:
    assert invoke(runner, "new", "p.db").exit_code == 0
    added = invoke(runner, "add", "p.db", "Only one.")
    assert added.stdout.strip() == "Added 1 segment (1)"
    assert invoke(runner, "unlock", "p.db", "1").stdout.strip() == "Unlocked 1 segment"
    shown = invoke(runner, "settings", "p.db", "--lang", "en-us").stdout
    assert "lang: en-us (American English)" in shown and "None" not in shown
    status = invoke(runner, "status", "p.db")
    assert status.exit_code == 0 and "no tasks yet" in status.stdout


def test_debug_adds_a_traceback_and_keeps_the_exit_code(runner: CliRunner, tmp_path: Path) -> None:
    invoke(runner, "new", "p.db")
    plain = invoke(runner, "lock", "p.db", "7")
    debug = invoke(runner, "--debug", "lock", "p.db", "7")
    assert plain.exit_code == debug.exit_code == 2
    assert "Traceback" in debug.stderr and "Traceback" not in plain.stderr
