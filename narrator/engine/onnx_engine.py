"""The onnx engine: Kokoro's ONNX export on onnxruntime, on CPU. Same G2P, sentences,
chunks, voices and caption cues as the torch engine (engine.torch_engine); its graph draws no
noise, so the same input gives the same bytes without a seed."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from narrator.engine import Speech
from narrator.engine.script import perform, write_script
from narrator.engine.torch_engine import KokoroSynthesizer, Lazy, limit_heap_growth
from narrator.errors import ModelUnavailable, first_line
from narrator.lexicon import Lexicon
from narrator.weights.graphs import feeds, graphs_current
from narrator.weights.sources import CONFIG, ONNX_GRAPHS, onnx_graphs

INSTALL = "pip install 'narrator[onnx]'"
_sessions: dict[tuple[Path, int], Lazy] = {}
_sessions_lock = threading.Lock()
# The model folder's record of which graph is fastest, per machine (see pick_graph).
TIMINGS = "onnx-graphs.json"
DEFAULT_GRAPH = "float-vocoder"  # where no timing can be recorded
# What a graph is timed on: a short English sentence, which ranks the graphs as whole
# chunks do (bench/RESULTS.md, "Figures behind the code").
PROBE = "ðə kwˈɪk bɹˈWn fˈɑks ʤˈʌmps ˌOvəɹ ðə lˈAzi dˈɔɡ."


def onnxruntime_missing() -> str | None:
    """Why onnxruntime cannot be used here, or None."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return f"onnxruntime is not installed ({INSTALL})"
    return None


def load_session(model: Path, threads: int) -> Any:
    import onnxruntime as ort

    # As on torch: left to glibc, the arena's regions, freed and taken again chunk after
    # chunk, come from heaps that fragment (bench/memory.py).
    limit_heap_growth()
    options = ort.SessionOptions()
    options.inter_op_num_threads = 1  # one operator at a time; each may use every core
    options.intra_op_num_threads = threads  # 0: every core
    # onnxruntime's default order follows the file's, which the static graph's quantizer
    # interleaves, and the arena's peak with it; the priority order peaks lower, as fast.
    options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    try:
        return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelUnavailable(
            f"cannot load {model} ({first_line(exc)}); pull it again with `narrator model pull`"
        ) from exc


@cache
def _cpuinfo() -> dict[str, str]:
    """The first value of each field of /proc/cpuinfo (empty where there is none)."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:  # not Linux
        cpuinfo = ""
    found: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        found.setdefault(key, value)
    return found


@cache
def machine() -> str:
    """This CPU (its name and instruction set), its cores and onnxruntime: what decides
    which graph is fastest, as the key of a timing. Not the thread count: a worker and
    `--ray` actors of fewer threads run the same graph, so give the same bytes."""
    import hashlib

    import onnxruntime

    found = _cpuinfo()
    name = found.get("model name") or platform.processor() or platform.machine()
    flags = found.get("flags") or found.get("Features") or platform.machine()
    flags = hashlib.sha256(" ".join(sorted(flags.split())).encode()).hexdigest()[:8]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{name} [{flags}], {cores} cores, onnxruntime {onnxruntime.__version__}"


def _timings(folder: Path) -> dict[str, Any]:
    try:
        found = json.loads((folder / TIMINGS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _entry(folder: Path) -> dict[str, Any]:
    """This machine's timing of the folder's graphs, if the record holds a sound one."""
    graphs = onnx_graphs(folder)
    entry = _timings(folder).get(machine())
    if len(graphs) < 2 or not isinstance(entry, dict):
        return {}
    graph, seconds = entry.get("graph"), entry.get("seconds")
    if (
        isinstance(graph, str)
        and graph in graphs
        and isinstance(seconds, dict)
        and all(isinstance(seconds.get(name), int | float) for name in graphs)
    ):
        return entry
    return {}


def recorded_graph(folder: Path) -> str | None:
    """The graph timed fastest on this machine, where it has several and a timing."""
    return _entry(folder).get("graph")


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK)


def _record(folder: Path, entry: dict[str, Any]) -> None:
    """Add this machine's timing to the folder's record, atomically; where it cannot be
    written (a full disk) the record stays as it was, and the next process times again."""
    from narrator.atomic import publish, temp_path

    record = _timings(folder) | {machine(): entry}
    partial = temp_path(folder / TIMINGS)
    try:
        partial.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", "utf-8")
        publish(partial, folder / TIMINGS)
    except OSError:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)


def _seconds(session: Any, feed: dict[str, Any], options: Any) -> float:
    started = time.perf_counter()
    session.run(None, feed, options)
    return time.perf_counter() - started


def _time_graphs(folder: Path, graphs: dict[str, Path], threads: int, pack: Any) -> tuple[str, Any]:
    """Load every graph, time each on PROBE, record the times; the fastest and its session."""
    sessions = {name: load_session(path, threads) for name, path in graphs.items()}
    feed, options = feeds(vocab_of(folder), PROBE, pack, 1.0), run_options()
    best = dict.fromkeys(sessions, float("inf"))
    for _ in range(3):  # alternated, so a slow moment falls on all; the first warms up
        for name, session in sessions.items():
            best[name] = min(best[name], _seconds(session, feed, options))
    name = min(best, key=best.__getitem__)
    _record(
        folder,
        {
            "graph": name,
            "seconds": {n: round(t, 3) for n, t in best.items()},
            "timed": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    )
    return name, sessions[name]


def pick_graph(folder: Path, threads: int, pack: Any) -> tuple[str, Any]:
    """(graph name, its loaded session): the fastest of the folder's graphs on this machine,
    as none wins on every CPU (bench/graphs.py). Where the folder has several, the first render
    on a machine (or `model pull`) loads them, times each on PROBE (the best of three runs,
    alternated), keeps the fastest and records the
    times in the folder's TIMINGS, so every later process on this machine runs the same
    graph (and so gives the same bytes) without timing again.
    Processes that start together take turns (a lock file): one times, the rest read its
    record. A folder that cannot be written keeps no record, so there DEFAULT_GRAPH runs,
    untimed, the same every time."""
    graphs = onnx_graphs(folder)
    if not graphs:
        raise _no_model(folder)
    session = None
    if len(graphs) == 1:
        name = next(iter(graphs))
    elif not _writable(folder):
        name = DEFAULT_GRAPH
    else:
        from filelock import FileLock

        with FileLock(folder / f".{TIMINGS}.lock"):
            name = recorded_graph(folder)
            if name is None:
                name, session = _time_graphs(folder, graphs, threads, pack)
    return name, session or load_session(graphs[name], threads)


def _no_model(folder: Path) -> ModelUnavailable:
    return ModelUnavailable(
        f"no ONNX model in {folder}: `narrator model pull` writes one; or use --engine torch"
    )


def graph_report(folder: Path) -> str | None:
    """Which graph the onnx engine runs from `folder` on this machine, and why (doctor)."""
    graphs = onnx_graphs(folder)
    if not graphs or onnxruntime_missing():
        return None
    missing = [name for name in ONNX_GRAPHS if name not in graphs]
    lacks = (
        (
            f"; not in the folder: {', '.join(missing)} (`narrator model pull` "
            "writes every graph, and the fastest here is then taken)"
        )
        if missing
        else ""
    )
    if not graphs_current(folder):
        lacks += (
            "; written by an earlier narrator, or damaged (`narrator model pull` writes them again)"
        )
    return _graph_choice(folder, graphs) + lacks


def _graph_choice(folder: Path, graphs: dict[str, Path]) -> str:
    if len(graphs) == 1:
        return f"{next(iter(graphs))} (the only graph in the folder)"
    entry = _entry(folder)
    if entry:
        times = ", ".join(
            f"{n} {t:.2f} s"
            for n, t in sorted(entry["seconds"].items(), key=lambda i: i[1])
            if n in graphs
        )
        return f"{entry['graph']} (fastest on this CPU: {times}, timed {entry.get('timed', '?')})"
    if not _writable(folder):
        return (
            f"{DEFAULT_GRAPH} (the folder cannot be written, so no timing is kept for "
            "this CPU; the same graph runs every time)"
        )
    return (
        "not timed on this CPU yet: the first onnx render times its graphs (about 15 s) "
        "and keeps the fastest"
    )


def shared_session(folder: Path, threads: int, pack: Any) -> Lazy:
    """The process-wide onnxruntime session for this model folder and thread count: the
    fastest graph here (pick_graph), loaded once (onnxruntime's run() is safe from any
    thread): get() it when it is needed. Its loading begins now in the background
    (onnxruntime lets go of the GIL while it loads a graph, so a first
    render's imports and G2P overlap it), except where the graphs must first be timed:
    G2P beside the timing would skew the times it records for good. `pack`: a voice pack
    to time the graphs with, if they must be."""
    key = (folder.resolve(), threads)
    with _sessions_lock:
        lazy = _sessions.setdefault(key, Lazy(lambda: pick_graph(*key, pack)[1]))
    return lazy if lazy.built or _to_be_timed(folder) else lazy.start()


def _to_be_timed(folder: Path) -> bool:
    """Whether pick_graph would time the folder's graphs now (unless another process
    records a timing first)."""
    return len(onnx_graphs(folder)) > 1 and _writable(folder) and recorded_graph(folder) is None


def run_options(shrink: bool = True) -> Any:
    """Options for one run; `shrink`: hand the arena's growth back when it ends. Left to
    grow, onnxruntime's CPU arena keeps the largest working set of any chunk so far and
    more; shrinking costs the next run its pages again, so the onnx engine shrinks after a
    segment's last chunk only (bench/memory.py)."""
    import onnxruntime as ort

    options = ort.RunOptions()
    if shrink:
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


# Chunks of up to 150 phonemes on onnxruntime (torch's engine takes 250): faster and
# smaller there than longer chunks (bench/RESULTS.md, "Figures behind the code").
ONNX_CHUNK_TARGET = 150


@dataclass
class OnnxSynthesizer(KokoroSynthesizer):
    """Kokoro-82M's ONNX export behind the Synthesizer interface (CPU only). It shares the
    torch engine's model folder, voices and checks, and never downloads: Hugging Face's
    Kokoro-82M has no ONNX model."""

    chunk_limit: int = ONNX_CHUNK_TARGET

    def __post_init__(self) -> None:
        super().__post_init__()
        self.offline = True

    def check(self, voice: str, lang: str) -> None:
        super().check(voice, lang)
        missing = onnxruntime_missing()
        if missing:
            raise ModelUnavailable(
                f"the onnx engine needs onnxruntime: {missing}; or use --engine torch"
            )
        if not onnx_graphs(self.folder()):
            raise _no_model(self.folder())

    def render(
        self,
        text: str,
        voice: str,
        speed: float,
        lang: str,
        on_chunk: Callable[[int, int], None] | None = None,
        lexicon: Lexicon | None = None,
    ) -> Speech:
        folder = self.folder()
        pack = self.voice_pack(voice)
        loading = shared_session(folder, self.threads, pack)
        script = write_script(text, lang, self.g2p_backend, self.chunk_limit, lexicon)
        vocab = vocab_of(folder)
        session = loading.get()
        runs = itertools.count(1)
        keep, shrink = run_options(shrink=False), run_options()

        def run(phonemes: str) -> tuple[Any, list[int]]:
            last = next(runs) >= len(script.chunks)
            audio, durations = session.run(
                None, feeds(vocab, phonemes, pack, speed), shrink if last else keep
            )
            return audio.reshape(-1), durations.reshape(-1).tolist()

        return perform(script, run, vocab, on_chunk)


@cache
def vocab_of(folder: Path) -> dict[str, int]:
    """The model's phoneme vocabulary (its config.json)."""
    return json.loads((folder / CONFIG).read_text(encoding="utf-8"))["vocab"]
