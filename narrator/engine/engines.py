"""Which engine renders: torch (any device) or onnx (onnxruntime, CPU), and why."""

from __future__ import annotations

from pathlib import Path

from narrator.engine.onnx_engine import OnnxSynthesizer, onnxruntime_missing
from narrator.engine.torch_engine import DEVICES, KokoroSynthesizer, pick_device
from narrator.errors import BadInput
from narrator.weights.sources import locate_model, onnx_graphs

ENGINES = ("auto", "torch", "onnx")


def choose_engine(
    engine: str, model_dir: str | Path | None, device: str, offline: bool
) -> tuple[str, str]:
    """(engine, why). `auto`: onnx on CPU where the ONNX model and onnxruntime are here
    (faster there, in less memory); torch on CUDA or MPS, or where onnx cannot run."""
    if engine not in ENGINES:
        raise BadInput(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if device not in DEVICES:
        raise BadInput(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if engine == "onnx" and device not in ("auto", "cpu"):
        raise BadInput(
            f"the onnx engine runs on the CPU only; use --engine torch with --device {device}"
        )
    if engine != "auto":
        return engine, "asked for"
    where = pick_device(device)
    if where != "cpu":
        return "torch", f"{where} is here, and onnx runs on the CPU only"
    found = locate_model(model_dir, offline).found
    if found is None or found.folder is None or not onnx_graphs(found.folder):
        return "torch", "no ONNX model here (`narrator model pull` writes one)"
    missing = onnxruntime_missing()
    if missing:
        return "torch", missing
    return "onnx", "on the CPU, with the ONNX model here"


def make_synthesizer(
    engine: str, model_dir: str | Path | None, device: str, offline: bool
) -> tuple[KokoroSynthesizer, str, str]:
    """The synthesizer for `engine`, with the engine chosen and why."""
    name, why = choose_engine(engine, model_dir, device, offline)
    kind = OnnxSynthesizer if name == "onnx" else KokoroSynthesizer
    return kind(model_dir=model_dir, device=device, offline=offline), name, why
