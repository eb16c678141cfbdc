"""A small random-weight Kokoro checkpoint in Kokoro's on-disk format, for tests and
benchmarks: loaded through exactly the code that loads the real weights."""

from __future__ import annotations

import contextlib
import json
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from narrator.engine.sources import (
    CONFIG,
    ONNX_INT8_MODEL,
    ONNX_MODEL,
    VOICES,
    WEIGHTS,
    kokoro_config_text,
)


def write_tiny_checkpoint(folder: Path, voices: tuple[str, ...] = ("af_heart",)) -> Path:
    """Write config.json, kokoro-v1_0.pth and voices/*.pt with random weights.

    kokoro fixes the style (128), hidden (512) and decoder sizes, so only ALBERT shrinks;
    a large negative duration bias makes every phoneme one frame, so a render is fast.
    """
    import torch
    from kokoro import KModel

    config = json.loads(kokoro_config_text())
    config["plbert"] = dict(
        hidden_size=64, num_attention_heads=2, intermediate_size=128,
        max_position_embeddings=512, num_hidden_layers=1, dropout=0.1,
    )
    config["n_layer"] = 1
    config["istftnet"] |= dict(resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3, 5]])
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as scratch:
        # KModel insists on loading a weights file; an empty dict keeps its random init.
        empty = Path(scratch) / "empty.pth"
        torch.save({}, empty)
        model = KModel(repo_id="hexgrad/Kokoro-82M", config=config, model=str(empty))
    with torch.no_grad():
        model.predictor.duration_proj.linear_layer.bias.fill_(-20.0)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG).write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    parts = ("bert", "bert_encoder", "predictor", "text_encoder", "decoder")
    torch.save({k: getattr(model, k).state_dict() for k in parts}, folder / WEIGHTS)
    (folder / VOICES).mkdir(exist_ok=True)
    generator = torch.Generator().manual_seed(1)
    for voice in voices:
        pack = torch.randn(510, 1, 256, generator=generator) * 0.1
        torch.save(pack, folder / VOICES / f"{voice}.pt")
    return folder


RANDOM_OPS = ("RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
              "Multinomial", "Bernoulli")


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


def _random_ops(graph: Any) -> set[str]:  # noqa: ANN401 - onnx.GraphProto
    """Random op types in an ONNX graph, subgraphs (If/Loop bodies) included."""
    found = set()
    for node in graph.node:
        if node.op_type in RANDOM_OPS:
            found.add(node.op_type)
        for attr in node.attribute:
            for sub in [attr.g, *attr.graphs]:
                found |= _random_ops(sub)
    return found


def write_tiny_onnx(folder: Path) -> Path:
    """Export the Kokoro checkpoint in `folder` (as written by write_tiny_checkpoint) to
    the onnx engine's three graphs as the real ones are made: its convolutions quantized
    dynamically like kokoro-onnx's (onnxruntime's quantize_dynamic) in ONNX_INT8_MODEL,
    then pypi.with_float_vocoder of that in ONNX_MODEL, and pypi.write_static_vocoder of
    that in ONNX_STATIC_MODEL. Their interface is kokoro-onnx's
    plus pred_dur (see pypi.with_durations):

    inputs  tokens int64 [1, sequence_length] (0 pad at both ends),
            style float32 [1, 256], speed float32 [1]
    outputs audio float32 [audio_length] (24 kHz), pred_dur int64 [sequence_length]
    """
    import onnx
    import torch
    from kokoro import KModel
    from kokoro.custom_stft import CustomSTFT
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from narrator.engine.pypi import with_float_vocoder, write_static_vocoder

    folder = Path(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # kokoro trips torch deprecation notices
        kmodel = KModel(
            repo_id="hexgrad/Kokoro-82M",
            config=str(folder / CONFIG),
            model=str(folder / WEIGHTS),
        ).eval()
    # torch.stft/istft on complex tensors do not export; use kokoro's conv-based STFT (what
    # KModel(disable_complex=True) builds, and what kokoro-onnx exported). Swapped in after
    # loading: built with disable_complex=True, the decoder's strict load_state_dict fails on
    # CustomSTFT's buffers and KModel's fallback then silently leaves the decoder random.
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

        def forward(self, tokens: Any, style: Any, speed: Any) -> tuple[Any, Any]:  # noqa: ANN401
            audio, pred_dur = self.model.forward_with_tokens(tokens, style, speed)
            return audio.reshape(-1), pred_dur.reshape(-1)

    # A short example keeps the trace quick; lengths stay symbolic through dynamic_axes.
    tokens = torch.tensor([[0, 50, 83, 54, 156, 0]], dtype=torch.long)
    style = torch.zeros((1, 256), dtype=torch.float32)
    speed = torch.ones(1, dtype=torch.float32)
    path = folder / ONNX_MODEL
    exported = folder / f".{ONNX_MODEL}.float"
    with _no_randomness(), torch.no_grad(), warnings.catch_warnings():
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
    try:
        found = _random_ops(onnx.load(str(exported), load_external_data=False).graph)
        if found:
            raise RuntimeError(f"the exported graph has random ops: {sorted(found)}")
        quantize_dynamic(str(exported), str(folder / ONNX_INT8_MODEL),
                         op_types_to_quantize=["Conv"], weight_type=QuantType.QUInt8)
        onnx.save(with_float_vocoder(onnx.load(str(folder / ONNX_INT8_MODEL))), str(path))
        write_static_vocoder(folder)
    finally:
        exported.unlink(missing_ok=True)
    return path
