"""Rewrites of kokoro-onnx's graph that the onnx engine runs, and the inputs (feeds) it takes."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from narrator.errors import RebuildFailed
from narrator.weights.packs import read_pack
from narrator.weights.sources import (
    CONFIG,
    ONNX_MODEL,
    ONNX_STATIC_MODEL,
    VOICES,
    onnx_graphs,
    voices_in,
)

if TYPE_CHECKING:
    from onnx import GraphProto, NodeProto


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
# operator, which onnxruntime runs on one thread. The same transform is a strided
# convolution whose kernels are the windowed DFT basis, as in kokoro's CustomSTFT (which
# narrator's own export from Hugging Face runs), and renders faster (bench/RESULTS.md,
# 2026-12-05).
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
        raise RebuildFailed(
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
# and the vocoder (KModel's decoder.generator) runs at audio rate with few of the weights.
# There, narrator swaps each for a float convolution on the dequantized weights, written
# as 2-D with a height of 1, which onnxruntime runs with its blocked (NCHWc) kernels
# (bench/RESULTS.md, "Figures behind the code").
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
            raise RebuildFailed(
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
# reads worse (bench/intelligibility.py); the resblocks after the last upsampling and
# conv_post stay float (bench/RESULTS.md, 2026-12-03).
# Weights int8 and activations uint8, the pair the CPU's int8 dot-product instructions
# take. The weights keep to 7 bits (reduce_range): CPUs
# without those instructions (VNNI; AVX2 only) add pairs of uint8 x int8 products in 16
# bits, which 8-bit weights can saturate, distorting speech where a timing would not
# notice; 7 bits cannot (2 x 255 x 64 < 32768), so the graph is sound on every CPU and
# onnx_engine.pick_graph may take it wherever it is fastest.
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

    text = (files("narrator.weights") / CALIBRATION).read_text("utf-8")
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def write_static_vocoder(folder: Path) -> Path:
    """Write ONNX_STATIC_MODEL into a model folder that holds ONNX_MODEL, its config and
    voices: ONNX_MODEL with static_vocoder_nodes quantized, calibrated on
    calibration_phonemes spoken by the folder's voices in turn, in short chunks, as
    onnxruntime keeps every calibrated tensor of a chunk in memory."""
    import logging

    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from narrator.weights.graphs import feeds

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


STFT = "STFT"  # the operator graphs.with_conv_stft rewrites


# Operators of kokoro-onnx's export that narrator now rewrites (with_conv_stft): graphs that
# still hold one were written by an earlier narrator, and the next pull rebuilds them.
REWRITTEN_OPS = {STFT}


def graphs_current(dest: Path) -> bool:
    """Whether no graph in `dest` holds an operator narrator now rewrites (REWRITTEN_OPS)."""
    try:
        import onnx
    except ImportError:  # no way to tell; older graphs run all the same
        return True
    for path in onnx_graphs(dest).values():
        try:
            nodes = onnx.load(str(path), load_external_data=False).graph.node
        except Exception:  # damaged: rebuild it
            return False
        if any(node.op_type in REWRITTEN_OPS for node in nodes):
            return False
    return True


def feeds(vocab: dict[str, int], phonemes: str, pack: Any, speed: float) -> dict[str, Any]:
    """The graph's inputs for one chunk: its tokens (phonemes outside the vocabulary
    dropped, a boundary 0 at each end), the voice's style row for its length, the speed."""
    import numpy as np

    tokens = [0, *(vocab[p] for p in phonemes if p in vocab), 0]
    return {
        "tokens": np.array([tokens], dtype=np.int64),
        "style": np.asarray(pack[len(phonemes) - 1], dtype=np.float32),
        "speed": np.array([speed], dtype=np.float32),
    }
