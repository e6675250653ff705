"""Request bodies are untrusted: JSON that Python or the database cannot take is a 400, never a 500;
a form field that takes one value and is given several is a 400 too (`SingleValuedFields`).

JSON nested 10,000 deep raised RecursionError; a NUL character or a lone UTF-16 surrogate in any
string raised DataError when saved (PostgreSQL text refuses NUL; UTF-8 cannot encode a surrogate).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from rest_framework import serializers
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


def json_problem(value: Any, *, max_depth: int) -> str | None:
    """Why `value` cannot be stored, or None. Iterative, so depth itself cannot crash it."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, where, depth = stack.pop()
        if depth > max_depth:
            return f"nested deeper than {max_depth} levels (at {where or 'the top'})"
        if isinstance(item, str):
            problem = text_problem(item)
            if problem:
                return f"{problem} (at {where or 'the top'})"
        elif isinstance(item, Mapping):
            for key, child in item.items():
                problem = text_problem(str(key))
                if problem:
                    return f"{problem} (in a key at {where or 'the top'})"
                stack.append((child, f"{where}.{key}" if where else str(key), depth + 1))
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{i}]", depth + 1) for i, child in enumerate(item))
    return None


def text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "a string contains a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "a string contains a lone surrogate (not valid Unicode text)"
    return None


class BoundedJSONParser(JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        raw = stream.read() if stream is not None else b""
        try:
            value = json.loads(raw.decode("utf-8")) if raw else {}
        except UnicodeDecodeError as exc:
            raise ParseError("the body is not UTF-8 text") from exc
        except RecursionError as exc:
            raise ParseError(f"JSON nested deeper than {settings.JSON_MAX_DEPTH} levels") from exc
        except ValueError as exc:
            raise ParseError(f"JSON parse error: {exc}") from exc
        problem = json_problem(value, max_depth=settings.JSON_MAX_DEPTH)
        if problem:
            raise ParseError(f"unacceptable JSON: {problem}")
        return value


# Fields that take several values from form data (`?tags=a&tags=b`); every other field takes one.
MANY_VALUED_FIELDS = (serializers.ListField, serializers.ListSerializer, serializers.MultipleChoiceField)


class SingleValuedFields(serializers.Serializer):
    """A form or multipart body can give a field many times; DRF would keep the last value and drop
    the rest unseen. A field that takes one value refuses that with a 400 instead."""

    def to_internal_value(self, data: Any) -> Any:
        if hasattr(data, "getlist"):
            repeated = {
                name: ["given more than once; give it once"]
                for name, field in self.fields.items()
                if not field.read_only and not isinstance(field, MANY_VALUED_FIELDS) and len(data.getlist(name)) > 1
            }
            if repeated:
                raise serializers.ValidationError(repeated)
        return super().to_internal_value(data)
