"""Start-up and listing speed: `narrator --help`, and `narrator segments` on a
10,000-segment project (targets: 0.3 s and 0.5 s).

    .venv/bin/python bench/startup.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(args: list[str], runs: int = 7) -> float:
    """Median wall time of a command, after one warm-up run."""
    subprocess.run(args, capture_output=True, check=True)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(args, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    from narrator.project import add_segments
    from narrator.store import create_project

    narrator = [sys.executable, "-m", "narrator"]
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "big.db"
        text = "Paragraph {}: a sentence of ordinary length to list."
        add_segments(create_project(db, "big"), (text.format(i) for i in range(10_000)))
        print(
            f"narrator --help:                    {timed([*narrator, '--help']):.3f}s"
            "  (target < 0.3 s)"
        )
        for extra in ([], ["--json"]):
            label = " ".join(["segments (10,000)", *extra])
            print(
                f"narrator {label:<26} {timed([*narrator, 'segments', str(db), *extra]):.3f}s"
                "  (target < 0.5 s)"
            )


if __name__ == "__main__":
    main()
