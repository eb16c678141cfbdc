"""`narrator export`: what lands in the file is read back with independent readers
(mutagen for tags and chapters, FFmpeg's decoder for samples, pyloudnorm for loudness)."""

from __future__ import annotations

import errno
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import av
import mutagen
import numpy as np
import pyloudnorm
import pytest
import soundfile
from mutagen.id3 import ID3
from mutagen.mp3 import BitrateMode
from mutagen.mp4 import MP4

from narrator.audiofiles import audio_path
from narrator.batch import GenerateOptions, generate_all
from narrator.engine import SAMPLE_RATE
from narrator.export import write as export_write
from narrator.export.acx import acx_checks
from narrator.project import add_segments, edit_segment, segment_states
from narrator.splitting import Block
from narrator.store import ProjectStore, create_project, take_run_lock
from tests.conftest import invoke
from tests.fakes import FakeSynthesizer

BOOK = [
    Block("Chapter One", 1),
    Block("It was a bright cold day. The clocks were striking."),
    Block(""),  # a scene break
    Block("After the break, more words."),
    Block("Chapter Two: The Road", 1),
    Block("The last words of the book."),
]
PAUSE, SCENE, HEADING = 0.75, 2.0, 2.0


def render(store: ProjectStore) -> None:
    run = generate_all(store, GenerateOptions(), FakeSynthesizer())
    run.wait()


@pytest.fixture
def book(tmp_path: Path) -> ProjectStore:
    store = create_project(tmp_path / "book.db", "The Test Book")
    add_segments(store, BOOK)
    render(store)
    return store


def seconds_of_segments(store: ProjectStore) -> list[float]:
    """Each spoken segment's recorded length, read from its WAV."""
    return [
        soundfile.info(str(audio_path(store, s.audio_file))).frames / SAMPLE_RATE
        for s in segment_states(store)
        if s.audio_file
    ]


def expected_layout(store: ProjectStore) -> tuple[float, float]:
    """(start of chapter two, total length) from the segments and the pause rules."""
    d = seconds_of_segments(store)  # heading, two sentences, after break, heading, last
    chapter_two = d[0] + PAUSE + d[1] + SCENE + d[2] + HEADING
    return chapter_two, chapter_two + d[3] + PAUSE + d[4]


def decoded(path: Path) -> tuple[np.ndarray, int]:
    """Every sample of an encoded file, by FFmpeg's decoder (edit lists honoured)."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        frames = [
            f.to_ndarray().reshape(f.layout.nb_channels if f.format.is_planar else 1, -1)[0]
            for f in container.decode(stream)
        ]
        return np.concatenate(frames).astype(np.float64), stream.rate


def export(runner, store: ProjectStore, *args: str):  # noqa: ANN001, ANN201
    return invoke(runner, "export", store.path, "--progress", "none", *args)


def test_m4b_has_chapters_titles_starts_tags_and_the_right_length(runner, book) -> None:  # noqa: ANN001
    result = export(runner, book, "-o", "out.m4b", "--author", "A. Writer", "--json")
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    chapter_two, total = expected_layout(book)
    tags = MP4("out.m4b")
    assert [c.title for c in tags.chapters] == ["Chapter One", "Chapter Two: The Road"]
    assert tags.chapters[0].start == 0
    assert tags.chapters[1].start == pytest.approx(chapter_two, abs=0.05)
    samples, rate = decoded(Path("out.m4b"))
    assert len(samples) / rate == pytest.approx(total, abs=0.05)
    assert tags["©nam"] == ["The Test Book"] and tags["©ART"] == ["A. Writer"]
    assert tags["©wrt"] == ["af_heart"]  # the narrator tag defaults to the voice
    (written,) = manifest["files"]
    assert written["duration"] == pytest.approx(total, abs=0.001)
    assert [c["start"] for c in written["chapters"]] == [0.0, pytest.approx(chapter_two, abs=1e-3)]


def test_mp3_carries_id3_chapters(runner, book) -> None:  # noqa: ANN001
    assert export(runner, book, "-o", "out.mp3", "--narrator", "Kumo").exit_code == 0
    tags = ID3("out.mp3")
    chapters = sorted(tags.getall("CHAP"), key=lambda c: c.start_time)
    chapter_two, _ = expected_layout(book)
    assert [c.sub_frames["TIT2"].text[0] for c in chapters] == [
        "Chapter One",
        "Chapter Two: The Road",
    ]
    assert chapters[1].start_time == pytest.approx(chapter_two * 1000, abs=50)
    assert tags.getall("CTOC") and tags["TCOM"].text == ["Kumo"]


@pytest.mark.parametrize("suffix", ["flac", "opus"])
def test_flac_and_opus_carry_chapter_comments(runner, book, suffix: str) -> None:  # noqa: ANN001
    assert export(runner, book, "-o", f"out.{suffix}").exit_code == 0
    tags = mutagen.File(f"out.{suffix}").tags
    chapter_two, _ = expected_layout(book)
    assert tags["CHAPTER000NAME"] == ["Chapter One"]
    assert tags["CHAPTER001NAME"] == ["Chapter Two: The Road"]
    h, m, s = tags["CHAPTER001"][0].split(":")
    assert int(h) * 3600 + int(m) * 60 + float(s) == pytest.approx(chapter_two, abs=0.05)


def test_wav_length_is_segments_plus_pauses_to_the_sample(runner, book) -> None:  # noqa: ANN001
    assert export(runner, book, "-o", "out.wav").exit_code == 0
    _, total = expected_layout(book)
    assert soundfile.info("out.wav").frames == round(total * SAMPLE_RATE)


def test_pauses_are_configurable(runner, book) -> None:  # noqa: ANN001
    result = export(
        runner,
        book,
        "-o",
        "out.wav",
        "--pause",
        "0.2",
        "--scene-pause",
        "1",
        "--heading-pause",
        "3",
        "--json",
    )
    d = seconds_of_segments(book)
    total = d[0] + 0.2 + d[1] + 1 + d[2] + 3 + d[3] + 0.2 + d[4]
    assert json.loads(result.stdout)["files"][0]["duration"] == pytest.approx(total, abs=1e-3)


@pytest.mark.parametrize("target", [-16.0, -23.0])
def test_loudness_reaches_the_target_within_one_lu(runner, book, target: float) -> None:  # noqa: ANN001
    result = export(runner, book, "-o", "out.wav", "--loudness", str(target), "--json")
    samples, rate = soundfile.read("out.wav")
    measured = pyloudnorm.Meter(rate).integrated_loudness(samples)
    assert measured == pytest.approx(target, abs=1.0)
    assert json.loads(result.stdout)["files"][0]["loudness"] == pytest.approx(measured, abs=0.5)


@pytest.fixture
def spiky(book: ProjectStore) -> ProjectStore:
    """The book with a few clicks near full scale in one segment, as real speech has:
    its peaks sit some 20 dB above its loudness."""
    path = audio_path(book, segment_states(book)[1].audio_file)
    samples, rate = soundfile.read(path, dtype="float32")
    samples[::4000] = 0.9
    soundfile.write(path, samples, rate, subtype="PCM_16")
    return book


def test_the_peak_ceiling_holds_the_gain_back_and_says_so(runner, spiky) -> None:  # noqa: ANN001
    result = export(runner, spiky, "-o", "out.wav", "--loudness", "-16", "--peak", "-3")
    samples, rate = soundfile.read("out.wav")
    assert 20 * np.log10(np.abs(samples).max()) == pytest.approx(-3, abs=0.1)
    assert pyloudnorm.Meter(rate).integrated_loudness(samples) < -18
    assert "add --limit to reach it" in result.stderr


def test_the_limiter_reaches_the_target_with_peaks_at_the_ceiling(runner, spiky) -> None:  # noqa: ANN001
    result = export(runner, spiky, "-o", "out.wav", "--loudness", "-16", "--peak", "-3", "--limit")
    assert result.exit_code == 0 and "--limit" not in result.stderr
    samples, rate = soundfile.read("out.wav")
    assert pyloudnorm.Meter(rate).integrated_loudness(samples) == pytest.approx(-16, abs=1.0)
    assert 20 * np.log10(np.abs(samples).max()) <= -3 + 0.05
    assert len(samples) == round(expected_layout(spiky)[1] * SAMPLE_RATE)  # nothing moved


def test_captions_are_sentences_timed_in_the_export(runner, book) -> None:  # noqa: ANN001
    result = export(runner, book, "-o", "out.m4b", "--captions", "srt")
    assert result.exit_code == 0, result.output
    cues = Path("out.srt").read_text().strip().split("\n\n")
    texts = [c.splitlines()[2] for c in cues]
    assert texts == [
        "Chapter One",
        "It was a bright cold day.",
        "The clocks were striking.",
        "After the break, more words.",
        "Chapter Two: The Road",
        "The last words of the book.",
    ]
    chapter_two, _ = expected_layout(book)
    start = cues[4].splitlines()[1].split(" --> ")[0]
    h, m, s = start.replace(",", ".").split(":")
    assert int(h) * 3600 + int(m) * 60 + float(s) == pytest.approx(chapter_two, abs=0.002)
    assert cues[0].startswith("1\n00:00:00,000 --> ")


def test_audio_recorded_before_sentence_timings_is_one_cue(runner, book) -> None:  # noqa: ANN001
    with sqlite3.connect(book.path) as con:
        con.execute("UPDATE segment SET audio_cues = NULL")
    assert export(runner, book, "-o", "out.wav", "--captions", "srt").exit_code == 0
    texts = [c.splitlines()[2] for c in Path("out.srt").read_text().strip().split("\n\n")]
    assert texts[1] == "It was a bright cold day. The clocks were striking."


def test_vtt_captions(runner, book) -> None:  # noqa: ANN001
    assert export(runner, book, "-o", "out.opus", "--captions", "vtt").exit_code == 0
    text = Path("out.vtt").read_text()
    assert text.startswith("WEBVTT\n\n00:00:00.000 --> ")


def test_split_chapters_writes_a_file_per_chapter(runner, book) -> None:  # noqa: ANN001
    result = export(
        runner, book, "-o", "book.m4b", "--split", "chapters", "--captions", "srt", "--json"
    )
    assert result.exit_code == 0, result.output
    files = [f["path"] for f in json.loads(result.stdout)["files"]]
    assert files == ["book-01-chapter-one.m4b", "book-02-chapter-two-the-road.m4b"]
    second = MP4(files[1])
    assert second["©nam"] == ["Chapter Two: The Road"] and second["trkn"] == [(2, 2)]
    assert Path("book-02-chapter-two-the-road.srt").read_text().startswith("1\n00:00:00,000 --> ")


def test_missing_audio_refuses_with_the_indices_and_the_fix(runner, tmp_path: Path) -> None:
    store = create_project(tmp_path / "gaps.db", "Gaps")
    add_segments(store, [f"Sentence number {n}." for n in range(1, 15)])
    render(store)
    with sqlite3.connect(store.path) as con:
        con.execute("UPDATE segment SET audio_file = NULL WHERE sequence_index >= 2")
    result = export(runner, store, "-o", "out.m4b")
    assert result.exit_code == 65
    assert "13 segments not ready" in result.stderr
    assert "no audio: 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 and 3 more" in result.stderr
    assert "narrator generate-all" in result.stderr and "--allow-missing" in result.stderr
    assert not Path("out.m4b").exists()


def test_stale_audio_refuses_and_allow_missing_exports_what_there_is(runner, book) -> None:  # noqa: ANN001
    edit_segment(book, 4, "Edited after its render.")
    with sqlite3.connect(book.path) as con:
        con.execute("UPDATE segment SET audio_file = NULL WHERE sequence_index = 6")
    refused = export(runner, book, "-o", "out.wav")
    assert refused.exit_code == 65
    assert "stale audio: 4" in refused.stderr and "no audio: 6" in refused.stderr
    allowed = export(runner, book, "-o", "out.wav", "--allow-missing", "--json")
    assert allowed.exit_code == 0
    assert "segment 4: stale audio, kept as it is" in allowed.stderr
    assert "segment 6: no audio, left out" in allowed.stderr
    assert [g["index"] for g in json.loads(allowed.stdout)["gaps"]] == [4, 6]


def test_nothing_recorded_is_refused(runner, tmp_path: Path) -> None:
    store = create_project(tmp_path / "empty.db", "Empty")
    add_segments(store, ["Never rendered."])
    result = export(runner, store, "--allow-missing")
    assert result.exit_code == 65 and "no recorded audio" in result.stderr


def test_a_failed_write_leaves_the_previous_book_and_no_temporary_file(
    runner,
    book,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    assert export(runner, book, "-o", "out.m4b").exit_code == 0
    before = Path("out.m4b").read_bytes()

    def disk_full(path: Path, *args: object) -> None:
        path.write_bytes(b"half a file")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(export_write, "encode", disk_full)
    result = export(runner, book, "-o", "out.m4b")
    assert result.exit_code == 73
    assert "No space left on device" in result.stderr
    assert Path("out.m4b").read_bytes() == before
    assert sorted(p.name for p in Path().iterdir() if "out" in p.name) == ["out.m4b"]


def test_an_unwritable_place_is_73_before_any_work(runner, book) -> None:  # noqa: ANN001
    Path("a-file").write_text("not a folder")
    result = export(runner, book, "-o", "a-file/out.m4b")
    assert result.exit_code == 73 and "choose another place with -o" in result.stderr


def test_export_waits_for_no_run_it_refuses_while_one_renders(runner, book) -> None:  # noqa: ANN001
    lock = take_run_lock(book.path)
    try:
        result = export(runner, book, "-o", "out.m4b")
    finally:
        lock.release()
    assert result.exit_code == 75 and not Path("out.m4b").exists()


def test_same_project_same_bytes(runner, book) -> None:  # noqa: ANN001
    for suffix in ("m4b", "mp3", "opus", "flac"):
        assert export(runner, book, "-o", f"a.{suffix}").exit_code == 0
        assert export(runner, book, "-o", f"b.{suffix}").exit_code == 0
        assert Path(f"a.{suffix}").read_bytes() == Path(f"b.{suffix}").read_bytes(), suffix


@pytest.mark.parametrize(
    ("suffix", "kind"), [("m4b", "png"), ("mp3", "jpeg"), ("flac", "png"), ("opus", "jpeg")]
)
def test_cover_is_embedded(runner, book, suffix: str, kind: str) -> None:  # noqa: ANN001
    image = Path(f"cover.{kind}")
    image.write_bytes((b"\x89PNG\r\n\x1a\n" if kind == "png" else b"\xff\xd8\xff\xe0") + b"x" * 64)
    assert export(runner, book, "-o", f"out.{suffix}", "--cover", image).exit_code == 0
    audio = mutagen.File(f"out.{suffix}")
    if suffix == "m4b":
        data = bytes(audio["covr"][0])
    elif suffix == "mp3":
        data = audio.tags.getall("APIC")[0].data
    elif suffix == "flac":
        data = audio.pictures[0].data
    else:
        import base64

        from mutagen.flac import Picture

        data = Picture(base64.b64decode(audio["metadata_block_picture"][0])).data
    assert data == image.read_bytes()


def test_a_cover_that_is_no_image_is_refused(runner, book) -> None:  # noqa: ANN001
    Path("cover.txt").write_text("hello")
    result = export(runner, book, "--cover", "cover.txt")
    assert result.exit_code == 2 and "not a JPEG or PNG" in result.stderr


def test_unknown_format_is_a_usage_error(runner, book) -> None:  # noqa: ANN001
    result = export(runner, book, "-o", "book.aiff")
    assert result.exit_code == 2 and "choose one of m4b" in result.stderr


def test_acx_profile_writes_checked_mp3s_per_chapter(runner, book) -> None:  # noqa: ANN001
    result = export(runner, book, "--profile", "acx", "-o", "acx/book.mp3", "--json")
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest["acx_passed"] is True
    assert len(manifest["files"]) == 2
    for path in manifest["files"]:
        info = mutagen.File(path["path"]).info
        assert (info.sample_rate, info.channels) == (44_100, 1)
        assert info.bitrate == pytest.approx(192_000, abs=100)
        assert info.bitrate_mode is BitrateMode.CBR
        samples, rate = decoded(Path(path["path"]))
        rms = 20 * np.log10(np.sqrt(np.mean(samples**2)))
        assert -23 <= rms <= -18
        assert 20 * np.log10(np.abs(samples).max()) <= -3


def test_acx_checks_fail_what_acx_would_reject(runner, book) -> None:  # noqa: ANN001
    assert export(runner, book, "-o", "plain.mp3", "--loudness", "-30").exit_code == 0
    failed = {c.name for c in acx_checks(Path("plain.mp3")) if not c.ok}
    assert failed == {"format", "rms", "head", "tail"}  # 24 kHz 64 kbps, quiet, no room tone


def test_without_pyav_export_says_what_to_install(
    runner,
    book,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "av", None)
    result = export(runner, book)
    assert result.exit_code == 69 and "pip install 'narrator[export]'" in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_export_leaves_no_file_behind(tmp_path: Path, sig: int) -> None:
    from bench.export import build

    clip = tmp_path / "clip.wav"
    noise = np.random.default_rng(0).normal(0, 0.05, 60 * SAMPLE_RATE).astype(np.float32)
    soundfile.write(clip, noise, SAMPLE_RATE, subtype="PCM_16")
    (tmp_path / "long").mkdir()
    db = build(tmp_path / "long", 300, [clip])  # five hours
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "narrator",
            "export",
            str(db),
            "-o",
            "out.m4b",
            "--progress",
            "jsonl",
        ],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if '"export_progress"' in line:
            break
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.wav", "long"]


def test_a_damaged_recording_is_65_with_the_fix(runner, book) -> None:  # noqa: ANN001
    path = audio_path(book, segment_states(book)[1].audio_file)
    path.write_bytes(b"RIFF....not a wav at all")
    result = export(runner, book, "-o", "out.m4b")
    assert result.exit_code == 65, result.output
    assert "is damaged" in result.stderr and "--force" in result.stderr


def test_an_emptied_recording_is_damaged(runner, book) -> None:  # noqa: ANN001
    """An empty WAV where a recording was is not as long as recorded: damaged (it was a
    'no audio' gap before recordings were checked against their recorded length)."""
    path = audio_path(book, segment_states(book)[1].audio_file)
    soundfile.write(path, np.zeros(0, dtype=np.float32), SAMPLE_RATE, subtype="PCM_16")
    result = export(runner, book, "-o", "out.m4b")
    assert result.exit_code == 65 and "segment 2's audio" in result.stderr
    assert "is damaged" in result.stderr


def test_a_full_disk_while_tagging_is_73(runner, book, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    from mutagen import MutagenError

    def full(*args: object) -> None:
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as exc:
            raise MutagenError(exc) from exc

    monkeypatch.setattr(export_write, "finish", full)
    result = export(runner, book, "-o", "out.m4b")
    assert result.exit_code == 73 and "No space left on device" in result.stderr
    assert sorted(p.name for p in Path().iterdir() if "out" in p.name) == []


def test_captions_are_published_only_with_their_audio(
    runner,
    book,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    from narrator.atomic import publish as real_publish

    def refuse_the_audio(tmp: Path, target: Path) -> None:
        if target.suffix == ".m4b":
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_publish(tmp, target)

    monkeypatch.setattr(export_write, "publish", refuse_the_audio)
    result = export(runner, book, "-o", "out.m4b", "--captions", "srt")
    assert result.exit_code == 73
    assert sorted(p.name for p in Path().iterdir() if "out" in p.name) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("-o", "out.opus", "--bitrate", "320"), "16-256 kbps"),
        (("-o", "out.flac", "--bitrate", "128"), "lossless"),
        (("-o", "out.m4b", "--format", "mp3"), "out.m4b is not a .mp3 file"),
        (("--profile", "acx", "-o", "out.m4b"), "--profile acx writes MP3"),
        (("--profile", "acx", "--bitrate", "64"), "leave --bitrate out"),
        (("--loudness", "-3"), "outside -40..-5 LUFS"),
        (("--pause", "-1"), "pause must be 0-60 seconds"),
        (("--cover", "no-such.jpg"), "check --cover's path"),
    ],
)
def test_options_that_cannot_work_are_usage_errors(runner, book, args, message) -> None:  # noqa: ANN001
    result = export(runner, book, *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output


def test_an_output_without_a_suffix_takes_the_format(runner, book) -> None:  # noqa: ANN001
    assert export(runner, book, "-o", "my.book", "--format", "mp3").exit_code == 0
    assert Path("my.book.mp3").is_file()


def test_a_partial_file_left_by_a_killed_export_is_removed(runner, book) -> None:  # noqa: ANN001
    Path(".out.m4b.0123abcd.partial").write_bytes(b"x" * 1000)
    assert export(runner, book, "-o", "out.m4b").exit_code == 0
    assert sorted(p.name for p in Path().iterdir() if "out" in p.name) == ["out.m4b"]
