"""`narrator verify`: verdicts recorded with the audio they judged, exit codes, the missing
recogniser, and export --require-verified. (The recogniser on real speech: test_real_model.)"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import invoke, invoke_json, make_project
from fakes import FakeSynthesizer
from typer.testing import CliRunner

from narrator.batch import GenerateOptions, generate_all
from narrator.project import update_settings
from narrator.verify import RATE, Heard, judge, signal_findings

TEXTS = ["The tide came in over the rocks.", "The lamp was lit at dusk.", "Night fell."]


def render(path: Path, voice: str) -> Path:
    store = make_project(path, TEXTS)
    update_settings(store, voice=voice)
    generate_all(store, GenerateOptions(), FakeSynthesizer()).wait()
    return path


@pytest.fixture
def rendered(tmp_path: Path) -> Path:
    """Tone from the fake engine; Japanese, so verify runs the signal checks only."""
    return render(tmp_path / "book.db", "jf_alpha")


@pytest.fixture
def english(tmp_path: Path) -> Path:
    """Tone, where English words should be."""
    return render(tmp_path / "book.db", "af_heart")


def verdicts(runner: CliRunner) -> list[str]:
    return [r["verify"] for r in invoke_json(runner, "segments", "book.db")]


def test_verdicts_are_recorded_and_a_new_render_is_judged_afresh(
    runner: CliRunner, rendered: Path
) -> None:
    assert verdicts(runner) == ["not checked"] * 3
    result = invoke(runner, "verify", "book.db")
    assert result.exit_code == 0, result.stderr
    assert "Checked 3 segments: 3 ok, 0 flagged (3 by the signal checks only" in result.stdout
    assert verdicts(runner) == ["ok"] * 3
    assert invoke_json(runner, "verify", "book.db")["checked"] == 0  # nothing new
    assert invoke_json(runner, "verify", "book.db", "--all")["checked"] == 3
    from narrator.store import open_project

    generate_all(open_project(rendered), GenerateOptions(force=True), FakeSynthesizer()).wait()
    assert verdicts(runner) == ["not checked"] * 3
    assert invoke_json(runner, "verify", "book.db", "2-3")["checked"] == 2
    assert verdicts(runner) == ["not checked", "ok", "ok"]


def test_english_audio_that_says_something_else_is_flagged_with_exit_1(
    runner: CliRunner, english: Path
) -> None:
    pytest.importorskip("pocketsphinx", reason="the quality extra is not installed")
    result = invoke(runner, "verify", "book.db", "1")
    assert result.exit_code == 1 and "1  not_this_segment at 0.0 s" in result.stdout
    assert verdicts(runner) == ["flagged", "not checked", "not checked"]


def test_without_the_recogniser_english_is_69_and_nothing_recorded(
    runner: CliRunner, english: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pocketsphinx", None)  # as if not installed
    result = invoke(runner, "verify", "book.db")
    assert result.exit_code == 69 and "pip install 'narrator[quality]'" in result.stderr
    assert verdicts(runner) == ["not checked"] * 3


def test_export_require_verified_refuses_what_verify_has_not_passed(
    runner: CliRunner, rendered: Path
) -> None:
    refused = invoke(runner, "export", "book.db", "-o", "b.wav", "--require-verified")
    assert refused.exit_code == 65 and "not verified: 1, 2, 3" in refused.stderr
    assert "`narrator verify book.db`" in refused.stderr
    assert invoke(runner, "verify", "book.db").exit_code == 0
    done = invoke(runner, "export", "book.db", "-o", "b.wav", "--require-verified")
    assert done.exit_code == 0, done.stderr


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_the_signal_checks() -> None:
    speech = tone(4.0)
    cues = [[0, 2 * RATE, "One."], [2 * RATE, 2 * RATE, "Two."]]
    assert signal_findings(speech, cues) == []
    cut = signal_findings(speech[: 3 * RATE], cues)
    assert [(f.kind, f.at) for f in cut] == [("length", 3.0)]
    gap = np.concatenate([speech[: 2 * RATE], np.zeros(2 * RATE, np.float32), speech[2 * RATE :]])
    assert ("gap", 2.0) in [(f.kind, round(f.at, 1)) for f in signal_findings(gap, None)]
    loud = speech.copy()
    loud[RATE : RATE + 100] = 1.0
    assert [f.kind for f in signal_findings(loud, cues)] == ["clipped"]
    late = np.concatenate([np.zeros(2 * RATE, np.float32), speech])
    assert [f.kind for f in signal_findings(late, None)] == ["leading_silence"]
    assert [f.kind for f in signal_findings(np.zeros(RATE, np.float32), None)] == [
        "not_this_segment"
    ]


def syllables(seconds: float) -> np.ndarray:
    """Bursts of tone, 5 a second, each a little louder or quieter: speech-like peaks."""
    speech = tone(seconds)
    steps = np.arange(len(speech)) // (RATE // 5)
    gain = np.where(steps % 2 == 0, 1.0 + 0.3 * np.sin(steps * 1.7), 0.01)
    return (speech * gain).astype(np.float32)


def test_a_fade_out_is_found_by_its_level_without_the_recogniser(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Signal checks only: no scipy (the `quality` extra) either."""
    monkeypatch.setitem(sys.modules, "scipy", None)
    speech = syllables(10.0)
    assert signal_findings(speech, None) == []
    hiss = np.random.default_rng(0).normal(0, 10 ** (-55 / 20), int(1.2 * RATE))
    assert signal_findings(np.concatenate([speech, hiss.astype(np.float32)]), None) == []
    faded = speech.copy()
    faded[6 * RATE :] *= np.linspace(1, 0, 4 * RATE, dtype=np.float32)
    found = signal_findings(faded, None)
    assert [f.kind for f in found] == ["fades_out"]
    assert abs(found[0].at - 7.2) < 1.0  # where it has taken 3 dB


def test_words_not_heard_without_their_time_are_missing() -> None:
    text = "one two three four five six seven eight"
    words = text.split()
    speech = tone(8.0)
    every = Heard([(w, i, i + 0.9) for i, w in enumerate(words)])
    assert judge(speech, text, None, heard=every) == []
    cut = Heard(every.words[:5])  # the last three words gone, and their time too
    found = judge(speech[: 5 * RATE], text, None, heard=cut)
    assert [(f.kind, round(f.at, 1)) for f in found] == [("missing_end", 4.9)]
    middle = Heard(every.words[:2] + [(w, s - 3, e - 3) for w, s, e in every.words[5:]])
    found = judge(speech[: 5 * RATE], text, None, heard=middle)
    assert [(f.kind, round(f.at, 1)) for f in found] == [("missing_middle", 2.0)]
    other = Heard([(w, i, i + 0.9) for i, w in enumerate(["a", "b", "c", "d", "e", "f", "g", "h"])])
    assert [f.kind for f in judge(speech, text, None, heard=other)] == ["not_this_segment"]


def test_a_longer_file_keeps_its_length_finding_where_its_timings_end() -> None:
    """Only audio shorter than its timings is placed by the words heard; inserted silence
    leaves the length finding at the end the timings promise (and a gap where it is)."""
    speech = np.concatenate([tone(4.0), np.zeros(3 * RATE, np.float32), tone(4.0)])
    cues = [[0, 4 * RATE, "one two three four"], [4 * RATE, 4 * RATE, "five six seven eight"]]
    words = ["one", "two", "three", "four", "five", "six", "seven", "eight"]
    heard = Heard(
        [(w, i + (3 if i >= 4 else 0), i + 0.9 + (3 if i >= 4 else 0)) for i, w in enumerate(words)]
    )
    found = [(f.kind, round(f.at, 1)) for f in judge(speech, " ".join(words), cues, heard=heard)]
    assert ("length", 8.0) in found and ("gap", 4.0) in found


def events_of(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_generate_all_verify_judges_each_segment_once_recorded(
    runner: CliRunner, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spanish: the signal checks only. Each recorded segment gets one verdict event after
    its segment_done; the verdicts are recorded; exit 1 exactly when flagged."""
    monkeypatch.setenv("NARRATOR_MODEL_DIR", str(tiny_model))
    make_project(tmp_path / "book.db", TEXTS)
    invoke(runner, "settings", "book.db", "--lang", "es")
    result = invoke(runner, "generate-all", "book.db", "--verify", "--progress", "jsonl", "--json")
    events = [(e["event"], e.get("sequence_index")) for e in events_of(result.stderr)]
    judged = [(e, i) for e, i in events if e in ("segment_verified", "segment_flagged")]
    assert [i for _, i in judged] == [1, 2, 3]
    for verdict in judged:
        assert events.index(verdict) > events.index(("segment_done", verdict[1]))
    flagged = [i for e, i in judged if e == "segment_flagged"]
    assert result.exit_code == (1 if flagged else 0), result.stderr
    summary = json.loads(result.stdout)["verify"]
    assert (summary["checked"], summary["flagged"], summary["not_checked"]) == (3, len(flagged), 0)
    assert not any(s["heard"] for s in summary["segments"])
    expected = ["flagged" if i in flagged else "ok" for i in (1, 2, 3)]
    assert verdicts(runner) == expected


def test_generate_all_verify_flags_english_that_says_nothing(
    runner: CliRunner, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The random-weight model's English is no speech: flagged, on stdout, exit 1 ("Night
    fell." has too few words to judge by them)."""
    pytest.importorskip("pocketsphinx", reason="the quality extra is not installed")
    monkeypatch.setenv("NARRATOR_MODEL_DIR", str(tiny_model))
    make_project(tmp_path / "book.db", TEXTS)
    result = invoke(runner, "generate-all", "book.db", "--verify", "--progress", "plain")
    assert result.exit_code == 1, result.stderr
    assert "Checked 3 segments: 1 ok, 2 flagged" in result.stdout
    assert "segment 1: not_this_segment at 0.0 s: no words heard" in result.stdout
    assert "segment 1 flagged: not_this_segment" in result.stderr
    assert verdicts(runner) == ["flagged", "flagged", "ok"]


def test_generate_all_verify_without_the_recogniser_is_69_before_rendering(
    runner: CliRunner, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NARRATOR_MODEL_DIR", str(tiny_model))
    monkeypatch.setitem(sys.modules, "pocketsphinx", None)  # as if not installed
    make_project(tmp_path / "book.db", TEXTS)
    for dry_run in (["--dry-run"], []):
        result = invoke(runner, "generate-all", "book.db", "--verify", *dry_run)
        assert result.exit_code == 69 and "pip install 'narrator[quality]'" in result.stderr
    assert not any(r["audio_file"] for r in invoke_json(runner, "segments", "book.db"))


def test_a_closed_listener_leaves_what_it_had_not_judged_unjudged(rendered: Path) -> None:
    from narrator.listening import Listener
    from narrator.project import read_settings, segment_states
    from narrator.store import open_project

    store = open_project(rendered)
    listener = Listener(store, read_settings(store).casting)
    for state in segment_states(store):
        listener.submit(state, None)
    listener.close()
    listener.recorded(1)  # after closing: not judged either
    assert (listener.unjudged, listener.verdicts, listener.pending) == (4, [], 0)
    assert listener.stopped


def test_audio_that_cannot_be_read_stays_unjudged_and_says_why(rendered: Path) -> None:
    from narrator.audiofiles import audio_path
    from narrator.listening import Listener
    from narrator.project import read_settings, segment_states
    from narrator.store import open_project

    store = open_project(rendered)
    listener = Listener(store, read_settings(store).casting)
    state = segment_states(store)[0]
    listener.submit(state, None)
    audio_path(store, state.audio_file).unlink()  # type: ignore[arg-type]
    assert listener.ready(wait=True) == []
    assert listener.unjudged == 1 and (listener.trouble or "").startswith("segment 1: ")
    assert not listener.stopped
