"""Sensor payloads (contract §3): JSON, CBOR, SenML JSON and SenML CBOR into readings.

This module owns the wire format of `POST /occupancy` and nothing else: no I/O, no database,
no clock except the `now` it is given. Every payload is validated here; what comes out is a list
of `parking.ingest.SensorReading` that the writer can trust to be well typed. The marshmallow schemas
are the rules; the common case, a plain map or array of maps that is valid, takes a hand-written
path (`_fast_readings`, run on the event loop for every POST) that accepts exactly what the
schema accepts with the same result, and hands anything else to the schema, which then words
the refusal (tests/test_payloads.py checks the two agree on random documents). Refusals are
raised as aiocoap renderable errors, so the resource can let them propagate and the sensor gets
the CoAP code with a short text naming what is wrong.
"""
from __future__ import annotations

import io
import json
import math
import re
import time
from collections.abc import Mapping

import cbor2
from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, post_load, validate

from parking.ingest import SEQ_MAX, SensorReading
from parking.validation import ID_BODY, ID_RE, IdFormat, describe_errors

from .errors import PayloadError, UnsupportedFormat

JSON = 50
CBOR = 60
SENML_JSON = 110
SENML_CBOR = 112
CONTENT_FORMATS = {JSON: "JSON", CBOR: "CBOR", SENML_JSON: "SenML JSON", SENML_CBOR: "SenML CBOR"}

PRESENCE_NAME = re.compile(rf"urn:dev:bay:({ID_BODY}):presence")
# RFC 8428 §4.5.3: a resolved time below 2**28 is relative to now (0 means "roughly now").
SENML_RELATIVE_LIMIT = 2**28
SENML_VERSION = 10
# RFC 8428 §6: the integer labels SenML CBOR uses in place of the JSON names.
SENML_CBOR_LABELS = {
    -1: "bver", -2: "bn", -3: "bt", -4: "bu", -5: "bv", -6: "bs",
    0: "n", 1: "u", 2: "v", 3: "vs", 4: "vb", 5: "s", 6: "t", 7: "ut", 8: "vd",
}  # fmt: skip
_SENML_NAMES = set(SENML_CBOR_LABELS.values())
_SENML_VALUES = ("v", "vs", "vd", "s")


class _StrictBool(fields.Field):
    """true or false only: 1, "yes" or "true" are refused, not guessed at."""

    default_error_messages = {"invalid": "must be true or false"}

    def _deserialize(self, value, attr, data, **kwargs):
        """The value itself when it is a boolean."""
        if isinstance(value, bool):
            return value
        raise self.make_error("invalid")


class _Number(fields.Field):
    """A finite integer or fraction; never a boolean or a numeric string."""

    default_error_messages = {"invalid": "must be a number"}

    def _deserialize(self, value, attr, data, **kwargs):
        """The value as a float."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.make_error("invalid")
        try:
            number = float(value)
        except OverflowError:
            raise self.make_error("invalid") from None
        if not math.isfinite(number):
            raise self.make_error("invalid")
        return number


class _Int(fields.Field):
    """An integer in [low, high]; a boolean or 42.0 is refused."""

    default_error_messages = {"invalid": "must be an integer {low}..{high}"}

    def __init__(self, low: int, high: int, **kwargs):
        super().__init__(**kwargs)
        self.low, self.high = low, high

    def _deserialize(self, value, attr, data, **kwargs):
        """The value when it is an integer within range."""
        if isinstance(value, bool) or not isinstance(value, int) or not self.low <= value <= self.high:
            raise self.make_error("invalid", low=self.low, high=self.high)
        return value


class _Text(fields.String):
    """Text only: marshmallow's String would decode a CBOR byte string and take it as text."""

    def _deserialize(self, value, attr, data, **kwargs):
        """The value itself when it is a text string."""
        if not isinstance(value, str):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


_MISSING = {"required": "missing", "null": "must not be null"}


class ReadingSchema(Schema):
    """One reading as a map: {"bay", "occupied", "ts", "seq", "battery"}; null means absent."""

    class Meta:
        unknown = RAISE

    bay = _Text(
        required=True,
        validate=IdFormat(),
        error_messages={**_MISSING, "invalid": "must be a string"},
    )
    occupied = _StrictBool(required=True, error_messages=_MISSING)
    ts = _Number(allow_none=True, error_messages={"invalid": "must be a number (Unix seconds)"})
    seq = _Int(0, SEQ_MAX, allow_none=True)
    battery = _Int(0, 100, allow_none=True)

    @post_load
    def make_reading(self, data, **kwargs) -> SensorReading:
        """The validated map as a SensorReading."""
        return SensorReading(data["bay"], data["occupied"], data.get("ts"), data.get("seq"), data.get("battery"))


class SenMLRecordSchema(Schema):
    """One SenML record by its JSON labels (RFC 8428 §4); unknown labels are ignored (§4.4)."""

    class Meta:
        unknown = EXCLUDE

    bver = _Int(1, 2**31, error_messages={"invalid": "must be a positive integer"})
    bn = _Text(error_messages={"invalid": "must be a string"})
    bt = _Number(error_messages={"invalid": "must be a number"})
    bu = _Text(error_messages={"invalid": "must be a string"})
    bv = _Number(error_messages={"invalid": "must be a number"})
    bs = _Number(error_messages={"invalid": "must be a number"})
    n = _Text(error_messages={"invalid": "must be a string"})
    u = _Text(error_messages={"invalid": "must be a string"})
    t = _Number(error_messages={"invalid": "must be a number"})
    ut = _Number(error_messages={"invalid": "must be a number"})
    vb = _StrictBool(error_messages={"invalid": "must be true or false"})
    # Other values are only read to say that a presence record needs vb instead.
    v = fields.Raw()
    vs = fields.Raw()
    vd = fields.Raw()
    s = fields.Raw()


_reading_schema = ReadingSchema()
_readings_schema = ReadingSchema(many=True)
_senml_schema = SenMLRecordSchema()


def decode(payload: bytes, content_format, now: float | None = None) -> list[SensorReading]:
    """The readings in one request body; raises PayloadError (4.00) or UnsupportedFormat (4.15).

    `now` (Unix seconds, default the clock) resolves SenML relative times.
    """
    fmt = None if content_format is None else int(content_format)
    if fmt in (JSON, SENML_JSON):
        document = _parse_json(payload)
    elif fmt in (CBOR, SENML_CBOR):
        document = _parse_cbor(payload)
    else:
        raise UnsupportedFormat(content_format)
    if fmt in (SENML_JSON, SENML_CBOR):
        return _senml_readings(document, fmt == SENML_CBOR, time.time() if now is None else now)
    return _plain_readings(document)


def _parse_json(payload: bytes):
    """The JSON document; NaN, Infinity and repeated keys are malformed, not guessed at."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadError("malformed JSON: not UTF-8") from None
    try:
        return json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise PayloadError(f"malformed JSON at byte {exc.pos}: {exc.msg}") from None
    except (ValueError, RecursionError) as exc:
        raise PayloadError(f"malformed JSON: {exc}") from None


def _refuse_constant(name: str):
    """json.loads hook: NaN and Infinity are not JSON (RFC 8259)."""
    raise ValueError(f"{name} is not a JSON number")


def _unique_keys(pairs: list) -> dict:
    """json.loads hook: a key given twice would make the reading ambiguous."""
    result = dict(pairs)
    if len(result) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"key {key!r} appears twice")
            seen.add(key)
    return result


def _parse_cbor(payload: bytes):
    """The one CBOR data item the payload must consist of."""
    stream = io.BytesIO(payload)
    try:
        document = cbor2.CBORDecoder(stream).decode()
    # Untrusted bytes: whatever the decoder (or a tag hook inside it) raises means "malformed".
    except Exception as exc:  # noqa: BLE001
        raise PayloadError(f"malformed CBOR: {exc}"[:120]) from None
    if stream.tell() != len(payload):
        raise PayloadError("malformed CBOR: bytes after the first data item")
    return document


_FIELDS = frozenset(("bay", "occupied", "ts", "seq", "battery"))
_isfinite = math.isfinite
# Integers up to this size convert to a finite float; larger ones are left to the schema.
_INT_AS_FLOAT = 2**1000


def _fast_reading(item) -> SensorReading | None:
    """One map as a SensorReading when it is valid in the plain shape; None means "ask the schema".

    Accepts only what `ReadingSchema` accepts, giving the same SensorReading: a dict with text keys
    among the five fields, `bay` an id (parking.validation), `occupied` a boolean, `ts` null or a
    finite int/float (not a boolean), `seq` and `battery` null or ints in range (not booleans).
    Anything else (a byte string for `bay` included) goes the slow way, where the schema words
    the refusal.
    """
    if type(item) is not dict or not item.keys() <= _FIELDS:
        return None
    bay = item.get("bay")
    occupied = item.get("occupied")
    if type(bay) is not str or type(occupied) is not bool or ID_RE.fullmatch(bay) is None:
        return None
    ts = item.get("ts")
    if ts is not None:
        kind = type(ts)
        if kind is float:
            if not _isfinite(ts):
                return None
        elif kind is int:
            if not -_INT_AS_FLOAT <= ts <= _INT_AS_FLOAT:
                return None  # float() of it may overflow: the schema decides
            ts = float(ts)
        else:
            return None
    seq = item.get("seq")
    if seq is not None and (type(seq) is not int or not 0 <= seq <= SEQ_MAX):
        return None
    battery = item.get("battery")
    if battery is not None and (type(battery) is not int or not 0 <= battery <= 100):
        return None
    return SensorReading(bay, occupied, ts, seq, battery)


def _fast_readings(document) -> list[SensorReading] | None:
    """The readings of a valid plain map or non-empty array of maps; None for anything else."""
    if type(document) is dict:
        reading = _fast_reading(document)
        return None if reading is None else [reading]
    if type(document) is list and document:
        readings = []
        for item in document:
            reading = _fast_reading(item)
            if reading is None:
                return None
            readings.append(reading)
        return readings
    return None


def _plain_readings(document) -> list[SensorReading]:
    """A map or an array of maps (formats 50 and 60) as readings."""
    readings = _fast_readings(document)
    if readings is not None:
        return readings
    return _schema_readings(document)


def _schema_readings(document) -> list[SensorReading]:
    """`_plain_readings` through the marshmallow schema: every case, and every refusal's text."""
    if isinstance(document, Mapping):
        _check_keys(document, "")
        try:
            return [_reading_schema.load(document)]
        except ValidationError as exc:
            raise PayloadError(_describe(exc.messages)) from None
    if isinstance(document, list):
        if not document:
            raise PayloadError("empty batch: send at least one reading")
        for index, item in enumerate(document):
            if not isinstance(item, Mapping):
                raise PayloadError(f"reading {index}: must be a map")
            _check_keys(item, f"reading {index}: ")
        try:
            return _readings_schema.load(document)
        except ValidationError as exc:
            index = min(exc.messages)
            raise PayloadError(f"reading {index}: {_describe(exc.messages[index])}") from None
    raise PayloadError("payload must be a map or an array of maps")


def _check_keys(item: Mapping, where: str) -> None:
    """Keys must be text; SenML labels in a plain reading get a hint at the right format."""
    for key in item:
        if not isinstance(key, str):
            raise PayloadError(f"{where}key {key!r} is not a string")
    unknown = set(item) - set(ReadingSchema._declared_fields)
    if unknown and unknown <= _SENML_NAMES:
        raise PayloadError(
            f"{where}unknown key {sorted(unknown)[0]!r}: SenML needs Content-Format 110 or 112"
        )


def _describe(messages: dict) -> str:
    """marshmallow's error dict for one map as one short line: an unknown key alone (the usual
    mistake, named first), else every field in name order (`parking.validation`)."""
    unknown = sorted(k for k, v in messages.items() if v == ["Unknown field."])
    if unknown:
        return f"unknown key {unknown[0]!r}"
    return describe_errors(messages, sort=True)


def _senml_readings(pack, cbor_labels: bool, now: float) -> list[SensorReading]:
    """A SenML pack resolved (RFC 8428 §4.6) into presence readings."""
    if not isinstance(pack, list):
        raise PayloadError("SenML: the pack must be an array of records")
    if not pack:
        raise PayloadError("empty batch: send at least one reading")
    base_name, base_time = "", 0.0
    readings = []
    for index, raw in enumerate(pack):
        where = f"record {index}"
        record = _senml_record(raw, cbor_labels, where)
        if record.get("bver", SENML_VERSION) > SENML_VERSION:
            raise PayloadError(f"{where}: SenML version {record['bver']} not supported (up to {SENML_VERSION})")
        base_name = record.get("bn", base_name)
        base_time = record.get("bt", base_time)
        if "n" not in record and "vb" not in record and not any(k in record for k in _SENML_VALUES):
            continue  # only base values for the records after it: producers often lead with one
        name = base_name + record.get("n", "")
        match = PRESENCE_NAME.fullmatch(name)
        if match is None:
            raise PayloadError(f"{where}: unknown name {name!r}, expected urn:dev:bay:<bay id>:presence")
        if "vb" not in record:
            raise PayloadError(f"{where} ({name}): needs a boolean vb")
        ts = base_time + record.get("t", 0.0)
        if ts < SENML_RELATIVE_LIMIT:
            ts = now + ts
        readings.append(SensorReading(match.group(1), record["vb"], ts))
    if not readings:
        raise PayloadError("empty batch: the pack has no presence records")
    return readings


def _senml_record(raw, cbor_labels: bool, where: str) -> dict:
    """One record validated, with CBOR integer labels turned into their JSON names."""
    if not isinstance(raw, Mapping):
        raise PayloadError(f"{where}: must be a map")
    if cbor_labels:
        raw = {SENML_CBOR_LABELS.get(k, k) if isinstance(k, int) else k: v for k, v in raw.items()}
    for key in raw:
        if not isinstance(key, str):
            if cbor_labels and isinstance(key, int):
                continue  # an unregistered integer label: ignored like an unknown name (§4.4)
            raise PayloadError(f"{where}: label {key!r} is not a string")
        # §4.4: a label ending in "_" must be understood; ours are not, so the record is refused.
        if key.endswith("_"):
            raise PayloadError(f"{where}: must-understand label {key!r} not supported")
    try:
        return _senml_schema.load({k: v for k, v in raw.items() if isinstance(k, str)})
    except ValidationError as exc:
        raise PayloadError(f"{where}: {_describe(exc.messages)}") from None
