"""Text as a project keeps it: the one rule for every way text comes in (import, add,
edit, standard input, names), and the filter for what narrator prints or writes."""

from __future__ import annotations

import re
import unicodedata
import warnings

# A terminal escape sequence (CSI, or OSC up to its end, the line's end or 256
# characters), then any C0/C1 control character but newline and tab, then the invisible
# ones (zero-width space, word joiner, BOM). The joiners (U+200C, U+200D) stay: they
# shape Persian and Indic words.
_TERMINAL_ESCAPE = r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b\n]{0,256}(?:\x07|\x1b\\)?"
_UNSPEAKABLE = re.compile(_TERMINAL_ESCAPE + r"|[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b\u2060\ufeff]")
# Control characters that separate words or lines: a space or a newline, not nothing.
_SEPARATORS = str.maketrans(
    {
        "\r": "\n",
        "\x0b": "\n",
        "\x0c": "\n",
        "\x85": "\n",
        "\x1c": " ",
        "\x1d": " ",
        "\x1e": " ",
        "\x1f": " ",
    }
)


class ControlCharacters(UserWarning):
    """Text entering a project held control or invisible characters, which were removed."""


def clean(text: str) -> tuple[str, int]:
    """Text as a project keeps it, the one rule for every way in (import, add, edit,
    stdin, names): NFC, Unix newlines, separators (form feed, NEL...) as spaces or
    newlines, and no other control or invisible character (terminal escape sequences go
    whole). Also how many characters were removed."""
    text = text.replace("\r\n", "\n").translate(_SEPARATORS)
    kept = _UNSPEAKABLE.sub("", text)
    return unicodedata.normalize("NFC", kept), len(text) - len(kept)


def printable(text: str) -> str:
    """`text` without control or invisible characters: for anything narrator prints or
    writes from a project older than `clean`."""
    return _UNSPEAKABLE.sub("", text.translate(_SEPARATORS))


def printable_line(text: str) -> str:
    """`printable` on one line: every run of whitespace one space."""
    if text.isprintable():  # no control or format character at all (the common case)
        return " ".join(text.split())
    return " ".join(printable(text).split())


def warn_removed(removed: int) -> None:
    if removed:
        warnings.warn(
            f"removed {removed} control or invisible character"
            f"{'s' if removed != 1 else ''} (NUL, escape sequences, zero-width "
            "spaces...) from the text",
            ControlCharacters,
            stacklevel=3,
        )


# An inline pause: `[pause 1.5s]` or `[pause 500ms]` (seconds when no unit is given).
PAUSE = re.compile(r"\[\s*pause\s+(\d{1,5}(?:\.\d+)?)\s*(ms|s)?\s*\]", re.IGNORECASE)
# The longest pause a mark may ask for, in seconds.
MAX_PAUSE_S = 60.0


def pause_runs(text: str) -> list[str | float]:
    """`text` cut at its pause marks: the text between them, and each pause in seconds."""
    runs: list[str | float] = []
    at = 0
    for mark in PAUSE.finditer(text):
        seconds = float(mark[1]) / (1000 if (mark[2] or "s").lower() == "ms" else 1)
        runs += [text[at : mark.start()], seconds]
        at = mark.end()
    runs.append(text[at:])
    return runs


def without_pauses(text: str) -> str:
    """`text` as shown in captions: its pause marks gone."""
    return " ".join(PAUSE.sub(" ", text).split())
