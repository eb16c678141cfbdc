"""Writing a file atomically: a temporary name beside its target, synced, then renamed
into place, so that a reader never sees half of it."""

from __future__ import annotations

import glob
import os
import uuid
from pathlib import Path

TEMP_SUFFIX = ".partial"


def temp_path(target: Path) -> Path:
    """A hidden temporary name beside `target`, which it names: `.<target>.<rand>.partial`."""
    return target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}")


def claim_temp(target: Path) -> Path:
    """Create the temporary file for `target` now (and its folder), so that an unwritable
    place fails before any work; first remove what an earlier writer of `target` that was
    killed outright left (`.<target>.<rand>.partial`)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    for left in target.parent.glob(f".{glob.escape(target.name)}.*{TEMP_SUFFIX}"):
        left.unlink(missing_ok=True)
    tmp = temp_path(target)
    tmp.touch(exist_ok=False)
    return tmp


def sync(path: Path) -> None:
    """Flush a written file to disk (before `publish` renames it into place)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: Path, target: Path) -> None:
    """Move a written temporary file into place atomically and durably."""
    try:
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    sync(target.parent)  # the rename is durable only once the folder's entry is on disk


def write_file(target: Path, data: bytes) -> None:
    """Write `data` to `target` atomically: all of it, or the old file (if any) untouched."""
    tmp = claim_temp(target)
    try:
        tmp.write_bytes(data)
        sync(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    publish(tmp, target)
