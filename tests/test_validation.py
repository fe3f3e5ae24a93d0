"""parking.validation: the one id pattern and the one wording of marshmallow's errors."""
from __future__ import annotations

import re

import pytest
from marshmallow import Schema, ValidationError, fields

from parking.lots import LotFileError, validate_collection
from parking.validation import ID_PATTERN, IdFormat, describe_errors, is_id


@pytest.mark.parametrize("text, ok", [
    ("P1-017", True), ("a" * 64, True), ("_", True),
    ("", False), ("a" * 65, False), ("P1 017", False), ("P1\n", False), ("P1\x00", False), ("Ä", False),
    (17, False), (None, False),
])
def test_an_id_is_the_whole_text(text, ok):
    assert is_id(text) is ok
    # The published pattern says the same in JSON Schema's reading, where $ is the end of the text.
    if isinstance(text, str) and "\n" not in text:
        assert (re.match(ID_PATTERN, text) is not None) is ok


def test_a_trailing_newline_is_no_id_anywhere():
    """Python's `$` matches before a final newline: a lot file with "P1\\n" went through."""
    with pytest.raises(ValidationError, match="must be 1-64 of A-Z a-z 0-9 _ -"):
        IdFormat()("P1\n")
    doc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": "P1\n", "geometry": {"type": "Point", "coordinates": [11.5, 48.1]},
         "properties": {"name": "P1", "bays": ["B1\n"]}},
    ]}
    with pytest.raises(LotFileError) as refused:
        validate_collection(doc, "Europe/Berlin")
    assert "id: must be 1-64" in refused.value.message and "properties.bays.0: must be 1-64" in refused.value.message


class _Inner(Schema):
    n = fields.Integer(required=True)


class _Outer(Schema):
    b = fields.List(fields.Integer())
    a = fields.Nested(_Inner)


def test_errors_are_one_line_of_dotted_paths():
    with pytest.raises(ValidationError) as exc:
        _Outer().load({"b": [1, "x"], "a": {}})
    assert describe_errors(exc.value.messages) == "b.1: Not a valid integer.; a.n: Missing data for required field."
    assert describe_errors({"z": ["one", "two"], "_schema": ["whole"]}, sort=True) == "whole; z: one, two"
    assert describe_errors({"x": "plain"}) == "x: plain"
