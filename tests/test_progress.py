"""What a person or a CI log sees while a batch runs: plain lines, heartbeats, JSON lines."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
from conftest import invoke, make_project
from fakes import FakeSynthesizer
from typer.testing import CliRunner

from narrator.batch import GenerateOptions, generate_all
from narrator.progress import JsonlView, PlainView, ProgressMode, follow_run


class SlowChunks(FakeSynthesizer):
    """A model 'load' before the first chunk, then slow chunks."""

    def __init__(self, load: float, per_chunk: float, chunks: int) -> None:
        super().__init__(chunks=chunks)
        self.load, self.per_chunk, self.loaded = load, per_chunk, False

    def render(self, text, voice, speed, lang, on_chunk=None, lexicon=None):  # noqa: ANN001, ANN201
        if not self.loaded:
            time.sleep(self.load)
            self.loaded = True

        def slow(k: int, n: int) -> None:
            if on_chunk:
                on_chunk(k, n)
            time.sleep(self.per_chunk)

        return super().render(text, voice, speed, lang, slow)


def test_plain_lines_start_end_and_heartbeat(tmp_path: Path) -> None:
    store = make_project(tmp_path / "book.db", ["A short one.", "A second one, slower."])
    synth = SlowChunks(load=0.6, per_chunk=0.15, chunks=4)
    stream = io.StringIO()
    final = follow_run(
        generate_all(store, GenerateOptions(), synth), PlainView(stream, heartbeat=0.25)
    )
    lines = stream.getvalue().splitlines()
    assert lines[0] == "[1/2] segment 1: A short one."
    done = [line for line in lines if " done: " in line]
    assert len(done) == 2 and done[0].startswith("[1/2] segment 1 done: 0.1s of audio in ")
    assert any("still rendering: chunk" in line for line in lines), lines
    # x real time counts rendering only: the 0.6 s 'model load' is left out
    assert final.render_seconds < final.wall_seconds - 0.5
    first_speed = float(done[0].split("(")[1].split("x")[0])
    # 0.12 s of audio: 0.20x over its 0.6 s of chunks, 0.10x had the load been counted
    assert 0.15 < first_speed <= 0.2


def test_jsonl_progress_is_one_event_per_line(
    runner: CliRunner, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NARRATOR_MODEL_DIR", str(tiny_model))
    make_project(tmp_path / "book.db", ["First words.", "", "Second words."])
    result = invoke(runner, "generate-all", "book.db", "--progress", "jsonl", "--json")
    assert result.exit_code == 0, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] in ("task_created", "task_started") and kinds[-1] == "task_finished"
    assert kinds.count("task_started") == 1
    assert kinds.count("segment_started") == 2 and kinds.count("segment_done") == 2
    done = [e for e in events if e["event"] == "segment_done"]
    assert [e["sequence_index"] for e in done] == [1, 3]
    assert all(e["audio_seconds"] > 0 for e in done)
    assert events[-1]["status"] == "COMPLETED" and events[-1]["processed"] == 2


def test_jsonl_view_reports_a_run_already_under_way() -> None:
    """A view that subscribes late still starts with task_started."""
    from narrator.tasks import TaskManager, TaskSnapshot, TaskStatus

    manager = TaskManager()
    manager.create_task(TaskSnapshot("t", 1, TaskStatus.PENDING, 2, 2, {}, "v", 1.0, "a"))
    manager.start("t")
    manager.update_task_progress("t", 1, 7, 1, "Hello.")
    stream = io.StringIO()
    view = JsonlView(stream)
    updates = manager.subscribe("t")
    view.update(updates.get())
    kinds = [json.loads(line)["event"] for line in stream.getvalue().splitlines()]
    assert kinds == ["task_started", "segment_started"]


def test_export_meter_plain_lines_every_tenth_and_jsonl_events() -> None:
    from narrator.progress import ExportMeter

    plain, jsonl = io.StringIO(), io.StringIO()
    meters = [
        ExportMeter(ProgressMode.plain, 100.0, 10, stream=plain),
        ExportMeter(ProgressMode.jsonl, 100.0, 10, stream=jsonl),
    ]
    for meter in meters:
        for stage in ("measuring", "encoding"):
            for _ in range(100):
                meter(stage, 10)  # a second of audio at a rate of 10
        meter.close()
    lines = plain.getvalue().splitlines()
    assert len(lines) == 10
    assert lines[0].startswith("measuring: 10% (") and lines[-1].startswith("encoding: 100% (")
    events = [json.loads(line) for line in jsonl.getvalue().splitlines()]
    assert len(events) == 20 and events[-1]["done"] == 1.0 and events[0]["stage"] == "measuring"
