"""Atomic WAV writing: a temporary file beside the target, fsync, then rename."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np

SAMPLE_RATE = 24_000
TEMP_SUFFIX = ".partial"


def temp_path(target: Path) -> Path:
    """A hidden temporary name beside `target` (what stale-run cleanup looks for)."""
    return target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}")


def write_wav(target: Path, samples: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    """Write mono 16-bit PCM atomically; return the duration in seconds."""
    import soundfile

    samples = np.clip(np.asarray(samples, dtype=np.float32).reshape(-1), -1.0, 1.0)
    tmp = temp_path(target)
    try:
        with tmp.open("wb") as f:
            soundfile.write(f, samples, rate, format="WAV", subtype="PCM_16")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
    return len(samples) / rate


def _fsync_dir(folder: Path) -> None:
    # The rename is durable only once the folder's entry is on disk.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_temp_files(folder: Path) -> int:
    """Remove temporary files a killed run left in `folder`; return how many."""
    count = 0
    for leftover in folder.glob(f".*{TEMP_SUFFIX}"):
        leftover.unlink(missing_ok=True)
        count += 1
    return count
