"""`generate-all --ray`: the seed's rules on a local Ray cluster (the tiny checkpoint), the
driver the only writer. Runs where the ray extra is installed (CI installs it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import invoke, make_project
from test_signals import only_recorded_files
from typer.testing import CliRunner

from narrator.audiofiles import audio_path
from narrator.engine.torch_engine import KokoroSynthesizer
from narrator.project import list_segments, set_locked
from narrator.store import open_project
from narrator.tasks import run_lock

TEXTS = [
    "The lamp was lit at dusk.",
    "",
    "Waves broke on the rocks below.",
    "A gull cried once.",
    "Morning came grey and still.",
    "The keeper slept.",
]


def test_ray_options_need_ray_and_gpu_workers_need_torch(
    runner: CliRunner, tiny_model: Path, tmp_path: Path
) -> None:
    make_project(tmp_path / "book.db", TEXTS)
    for args in (
        ["--workers", "2"],
        ["--ray", "local", "--gpus-per-worker", "1", "--engine", "onnx"],
    ):
        result = invoke(runner, "generate-all", "book.db", "--model-dir", tiny_model, *args)
        assert result.exit_code == 2, result.stderr
        assert result.stderr.startswith("Error: ")


def test_without_ray_says_how_to_install_it(
    runner: CliRunner,
    tiny_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails, as where it is absent
    make_project(tmp_path / "book.db", TEXTS)
    result = invoke(runner, "generate-all", "book.db", "--ray", "local", "--model-dir", tiny_model)
    assert result.exit_code == 69
    assert "pip install 'narrator[ray]'" in result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert not (tmp_path / "book_audio").exists() or not any((tmp_path / "book_audio").iterdir())


def test_doctor_without_ray(
    runner: CliRunner, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    report = json.loads(invoke(runner, "doctor", "--model-dir", tiny_model, "--json").stdout)
    assert report["ray"] == "Ray is not installed (pip install 'narrator[ray]')"


ray = pytest.importorskip("ray", reason="the ray extra is not installed")


# before any test starts the module's cluster, which `auto` would find
@pytest.mark.parametrize(
    ("address", "said"), [("127.0.0.1:9", "127.0.0.1:9"), ("auto", "ray start --head")]
)
def test_no_cluster_at_the_address_says_which(
    tiny_model: Path, tmp_path: Path, address: str, said: str
) -> None:
    make_project(tmp_path / "book.db", TEXTS)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "narrator",
            "generate-all",
            "book.db",
            "--ray",
            address,
            "--model-dir",
            str(tiny_model),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 69, done.stderr
    assert said in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("Error: Ray: ")


def test_doctor_names_the_cluster_auto_finds(
    runner: CliRunner, tiny_model: Path, cluster: object
) -> None:
    report = json.loads(invoke(runner, "doctor", "--model-dir", tiny_model, "--json").stdout)
    assert report["ray"].startswith(f"{ray.__version__}; --ray auto finds a cluster at ")


@pytest.fixture(scope="module")
def cluster() -> object:
    """One local cluster for the in-process tests (`--ray auto` finds it)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def run(runner: CliRunner, model: Path, db: str, *args: str) -> tuple[int, dict]:
    result = invoke(
        runner, "generate-all", db, "--json", "--progress", "none", "--model-dir", model, *args
    )
    assert "Traceback" not in result.stderr
    return result.exit_code, json.loads(result.stdout) if result.stdout.strip() else {}


def recorded_audio(db: Path) -> dict[int, bytes]:
    """Each segment's recorded audio by index."""
    store = open_project(db)
    return {
        row.sequence_index: audio_path(store, row.audio_file).read_bytes()
        for row in list_segments(store)
        if row.audio_file
    }


def test_the_seed_rules_and_the_same_bytes_as_the_worker_thread(
    runner: CliRunner,
    tiny_model: Path,
    tmp_path: Path,
    cluster: object,
) -> None:
    for name in ("thread.db", "ray.db", "two.db"):
        store = make_project(tmp_path / name, TEXTS)
        set_locked(store, [3], True)
    code, thread = run(runner, tiny_model, "thread.db")
    assert code == 0
    # one actor takes every core, as the thread does: the same bytes
    code, on_ray = run(runner, tiny_model, "ray.db", "--ray", "auto", "--workers", "1")
    assert code == 0, on_ray
    assert on_ray["status"] == "COMPLETED"
    assert on_ray["processed"] == thread["processed"] == 4
    assert on_ray["skipped"] == thread["skipped"] == {"locked": 1, "has_audio": 0, "empty": 1}
    audio = recorded_audio(tmp_path / "ray.db")
    assert audio == recorded_audio(tmp_path / "thread.db")
    assert sorted(audio) == [1, 4, 5, 6]
    # two actors of one thread each: torch's CPU kernels sum in another order on another
    # thread count, so a sample may move by one step; the same length, the same speech
    code, two = run(runner, tiny_model, "two.db", "--ray", "auto", "--workers", "2")
    assert code == 0 and two["processed"] == 4
    for index, wav in recorded_audio(tmp_path / "two.db").items():
        a, b = (np.frombuffer(w[44:], dtype=np.int16).astype(int) for w in (wav, audio[index]))
        assert a.size == b.size and np.abs(a - b).max() <= 2

    code, again = run(runner, tiny_model, "ray.db", "--ray", "auto")
    assert code == 0 and again["message"].startswith("No segments to process")
    code, forced = run(runner, tiny_model, "ray.db", "--ray", "auto", "--force")
    assert code == 0 and forced["processed"] == 4  # the locked one still skipped
    assert recorded_audio(tmp_path / "ray.db") == audio
    only_recorded_files(tmp_path / "ray.db", tmp_path / "ray_audio")


def test_a_failing_segment_is_its_own_error_and_the_rest_are_rendered(
    runner: CliRunner,
    tiny_model: Path,
    tmp_path: Path,
    cluster: object,
) -> None:
    make_project(tmp_path / "book.db", ["Words to say.", "... !!! ...", "More words."])
    code, result = run(runner, tiny_model, "book.db", "--ray", "auto", "--workers", "2")
    assert code == 1
    assert result["status"] == "COMPLETED"
    assert result["processed"] == 2 and result["failed"] == 1
    assert result["errors"][0]["sequence_index"] == 2
    assert "nothing speakable" in result["errors"][0]["message"]


def test_stop_now_kills_what_is_in_flight_and_ends_cancelled(
    tiny_model: Path,
    tmp_path: Path,
    cluster: object,
) -> None:
    from narrator.batch import GenerateOptions, generate_all
    from narrator.cluster import RayRunner

    store = make_project(tmp_path / "book.db", [f"Sentence {i}, spoken." for i in range(40)])
    synth = KokoroSynthesizer(model_dir=tiny_model, offline=True)
    run_ = generate_all(store, GenerateOptions(), synth, runner=RayRunner("auto", workers=2))
    assert run_.manager is not None and run_.task_id is not None
    while run_.manager.snapshot(run_.task_id).processed < 2:
        run_.future.result(timeout=0.05) if run_.future.done() else None
    run_.cancel(now=True)
    final = run_.wait(timeout=60)
    assert final is not None and final.status.value == "CANCELLED", final.error
    assert final.failed == 0 and 2 <= final.processed < 40
    only_recorded_files(tmp_path / "book.db", tmp_path / "book_audio")


def test_one_run_per_project_holds_with_ray(
    runner: CliRunner,
    tiny_model: Path,
    tmp_path: Path,
    cluster: object,
) -> None:
    store = make_project(tmp_path / "book.db", TEXTS)
    lock = run_lock(store)
    try:
        result = invoke(
            runner, "generate-all", "book.db", "--ray", "auto", "--model-dir", tiny_model
        )
    finally:
        lock.release()
    assert result.exit_code == 75, result.stderr


def test_gpu_workers_on_a_cluster_without_gpus_say_so(
    runner: CliRunner,
    tiny_model: Path,
    tmp_path: Path,
    cluster: object,
) -> None:
    make_project(tmp_path / "book.db", TEXTS)
    result = invoke(
        runner,
        "generate-all",
        "book.db",
        "--ray",
        "auto",
        "--gpus-per-worker",
        "1",
        "--model-dir",
        tiny_model,
    )
    assert result.exit_code == 69, result.stderr
    assert "the cluster has 0 GPUs" in result.stderr


def test_workers_ray_cannot_place_end_the_run_with_69_not_a_hang(
    tiny_model: Path,
    tmp_path: Path,
    cluster: object,
) -> None:
    from narrator.batch import GenerateOptions, generate_all
    from narrator.cluster import RayRunner

    class TooBig(RayRunner):  # as on uneven nodes: an actor larger than any node
        def _plan_actors(self) -> tuple[int, dict[str, float], int]:
            return 1, {"num_cpus": 3.0}, 1

    store = make_project(tmp_path / "book.db", TEXTS)
    synth = KokoroSynthesizer(model_dir=tiny_model, offline=True)
    run_ = generate_all(store, GenerateOptions(), synth, runner=TooBig("auto", placement_timeout=2))
    final = run_.wait(timeout=60)
    assert final is not None and final.status.value == "FAILED"
    assert final.error_kind == "ClusterUnavailable" and "could not place" in final.error
    assert final.processed == 0


@dataclass
class DiesOnce(KokoroSynthesizer):
    """Kills its Ray worker the first time it meets `fatal` (a marker file remembers);
    `always`: every time."""

    fatal: str = ""
    marker: str = ""
    always: bool = False

    def render(self, text, voice, speed, lang, on_chunk=None, lexicon=None):  # noqa: ANN001, ANN201
        if text == self.fatal and (self.always or not os.path.exists(self.marker)):
            Path(self.marker).touch()
            os._exit(1)  # the worker process dies, as on a lost node
        return super().render(text, voice, speed, lang, on_chunk, lexicon)


@pytest.mark.parametrize("always", [False, True])
def test_a_worker_that_dies_is_retried_once_then_its_segment_fails(
    tiny_model: Path,
    tmp_path: Path,
    cluster: object,
    always: bool,
) -> None:
    from narrator.batch import GenerateOptions, generate_all
    from narrator.cluster import RayRunner

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers lack tests/
    store = make_project(tmp_path / "book.db", TEXTS)
    synth = DiesOnce(
        model_dir=tiny_model,
        offline=True,
        fatal=TEXTS[2],
        marker=str(tmp_path / "died"),
        always=always,
    )
    run_ = generate_all(store, GenerateOptions(), synth, runner=RayRunner("auto", workers=2))
    final = run_.wait(timeout=180)
    assert final is not None and final.status.value == "COMPLETED"
    assert (tmp_path / "died").exists()
    if always:
        assert final.processed == 4 and final.failed == 1
        assert "died rendering it, after Ray had restarted" in final.errors[0].message
    else:
        assert final.processed == 5 and final.failed == 0


@pytest.mark.parametrize("signals", [(signal.SIGINT,), (signal.SIGINT, signal.SIGINT)])
def test_sigint_on_a_local_cluster_records_what_is_in_flight(
    tmp_path: Path,
    tiny_model: Path,
    signals: tuple[int, ...],
) -> None:
    """A real SIGINT to a real `generate-all --ray local`: exit 130, CANCELLED, every file
    the project records is there and nothing else; a second one cancels what is in
    flight and stops at once, with the same guarantees."""
    make_project(tmp_path / "book.db", [f"Sentence number {i}, spoken." for i in range(60)])
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "narrator",
            "generate-all",
            "book.db",
            "--json",
            "--progress",
            "plain",
            "--ray",
            "local",
            "--workers",
            "2",
        ],
        cwd=tmp_path,
        env=os.environ | {"NARRATOR_MODEL_DIR": str(tiny_model)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("[6/"):
            break
    else:
        pytest.fail(f"the batch ended early: {proc.wait()}")
    for sig in signals:
        proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    result = json.loads(stdout)
    assert result["status"] == "CANCELLED" and 4 <= result["processed"] < 60
    only_recorded_files(tmp_path / "book.db", tmp_path / "book_audio")
    assert "Traceback" not in stderr


def test_ray_renders_a_cast_as_the_worker_thread_does(
    runner: CliRunner,
    tiny_model: Path,
    tmp_path: Path,
    cluster: object,
) -> None:
    from narrator.planning import Cast
    from narrator.project import set_cast

    for name in ("thread.db", "ray.db"):
        set_cast(make_project(tmp_path / name, TEXTS), [4, 6], Cast("af_sky", 0.9))
    assert run(runner, tiny_model, "thread.db")[0] == 0
    code, on_ray = run(runner, tiny_model, "ray.db", "--ray", "auto", "--workers", "1")
    assert code == 0 and on_ray["processed"] == 5, on_ray
    audio = recorded_audio(tmp_path / "ray.db")
    assert audio == recorded_audio(tmp_path / "thread.db")
    make_project(tmp_path / "plain.db", TEXTS)
    assert run(runner, tiny_model, "plain.db")[0] == 0
    assert recorded_audio(tmp_path / "plain.db")[4] != audio[4]  # the cast was heard
    assert not any(row.stale for row in list_segments(open_project(tmp_path / "ray.db")))
