"""Reading the members of a zip archive (an EPUB) within limits, so that a zip bomb is
refused in seconds instead of inflating into all of memory."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

from narrator.errors import BadDocument

MIB = 1 << 20
# The most one member (a chapter, an image) may inflate to.
MAX_MEMBER_BYTES = 64 * MIB
# The most all the members read from one archive may inflate to, together.
MAX_ARCHIVE_BYTES = 512 * MIB
# The most members an archive may list (each costs memory before any is read).
MAX_MEMBERS = 20_000
_READ = MIB


@dataclass
class BoundedArchive:
    """A zip archive whose members are read through a bounded stream: BadDocument as soon
    as one inflates past MAX_MEMBER_BYTES, or all of them past MAX_ARCHIVE_BYTES, whatever
    their headers declare. Sizes that headers declare are checked before anything is read."""

    archive: zipfile.ZipFile
    path: Path
    inflated: int = 0

    def __post_init__(self) -> None:
        infos = self.archive.infolist()
        if len(infos) > MAX_MEMBERS:
            raise self._refused(f"lists {len(infos)} files", f"{MAX_MEMBERS} files")
        for info in infos:
            if info.file_size > MAX_MEMBER_BYTES:
                raise self._too_big(info.filename)
        if sum(info.file_size for info in infos) > MAX_ARCHIVE_BYTES:
            raise self._too_much()

    def read(self, name: str) -> bytes:
        """A member's bytes (KeyError when there is none)."""
        parts: list[bytes] = []
        size = 0
        with self.archive.open(name) as member:
            while part := member.read(_READ):
                size += len(part)
                self.inflated += len(part)
                if size > MAX_MEMBER_BYTES:
                    raise self._too_big(name)
                if self.inflated > MAX_ARCHIVE_BYTES:
                    raise self._too_much()
                parts.append(part)
        return b"".join(parts)

    def _too_big(self, name: str) -> BadDocument:
        limit = f"{MAX_MEMBER_BYTES // MIB} MiB"
        return self._refused(f"holds {name}, which inflates past {limit}", f"{limit} a file")

    def _too_much(self) -> BadDocument:
        limit = f"{MAX_ARCHIVE_BYTES // MIB} MiB"
        return self._refused(f"inflates past {limit}", f"{limit} a book")

    def _refused(self, what: str, limit: str) -> BadDocument:
        return BadDocument(
            f"{self.path} {what} (narrator reads at most {limit}: a zip bomb, or "
            "large media?); check the file, or remove its media with Calibre"
        )
