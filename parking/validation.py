"""The shapes every edge checks alike: the id pattern of lots, bays and sensors (contract §2), and
marshmallow's error messages as one line of text.

Lot import, the HTTP API, the credentials and the CoAP gateway (resource paths, payloads) all take
ids by this one pattern, and every 400 / 4.00 that comes from a marshmallow schema words its
fields the same way ('properties.bays.2: must be …; id: …').
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from marshmallow import ValidationError, validate

ID_BODY = r"[A-Za-z0-9_-]{1,64}"
"""The id pattern without anchors, for embedding (a SenML name, urn:dev:bay:<id>:presence)."""
ID_PATTERN = rf"^{ID_BODY}$"
"""The id pattern as published (OpenAPI, JSON Schema: `$` there is the end of the text)."""
ID_ERROR = "must be 1-64 of A-Z a-z 0-9 _ -"
ID_RE = re.compile(ID_BODY)
"""The id pattern compiled: `ID_RE.fullmatch(text)` where a hot path cannot afford `is_id`'s call."""


def is_id(text: Any) -> bool:
    """Whether the text is an id: the whole text, so no trailing newline (which Python's `$`
    lets through) and nothing PostgreSQL refuses (a NUL character) ever reaches a query."""
    return isinstance(text, str) and ID_RE.fullmatch(text) is not None


class IdFormat(validate.Regexp):
    """marshmallow's Regexp for an id (published with ID_PATTERN), matching the whole text."""

    def __init__(self, error: str = ID_ERROR):
        super().__init__(ID_PATTERN, error=error)

    def __call__(self, value: str) -> str:
        """The value if it is an id; ValidationError otherwise."""
        if not is_id(value):
            raise ValidationError(self._format_error(value))
        return value


def error_lines(messages: Any, path: tuple = ()) -> Iterator[tuple[str, str]]:
    """(dotted field path, that field's messages) for marshmallow's nested error dict, in order.

    Schema-level messages (`_schema`) belong to the path above them; a field's messages are
    joined by ', ' (nested ones, of list items or of a nested schema, get their own path)."""
    if isinstance(messages, dict):
        for key, value in messages.items():
            yield from error_lines(value, path if key == "_schema" else (*path, key))
        return
    if isinstance(messages, list):
        plain = [str(m) for m in messages if not isinstance(m, dict | list)]
        if plain:
            yield ".".join(map(str, path)), ", ".join(plain)
        for m in messages:
            if isinstance(m, dict | list):
                yield from error_lines(m, path)
        return
    yield ".".join(map(str, path)), str(messages)


def describe_errors(messages: Any, *, sort: bool = False) -> str:
    """marshmallow's error dict as one line: 'field.path: message, message; other: message'
    (`sort`: fields in name order rather than in the schema's)."""
    lines = list(error_lines(messages))
    if sort:
        lines.sort(key=lambda line: line[0])
    return "; ".join(f"{path}: {text}" if path else text for path, text in lines)
