"""Decoding of sensor payloads (gateway.payloads): every content format, every refusal, pure."""
import json
import time

import cbor2
import pytest

from gateway.errors import PayloadError, UnsupportedFormat
from gateway.payloads import decode
from parking.ingest import SensorReading

NOW = 1_763_900_000.0


def j(value) -> bytes:
    """JSON bytes."""
    return json.dumps(value).encode()


@pytest.mark.parametrize(
    "payload, fmt, expected",
    [
        # Contract §3's example map, as JSON and as CBOR.
        (j({"bay": "P1-017", "occupied": True, "ts": 1763900000, "seq": 42, "battery": 87}), 50,
         [SensorReading("P1-017", True, 1763900000.0, 42, 87)]),
        (cbor2.dumps({"bay": "P1-017", "occupied": True, "ts": 1763900000, "seq": 42, "battery": 87}), 60,
         [SensorReading("P1-017", True, 1763900000.0, 42, 87)]),
        # Optional fields absent or null; ts with a fraction; the extreme values of the ranges.
        (j({"bay": "a_B-9", "occupied": False}), 50, [SensorReading("a_B-9", False)]),
        (j({"bay": "A", "occupied": False, "ts": None, "seq": None, "battery": None}), 50, [SensorReading("A", False)]),
        (j({"bay": "A", "occupied": True, "ts": 1763900000.25, "seq": 4294967295, "battery": 0}), 50,
         [SensorReading("A", True, 1763900000.25, 4294967295, 0)]),
        (cbor2.dumps({"bay": "A", "occupied": True, "ts": 1763900000.5, "seq": 0, "battery": 100}), 60,
         [SensorReading("A", True, 1763900000.5, 0, 100)]),
        # Batches keep their order.
        (j([{"bay": "A", "occupied": True}, {"bay": "B", "occupied": False, "ts": 5}]), 50,
         [SensorReading("A", True), SensorReading("B", False, 5.0)]),
        (cbor2.dumps([{"bay": "A", "occupied": True}, {"bay": "B", "occupied": False}]), 60,
         [SensorReading("A", True), SensorReading("B", False)]),
        (j({"bay": "X" * 64, "occupied": True}), 50, [SensorReading("X" * 64, True)]),
    ],
)
def test_plain_maps_and_batches(payload, fmt, expected):
    assert decode(payload, fmt, now=NOW) == expected


# RFC 8428 §5.1.2 (multiple datapoints, bn + n), §5.1.3 (bt + relative t, bver) and §6 (CBOR
# integer labels), adapted from voltage/current to bay presence.
RFC_MULTIPLE_DATAPOINTS = [
    {"bn": "urn:dev:bay:PRW-001:", "n": "presence", "u": "", "vb": True},
]
RFC_MULTIPLE_MEASUREMENTS = [
    {"bn": "urn:dev:bay:", "bt": 1.276020076001e09, "bver": 5, "n": "PRW-001:presence", "vb": True},
    {"n": "PRW-001:presence", "t": -5, "vb": False},
    {"n": "PRW-002:presence", "t": -4, "vb": True},
]
RFC_CBOR = [
    {-2: "urn:dev:bay:", -3: 1276020076.001, -1: 5, 0: "PRW-001:presence", 4: True},
    {0: "PRW-001:presence", 6: -5, 4: False},
]


@pytest.mark.parametrize(
    "payload, fmt, expected",
    [
        (j(RFC_MULTIPLE_DATAPOINTS), 110, [SensorReading("PRW-001", True, NOW)]),
        (j(RFC_MULTIPLE_MEASUREMENTS), 110, [
            SensorReading("PRW-001", True, 1276020076.001),
            SensorReading("PRW-001", False, 1276020076.001 - 5),
            SensorReading("PRW-002", True, 1276020076.001 - 4),
        ]),
        (cbor2.dumps(RFC_CBOR), 112, [
            SensorReading("PRW-001", True, 1276020076.001),
            SensorReading("PRW-001", False, 1276020076.001 - 5),
        ]),
        # No time at all means "now"; a small t is relative to now (RFC 8428 §4.5.3).
        (j([{"n": "urn:dev:bay:A:presence", "vb": False}]), 110, [SensorReading("A", False, NOW)]),
        (j([{"n": "urn:dev:bay:A:presence", "vb": True, "t": -30}]), 110, [SensorReading("A", True, NOW - 30)]),
        (j([{"n": "urn:dev:bay:A:presence", "vb": True, "t": 2**28}]), 110, [SensorReading("A", True, float(2**28))]),
        # A leading record with base values only; a base name changed half-way.
        (j([{"bn": "urn:dev:bay:", "bt": NOW - 60}, {"n": "A:presence", "vb": True},
            {"bn": "urn:dev:bay:B", "n": ":presence", "vb": False, "t": 10}]), 110,
         [SensorReading("A", True, NOW - 60), SensorReading("B", False, NOW - 50)]),
        # Unknown labels are ignored (§4.4); so are units and an unregistered CBOR label.
        (j([{"n": "urn:dev:bay:A:presence", "vb": True, "t": 0, "ut": 60, "foo": 1}]), 110, [SensorReading("A", True, NOW)]),
        (cbor2.dumps([{0: "urn:dev:bay:A:presence", 4: True, 99: "x"}]), 112, [SensorReading("A", True, NOW)]),
    ],
)
def test_senml(payload, fmt, expected):
    assert decode(payload, fmt, now=NOW) == expected


@pytest.mark.parametrize(
    "payload, fmt, text",
    [
        (b"{not json", 50, "malformed JSON at byte 1"),
        (b"\xff\xfe", 50, "malformed JSON: not UTF-8"),
        (b'{"bay": "A", "occupied": true, "ts": NaN}', 50, "NaN is not a JSON number"),
        (b'{"bay": "A", "bay": "B", "occupied": true}', 50, "key 'bay' appears twice"),
        (b"\xa1", 60, "malformed CBOR"),
        (cbor2.dumps({"bay": "A", "occupied": True}) + b"\x00", 60, "bytes after the first data item"),
        (j("A"), 50, "payload must be a map or an array of maps"),
        (j([]), 50, "empty batch"),
        (cbor2.dumps([]), 60, "empty batch"),
        (j([{"bay": "A", "occupied": True}, 5]), 50, "reading 1: must be a map"),
        (j({"bay": "A", "occupied": True, "colour": "red"}), 50, "unknown key 'colour'"),
        (j([{"bay": "A", "occupied": True}, {"bay": "B", "occupied": True, "x": 1}]), 50, "reading 1: unknown key 'x'"),
        (j({"n": "urn:dev:bay:A:presence", "vb": True}), 50, "SenML needs Content-Format 110 or 112"),
        (cbor2.dumps({1: "A"}), 60, "key 1 is not a string"),
        (j({"occupied": True}), 50, "bay: missing"),
        (j({"bay": "A"}), 50, "occupied: missing"),
        (j({"bay": "A B", "occupied": True}), 50, "bay: must be 1-64 of A-Z a-z 0-9 _ -"),
        (j({"bay": "X" * 65, "occupied": True}), 50, "bay: must be 1-64"),
        (j({"bay": "A\n", "occupied": True}), 50, "bay: must be 1-64"),
        (j({"bay": 7, "occupied": True}), 50, "bay: must be a string"),
        # A CBOR byte string is not text, whatever bytes it holds (it used to be decoded and stored).
        (cbor2.dumps({"bay": b"P1-017", "occupied": True}), 60, "bay: must be a string"),
        (cbor2.dumps([{"bay": "A", "occupied": True}, {"bay": b"B", "occupied": True}]), 60,
         "reading 1: bay: must be a string"),
        (j({"bay": "A", "occupied": 1}), 50, "occupied: must be true or false"),
        (j({"bay": "A", "occupied": "true"}), 50, "occupied: must be true or false"),
        (j({"bay": "A", "occupied": True, "ts": "1763900000"}), 50, "ts: must be a number"),
        (j({"bay": "A", "occupied": True, "ts": True}), 50, "ts: must be a number"),
        (j({"bay": "A", "occupied": True, "seq": -1}), 50, "seq: must be an integer 0..4294967295"),
        (j({"bay": "A", "occupied": True, "seq": 2**32}), 50, "seq: must be an integer 0..4294967295"),
        (j({"bay": "A", "occupied": True, "seq": 4.0}), 50, "seq: must be an integer"),
        (j({"bay": "A", "occupied": True, "battery": 101}), 50, "battery: must be an integer 0..100"),
        (j({"bay": "A", "occupied": True, "battery": False}), 50, "battery: must be an integer 0..100"),
        (j({"bay": "A", "occupied": None}), 50, "occupied: must not be null"),
        # SenML
        (j({"n": "urn:dev:bay:A:presence", "vb": True}), 110, "the pack must be an array of records"),
        (j([]), 110, "empty batch"),
        (j([{"bn": "urn:dev:bay:"}]), 110, "no presence records"),
        (j([{"n": "urn:dev:bay:A:temperature", "v": 21.5}]), 110, "unknown name 'urn:dev:bay:A:temperature'"),
        (j([{"n": "urn:dev:ow:10e2073a01080063", "vb": True}]), 110, "unknown name 'urn:dev:ow:10e2073a01080063'"),
        (j([{"n": "urn:dev:bay:A B:presence", "vb": True}]), 110, "unknown name"),
        (j([{"n": "urn:dev:bay:A:presence", "v": 1}]), 110, "record 0 (urn:dev:bay:A:presence): needs a boolean vb"),
        (j([{"n": "urn:dev:bay:A:presence", "vb": 1}]), 110, "record 0: vb: must be true or false"),
        (j([{"n": "urn:dev:bay:A:presence", "vb": True, "t": "now"}]), 110, "record 0: t: must be a number"),
        (j([{"n": "urn:dev:bay:A:presence", "vb": True}, {"n": "x", "vb": True}]), 110, "record 1: unknown name 'x'"),
        (j([{"n": "urn:dev:bay:A:presence", "vb": True, "ttl_": 5}]), 110, "must-understand label 'ttl_'"),
        (j([{"bver": 11, "n": "urn:dev:bay:A:presence", "vb": True}]), 110, "SenML version 11 not supported"),
        (j([5]), 110, "record 0: must be a map"),
        (cbor2.dumps([{0: "urn:dev:bay:A:presence", 4: 1}]), 112, "record 0: vb: must be true or false"),
        (cbor2.dumps([{0: "urn:dev:bay:A:presence", 4: True, b"k": 1}]), 112, "label b'k' is not a string"),
        (cbor2.dumps([{0: b"urn:dev:bay:A:presence", 4: True}]), 112, "record 0: n: must be a string"),
        (cbor2.dumps([{-2: b"urn:dev:bay:A:", 0: "presence", 4: True}]), 112, "record 0: bn: must be a string"),
    ],
)
def test_refusals_are_400_with_a_short_text(payload, fmt, text):
    with pytest.raises(PayloadError) as caught:
        decode(payload, fmt, now=NOW)
    assert str(caught.value.code) == "4.00 Bad Request"
    assert text in caught.value.message
    assert len(caught.value.message) <= 120


@pytest.mark.parametrize("fmt", [None, 0, 40, 42, 61, 111, 113])
def test_other_content_formats_are_415(fmt):
    with pytest.raises(UnsupportedFormat) as caught:
        decode(j({"bay": "A", "occupied": True}), fmt, now=NOW)
    assert str(caught.value.code) == "4.15 Unsupported Content Format"
    assert f"Content-Format {'none' if fmt is None else fmt} not supported" in caught.value.message
    assert "50 (JSON), 60 (CBOR), 110 (SenML JSON) or 112 (SenML CBOR)" in caught.value.message


def test_senml_time_defaults_to_the_clock():
    before = time.time()
    (reading,) = decode(j([{"n": "urn:dev:bay:A:presence", "vb": True}]), 110)
    assert before <= reading.ts <= before + 5


# --- the fast path agrees with the schema -------------------------------------------------------
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from .hypothesis_profiles import examples  # noqa: E402

from gateway.payloads import _fast_readings, _parse_cbor, _parse_json, _schema_readings  # noqa: E402

FIELDS = ["bay", "occupied", "ts", "seq", "battery"]
# Values near every boundary the schema draws, of every type JSON and CBOR can produce.
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=3),
    st.sampled_from([99, 100, 101, 2**32 - 1, 2**32, -(2**32), 2**53, 2**1023, 2**1024, -(2**1100), 10**400]),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1763900000.0, 4.0, -0.0, 1e308, float("nan"), float("inf")]),
    st.from_regex(r"\A[A-Za-z0-9_-]{1,66}\Z"),
    st.sampled_from(["A", "A\n", "", "A B", "X" * 64, "X" * 65, "é", "true", "1763900000"]),
    st.text(max_size=8),
    st.binary(max_size=4),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
)
keys = st.one_of(st.sampled_from(FIELDS), st.sampled_from(["n", "vb", "colour", "Bay", ""]), st.integers(-2, 2), st.text(max_size=3))


@st.composite
def reading_maps(draw):
    """Maps that are mostly near-valid readings: the required keys usually there, extra keys rare."""
    item = {}
    for key in FIELDS:
        if draw(st.integers(0, 9)) < (8 if key in ("bay", "occupied") else 5):
            if key == "bay":
                item[key] = draw(st.one_of(st.from_regex(r"\A[A-Za-z0-9_-]{1,64}\Z"), values))
            elif key == "occupied":
                item[key] = draw(st.one_of(st.booleans(), values))
            else:
                item[key] = draw(values)
    if draw(st.integers(0, 9)) == 0:
        item[draw(keys)] = draw(values)
    return item


documents = st.one_of(
    reading_maps(),
    st.lists(reading_maps(), max_size=4),
    st.lists(st.one_of(reading_maps(), values), max_size=3),
    values,
)


def schema_outcome(document):
    """What the schema path makes of a document: its readings, or its refusal's text."""
    try:
        return _schema_readings(document)
    except PayloadError as exc:
        return exc.message


@settings(max_examples=examples(1500), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
@example({"bay": "A", "occupied": True, "ts": 2**1024})
@example({"bay": b"A", "occupied": True})
@example({"bay": "A", "occupied": True, "ts": 5})
@example([{"bay": "A", "occupied": True}, {"bay": "B", "occupied": False, "battery": True}])
def test_fast_path_takes_only_what_the_schema_takes_and_gives_the_same(document):
    fast = _fast_readings(document)
    if fast is not None:
        assert fast == schema_outcome(document)
        assert [type(r.ts) for r in fast] == [type(r.ts) for r in schema_outcome(document)]


@settings(max_examples=examples(600), deadline=None)
@given(st.one_of(reading_maps(), st.lists(reading_maps(), max_size=4)), st.sampled_from([50, 60]))
def test_decode_answers_as_the_schema_does(document, fmt):
    """Over the wire: the same readings, or a refusal with the same text, as the schema alone."""
    if fmt == 50:
        try:
            payload = json.dumps(document, allow_nan=True).encode()
        except TypeError:  # bytes have no JSON form
            payload = cbor2.dumps(document)
            fmt = 60
    else:
        payload = cbor2.dumps(document)
    try:  # the reference: the same parser, then the schema for every document
        expected = schema_outcome(_parse_cbor(payload) if fmt == 60 else _parse_json(payload))
    except PayloadError as exc:
        expected = exc.message
    try:
        got = decode(payload, fmt, now=NOW)
    except PayloadError as exc:
        got = exc.message
    assert got == expected


@given(st.lists(st.builds(
    lambda bay, occupied, ts, seq, battery: {k: v for k, v in
                                             {"bay": bay, "occupied": occupied, "ts": ts, "seq": seq, "battery": battery}.items()
                                             if v is not ...},
    st.from_regex(r"\A[A-Za-z0-9_-]{1,64}\Z"), st.booleans(),
    st.one_of(st.just(...), st.none(), st.floats(0, 2e9), st.integers(0, 2**31)),
    st.one_of(st.just(...), st.none(), st.integers(0, 2**32 - 1)),
    st.one_of(st.just(...), st.none(), st.integers(0, 100)),
), min_size=1, max_size=5))
def test_valid_plain_readings_take_the_fast_path(items):
    assert _fast_readings(items) == schema_outcome(items)
    assert _fast_readings(items[0]) == schema_outcome(items[0])
