"""Speed and memory of `narrator export` on a long book: wall time, x real time and peak
RSS of one export process per size, so RSS can be compared between 1 h and 10 h.

The book reuses a few real renders (the first paragraphs of bench/data/prose.txt,
spoken by the real weights when they are installed, else by the tiny test checkpoint,
which the output says): each segment's audio is a hard link to one of four clips of
about 36 s, so 1,000 segments make 10 hours. A heading every 50 segments makes 20
chapters. Usage:

    .venv/bin/python bench/export.py                      # 100 and 1,000 segments, M4B
    .venv/bin/python bench/export.py --segments 1000 --format mp3 --limit
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import NARRATOR, Rows, peak_mib  # noqa: E402
from narrator.audiofiles import write_wav
from narrator.engine import SAMPLE_RATE
from narrator.engine.torch_engine import KokoroSynthesizer
from narrator.errors import ModelUnavailable
from narrator.project import add_segments, read_settings
from narrator.splitting import Block
from narrator.store import create_project
from narrator.weights.sources import voices_in
from narrator.weights.tiny import write_tiny_checkpoint

PROSE = Path(__file__).parent / "data" / "prose.txt"
CLIP_SECONDS = 36.0
CHAPTER_EVERY = 50


def clips(folder: Path, model_dir: str | None) -> tuple[list[Path], str]:
    """Four clips of CLIP_SECONDS of rendered speech, and what spoke them."""
    synth = KokoroSynthesizer(model_dir=model_dir, offline=True)
    try:
        synth.folder()
    except ModelUnavailable:  # no real weights here: the tiny checkpoint's noise will do
        synth = KokoroSynthesizer(model_dir=write_tiny_checkpoint(folder / "tiny"))
    voices = voices_in(synth.folder())
    voice = next((v for v in ("af_heart", "jm_kumo") if v in voices), voices[0])
    paragraphs = [" ".join(p.split()) for p in PROSE.read_text().split("\n\n") if p.strip()]
    wanted = round(4 * CLIP_SECONDS * SAMPLE_RATE)
    pieces, total = [], 0
    for paragraph in paragraphs:
        samples = synth.render(paragraph, voice, 1.0, "a").samples
        pieces.append(samples)
        total += samples.size
        if total >= wanted:
            break
    speech = np.concatenate(pieces)
    speech = np.tile(speech, wanted // speech.size + 1)[:wanted]
    size = wanted // 4
    paths = []
    for n in range(4):
        paths.append(folder / f"clip{n}.wav")
        write_wav(paths[-1], speech[n * size : (n + 1) * size])
    return paths, f"{synth.folder().name}, voice {voice}"


def build(folder: Path, segments: int, sources: list[Path]) -> Path:
    """A project whose every segment has fresh audio: a hard link to a clip."""
    db = folder / "book.db"
    store = create_project(db, "Bench Book")
    add_segments(
        store,
        [
            Block(f"Chapter {n // CHAPTER_EVERY + 1}", 1)
            if n % CHAPTER_EVERY == 0
            else Block(f"Paragraph {n}.")
            for n in range(segments)
        ],
    )
    settings = read_settings(store)
    audio = folder / "book_audio"
    audio.mkdir()
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT id, text_content FROM segment").fetchall()
        for n, (segment_id, text) in enumerate(rows):
            name = f"{segment_id:05d}.wav"
            os.link(sources[n % len(sources)], audio / name)
            con.execute(
                "UPDATE segment SET audio_file = ?, audio_fingerprint = ? WHERE id = ?",
                (
                    f"book_audio/{name}",
                    settings.voicing.fingerprint(text),
                    segment_id,
                ),
            )
    return db


def run(db: Path, fmt: str, extra: list[str]) -> dict[str, object]:
    out = db.with_suffix(f".{fmt}")
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            NARRATOR,
            "export",
            str(db),
            "-o",
            str(out),
            "--progress",
            "none",
            "--json",
            *extra,
        ],
        capture_output=True,
        text=True,
    )
    wall = time.monotonic() - started
    manifest = json.loads(proc.stdout) if proc.stdout.strip() else {"files": []}
    audio = sum(f["duration"] for f in manifest["files"])
    chapters = sum(len(f["chapters"]) for f in manifest["files"])
    return {
        "exit": proc.returncode,
        "audio_h": round(audio / 3600, 2),
        "chapters": chapters,
        "wall_s": round(wall, 1),
        "x_real_time": round(audio / wall, 1) if wall else None,
        "peak_rss_mib": peak_mib(proc.stderr),
        "loudness": manifest["files"][0]["loudness"] if manifest["files"] else None,
        "size_mib": round(out.stat().st_size / 2**20, 1) if out.exists() else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--format", default="m4b")
    parser.add_argument("--limit", action="store_true", help="pass --limit to export")
    parser.add_argument("--captions", action="store_true", help="pass --captions srt")
    parser.add_argument("--model-dir", default=os.environ.get("NARRATOR_MODEL_DIR"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        sources, spoken_by = clips(Path(scratch), args.model_dir)
        seconds = sum(soundfile.info(str(p)).duration for p in sources)
        print(
            f"# clips: {len(sources)} x {seconds / len(sources):.1f} s, {spoken_by}; "
            f"{os.cpu_count()} CPUs"
        )
        rows = Rows()
        for n in args.segments:
            folder = Path(scratch) / f"n{n}"
            folder.mkdir()
            extra = ["--limit"] * args.limit + ["--captions", "srt"] * args.captions
            row = {"segments": n} | run(build(folder, n, sources), args.format, extra)
            rows.print(row)


if __name__ == "__main__":
    main()
