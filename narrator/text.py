"""Text as a project keeps it: the one rule for every way text comes in (import, add,
edit, standard input, names), and the filter for what narrator prints or writes."""

from __future__ import annotations

import re
import unicodedata
import warnings

# A terminal escape sequence (CSI or OSC), then any C0/C1 control character but newline
# and tab, then the invisible ones (zero-width space, joiners, word joiner, BOM).
_TERMINAL_ESCAPE = r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
_UNSPEAKABLE = re.compile(
    _TERMINAL_ESCAPE + r"|[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200d\u2060\ufeff]"
)


class ControlCharacters(UserWarning):
    """Text entering a project held control or invisible characters, which were removed."""


def clean(text: str) -> tuple[str, int]:
    """Text as a project keeps it, the one rule for every way in (import, add, edit,
    stdin, names): NFC, Unix newlines, and no control or invisible characters (terminal
    escape sequences go whole). Also how many characters were removed."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    kept = _UNSPEAKABLE.sub("", text)
    return kept, len(text) - len(kept)


def printable(text: str) -> str:
    """`text` without control or invisible characters: for anything narrator prints or
    writes from a project older than `clean`."""
    return _UNSPEAKABLE.sub("", text)


def warn_removed(removed: int) -> None:
    if removed:
        warnings.warn(f"removed {removed} control or invisible character"
                      f"{'s' if removed != 1 else ''} (NUL, escape sequences, zero-width "
                      "spaces...) from the text", ControlCharacters, stacklevel=3)
