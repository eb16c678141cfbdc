"""Precision and recall of `narrator lexicon audit` on a hand-labelled text: every token of
tests/data/traps.md a careful reader would flag is listed in tests/data/traps.labels.
Prints, per kind, what the audit found, what it missed and what it flagged wrongly, then
the totals. Needs no model, only the G2P.

    .venv/bin/python bench/audit.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from narrator.audit import KINDS
from narrator.documents import split_document
from narrator.project import add_segments
from narrator.pronunciation import audit_project
from narrator.store import create_project

DATA = Path(__file__).parent.parent / "tests" / "data"


def labels() -> set[tuple[str, str]]:
    rows = (DATA / "traps.labels").read_text(encoding="utf-8").splitlines()
    return {tuple(row.split("\t", 1)) for row in rows if row and not row.startswith("#")}  # type: ignore[misc]


def audited(document: Path) -> tuple[set[tuple[str, str]], float]:
    with tempfile.TemporaryDirectory() as folder:
        store = create_project(Path(folder) / "t.db", "traps")
        add_segments(store, split_document(document))
        start = time.perf_counter()
        found = audit_project(store)
        return {(f.kind, f.token) for f in found}, time.perf_counter() - start


def main() -> int:
    wanted = labels()
    found, seconds = audited(DATA / "traps.md")
    print(f"{'kind':<13}{'labelled':>9}{'found':>7}{'right':>7}  missed / flagged wrongly")
    for kind in KINDS:
        want = {t for k, t in wanted if k == kind}
        got = {t for k, t in found if k == kind}
        extra = sorted(got - want)
        print(
            f"{kind:<13}{len(want):>9}{len(got):>7}{len(want & got):>7}  "
            f"{', '.join(sorted(want - got)) or '-'} / {', '.join(extra) or '-'}"
        )
    right = len(wanted & found)
    print(
        f"precision {right / len(found):.2f} ({right}/{len(found)}), "
        f"recall {right / len(wanted):.2f} ({right}/{len(wanted)}), audit {seconds:.2f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
