"""Batch overhead and memory: narrator generate-all against a bare KModel loop and against
kokoro's own CLI run once per segment, on the same checkpoint and the same texts.

    .venv/bin/python bench/batch.py [--n 50] [--n-cli 20]

Uses the real Kokoro-82M when `narrator model pull` has put it in narrator's folder (or
NARRATOR_MODEL_DIR points at one), else the tests' random-weight checkpoint, and says which.
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

HERE = Path(__file__).resolve().parent
SENTENCES = [
    "The lighthouse stood at the end of the point.",
    "Every night the keeper climbed the stairs to light the lamp.",
    "Boats came home through the fog, guided by the beam.",
    "In the morning the harbour smelled of salt and diesel.",
    "She wrote the weather in the log before breakfast.",
]


def texts(n: int) -> list[str]:
    return [f"{SENTENCES[i % len(SENTENCES)]} Segment {i + 1}." for i in range(n)]


def run_child(args: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Run a process; return (wall seconds, peak RSS in MiB, stdout)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env or os.environ.copy(),
        text=True,
    )
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{args[:4]} failed with {os.waitstatus_to_exitcode(status)}")
    return wall, usage.ru_maxrss / 1024, out


def model_folder(scratch: Path) -> tuple[Path, str]:
    from narrator.weights.sources import folder_problem, narrator_model_dir

    for folder in (os.environ.get("NARRATOR_MODEL_DIR"), narrator_model_dir()):
        if folder and folder_problem(Path(folder)) is None:
            return Path(folder), f"real Kokoro-82M weights in {folder}"
    # Built in a child: torch in this process would count in every child's peak RSS,
    # which Linux carries across fork.
    folder = scratch / "tiny"
    code = (
        "import sys, pathlib; from narrator.weights.tiny import write_tiny_checkpoint; "
        "write_tiny_checkpoint(pathlib.Path(sys.argv[1]))"
    )
    subprocess.run([sys.executable, "-W", "ignore", "-c", code, str(folder)], check=True)
    return folder, "the tests' random-weight checkpoint (no real weights installed)"


def make_project(path: Path, n: int) -> None:
    from narrator.project import add_segments
    from narrator.store import create_project

    add_segments(create_project(path, "bench"), texts(n))


def narrator_run(scratch: Path, folder: Path, voice: str, n: int) -> tuple[float, float]:
    db = scratch / f"narrator{n}.db"
    make_project(db, n)
    wall, rss, _ = run_child(
        [
            sys.executable,
            "-m",
            "narrator",
            "generate-all",
            str(db),
            "--model-dir",
            str(folder),
            "--voice",
            voice,
            "--lang",
            "en-us",
            "--progress",
            "none",
            "--json",
        ]
    )
    return wall, rss


def bare_loop(folder: str, voice: str, n: int) -> None:
    """(b): what narrator does, with nothing around it: load once, phonemize, infer, write."""
    import soundfile
    import torch
    from kokoro import KModel

    from narrator.engine.g2p import phonemize

    config = json.loads((Path(folder) / "config.json").read_text())
    model = KModel(
        repo_id="hexgrad/Kokoro-82M", config=config, model=str(Path(folder) / "kokoro-v1_0.pth")
    ).eval()
    pack = torch.load(Path(folder) / "voices" / f"{voice}.pt", weights_only=True)
    out = Path(tempfile.mkdtemp())
    for i, text in enumerate(texts(n)):
        ps = phonemize(text, "a")
        audio = model(ps, pack[len(ps) - 1], 1.0)
        soundfile.write(out / f"{i}.wav", audio.numpy(), 24000)


def kokoro_cli(scratch: Path, folder: Path, voice: str, n: int) -> tuple[float, float]:
    """(c): `python -m kokoro` once per segment, offline through an HF cache layout."""
    repo = scratch / "hub" / "models--hexgrad--Kokoro-82M"
    snapshot = repo / "snapshots" / "bench"
    (snapshot / "voices").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text("bench")
    for name in ("config.json", "kokoro-v1_0.pth", f"voices/{voice}.pt"):
        if not (snapshot / name).exists():
            (snapshot / name).symlink_to(folder / name)
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(scratch / "hub")}
    start, peak = time.perf_counter(), 0.0
    for i, text in enumerate(texts(n)):
        # English would need spaCy's model: Spanish (-l e) uses espeak, as narrator here
        _, rss, _ = run_child(
            [
                sys.executable,
                "-m",
                "kokoro",
                "-l",
                "e",
                "-m",
                voice,
                "-t",
                text,
                "-o",
                str(scratch / f"k{i}.wav"),
            ],
            env,
        )
        peak = max(peak, rss)
    return time.perf_counter() - start, peak


def fake_rss(n: int) -> None:
    """Peak RSS of a whole batch of n segments with the tests' fake engine."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    from fakes import FakeSynthesizer

    from narrator.batch import GenerateOptions, generate_all
    from narrator.store import open_project

    db = Path(tempfile.mkdtemp()) / "fake.db"
    make_project(db, n)
    generate_all(open_project(db), GenerateOptions(), FakeSynthesizer()).wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--n-cli", type=int, default=20)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        bare_loop(rest[0], rest[1], int(rest[2])) if kind == "bare" else fake_rss(int(rest[0]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        folder, label = model_folder(scratch)
        from narrator.weights.sources import voices_in

        voice = "af_heart" if "af_heart" in voices_in(folder) else voices_in(folder)[0]
        print(f"checkpoint: {label}; voice {voice}; {os.cpu_count()} CPUs")
        a_wall, a_rss = narrator_run(scratch, folder, voice, args.n)
        b_wall, b_rss, _ = run_child(
            [sys.executable, __file__, "--child", "bare", str(folder), voice, str(args.n)]
        )
        print(
            f"N={args.n}: (a) narrator generate-all {a_wall:.2f}s (peak RSS {a_rss:.0f} MiB)"
            f"  (b) bare KModel loop {b_wall:.2f}s (peak RSS {b_rss:.0f} MiB)"
        )
        print(
            f"  (a)/(b) = {a_wall / b_wall:.3f}  (target <= 1.03); "
            f"overhead {(a_wall - b_wall) / args.n * 1000:.1f} ms per segment"
        )
        a20, _ = narrator_run(scratch, folder, voice, args.n_cli)
        c_wall, c_rss = kokoro_cli(scratch, folder, voice, args.n_cli)
        print(
            f"N={args.n_cli}: (a) narrator {a20:.2f}s  (c) kokoro CLI per segment "
            f"{c_wall:.2f}s (peak RSS {c_rss:.0f} MiB)"
        )
        print(f"  (c)/(a) = {c_wall / a20:.2f}  (target >= 3)")
        for n in (50, 500):
            _, rss, _ = run_child([sys.executable, __file__, "--child", "fake", str(n)])
            print(f"fake engine, N={n}: peak RSS {rss:.0f} MiB")


if __name__ == "__main__":
    main()
