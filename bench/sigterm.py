"""Time from SIGTERM to exit of `narrator generate-all` rendering one long paragraph on the
real weights: what a CI runner's grace period must cover (GitHub Actions allows 2.5 s
between SIGTERM and SIGKILL).

A paragraph of about 600 words from bench/data/prose.txt is rendered with jm_kumo reading
English; SIGTERM is sent a few seconds into the render (after the model load, at a random
point inside a chunk). Usage:

    .venv/bin/python bench/sigterm.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROSE = Path(__file__).parent / "data" / "prose.txt"


def paragraph(words: int = 600) -> str:
    return " ".join(PROSE.read_text().split()[:words])


def one_run(delay: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as scratch:
        db = Path(scratch) / "long.db"
        narrator = [sys.executable, "-m", "narrator"]
        subprocess.run([*narrator, "new", str(db)], check=True, capture_output=True)
        subprocess.run([*narrator, "add", str(db), paragraph()], check=True, capture_output=True)
        proc = subprocess.Popen(
            [
                *narrator,
                "generate-all",
                str(db),
                "--voice",
                "jm_kumo",
                "--lang",
                "en-us",
                "--progress",
                "jsonl",
                "--json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ | {"HF_HUB_OFFLINE": "1"},
        )
        assert proc.stderr is not None
        chunks = 0
        for line in proc.stderr:  # the first chunk starts once the model is loaded
            if line.startswith("{") and json.loads(line)["event"] == "chunk":
                chunks = json.loads(line)["chunks"]
                break
        time.sleep(delay)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
        took = time.monotonic() - sent
        result = json.loads(out)
        leftovers = list((Path(scratch) / "long_audio").glob("*"))
    return {
        "delay_s": round(delay, 2),
        "exit": proc.returncode,
        "status": result["status"],
        "chunks": chunks,
        "sigterm_to_exit_s": round(took, 2),
        "files_left": len(leftovers),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"# {len(paragraph().split())} words in one segment")
    rng = random.Random(7)
    for _ in range(args.runs):
        print(json.dumps(one_run(2.0 + rng.random() * 3.0)), flush=True)


if __name__ == "__main__":
    main()
