"""Fixtures: every test is isolated from the network and the user's files."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from narrator.cli import app
from narrator.project import add_segments
from narrator.store import ProjectStore, create_project
from narrator.weights.tiny import write_tiny_checkpoint


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No network, no user folders: narrator's home and the HF cache are temporary."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("NARRATOR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.delenv("NARRATOR_MODEL_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random-weight Kokoro checkpoint in the real on-disk layout."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("model"), voices=("af_heart", "af_sky"))


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def invoke(runner: CliRunner, *args: str, input: str | None = None):  # noqa: ANN201
    return runner.invoke(app, [str(a) for a in args], input=input)


def invoke_json(runner: CliRunner, *args: str) -> object:
    result = invoke(runner, *args, "--json")
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout)


def make_project(path: Path, texts: list[str]) -> ProjectStore:
    store = create_project(path, path.stem)
    add_segments(store, texts)
    return store


def onnx_graph_bytes(op_type: str = "Identity") -> bytes:
    """A valid ONNX file of one node (one operator, `op_type`), for folders that need graph
    files without a model."""
    pytest.importorskip("onnx", reason="the pypi extra (onnx) is not installed")
    from onnx import TensorProto, helper

    value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    node = helper.make_node(op_type, ["x"], ["y"])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    return helper.make_model(helper.make_graph([node], "g", [value], [out])).SerializeToString()


# ------------------------------------------------ real processes, real mounts

# What no output of narrator may carry: C0/C1 controls but newline and tab, invisibles.
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200d\u2060\ufeff]")


def python(
    cwd: Path,
    *args: object,
    model: Path | None = None,
    stdin: str | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Python in a process of its own, offline, with the model folder given."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}
    if model is not None:
        env["NARRATOR_MODEL_DIR"] = str(model)
    return subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        input=stdin,
        timeout=timeout,
    )


def narrator(
    cwd: Path,
    *args: object,
    model: Path | None = None,
    stdin: str | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """narrator in a process of its own, as a user runs it."""
    return python(cwd, "-m", "narrator", *args, model=model, stdin=stdin, timeout=timeout)


def one_error_line(stderr: str) -> str:
    """The run's error: exactly one `Error:` line, and no traceback anywhere."""
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, stderr
    return errors[0]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 512 KiB tmpfs (root only; skipped where mounting is refused)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    tried = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if tried.returncode:
        pytest.skip(f"cannot mount a small tmpfs here: {tried.stderr.strip() or 'refused'}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def peak_rss_mib(cwd: Path, *args: object) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run narrator; its exit and its peak resident memory (from a fresh parent's rusage,
    so no earlier child of the test process counts)."""
    probe = (
        "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], "
        "capture_output=True, text=True); sys.stdout.write(r.stdout); "
        "sys.stderr.write(r.stderr); print(resource.getrusage("
        "resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(r.returncode)"
    )
    done = python(cwd, "-c", probe, sys.executable, "-m", "narrator", *args)
    *stderr, peak = done.stderr.splitlines()
    done.stderr = "\n".join(stderr)
    return done, int(peak) / 1024
