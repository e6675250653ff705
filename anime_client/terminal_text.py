"""Text from the server on a terminal: what a GPU machine said (a node's error message, a file
name) is untrusted, and an escape sequence in it must not move the cursor, recolour the screen or
retitle the window. Control characters are dropped; a message is kept to one line."""

from __future__ import annotations

import unicodedata


def printable(text: str) -> str:
    """`text` without control characters (C0, C1, DEL), line breaks and tabs kept."""
    return "".join(c for c in text if c in "\n\t" or unicodedata.category(c) != "Cc")


def one_line(text: str, max_chars: int = 2000) -> str:
    """`text` on one line: control characters dropped, runs of whitespace made one space, cut
    with an ellipsis past `max_chars`."""
    flat = " ".join(printable(text).split())
    return flat if len(flat) <= max_chars else flat[: max_chars - 1] + "…"
