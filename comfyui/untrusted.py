"""What a GPU machine sends is untrusted input: decode it so that it can be stored and shown.

PostgreSQL text refuses NUL, and a lone UTF-16 surrogate (JSON's "\\ud800") cannot be encoded
as UTF-8 at all: either raised deep inside the tracker and left a job running forever. JSON nested
thousands deep raised RecursionError, which is not a ValueError.
"""

from __future__ import annotations

import json
from typing import Any

# Only a `\u` escape can produce NUL or a lone surrogate: other answers skip the walk.
_ESCAPE = "\\u"


class UnreadableJSON(ValueError):
    """Not JSON, or JSON nested too deep to read."""


def clean_text(text: str) -> str:
    """`text` without NUL characters and with lone surrogates replaced."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def clean_json(value: Any) -> Any:
    """`value` with every string in it (keys too) cleaned by `clean_text`."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(str(k)): clean_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean_json(item) for item in value]
    return value


def loads_untrusted(text: str | bytes) -> Any:
    """json.loads for a GPU machine's answer: cleaned, and one error type for anything unreadable."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise UnreadableJSON(str(exc)[:200]) from exc
    raw = text if isinstance(text, str) else text.decode("utf-8", "replace")
    return clean_json(value) if _ESCAPE in raw else value
