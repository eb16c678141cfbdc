"""The onnx engine's graphs exported from a Kokoro checkpoint with torch.onnx: how
`model pull --source hf` gives the original weights an onnx engine (Hugging Face's
Kokoro-82M has no ONNX export of its own), and how the tests make the tiny checkpoint's."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from narrator.errors import RebuildFailed
from narrator.weights.sources import (
    CONFIG,
    HF_ORIGIN,
    ONNX_INT8_MODEL,
    ONNX_MODEL,
    ONNX_STATIC_MODEL,
    SOURCE,
    VOICES,
    WEIGHTS,
    building,
    hf_build,
    voices_in,
)

RANDOM_OPS = (
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
)


@contextlib.contextmanager
def _no_randomness() -> Iterator[None]:
    """Turn torch.rand/randn/rand_like/randn_like into zeros for the duration.

    kokoro's SineGen draws an initial phase (torch.rand) and additive noise
    (torch.randn_like); traced, those become RandomUniform/RandomNormalLike nodes.
    kokoro-onnx's graph has no such nodes, so with them zeroed the export is deterministic
    like the real one. Patches the torch module itself: do not render concurrently."""
    import torch

    zeros, zeros_like = torch.zeros, torch.zeros_like
    replacements = {
        "rand": lambda *size, generator=None, **kw: zeros(*size, **kw),
        "randn": lambda *size, generator=None, **kw: zeros(*size, **kw),
        "rand_like": lambda x, **kw: zeros_like(x, **kw),
        "randn_like": lambda x, **kw: zeros_like(x, **kw),
    }
    saved = {name: getattr(torch, name) for name in replacements}
    try:
        for name, fn in replacements.items():
            setattr(torch, name, fn)
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch, name, fn)


@contextlib.contextmanager
def _no_stderr() -> Iterator[None]:
    """File descriptor 2 sent to nowhere for the duration: torch's C++ exporter logs
    shape-inference notices there (past Python's warnings) that mean nothing to a user.
    A failure still raises, with its message. Where there is no fd 2, nothing to do."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _random_ops(graph: Any) -> set[str]:
    """Random op types in an ONNX graph, subgraphs (If/Loop bodies) included."""
    found = set()
    for node in graph.node:
        if node.op_type in RANDOM_OPS:
            found.add(node.op_type)
        for attr in node.attribute:
            for sub in [attr.g, *attr.graphs]:
                found |= _random_ops(sub)
    return found


def write_onnx_graphs(folder: Path) -> Path:
    """Export the Kokoro checkpoint in `folder` (config.json, kokoro-v1_0.pth, voices) to
    the onnx engine's three graphs, made as from kokoro-onnx's export: its convolutions
    quantized dynamically like kokoro-onnx's (onnxruntime's quantize_dynamic) in
    ONNX_INT8_MODEL, then graphs.with_float_vocoder of that in ONNX_MODEL, and
    graphs.write_static_vocoder of that in ONNX_STATIC_MODEL. Their interface is kokoro-onnx's
    plus pred_dur (see graphs.with_durations):

    inputs  tokens int64 [1, sequence_length] (0 pad at both ends),
            style float32 [1, 256], speed float32 [1]
    outputs audio float32 [audio_length] (24 kHz), pred_dur int64 [sequence_length]
    """
    import onnx
    import torch
    from kokoro import KModel
    from kokoro.custom_stft import CustomSTFT
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from narrator.weights.graphs import with_float_vocoder, write_static_vocoder

    folder = Path(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # kokoro trips torch deprecation notices
        kmodel = KModel(
            repo_id="hexgrad/Kokoro-82M",
            config=str(folder / CONFIG),
            model=str(folder / WEIGHTS),
        ).eval()
    # torch.stft/istft on complex tensors do not export; use kokoro's conv-based STFT (what
    # KModel(disable_complex=True) builds; graphs.with_conv_stft makes kokoro-onnx's export
    # the same). Swapped in after loading: built with disable_complex=True, the decoder's
    # strict load_state_dict fails on CustomSTFT's buffers and KModel's fallback then
    # silently leaves the decoder random.
    generator = kmodel.decoder.generator
    stft = generator.stft
    generator.stft = CustomSTFT(
        filter_length=stft.filter_length, hop_length=stft.hop_length, win_length=stft.win_length
    )
    # Bake weight_norm (g * v / |v|) into plain weights: a simpler graph, a faster trace.
    for module in kmodel.modules():
        if hasattr(module, "weight_g"):
            torch.nn.utils.remove_weight_norm(module)

    class TokensToAudio(torch.nn.Module):
        def __init__(self, model: KModel) -> None:
            super().__init__()
            self.model = model

        def forward(self, tokens: Any, style: Any, speed: Any) -> tuple[Any, Any]:
            audio, pred_dur = self.model.forward_with_tokens(tokens, style, speed)
            return audio.reshape(-1), pred_dur.reshape(-1)

    # A short example keeps the trace quick; lengths stay symbolic through dynamic_axes.
    tokens = torch.tensor([[0, 50, 83, 54, 156, 0]], dtype=torch.long)
    style = torch.zeros((1, 256), dtype=torch.float32)
    speed = torch.ones(1, dtype=torch.float32)
    path = folder / ONNX_MODEL
    exported = folder / f".{ONNX_MODEL}.float"
    try:
        with _no_randomness(), _no_stderr(), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and deprecation warnings
            torch.onnx.export(
                TokensToAudio(kmodel).eval(),
                (tokens, style, speed),
                str(exported),
                input_names=["tokens", "style", "speed"],
                output_names=["audio", "pred_dur"],
                dynamic_axes={
                    "tokens": {1: "sequence_length"},
                    "audio": {0: "audio_length"},
                    "pred_dur": {0: "sequence_length"},
                },
                opset_version=20,
                dynamo=False,  # the TorchScript exporter: no onnxscript needed
            )
        found = _random_ops(onnx.load(str(exported), load_external_data=False).graph)
        if found:
            raise RuntimeError(f"the exported graph has random ops: {sorted(found)}")
        quantize_dynamic(
            str(exported),
            str(folder / ONNX_INT8_MODEL),
            op_types_to_quantize=["Conv"],
            weight_type=QuantType.QUInt8,
        )
        onnx.save(with_float_vocoder(onnx.load(str(folder / ONNX_INT8_MODEL))), str(path))
        write_static_vocoder(folder)
    finally:
        exported.unlink(missing_ok=True)
    return path


def _origin(snapshot: Path) -> str:
    """The SOURCE of narrator's own folder made from this Hugging Face snapshot: its
    revision (the snapshot folder's name) and the graph files, so that a new revision, or
    a narrator that makes other graphs, builds the folder again."""
    return "\n".join(
        [
            f"{HF_ORIGIN} at revision {snapshot.name}",
            f"  (Apache-2.0): {CONFIG}, {WEIGHTS} and {VOICES}/*.pt as published.",
            "The onnx engine's graphs, exported from those weights by narrator with torch.onnx",
            "(the vocoder's random noise zeroed, as in kokoro-onnx's export):",
            f"{ONNX_INT8_MODEL}: every convolution int8, quantized at run time, "
            "like kokoro-onnx's;",
            f"{ONNX_MODEL}: the same with the vocoder's convolutions (decoder.generator) float;",
            f"{ONNX_STATIC_MODEL}: that, with most of the vocoder's convolutions quantized",
            "  statically (int8 with 7-bit weights, calibrated on narrator's calibration.txt).",
            "The onnx engine runs the fastest of the three on each CPU.",
            "",
        ]
    )


def _place(source: Path, target: Path) -> None:
    """`source` at `target`: a hard link to the Hugging Face cache's file where the file
    system allows (no second copy on disk), else a copy; atomic either way."""
    from narrator.atomic import publish, temp_path

    partial = temp_path(target)
    try:
        try:
            os.link(source.resolve(), partial)
        except OSError:
            shutil.copyfile(source, partial)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    publish(partial, target)


def own_folder_from(snapshot: Path, dest: Path, on_step: Callable[[str], None]) -> Path:
    """narrator's own model folder `dest` made from a Hugging Face snapshot of Kokoro-82M:
    its config, weights and voices, and the onnx engine's graphs exported from them
    (write_onnx_graphs; Hugging Face's Kokoro-82M has no ONNX export). Built beside `dest`
    and renamed into place, so `dest` appears complete or not at all. Where `dest` already
    holds this revision's build, only voices it lacks are added."""
    origin = _origin(snapshot)
    if hf_build(dest) == origin:
        for name in voices_in(snapshot):
            if not (dest / VOICES / f"{name}.pt").is_file():
                _place(snapshot / VOICES / f"{name}.pt", dest / VOICES / f"{name}.pt")
        return dest
    with building(dest, RebuildFailed) as build:
        for name in (CONFIG, WEIGHTS, *(f"{VOICES}/{v}.pt" for v in voices_in(snapshot))):
            (build / name).parent.mkdir(exist_ok=True)
            _place(snapshot / name, build / name)
        on_step("Exporting the onnx engine's graphs from the weights (a minute or two)")
        write_onnx_graphs(build)
        (build / SOURCE).write_text(origin, "utf-8")
    return dest
