"""How well `narrator verify` finds broken audio: renders a real chapter (bench/data/prose.txt,
one segment per paragraph or run of up to three sentences, at least 40), injects defects
into copies of its audio (the tail cut at a word boundary, a sentence cut from the middle, 3
s of silence inserted, clipping, another segment's audio, the last 40% faded out) and
prints, per defect kind, how many were found and how many located within 1 s of the damage
(a point, or the span of the silence, clipping, swapped audio or fade), the share of clean
segments flagged, and verify's speed in x real time. Renders are kept in --cache between
runs.

    .venv/bin/python bench/verify.py [--voice jm_kumo] [--lang en-us] [--cache /tmp/verify-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from narrator.engine.engines import make_synthesizer
from narrator.splitting import sentences
from narrator.verify import RATE, Heard, hear, judge
from narrator.voices import normalise_lang
from narrator.weights.sources import locate_model

PROSE = Path(__file__).parent / "data" / "prose.txt"
DEFECTS = ("tail_cut", "middle_cut", "silence", "clipping", "swapped", "fade")


def texts(minimum: int = 40) -> list[str]:
    """Paragraphs of prose.txt, long ones cut into runs of up to three sentences."""
    out = []
    for paragraph in PROSE.read_text(encoding="utf-8").split("\n\n"):
        said = sentences(" ".join(paragraph.split()))
        out += [" ".join(said[i : i + 3]) for i in range(0, len(said), 3)]
    assert len(out) >= minimum, len(out)
    return out


def rendered(cache: Path, voice: str, lang: str) -> list[tuple[str, np.ndarray, list]]:
    cache.mkdir(parents=True, exist_ok=True)
    index = cache / "index.json"
    if index.exists():
        saved = json.loads(index.read_text())
        return [(t, np.load(cache / f"{i}.npy"), c) for i, (t, c) in enumerate(saved)]
    found = locate_model(offline=True).found
    if found is None or found.folder is None:
        sys.exit("no model here: run `narrator model pull`")
    synth = make_synthesizer("auto", found.folder, "cpu", True)[0]
    saved, out = [], []
    for i, text in enumerate(texts()):
        speech = synth.render(text, voice, 1.0, lang)
        np.save(cache / f"{i}.npy", speech.samples)
        cues = [list(c) for c in speech.cues]
        saved.append((text, cues))
        out.append((text, speech.samples, cues))
    index.write_text(json.dumps(saved))
    return out


def _point(samples: np.ndarray, around: float, loudest: bool = False) -> int:
    """The quietest 20 ms frame within 0.5 s of `around` (seconds), a word boundary; or the
    loudest, inside a word."""
    step = RATE // 50
    lo, hi = int((around - 0.5) * RATE) // step, int((around + 0.5) * RATE) // step
    lo, hi = max(lo, 1), min(hi, len(samples) // step - 1)
    energy = [float(np.sum(samples[i * step : (i + 1) * step] ** 2)) for i in range(lo, hi)]
    return (lo + int(np.argmax(energy) if loudest else np.argmin(energy))) * step


def inject(
    kind: str, samples: np.ndarray, cues: list, other: np.ndarray
) -> tuple[np.ndarray, tuple[float, float]] | None:
    """A damaged copy and where the damage is in it (first and last second: a point, or the
    span of the silence, the clipping or the fade); None where this segment cannot take this
    defect (one sentence where three are needed)."""
    seconds = len(samples) / RATE
    if kind == "tail_cut":
        cut = cues[-1][0] if len(cues) >= 2 else _point(samples, seconds * 0.6)
        return samples[:cut], (cut / RATE, cut / RATE)
    if kind == "middle_cut":
        if len(cues) < 3:
            return None
        start, length = cues[len(cues) // 2][0], cues[len(cues) // 2][1]
        return np.concatenate([samples[:start], samples[start + length :]]), (start / RATE,) * 2
    if kind == "silence":
        at = _point(samples, seconds / 2)
        silent = np.concatenate([samples[:at], np.zeros(3 * RATE, np.float32), samples[at:]])
        return silent, (at / RATE, at / RATE + 3)
    if kind == "clipping":  # on speech: eight times louder clips; a quiet pause would not
        at = max(_point(samples, seconds / 2, loudest=True) - RATE // 4, 0)
        out = samples.copy()
        out[at : at + RATE // 2] = np.clip(out[at : at + RATE // 2] * 8, -1, 1)
        return out, (at / RATE, at / RATE + 0.5)
    if kind == "swapped":
        return other.copy(), (0.0, len(other) / RATE)
    if kind == "fade":
        start = int(len(samples) * 0.6)
        out = samples.copy()
        out[start:] *= np.linspace(1, 0, len(samples) - start, dtype=np.float32)
        return out, (start / RATE, seconds)
    raise ValueError(kind)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voice", default="jm_kumo")
    parser.add_argument("--lang", default="en-us")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/narrator-verify-bench"))
    args = parser.parse_args()
    chapter = rendered(args.cache, args.voice, normalise_lang(args.lang))
    audio = sum(len(s) for _, s, _ in chapter) / RATE
    print(f"{len(chapter)} segments, {audio:.0f} s of audio ({args.voice}, {args.lang})")
    workers = os.cpu_count() or 1
    with ProcessPoolExecutor(workers) as pool:
        started = time.perf_counter()
        heard = list(pool.map(hear, [s for _, s, _ in chapter]))
        clean = [judge(s, t, c, heard=h) for (t, s, c), h in zip(chapter, heard, strict=True)]
        wall = time.perf_counter() - started
        flagged = [i for i, f in enumerate(clean) if f]
        print(f"verify: {wall:.1f} s on {workers} processes, {audio / wall:.1f}x real time")
        share = len(flagged) / len(chapter)
        print(f"clean segments flagged: {len(flagged)}/{len(chapter)} ({share:.0%})")
        for i in flagged:
            print(f"  {i}: " + "; ".join(f"{f.kind} at {f.at:.1f}s: {f.detail}" for f in clean[i]))
        print(f"{'defect':<12}{'tried':>6}{'found':>7}{'located':>9}")
        totals = [0, 0, 0]
        for kind in DEFECTS:
            cases = []
            for i, (text, samples, cues) in enumerate(chapter):
                other = chapter[(i + len(chapter) // 2) % len(chapter)][1]
                made = inject(kind, samples, cues, other)
                if made is not None:
                    cases.append((text, cues, *made))
            heard_bad: list[Heard] = list(pool.map(hear, [c[2] for c in cases]))
            found = located = 0
            for (text, cues, damaged, (first, last)), h in zip(cases, heard_bad, strict=True):
                findings = judge(damaged, text, cues, heard=h)
                found += bool(findings)
                located += any(first - 1.0 <= f.at <= last + 1.0 for f in findings)
            totals = [totals[0] + len(cases), totals[1] + found, totals[2] + located]
            print(f"{kind:<12}{len(cases):>6}{found:>7}{located:>9}")
        print(
            f"{'all':<12}{totals[0]:>6}{totals[1]:>7}{totals[2]:>9}  "
            f"({totals[1] / totals[0]:.0%} found, {totals[2] / totals[0]:.0%} located)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
