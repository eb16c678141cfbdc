"""How loud each voice of the model here speaks the same paragraph (integrated loudness,
EBU R128 via pyloudnorm), to tell whether export's one gain per file leaves steps between
the voices of a cast book. Needs real weights and the `quality` extra (pyloudnorm comes with
the `test` extra).

    .venv/bin/python bench/voice_loudness.py [--lang en-us]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from narrator.engine import SAMPLE_RATE
from narrator.engine.engines import make_synthesizer
from narrator.voices import normalise_lang
from narrator.weights.sources import locate_model, voices_in

PROSE = Path(__file__).parent / "data" / "prose.txt"


def main() -> int:
    import pyloudnorm

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lang", default="en-us")
    args = parser.parse_args()
    found = locate_model(offline=True).found
    if found is None or found.folder is None:
        print("no model here: run `narrator model pull`", file=sys.stderr)
        return 69
    synth, engine, _ = make_synthesizer("auto", found.folder, "cpu", True)
    text = PROSE.read_text(encoding="utf-8").split("\n\n")[0]
    meter = pyloudnorm.Meter(SAMPLE_RATE)
    levels = {}
    for voice in voices_in(found.folder):
        samples = synth.render(text, voice, 1.0, normalise_lang(args.lang)).samples
        levels[voice] = meter.integrated_loudness(samples.astype(np.float64))
        print(f"{voice:<16}{levels[voice]:7.1f} LUFS  ({engine} engine)")
    print(f"spread {max(levels.values()) - min(levels.values()):.1f} LU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
