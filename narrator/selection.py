"""Which segments a command works on: the one selection grammar every command takes.

    3          segment 3
    3-9        segments 3 to 9
    3,5,9-12   a list of either
    ch2        chapter 2: the second heading, and the segments up to the next heading of
               the same or a higher level
    ch2-4      chapters 2 to 4

Several arguments are one selection (`lock book.db 3 ch2`). Pure: it is given each
segment's index and heading level."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from narrator.errors import BadInput

_ITEM = re.compile(r"(ch)?(\d+)(?:-(\d+))?", re.IGNORECASE)


def chapters(segments: Sequence[tuple[int, int | None]]) -> list[list[int]]:
    """Each chapter's segment indices, in order: a heading and what follows it up to the
    next heading of the same or a higher level (a smaller number)."""
    found = []
    for at, (_, level) in enumerate(segments):
        if level is None:
            continue
        members = [segments[at][0]]
        for index, other in segments[at + 1 :]:
            if other is not None and other <= level:
                break
            members.append(index)
        found.append(members)
    return found


def select(specs: Iterable[str], segments: Sequence[tuple[int, int | None]]) -> list[int]:
    """The segment indices a selection names, in order, each once. BadInput (exit 2) for
    a malformed item or one that names nothing that exists, with the valid range."""
    indices = [index for index, _ in segments]
    present = set(indices)
    books = chapters(segments)
    chosen: set[int] = set()
    for spec in specs:
        for item in (part.strip() for part in str(spec).split(",")):
            match = _ITEM.fullmatch(item)
            if not item or match is None:
                raise BadInput(
                    f"cannot read the selection {item!r}: use 3, 3-9, 3,5,9-12, ch2 or ch2-4"
                )
            first = int(match[2])
            last = int(match[3]) if match[3] else first
            if last < first:
                raise BadInput(f"{item!r} runs backwards; write {match[1] or ''}{last}-{first}")
            if match[1]:
                if not books or last > len(books) or first < 1:
                    raise BadInput(_chapters_range(item, len(books)))
                for chapter in books[first - 1 : last]:
                    chosen.update(chapter)
            else:
                named = present.intersection(range(first, last + 1))
                if not named:
                    raise BadInput(_range(item, indices))
                chosen.update(named)
    return sorted(chosen)


def _range(item: str, indices: list[int]) -> str:
    if not indices:
        return f"no segment {item}: the project has no segments"
    return f"no segment {item}: the segments are {min(indices)}-{max(indices)}"


def _chapters_range(item: str, count: int) -> str:
    if not count:
        return f"no chapter {item}: the project has no headings (`narrator heading` marks one)"
    return f"no chapter {item}: the chapters are ch1-ch{count}"
