"""Export: a project's recorded audio as a finished book (one file, or one per chapter)
with pauses, chapter marks, tags, a cover, one loudness gain per file and caption
sidecars. It reads recorded audio only and never renders."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from narrator.export.acx import Check, acx_checks, acx_options
from narrator.export.book import Book, plan_book
from narrator.export.options import ExportOptions, Pauses
from narrator.export.write import Progress, Written, book_tags, write_book
from narrator.models import Project
from narrator.store import ProjectStore
from narrator.tasks import run_lock

__all__ = ["Export", "Exported", "ExportOptions", "Pauses", "Progress", "exporting"]


@dataclass
class Exported:
    """What an export wrote, and with the ACX profile how each file measures."""

    book: Book
    files: list[Written]
    acx: dict[Path, list[Check]]

    @property
    def acx_passed(self) -> bool:
        return all(c.ok for checks in self.acx.values() for c in checks)

    def as_dict(self) -> dict[str, object]:
        """`narrator export --json`."""
        result: dict[str, object] = {
            "format": self.book.format,
            "voices": self.book.voices,
            "files": [w.as_dict() for w in self.files],
            "gaps": [vars(g) for g in self.book.gaps],
        }
        if self.acx:
            result["acx"] = {
                str(p): [c.as_dict() for c in checks] for p, checks in self.acx.items()
            }
            result["acx_passed"] = self.acx_passed
        return result


@dataclass
class Export:
    """A planned export: the book is decided, nothing is written yet."""

    book: Book
    options: ExportOptions
    tags: dict[str, str]

    def warnings(self) -> list[str]:
        """What the user should know before the files are written."""
        found = [run.describe() for run in self.book.gap_runs]
        if self.book.format == "wav" and any(len(part.chapters) > 1 for part in self.book.parts):
            found.append("WAV holds no chapter marks: --json lists them, or use --split chapters")
        return found

    def write(self, progress: Progress) -> Exported:
        """Write the files (and captions); with the ACX profile, measure each against ACX."""
        files = write_book(self.book, self.options, self.tags, progress)
        acx = {w.path: acx_checks(w.path) for w in files} if self.options.profile == "acx" else {}
        return Exported(self.book, files, acx)


@contextlib.contextmanager
def exporting(store: ProjectStore, options: ExportOptions) -> Iterator[Export]:
    """Plan the book under the project's run lock, held until the block ends, so no run
    replaces audio under the export (ProjectBusy, exit 75, while one renders)."""
    if options.profile == "acx":
        options = acx_options(options)
    with store.session() as session:
        project = session.get(Project, store.project_id)
        assert project is not None
        name = project.name
    lock = run_lock(store)
    try:
        book = plan_book(store, options, name)
        tags = book_tags(options, options.title or name, book.voices)
        yield Export(book, options, tags)
    finally:
        lock.release()
