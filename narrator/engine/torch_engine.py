"""The Kokoro synthesizer on torch: lazy thread-safe loading, seeded renders."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import sys
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from narrator.engine import Speech
from narrator.engine.g2p import (
    CHUNK_TARGET,
    check_g2p,
)
from narrator.engine.script import perform, write_script
from narrator.errors import BadInput, ModelUnavailable, first_line
from narrator.lexicon import Lexicon
from narrator.voices import VoicePart, did_you_mean, parse_voice
from narrator.weights.packs import blend_packs, read_pack
from narrator.weights.sources import (
    CONFIG,
    REPO_ID,
    VOICES,
    WEIGHTS,
    ModelLocation,
    download_model,
    folder_problem,
    locate_model,
    voices_in,
)

DEVICES = ("auto", "cpu", "cuda", "mps")


# Device nodes without which Linux has no GPU torch could use: NVIDIA's driver, its
# Jetson (Tegra) form, AMD's (ROCm) and WSL2's.
GPU_NODES = ("/dev/nvidiactl", "/dev/nvmap", "/dev/kfd", "/dev/dxg")


def pick_device(device: str = "auto") -> str:
    """`auto`: CUDA if available, then Apple MPS, else CPU. On Linux without a GPU's
    device node the answer is CPU without importing torch, which the onnx engine does not
    need (bench/startup.py)."""
    if device == "cpu" or (
        device == "auto"
        and sys.platform.startswith("linux")
        and not any(Path(node).exists() for node in GPU_NODES)
    ):
        return "cpu"
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise BadInput("--device cuda: no CUDA device here; use --device auto or cpu")
    return device


class Lazy:
    """A value built once, on first use, by whichever thread asks first, or begun ahead
    of use in a thread of its own (start)."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self._lock = threading.Lock()
        self._value: Any = None
        self._built = False

    def get(self) -> Any:
        if not self._built:
            with self._lock:
                if not self._built:
                    self._value = self._build()
                    self._built = True
        return self._value

    @property
    def built(self) -> bool:
        return self._built

    def start(self) -> Lazy:
        """Begin the build in a thread of its own, so that other work overlaps it; get()
        then waits for it. A build that fails there is built again, and raises, in get()."""
        if not self._built:
            threading.Thread(target=self._build_quietly, name="narrator-load").start()
        return self

    def _build_quietly(self) -> None:
        with contextlib.suppress(Exception):
            self.get()


_models: dict[tuple[Path, str], Lazy] = {}
_models_lock = threading.Lock()
# KModel draws noise from torch's global generator; renders take turns so a seed holds.
_render_lock = threading.Lock()
LOADS: list[tuple[Path, str]] = []  # every model load in this process, for tests and doctor


# glibc's mallopt() parameter for the size above which malloc maps memory of its own
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 128 * 1024  # glibc's initial value


def limit_heap_growth() -> bool:
    """Pin glibc malloc's mmap threshold at its initial 128 KiB. Left alone, glibc raises
    it the first time a large block is freed; Kokoro's decoder then takes its large
    tensors, a different size for every chunk, from the heap, which fragments and never
    shrinks. Pinned, such tensors are mapped and unmapped, and RSS stays flat
    (bench/memory.py). Same samples either way.
    onnxruntime's arena takes its regions from malloc alike (ort.load_session calls this
    too). Does nothing off glibc; True when it took effect."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):  # musl or another libc
        return False


def _load_kmodel(folder: Path, device: str) -> Any:
    from kokoro import KModel

    limit_heap_growth()
    LOADS.append((folder, device))
    try:
        config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
        with warnings.catch_warnings():
            # kokoro's modules trip torch deprecation notices that are not the user's concern
            warnings.simplefilter("ignore")
            model = KModel(repo_id=REPO_ID, config=config, model=str(folder / WEIGHTS))
        return model.to(device).eval()
    except Exception as exc:
        raise ModelUnavailable(
            f"cannot load the Kokoro model in {folder} on {device} ({first_line(exc)}); "
            "pull it again with `narrator model pull`"
        ) from exc


def shared_model(folder: Path, device: str) -> Any:
    """The process-wide KModel for this folder and device, loaded once."""
    key = (folder.resolve(), device)
    with _models_lock:
        lazy = _models.setdefault(key, Lazy(lambda: _load_kmodel(key[0], device)))
    return lazy.get()


def render_seed(*parts: object) -> int:
    """A 63-bit seed from what a render is made of: same input, same audio."""
    digest = hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


@dataclass
class KokoroSynthesizer:
    """Kokoro-82M behind the Synthesizer interface."""

    model_dir: str | Path | None = None
    device: str = "auto"
    offline: bool = False
    chunk_limit: int = CHUNK_TARGET
    g2p_backend: str | None = None  # None: the best one available (see g2p.backend_for)
    threads: int = 0  # CPU threads a render takes; 0: the library's default (every core)

    def __post_init__(self) -> None:
        self._folder: Path | None = None
        self._model_id: str | None = None
        self._voices: dict[str, Any] = {}
        self._voices_lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        """Only the settings travel (to a Ray actor); caches and locks are made anew."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__post_init__()

    def folder(self, voices: list[str] | None = None) -> Path:
        """The model folder, downloading from Hugging Face only as the last resort."""
        if self._folder is None:
            location = locate_model(self.model_dir, self.offline)
            found = location.found
            if found is None:
                raise ModelUnavailable(location.explain())
            if found.folder is None:
                self._folder = self._download(voices or [], location)
            else:
                self._folder = found.folder
        return self._folder

    def _download(self, voices: list[str], location: ModelLocation) -> Path:
        try:
            folder = download_model(voices)
        except Exception as exc:
            raise ModelUnavailable(location.explain(first_line(exc))) from exc
        problem = folder_problem(folder)
        if problem:
            raise ModelUnavailable(f"downloaded model is incomplete: {problem}")
        return folder

    def check(self, voice: str, lang: str) -> None:
        """Model present, voices present, G2P usable: all without loading the model."""
        parts = parse_voice(voice)
        folder = self.folder([p.name for p in parts if not p.is_file])
        present = voices_in(folder)
        missing = [p.name for p in parts if not p.is_file and p.name not in present]
        if missing:
            hint = did_you_mean(missing[0], present, catalogue=False)
            raise BadInput(
                f"voice {', '.join(missing)}{hint} is not in the "
                f"model at {folder}; it has {', '.join(present)} (choose one with --voice, or "
                "`narrator model pull --voice NAME` where Hugging Face is reachable)"
            )
        pick_device(self.device)
        check_g2p(lang, self.g2p_backend)

    def model_id(self) -> str:
        """Which weights, by content (the first MiB and the size), not by where they are."""
        if self._model_id is None:
            weights = self.folder() / WEIGHTS
            with weights.open("rb") as f:
                head = hashlib.sha256(f.read(1 << 20)).hexdigest()[:16]
            self._model_id = f"{head}:{weights.stat().st_size}"
        return self._model_id

    def voice_pack(self, voice: str) -> Any:
        """The style tensor of `voice` as a float32 numpy array (a blend is the weighted
        mean of its packs)."""
        with self._voices_lock:
            if voice not in self._voices:
                parts: list[VoicePart] = parse_voice(voice)
                self._voices[voice] = blend_packs(
                    [read_pack(self._voice_file(p)) for p in parts], [p.weight for p in parts]
                )
            return self._voices[voice]

    def _voice_file(self, part: VoicePart) -> Path:
        return Path(part.name) if part.is_file else self.folder() / VOICES / f"{part.name}.pt"

    def render(
        self,
        text: str,
        voice: str,
        speed: float,
        lang: str,
        on_chunk: Callable[[int, int], None] | None = None,
        lexicon: Lexicon | None = None,
    ) -> Speech:
        """Speak `text` sentence by sentence, packed into chunks; the same input gives the
        same samples."""
        import torch

        script = write_script(text, lang, self.g2p_backend, self.chunk_limit, lexicon)
        device = pick_device(self.device)
        model = shared_model(self.folder(), device)
        pack = torch.from_numpy(self.voice_pack(voice))
        seed = render_seed(script.phonemes, voice, speed, lang, self.model_id())

        def run(phonemes: str) -> tuple[Any, list[int]]:
            out = model(phonemes, pack[len(phonemes) - 1].to(device), speed, return_output=True)
            return out.audio.float().numpy(), out.pred_dur.tolist()

        if self.threads:
            torch.set_num_threads(self.threads)
        with _render_lock, torch.random.fork_rng(devices=None if device == "cuda" else []):
            torch.manual_seed(seed)
            return perform(script, run, model.vocab, on_chunk)
