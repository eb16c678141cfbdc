"""A hostile world, on real files and real mounts: a full disk mid-write, a zip bomb, a
second name for the project file, a cut-short recording, control characters in text.
Each failure ends in one line and its documented exit code, and nothing is lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile
from conftest import CONTROL, invoke, make_project, narrator, one_error_line, peak_rss_mib
from typer.testing import CliRunner


def wav_is_whole(path: Path) -> bool:
    """The header's frame count is what the file holds."""
    info = soundfile.info(str(path))
    return path.stat().st_size == 44 + 2 * info.frames and info.frames > 0


# --------------------------------------------------- 1. the audio folder fills up mid-write


def test_a_full_audio_folder_stops_the_run_with_73_and_a_rerun_renders_the_rest(
    tmp_path: Path, tiny_model: Path, small_disk: Path
) -> None:
    texts = [f"Sentence number {n} is a short one to speak." for n in range(1, 7)]
    make_project(tmp_path / "p.db", texts)
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * 390_000)  # room for about two of the six WAVs

    run = narrator(
        tmp_path,
        "generate-all",
        "p.db",
        "--audio-dir",
        small_disk,
        "--json",
        "--progress",
        "none",
        model=tiny_model,
    )
    assert run.returncode == 73, run.stderr
    line = one_error_line(run.stderr)
    assert str(small_disk) in line and "No space left" in line and "free some space" in line
    out = json.loads(run.stdout)
    assert out["failed"] == 0 and 0 < out["processed"] < len(texts)
    left = sorted(p.name for p in small_disk.iterdir())
    assert not [n for n in left if n.endswith(".partial")], left
    wavs = [small_disk / n for n in left if n.endswith(".wav")]
    assert len(wavs) == out["processed"] and all(wav_is_whole(w) for w in wavs)

    filler.unlink()
    again = narrator(
        tmp_path, "generate-all", "p.db", "--json", "--progress", "none", model=tiny_model
    )
    assert again.returncode == 0, again.stderr
    rest = json.loads(again.stdout)
    assert rest["processed"] == len(texts) - out["processed"]
    assert rest["skipped"]["has_audio"] == out["processed"]
    assert all(wav_is_whole(w) for w in small_disk.glob("*.wav"))


def test_wavs_are_written_byte_for_byte_as_libsndfile_writes_them(tmp_path: Path) -> None:
    """narrator writes WAVs itself (so a full disk raises), with the bytes renders always
    had: the same input still gives the same file."""
    import io

    import numpy as np

    from narrator.audiofiles import write_wav

    rng = np.random.default_rng(7)
    samples = np.concatenate(
        [
            rng.uniform(-1.2, 1.2, 50_000),
            rng.normal(0, 0.01, 50_000),
            np.arange(-70_000, 70_000) / 65_536,
            [1.0, -1.0, 0.0, 1e-30, np.nan],
        ]
    ).astype(np.float32)
    reference = io.BytesIO()
    soundfile.write(reference, np.clip(samples, -1, 1), 24_000, format="WAV", subtype="PCM_16")
    write_wav(tmp_path / "a.wav", samples)
    assert (tmp_path / "a.wav").read_bytes() == reference.getvalue()


# ------------------------------------------------------------------- 2. zip bombs, XXE

CONTAINER = b"""<?xml version="1.0"?>
<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">
<rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>
</rootfiles></container>"""


def raw_epub(
    path: Path,
    chapters: dict[str, bytes | Iterator[bytes]],
    *,
    declared: dict[str, int] | None = None,
) -> Path:
    """An EPUB written byte by byte (ebooklib would refuse to write a hostile one): each
    chapter's bytes, or chunks streamed into it; `declared` patches the size a member's
    headers declare, as a crafted bomb would lie."""
    import zipfile

    manifest = "".join(
        f'<item id="c{n}" href="{name}" media-type="application/xhtml+xml"/>'
        for n, name in enumerate(chapters)
    )
    spine = "".join(f'<itemref idref="c{n}"/>' for n in range(len(chapters)))
    opf = (
        f'<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0" '
        f'unique-identifier="id"><metadata xmlns:dc="http://purl.org/dc/elements/1.1/">'
        f'<dc:identifier id="id">hostile</dc:identifier><dc:title>Hostile</dc:title>'
        f"<dc:language>en</dc:language></metadata><manifest>{manifest}</manifest>"
        f"<spine>{spine}</spine></package>"
    )
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("mimetype", "application/epub+zip", zipfile.ZIP_STORED)
        archive.writestr("META-INF/container.xml", CONTAINER)
        archive.writestr("OEBPS/content.opf", opf)
        for name, body in chapters.items():
            with archive.open(f"OEBPS/{name}", "w", force_zip64=True) as member:
                for chunk in [body] if isinstance(body, bytes) else body:
                    member.write(chunk)
    for name, size in (declared or {}).items():
        _declare_size(path, f"OEBPS/{name}".encode(), size)
    return path


def _declare_size(path: Path, name: bytes, size: int) -> None:
    """Rewrite the uncompressed size of `name` in its local and central headers."""
    import struct

    data = bytearray(path.read_bytes())
    for signature, offset_size, offset_name_len, header in (
        (b"PK\x03\x04", 22, 26, 30),
        (b"PK\x01\x02", 24, 28, 46),
    ):
        at = data.find(signature)
        while at >= 0:
            length = struct.unpack_from("<H", data, at + offset_name_len)[0]
            if bytes(data[at + header : at + header + length]) == name:
                struct.pack_into("<I", data, at + offset_size, size)
            at = data.find(signature, at + 4)
    path.write_bytes(bytes(data))


def bomb_chunks(mib: int) -> Iterator[bytes]:
    """An XHTML chapter of `mib` MiB of one letter: a few hundred KB once deflated."""
    yield b'<html xmlns="http://www.w3.org/1999/xhtml"><body><p>'
    block = b"a" * (1 << 20)
    for _ in range(mib):
        yield block
    yield b"</p></body></html>"


@pytest.mark.parametrize("lying", [False, True], ids=["declared", "lying-header"])
def test_a_zip_bomb_epub_is_refused_quickly_in_bounded_memory(tmp_path: Path, lying: bool) -> None:
    pytest.importorskip("ebooklib", reason="the epub extra is not installed")
    book = raw_epub(
        tmp_path / "bomb.epub",
        {"ch1.xhtml": bomb_chunks(1024)},
        declared={"ch1.xhtml": 4096} if lying else None,
    )
    assert book.stat().st_size < 3 << 20
    import time

    started = time.monotonic()
    done, peak = peak_rss_mib(tmp_path, "new", "b.db", "--from", book)
    assert done.returncode == 65, done.stderr
    line = one_error_line(done.stderr)
    assert "bomb.epub" in line and ("64 MiB" in line or "CRC" in line), line
    assert time.monotonic() - started < 30 and peak < 1024, peak
    assert not (tmp_path / "b.db").exists()


def test_epub_xml_loads_no_entity_no_dtd_and_speaks_no_entity_name(tmp_path: Path) -> None:
    """An external entity naming a local file is never read, an internal one never
    expanded (billion laughs), and an unresolved `&xxe;` is not spoken as text."""
    pytest.importorskip("ebooklib", reason="the epub extra is not installed")
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    chapter = (
        f'<?xml version="1.0"?><!DOCTYPE html [<!ENTITY xxe SYSTEM "file://{secret}">'
        '<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
        '<!ENTITY dtd SYSTEM "http://127.0.0.1:9/evil.dtd">]>'
        '<html xmlns="http://www.w3.org/1999/xhtml"><body><h1>Opening</h1>'
        "<p>Before &xxe; after.</p><p>Laughs &lol2; end &unknown; here.</p>"
        "</body></html>"
    ).encode()
    book = raw_epub(tmp_path / "xxe.epub", {"ch1.xhtml": chapter})
    done = narrator(tmp_path, "new", "x.db", "--from", book)
    assert done.returncode == 0, done.stderr
    rows = json.loads(narrator(tmp_path, "segments", "x.db", "--json").stdout)
    texts = [r["text_content"] for r in rows]
    assert texts == ["Opening", "Before after.", "Laughs end here."], texts


# ------------------------------------------------- 3. another name for the project file


def test_every_name_of_a_project_file_is_one_project(tmp_path: Path, tiny_model: Path) -> None:
    """A hard link in another folder, a symlink and `./p.db` all open the file by its
    home: one run lock (75 naming the running task), one write-ahead log, one default
    audio folder, every task seen from every name."""
    (tmp_path / "p.txt").write_text(
        "\n\n".join(f"Sentence {n} is spoken here." for n in range(1, 9))
    )
    assert narrator(tmp_path, "new", "p.db", "--from", "p.txt").returncode == 0
    other = tmp_path / "other"
    other.mkdir()
    os.link(tmp_path / "p.db", other / "link.db")
    (tmp_path / "sym.db").symlink_to("p.db")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NARRATOR_MODEL_DIR": str(tiny_model)}
    first = subprocess.Popen(
        [sys.executable, "-m", "narrator", "generate-all", "p.db", "--json", "--progress", "plain"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert first.stderr is not None
    task = next(line for line in first.stderr if line.startswith("tts_batch_")).split(":")[0]
    for name in (other / "link.db", "sym.db", "./p.db"):
        second = narrator(tmp_path, "generate-all", name, model=tiny_model)
        assert second.returncode == 75, second.stderr
        assert task in one_error_line(second.stderr)
    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert json.loads(stdout)["processed"] == 8

    tasks = json.loads(narrator(other, "tasks", "link.db", "--json").stdout)
    assert [t["task_id"] for t in tasks] == [task]
    rows = json.loads(narrator(other, "segments", "link.db", "--json").stdout)
    assert all(r["audio_file"].startswith("p_audio/") for r in rows)
    assert all((tmp_path / r["audio_file"]).is_file() for r in rows)
    assert narrator(other, "edit", "link.db", "2", "Changed words.").returncode == 0
    again = narrator(other, "generate-all", "link.db", "--changed", "--json", model=tiny_model)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["processed"] == 1
    rows = json.loads(narrator(tmp_path, "segments", "sym.db", "--json").stdout)
    assert rows[1]["audio_file"].startswith("p_audio/0002-")
    assert sorted(p.name for p in other.iterdir()) == ["link.db"]  # no log, no audio here
    assert not (tmp_path / "sym_audio").exists()


def test_a_file_first_opened_through_a_symlink_keeps_one_audio_folder(tmp_path: Path) -> None:
    """A project written before homes were recorded, opened through a symlink: the home is
    the symlink's name, as the audio folder was, not the target's (which would make every
    recording beside the symlink look missing)."""
    import sqlite3

    from narrator.audiofiles import audio_folder
    from narrator.store import close_all, open_project

    (tmp_path / "data").mkdir()
    (tmp_path / "work").mkdir()
    make_project(tmp_path / "data" / "p.db", ["One."])
    close_all()
    with sqlite3.connect(tmp_path / "data" / "p.db") as con:  # back to schema 4
        con.execute("ALTER TABLE project DROP COLUMN file_path")
        con.execute("PRAGMA user_version=4")
    con.close()
    (tmp_path / "work" / "p.db").symlink_to(tmp_path / "data" / "p.db")
    folders = []
    for _ in range(2):  # each open as its own command: the log folded in between
        folders.append(audio_folder(open_project(tmp_path / "work" / "p.db"), None))
        close_all()
    assert folders == [tmp_path / "work" / "p_audio"] * 2


# ------------------------------------------------------------ 4. a cut-short recording


def test_a_cut_short_recording_is_damaged_everywhere(tmp_path: Path, tiny_model: Path) -> None:
    pytest.importorskip("av", reason="the export extra is not installed")
    make_project(tmp_path / "p.db", ["The first one.", "The second one.", "The third one."])
    done = narrator(tmp_path, "generate-all", "p.db", "--progress", "none", model=tiny_model)
    assert done.returncode == 0, done.stderr
    rows = json.loads(narrator(tmp_path, "segments", "p.db", "--json").stdout)
    assert {r["recording"] for r in rows} == {"whole"}
    cut = tmp_path / rows[1]["audio_file"]
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])

    refused = narrator(tmp_path, "export", "p.db", "-o", "b.wav")
    assert refused.returncode == 65
    assert "segment 2's audio" in one_error_line(refused.stderr)
    assert "narrator generate p.db 2 --force" in refused.stderr
    assert not (tmp_path / "b.wav").exists()
    listed = narrator(tmp_path, "segments", "p.db")
    assert "damaged" in listed.stdout
    assert (
        json.loads(narrator(tmp_path, "segments", "p.db", "--json").stdout)[1]["recording"]
        == "damaged"
    )

    plan = json.loads(
        narrator(tmp_path, "generate-all", "p.db", "--dry-run", "--json", model=tiny_model).stdout
    )
    assert [step["why"] for step in plan["plan"]] == ["has_audio", "audio_damaged", "has_audio"]
    again = narrator(tmp_path, "generate-all", "p.db", "--json", model=tiny_model)
    assert again.returncode == 0 and json.loads(again.stdout)["processed"] == 1
    exported = narrator(tmp_path, "export", "p.db", "-o", "b.wav", "--json")
    assert exported.returncode == 0, exported.stderr
    rows = json.loads(narrator(tmp_path, "segments", "p.db", "--json").stdout)
    spoken = sum(r["audio_duration"] for r in rows)
    assert soundfile.info(str(tmp_path / "b.wav")).duration > spoken


def test_a_recording_whose_header_says_more_than_it_holds_is_damaged(tmp_path: Path) -> None:
    """Cut short by its data, or by its recorded length; a missing file is missing."""
    import numpy as np

    from narrator.audiofiles import recording_of, write_wav
    from narrator.planning import Recording

    store = make_project(tmp_path / "p.db", ["x"])
    seconds = write_wav(tmp_path / "a.wav", np.zeros(2400, dtype=np.float32))
    assert recording_of(store, "a.wav", seconds) == (Recording.whole, 2400)
    assert recording_of(store, "a.wav", seconds + 0.5)[0] is Recording.damaged
    data = (tmp_path / "a.wav").read_bytes()
    (tmp_path / "a.wav").write_bytes(data[:-2])
    assert recording_of(store, "a.wav", None)[0] is Recording.damaged
    (tmp_path / "a.wav").write_bytes(data[:40])
    assert recording_of(store, "a.wav", None)[0] is Recording.damaged
    assert recording_of(store, "gone.wav", 1.0)[0] is Recording.missing
    assert recording_of(store, None, None)[0] is Recording.none


# ----------------------------------------------------------- 5. control characters in text

HOSTILE_TEXT = (
    "CHAPTER I.\n\nThe bell\x07 rang\x00 twice\x7f. \x1b[2J\x1b[31mRed\x1b[0m "
    "light\u200b here\ufeff.\x1b]0;pwned\x07\x85 Done\r\n\nCafe\u0301 au lait.\n"
)


def test_control_characters_never_enter_a_project_nor_leave_it(
    tmp_path: Path, tiny_model: Path
) -> None:
    (tmp_path / "book.txt").write_text(HOSTILE_TEXT, encoding="utf-8")
    made = narrator(tmp_path, "new", "p.db", "--from", "book.txt")
    assert made.returncode == 0, made.stderr
    assert "removed 28 control or invisible characters" in made.stderr
    added = narrator(tmp_path, "add", "p.db", "-", stdin="Piped\x1b[1m in\x00.")
    assert added.returncode == 0 and "removed 5 " in added.stderr, added.stderr
    edited = narrator(tmp_path, "edit", "p.db", "4", "Edited\x1b[7m text\x07.")
    assert edited.returncode == 0 and "removed 5 " in edited.stderr, edited.stderr
    rows = json.loads(narrator(tmp_path, "segments", "p.db", "--json").stdout)
    assert [r["text_content"] for r in rows] == [
        "CHAPTER I.",
        "The bell rang twice. Red light here. Done",
        "Café au lait.",
        "Edited text.",
    ]
    assert rows[2]["text_content"] == unicodedata.normalize("NFC", "Cafe\u0301 au lait.")

    rendered = narrator(tmp_path, "generate-all", "p.db", "--progress", "plain", model=tiny_model)
    assert rendered.returncode == 0, rendered.stderr
    listed = narrator(tmp_path, "segments", "p.db")
    exported = narrator(
        tmp_path,
        "export",
        "p.db",
        "-o",
        "b.wav",
        "--captions",
        "srt",
        "--title",
        "Bad\x1b]0;title\x07 Title",
    )
    assert exported.returncode == 0, exported.stderr
    captions = (tmp_path / "b.srt").read_text(encoding="utf-8")
    for out in (made, added, edited, rendered, listed, exported):
        assert not CONTROL.search(out.stdout + out.stderr), out.args
    assert not CONTROL.search(captions) and "Red light" in captions


def test_text_already_in_an_older_project_is_printed_without_controls(tmp_path: Path) -> None:
    """A project written before text was cleaned: what narrator prints from it is."""
    import sqlite3

    make_project(tmp_path / "p.db", ["placeholder"])
    with sqlite3.connect(tmp_path / "p.db") as con:
        con.execute("UPDATE segment SET text_content = ?", ("Old\x1b[2J text\x07.",))
    shown = narrator(tmp_path, "segments", "p.db")
    assert "Old text." in shown.stdout and not CONTROL.search(shown.stdout)


# ------------------------------------------------- 6. smaller promises the README makes


@pytest.mark.parametrize(
    "command",
    [
        ["generate-all", "p.db", "--voice", ""],
        ["generate-all", "p.db", "--lang", " "],
        ["generate-all", "p.db", "--audio-dir", ""],
        ["generate", "p.db", "1", "--voice", ""],
        ["say", "Hello.", "-o", "x.wav", "--voice", ""],
        ["say", "Hello.", "-o", "x.wav", "--lang", ""],
    ],
)
def test_an_empty_voice_language_or_folder_is_a_usage_error(
    runner: CliRunner, tmp_path: Path, tiny_model: Path, command: list[str]
) -> None:
    """An unset `$VOICE` in a script must not render a book in the project's voice."""
    make_project(tmp_path / "p.db", ["Words."])
    result = invoke(runner, *command, "--model-dir", tiny_model)
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and "is empty" in result.stderr
    assert not (tmp_path / "p_audio").exists() and not (tmp_path / "x.wav").exists()


def test_allow_missing_warns_once_per_run_of_missing_segments(
    runner: CliRunner, tmp_path: Path
) -> None:
    pytest.importorskip("av", reason="the export extra is not installed")
    from fakes import FakeSynthesizer

    from narrator.batch import generate_one

    texts = [f"Segment {n}." for n in range(1, 31)]
    texts[9] = ""  # a scene break does not cut a run
    store = make_project(tmp_path / "p.db", texts)
    for index in (1, 20):
        generate_one(store, index, FakeSynthesizer())
    result = invoke(runner, "export", "p.db", "-o", "out.wav", "--allow-missing")
    assert result.exit_code == 0, result.stderr
    assert [line for line in result.stderr.splitlines() if "left out" in line] == [
        "Warning: segments 2-19: no audio, left out",
        "Warning: segments 21-30: no audio, left out",
    ]


MARKDOWN = """# The Keeper's Log

The lamp was lit at dusk.<br>Nobody came.\\
The sea was calm.

<div class="aside">
<p>A <em>raw</em> HTML note &amp; its text.</p>
<script>alert("never spoken")</script>
</div>

<!-- an editor's comment -->

| Night | Ships |
|-------|-------|
| Monday | three |
| Tuesday | none |

![The lighthouse at night](lighthouse.png)

* * *

Then morning ![icon](i.png) came.
"""


def test_markdown_line_breaks_html_tables_and_images(tmp_path: Path) -> None:
    (tmp_path / "log.md").write_text(MARKDOWN)
    assert narrator(tmp_path, "new", "log.db", "--from", "log.md").returncode == 0
    rows = json.loads(narrator(tmp_path, "segments", "log.db", "--json").stdout)
    assert [(r["text_content"], r["heading_level"]) for r in rows] == [
        ("The Keeper's Log", 1),
        ("The lamp was lit at dusk. Nobody came. The sea was calm.", None),
        ("A raw HTML note & its text.", None),
        ("Night, Ships", None),
        ("Monday, three", None),
        ("Tuesday, none", None),
        ("", None),  # the thematic break: a scene break; the image alone is not one
        ("Then morning came.", None),
    ]
