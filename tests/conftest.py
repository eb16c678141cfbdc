"""Fixtures: every test is isolated from the network and the user's files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from narrator.cli import app
from narrator.engine.tiny import write_tiny_checkpoint
from narrator.project import add_segments
from narrator.store import ProjectStore, create_project


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
