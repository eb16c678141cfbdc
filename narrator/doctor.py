"""What `narrator doctor` reports: versions, device, model sources, G2P backend."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from narrator.cluster import ray_report
from narrator.engine.g2p import SPACY_ENGLISH, backend_for, check_g2p, english_backend
from narrator.errors import BadInput, ModelUnavailable, NarratorError
from narrator.voices import LANGUAGES
from narrator.weights.sources import SOURCE, is_offline, locate_model


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def voice_problem(
    voice: str,
    lang: str,
    model_dir: str | Path | None = None,
    offline: bool = False,
    engine: str = "auto",
) -> NarratorError | None:
    """What a run with this voice and language would fail on before rendering (the model,
    the voice, the language's G2P), or None; never downloads anything."""
    from narrator.engine.engines import make_synthesizer

    try:
        make_synthesizer(engine, model_dir, "auto", True)[0].check(voice, lang)
    except (BadInput, ModelUnavailable) as exc:
        return exc
    return None


def g2p_languages() -> dict[str, str]:
    """Each language: the G2P backend that speaks it here, or why none can."""
    usable = {}
    for code, (alias, _name, _espeak) in LANGUAGES.items():
        try:
            check_g2p(code)
            usable[alias] = backend_for(code)
        except ModelUnavailable as exc:
            usable[alias] = f"unavailable: {exc}"
    return usable


def diagnose(
    model_dir: str | Path | None = None, offline: bool = False, engine: str = "auto"
) -> dict[str, object]:
    """Everything a user needs to see why narrator can or cannot speak here."""
    from narrator.engine.engines import choose_engine
    from narrator.engine.onnx_engine import graph_report
    from narrator.engine.torch_engine import pick_device

    location = locate_model(model_dir, offline, probe=True)
    found = location.found
    folder = found.folder if found else None
    g2p = english_backend()
    provenance = (
        (folder / SOURCE).read_text("utf-8").splitlines()[0]
        if folder and (folder / SOURCE).is_file()
        else None
    )
    return {
        "python": platform.python_version(),
        "narrator": _version("narrator"),
        "kokoro": _version("kokoro"),
        "misaki": _version("misaki"),
        "torch": _version("torch"),
        "onnxruntime": _version("onnxruntime"),
        "device": pick_device("auto"),
        "engine": "{} ({})".format(*choose_engine(engine, model_dir, "auto", offline)),
        "onnx_graph": graph_report(folder) if folder else None,
        "offline": is_offline(offline),
        "model": f"{found.name}: {folder or 'will download from Hugging Face'}" if found else None,
        "model_source": provenance,
        "voices": ", ".join(location.voices),
        "g2p_english": g2p + ("" if g2p == "misaki" else f" ({SPACY_ENGLISH} not installed)"),
        "g2p_languages": g2p_languages(),
        "ray": ray_report(),
        "problem": None if found else location.explain(),
        "sources": [
            {
                "name": c.name,
                "folder": str(c.folder) if c.folder else None,
                "problem": c.problem,
                "used": c is found,
            }
            for c in location.candidates
        ],
    }
