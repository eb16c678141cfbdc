"""Audio files, one room: where they go, their names, the WAV writer and what a recording
on disk is, the writability probe and the sweep of what an interrupted run left. Cleanup
touches only files whose name carries this project's uid."""

from __future__ import annotations

import errno
import os
import re
import struct
from pathlib import Path
from typing import TYPE_CHECKING

from narrator.atomic import TEMP_SUFFIX, publish, temp_path
from narrator.engine import SAMPLE_RATE
from narrator.errors import AudioDirUnwritable
from narrator.planning import Recording
from narrator.store import ProjectStore

if TYPE_CHECKING:  # numpy is for writing audio: listing commands never need it
    import numpy as np


def wav_bytes(samples: np.ndarray, rate: int = SAMPLE_RATE) -> tuple[bytes, bytes]:
    """Mono 16-bit PCM as a WAV: its 44-byte header and its data, the very bytes
    libsndfile writes (it scales to 32 bits, rounds to even, keeps the top 16 bits)."""
    import numpy as np

    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    samples = np.clip(np.nan_to_num(samples, nan=-1.0), -1.0, 1.0)  # NaN: as libsndfile
    wide = np.clip(np.rint(samples.astype(np.float64) * 2.0**31), -(2.0**31), 2.0**31 - 1)
    data = (wide.astype(np.int64) >> 16).astype("<i2").tobytes()
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + len(data),
        b"WAVE",
        b"fmt ",
        16,
        1,
        1,
        rate,
        rate * 2,
        2,
        16,
        b"data",
        len(data),
    )
    return header, data


def write_temp_wav(target: Path, samples: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    """Write mono 16-bit PCM to a synced temporary file beside `target`; return its path.
    `publish` moves it into place. Written by plain writes, not through libsndfile's
    callbacks (which swallow an OSError), so a full disk raises here."""
    tmp = temp_path(target)
    try:
        with tmp.open("wb") as f:
            for part in wav_bytes(samples, rate):
                f.write(part)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def write_wav(target: Path, samples: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    """Write a WAV atomically (temporary file, sync, rename); return its seconds."""
    publish(write_temp_wav(target, samples, rate), target)
    return seconds_of(samples, rate)


def seconds_of(samples: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    return samples.size / rate


# A WAV's chunks before its data: narrator's has one (fmt), others a few (LIST, fact).
_MAX_CHUNKS = 16
_EXTENSIBLE = 0xFFFE  # WAVE_FORMAT_EXTENSIBLE, whose subformat names the encoding


def wav_frames(path: Path) -> int | None:
    """The frames of a whole narrator WAV (16-bit PCM, mono, SAMPLE_RATE), read from its
    header; None when it is something else, or holds fewer frames than its header says
    (cut short). Reads a few bytes: listing a long book stays fast."""
    with path.open("rb") as f:
        riff = f.read(12)
        if riff[:4] != b"RIFF" or riff[8:] != b"WAVE":
            return None
        form = None
        for _ in range(_MAX_CHUNKS):
            head = f.read(8)
            if len(head) < 8:
                return None
            kind, size = struct.unpack("<4sI", head)
            if kind == b"data":
                whole = os.fstat(f.fileno()).st_size - f.tell() >= size
                return size // 2 if whole and form == (1, 1, SAMPLE_RATE, 16) else None
            if kind != b"fmt " or size < 16:
                f.seek(size + (size & 1), os.SEEK_CUR)  # a chunk's size may lie: not read
                continue
            body = f.read(size + (size & 1))
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", body)
            if tag == _EXTENSIBLE and size >= 40:  # other tools' PCM: the subformat says
                tag = struct.unpack_from("<H", body, 24)[0]
            form = (tag, channels, rate, bits)
    return None


def recording_of(
    store: ProjectStore, audio_file: str | None, seconds: float | None
) -> tuple[Recording, int]:
    """What a segment's recorded audio is on disk, and its frames when it is whole: it is
    damaged when it is not narrator's WAV, is cut short, or is not as long (to a frame)
    as the `seconds` recorded with it."""
    if not audio_file:
        return Recording.none, 0
    try:
        frames = wav_frames(audio_path(store, audio_file))
    except FileNotFoundError:
        return Recording.missing, 0
    except OSError:  # a folder in its place, no permission to read: not usable
        frames = None
    if frames is None or (seconds is not None and abs(frames - seconds * SAMPLE_RATE) > 1):
        return Recording.damaged, 0
    return Recording.whole, frames


# ------------------------------------------------------------------ a project's files


def audio_folder(store: ProjectStore, audio_dir: str | None) -> Path:
    """Where this project's audio goes: `audio_dir` (relative to the project file's
    folder) or `<stem>_audio/` beside the project file."""
    if audio_dir:
        folder = Path(audio_dir).expanduser()
        return folder if folder.is_absolute() else store.path.parent / folder
    return store.path.parent / f"{store.path.stem}_audio"


def audio_path(store: ProjectStore, audio_file: str) -> Path:
    """The absolute path of a recorded audio_file (relative to the project's folder)."""
    path = Path(audio_file)
    return path if path.is_absolute() else store.path.parent / path


def recorded_name(store: ProjectStore, path: Path) -> str:
    """What to record for an audio file: relative to the project's folder when inside."""
    try:
        return path.resolve().relative_to(store.path.parent.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


def render_target(
    store: ProjectStore, folder: Path, index: int, segment_id: int, stamp: str
) -> Path:
    """Which segment, which render, which project: `0007-s42-<stamp8>-<uid>.wav`."""
    return folder / f"{index:04d}-s{segment_id}-{stamp[:8]}-{store.uid}.wav"


# render_target's name before the uid: index, segment id, fingerprint
_RENDER_STEM = r"\d{4,}-s\d+-[0-9a-f]{8}"
# what narrator named renders before projects had a uid
_LEGACY_RENDER = re.compile(rf"^{_RENDER_STEM}\.wav$")


def _ours(store: ProjectStore) -> re.Pattern[str]:
    """Names this project gives: its renders, and temporary files of renders or probes."""
    uid = re.escape(store.uid)
    return re.compile(
        rf"^(?:{_RENDER_STEM}|probe)-{uid}\.wav(?:\.[0-9a-f]{{8}}{re.escape(TEMP_SUFFIX)})?$"
    )


def may_remove(store: ProjectStore, audio_file: str) -> bool:
    """Whether this project made the recorded file `audio_file`, so that replacing or
    removing its segment may delete it: a copy of the project file never deletes what
    the original records."""
    name = Path(audio_file).name
    return bool(_ours(store).match(name) or _LEGACY_RENDER.match(name))


def check_writable(store: ProjectStore, folder: Path, dry_run: bool = False) -> None:
    """Create the folder if needed and prove a file can be written and removed there.
    `dry_run`: change nothing; judge by the folder, or the nearest one that exists."""
    try:
        if dry_run:
            existing = next(p for p in (folder, *folder.parents) if p.exists())
            if not existing.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(existing))
            if not os.access(existing, os.W_OK | os.X_OK):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(existing))
            return
        probe = temp_path(folder / f"probe-{store.uid}.wav")
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        why = (
            "a file is in the way"
            if isinstance(exc, FileExistsError | NotADirectoryError)
            else exc.strerror
        )
        raise AudioDirUnwritable(
            f"cannot write audio to {folder} ({why}); "
            "choose another folder with --audio-dir, or fix its permissions"
        ) from exc


def sweep(store: ProjectStore, folder: Path, recorded: set[str]) -> list[Path]:
    """Remove this project's files in `folder` that no segment records: temporary files,
    and renders moved into place but never recorded (a run stopped in between).
    `recorded` holds every audio_file of the project file. Returns what it removed."""
    if not folder.is_dir():
        return []
    keep = {audio_path(store, name).resolve() for name in recorded}
    ours = _ours(store)
    removed = []
    for path in folder.iterdir():
        if ours.match(path.name.lstrip(".")) and path.resolve() not in keep:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
