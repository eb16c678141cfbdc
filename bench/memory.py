"""Peak memory of `narrator generate-all` on the real weights against the number of segments,
on the torch engine with narrator's malloc setting (engine.torch_engine.limit_heap_growth) and
without it, and on the onnx engine.

Each run is a fresh process rendering the first N sentences (or paragraphs) of
bench/data/prose.txt (public domain: Austen, Dickens and others) with jm_kumo reading
English. Prints, per run: segments,
seconds of audio, wall time, x real time, peak RSS, minor page faults, CPU time in the
kernel. Usage:

    .venv/bin/python bench/memory.py                 # N = 30 and 150, both variants
    .venv/bin/python bench/memory.py --segments 30 150 600 --variants narrator
    .venv/bin/python bench/memory.py --segments 20 --unit paragraphs
    .venv/bin/python bench/memory.py --segments 30 150 --variants narrator onnx
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
from bench import Rows  # noqa: E402

PROSE = Path(__file__).parent / "data" / "prose.txt"

# The child: build a project of the first N sentences, then run the CLI on it.
CHILD = """
import sys, re
from pathlib import Path
n, db, variant, unit = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[5]
import narrator.engine.torch_engine as torch_engine
if variant == "glibc-default":
    torch_engine.limit_heap_growth = lambda: False
from narrator.project import add_segments
from narrator.store import create_project
text = Path(sys.argv[4]).read_text()
if unit == "paragraphs":
    pieces = [" ".join(p.split()) for p in text.split("\\n\\n") if p.strip()]
else:
    pieces = [s.strip() for s in re.split(r"(?<=[.!?])\\s+", " ".join(text.split())) if s.strip()]
pieces = (pieces * (n // len(pieces) + 1))[:n]
store = create_project(Path(db), "bench")
add_segments(store, pieces)
from narrator.cli import main
sys.argv = ["narrator", "generate-all", db, "--voice", "jm_kumo", "--lang", "en-us",
            "--engine", "onnx" if variant == "onnx" else "torch", "--progress", "none", "--json"]
main()
"""


def measure(n: int, variant: str, unit: str) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as scratch:
        db = str(Path(scratch) / "bench.db")
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(n), db, variant, str(PROSE), unit],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=os.environ | {"HF_HUB_OFFLINE": "1"},
        )
        out = proc.stdout.read() if proc.stdout else ""
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
    result = json.loads(out) if out.strip() else {}
    audio = float(result.get("audio_seconds") or 0)
    return {
        "variant": variant,
        "segments": f"{n} {unit}",
        "exit": os.waitstatus_to_exitcode(status),
        "audio_s": round(audio, 1),
        "wall_s": round(wall, 1),
        "x_real_time": round(audio / wall, 3) if wall else None,
        "peak_rss_mib": round(usage.ru_maxrss / 1024),
        "minor_faults_m": round(usage.ru_minflt / 1e6, 2),
        "user_s": round(usage.ru_utime, 1),
        "sys_s": round(usage.ru_stime, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, nargs="+", default=[30, 150])
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["narrator", "glibc-default"],
        choices=["narrator", "glibc-default", "onnx"],
        help="narrator: the torch engine; glibc-default: torch without "
        "narrator's malloc setting; onnx: the onnx engine",
    )
    parser.add_argument(
        "--unit",
        choices=["sentences", "paragraphs"],
        default="sentences",
        help="segments of one sentence, or of one paragraph (long inputs)",
    )
    args = parser.parse_args()
    sentences = re.split(r"(?<=[.!?])\s+", " ".join(PROSE.read_text().split()))
    print(f"# {len(sentences)} sentences in {PROSE.name}; repeated when N is larger")
    rows = Rows()
    for n in args.segments:
        for variant in args.variants:  # interleaved, so machine load hits both alike
            row = measure(n, variant, args.unit)
            rows.print(row)


if __name__ == "__main__":
    main()
