"""Rendering on a Ray cluster (`generate-all --ray`): the same batch on many workers.

Every rule of the worker thread holds because this process stays the only writer of the
project file and the audio folder: Ray actors (one per GPU, or per share of the CPUs, the
model loaded once in each) get plain values (text, voice, speed, language) and send the
speech back; the driver records each render atomically, in the order they come back,
exactly as the worker thread does. Progress is updated as each segment is handed out.
A first cancel stops handing out and records what is in flight; stop-now kills the
actors, abandoning what is in flight. An actor that dies is restarted by Ray once and the
segment it was rendering retried; if it dies again, that segment alone fails (a
per-segment error) and a fresh actor takes its place, up to `workers` replacements in a
run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

from narrator.engine import Synthesizer
from narrator.errors import BadInput, ClusterUnavailable, MissingExtra, first_line
from narrator.lexicon import Lexicon
from narrator.planning import SegmentState
from narrator.recording import BatchJob, hand_out, take_back
from narrator.store import ProjectStore
from narrator.tasks import StopNow, TaskManager, TaskSnapshot, TaskStatus

INSTALL = "pip install 'narrator[ray]'"
LOCAL, AUTO = "local", "auto"
POLL = 0.1  # seconds between looks at a stop-now request while renders are in flight


def ray_missing() -> str | None:
    """Why Ray cannot be used here, or None."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return f"Ray is not installed ({INSTALL})"
    return None


def ray_report() -> str:
    """For `narrator doctor`: Ray's version and the cluster `--ray auto` would join."""
    missing = ray_missing()
    if missing:
        return missing
    import ray
    from ray._private.services import canonicalize_bootstrap_address

    try:
        found = canonicalize_bootstrap_address(AUTO)
    except Exception:  # noqa: BLE001 - Ray says "no running instance" by raising
        found = None
    where = (
        f"a cluster at {found}"
        if found
        else "no running cluster (`ray start --head` starts one; --ray local needs none)"
    )
    return f"{ray.__version__}; --ray auto finds {where}"


def _import_ray() -> Any:
    # Ray's calls would otherwise start a cluster of their own once this run's is shut
    # down (a halt shuts it down while the batch's worker may be in ray.wait)
    os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")
    missing = ray_missing()
    if missing:
        raise MissingExtra(f"--ray needs Ray: {INSTALL}")
    import ray

    return ray


class _Renderer:
    """The body of each Ray actor: a synthesizer of its own, limited to its CPU share."""

    def __init__(self, synthesizer: Synthesizer) -> None:
        self.synthesizer = synthesizer

    def render(
        self, text: str, voice: str, speed: float, lang: str, lexicon: Lexicon | None = None
    ) -> tuple[Any, float]:
        """The speech, and the seconds its render took from the first chunk (the model
        load left out, as the worker thread counts it; a duration, since clocks differ
        between nodes)."""
        first: list[float] = []

        def on_chunk(chunk: int, chunks: int) -> None:
            if not first:
                first.append(time.monotonic())

        speech = self.synthesizer.render(
            text, voice, speed, lang, on_chunk=on_chunk, lexicon=lexicon
        )
        return speech, time.monotonic() - first[0]

    def ready(self) -> bool:
        return True


def runner_for(
    address: str | None, workers: int | None, gpus_per_worker: float, engine: str
) -> tuple[RayRunner | None, str]:
    """The runner a run asks for (None: the worker thread) and the engine it renders with:
    GPU actors render on torch, which the driver cannot pick by its own devices (it may
    have no GPU), and the onnx engine runs on the CPU only."""
    if address is None:
        if workers is not None or gpus_per_worker:
            raise BadInput("--workers and --gpus-per-worker need --ray (e.g. --ray local)")
        return None, engine
    if gpus_per_worker and engine != "torch":
        if engine == "onnx":
            raise BadInput(
                "the onnx engine runs on the CPU only; use --engine torch with --gpus-per-worker"
            )
        engine = "torch"
    return RayRunner(address, workers, gpus_per_worker), engine


@dataclass
class RayRunner:
    """Renders a batch on Ray actors. `address`: `local` (a private cluster for this run,
    on this machine's cores), `auto` (the cluster `ray start` left here, or RAY_ADDRESS),
    or a cluster's address. `workers`: actors (default: one per `gpus_per_worker` GPUs,
    else one per 2 CPUs of the cluster)."""

    address: str = LOCAL
    workers: int | None = None
    gpus_per_worker: float = 0.0
    placement_timeout: float = 120.0  # seconds for Ray to place the actors
    _started: bool = field(default=False, repr=False)
    _closing: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _actors: tuple[int, dict[str, float], int] | None = field(default=None, repr=False)

    def prepare(self) -> None:
        """Join (or start) the cluster, in the main thread before the run: 69 without Ray
        or without a cluster at the address."""
        ray = _import_ray()
        if not ray.is_initialized():  # else a caller of the library joined one already
            self._join(ray)
        self._actors = self._plan_actors()

    def _join(self, ray: Any) -> None:
        options: dict[str, Any] = dict(
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
        )
        _probe(self.address)
        try:
            if self.address == LOCAL:  # a new cluster, even where RAY_ADDRESS names one
                os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a private cluster
                ray.init(address="local", num_cpus=len(os.sched_getaffinity(0)), **options)
            else:
                ray.init(address=self.address, **options)
        except Exception as exc:  # noqa: BLE001 - Ray's errors: no cluster, no token, ...
            where = (
                "no running cluster found (`ray start --head` starts one; or --ray local)"
                if self.address == AUTO
                else f"cannot join {self.address}"
            )
            raise ClusterUnavailable(f"Ray: {where}: {first_line(exc)}") from exc
        self._started = True

    def close(self) -> None:
        """Leave the cluster; a `local` one stops (from the worker at the end of the run,
        or from the main thread when a signal halts it)."""
        with self._closing:
            if self._started:
                import ray

                self._started = False
                ray.shutdown()

    def _plan_actors(self) -> tuple[int, dict[str, float], int]:
        """(actors, Ray resources of each, threads of each)."""
        import ray

        resources = ray.cluster_resources()
        cpus, gpus = resources.get("CPU", 1.0), resources.get("GPU", 0.0)
        if self.gpus_per_worker > 0:
            count = self.workers or max(1, int(gpus // self.gpus_per_worker))
            if count * self.gpus_per_worker > gpus:  # Ray would wait for them for ever
                raise ClusterUnavailable(
                    f"Ray: the cluster has {gpus:g} GPUs; {count} workers of "
                    f"{self.gpus_per_worker:g} need {count * self.gpus_per_worker:g}; "
                    "lower --workers or --gpus-per-worker"
                )
            return count, {"num_cpus": min(1.0, cpus / count), "num_gpus": self.gpus_per_worker}, 1
        count = self.workers or max(1, int(cpus // 2))
        # a share of the CPUs each (a fraction where there are more workers than CPUs)
        return count, {"num_cpus": cpus / count}, max(1, int(cpus // count))

    def render_all(
        self,
        store: ProjectStore,
        job: BatchJob,
        manager: TaskManager,
        synthesizer: Synthesizer,
    ) -> TaskStatus:
        ray = _import_ray()
        from ray.exceptions import RayActorError, RayTaskError

        assert self._actors is not None, "prepare() first"
        count, resources, threads = self._actors
        actor_class = ray.remote(max_restarts=1, max_task_retries=1, **resources)(_Renderer)
        worker_synth = replace(synthesizer, threads=threads)
        if not self.gpus_per_worker and worker_synth.device == "auto":
            worker_synth = replace(worker_synth, device="cpu")  # Ray shows them the GPUs

        def new_actor() -> Any:
            return actor_class.remote(worker_synth)

        idle = self._placed([new_actor() for _ in range(count)])
        replacements = count
        pending: dict[Any, tuple[SegmentState, Any, TaskSnapshot]] = {}
        spec = job.spec
        given = 0  # segments handed out (or skipped) so far
        try:
            while True:
                while (
                    idle and given < len(job.segment_ids) and not manager.is_cancelled(job.task_id)
                ):
                    given += 1
                    state = hand_out(store, job, manager, given, job.segment_ids[given - 1])
                    if state is not None:
                        actor = idle.pop()
                        voicing = state.voicing(spec.casting)
                        ref = actor.render.remote(
                            state.text, *voicing.spoken(), lexicon=voicing.lexicon
                        )
                        pending[ref] = (state, actor, manager.snapshot(job.task_id))
                if not pending:
                    break
                if manager.must_stop_now(job.task_id):
                    return TaskStatus.CANCELLED  # the actors, busy or not, are killed below
                done, _ = ray.wait(list(pending), num_returns=1, timeout=POLL)
                for ref in done:
                    state, actor, handed = pending.pop(ref)
                    try:
                        outcome, took = ray.get(ref)
                        handed = replace(handed, first_chunk_at=time.monotonic() - took)
                        idle.append(actor)
                    except RayTaskError as exc:
                        outcome = exc.cause if isinstance(exc.cause, Exception) else exc
                        idle.append(actor)
                    except RayActorError as exc:  # dead after its one restart
                        if replacements == 0:
                            raise ClusterUnavailable(
                                "Ray workers keep dying; see `ray status` and the "
                                f"workers' logs ({first_line(exc)})"
                            ) from exc
                        replacements -= 1
                        _kill(ray, actor)  # it may hold its CPUs or GPU still
                        idle.append(new_actor())
                        outcome = RuntimeError(
                            "its Ray worker died rendering it, after Ray had restarted that "
                            f"worker once ({first_line(exc)})"
                        )
                    try:
                        take_back(store, job, manager, state, outcome, handed)
                    except StopNow:  # halted before this render could be recorded
                        return TaskStatus.CANCELLED
        finally:
            try:
                for actor in idle + [actor for _, actor, _ in pending.values()]:
                    _kill(ray, actor)
            finally:
                self.close()
        return TaskStatus.COMPLETED if given == len(job.segment_ids) else TaskStatus.CANCELLED

    def _placed(self, actors: list[Any]) -> list[Any]:
        """The actors Ray could place within placement_timeout (on uneven nodes some may
        never fit); the others are dropped. None placed: exit 69."""
        import ray

        calls = {actor.ready.remote(): actor for actor in actors}
        done, _ = ray.wait(list(calls), num_returns=len(calls), timeout=self.placement_timeout)
        placed = [calls[ref] for ref in done]
        for ref in set(calls) - set(done):
            _kill(ray, calls[ref])
        if not placed:
            raise ClusterUnavailable(
                f"Ray could not place any worker in {self.placement_timeout:g} s (each "
                f"asks for {self._actors[1] if self._actors else '?'}); see `ray status`, "
                "or lower --workers or --gpus-per-worker"
            )
        return placed


def _kill(ray: Any, actor: Any) -> None:
    with contextlib.suppress(Exception):  # dead already, or the cluster is going
        ray.kill(actor)


def _probe(address: str, timeout: float = 3.0) -> None:
    """Fail fast where nothing listens at a HOST:PORT address: ray.init would retry for
    minutes before it gives up."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return  # local, auto, or a ray:// client address: Ray says what is wrong
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ClusterUnavailable(
            f"Ray: no cluster answers at {address} ({exc.strerror or exc}); start its head "
            "with `ray start --head`, or check the address"
        ) from exc
