"""Lots and bays as FIWARE smart data model entities (dataModel.Parking), NGSI-LD (contract §8).

Pure: no Flask, no database. Lots come from the lot list snapshot's features (the numbers of
`GET /api/lots`, counted nowhere else), bays from their stored state through
`parking.current.bay_status`. An entity is kept as its attributes with their NGSI-LD kind and
observation time, and rendered normalized or as key-values on the way out. The `q` filter
language is the subset of NGSI-LD's a poller needs (see `parse_q`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .open_data import has_counts, utc_z

# The smart data models' context for dataModel.Parking, then the NGSI-LD core context.
CONTEXT = [
    "https://raw.githubusercontent.com/smart-data-models/dataModel.Parking/master/context.jsonld",
    "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld",
]
LOT_TYPES = ("OffStreetParking", "OnStreetParking")
SPOT_TYPE = "ParkingSpot"
TYPES = (*LOT_TYPES, SPOT_TYPE)
URN_PREFIX = "urn:ngsi-ld:"

# The lot list's status (contract §4) as the DATEX II 2.3 values OffStreetParking's `status` takes;
# `unknown` has no such value, so it is left out (the property is absent, never a guess).
LOT_STATUS = {
    "spacesAvailable": ["spacesAvailable"],
    "almostFull": ["almostFull"],
    "full": ["full"],
    "closed": ["closed"],
}


@dataclass(frozen=True)
class Attr:
    """One attribute: Property, GeoProperty or Relationship, its value and when it was observed."""

    kind: str
    value: object
    observed_at: float | None = None


@dataclass(frozen=True)
class Entity:
    """An NGSI-LD entity before rendering."""

    id: str
    type: str
    attrs: dict[str, Attr]


def lot_type(category: str | None) -> str:
    """OnStreetParking for an on-street lot, OffStreetParking for every other."""
    return "OnStreetParking" if category == "onStreet" else "OffStreetParking"


def lot_urn(lot_id: str, category: str | None) -> str:
    """The lot's entity id: urn:ngsi-ld:OffStreetParking:<lot id> (or OnStreetParking)."""
    return f"{URN_PREFIX}{lot_type(category)}:{lot_id}"


def spot_urn(bay_id: str) -> str:
    """The bay's entity id: urn:ngsi-ld:ParkingSpot:<bay id>."""
    return f"{URN_PREFIX}{SPOT_TYPE}:{bay_id}"


def lot_entity(feature: dict, taken_at: float) -> Entity:
    """One lot feature of `GET /api/lots` as an OffStreetParking or OnStreetParking entity.

    The changing properties are observed at the snapshot's instant: that is when these counts
    were true (a bay turning stale changes them without any new reading).
    """
    props = feature["properties"]
    kind = lot_type(props["category"])
    attrs = {
        "name": Attr("Property", props["name"]),
        "location": Attr("GeoProperty", feature["geometry"]),
    }
    if kind == "OffStreetParking" and props["category"]:
        attrs["category"] = Attr("Property", [props["category"]])
    if props["park_and_ride"]:
        attrs["usageScenario"] = Attr("Property", ["parkAndRide"] if kind == "OffStreetParking"
                                      else "parkAndRide")
    if props["opening_hours"]:
        attrs["openingHours"] = Attr("Property", props["opening_hours"])
    if props["total"] > 0:  # the model's totalSpotNumber is at least 1
        attrs["totalSpotNumber"] = Attr("Property", props["total"])
    if has_counts(props):  # nothing fresh: no free count at all rather than a misleading 0
        attrs["availableSpotNumber"] = Attr("Property", props["free"], taken_at)
        attrs["occupiedSpotNumber"] = Attr("Property", props["occupied"], taken_at)
    if props["occupancy"] is not None:
        attrs["occupancy"] = Attr("Property", props["occupancy"], taken_at)
    if props["status"] in LOT_STATUS:
        attrs["status"] = Attr("Property", LOT_STATUS[props["status"]], taken_at)
    return Entity(lot_urn(feature["id"], props["category"]), kind, attrs)


def spot_entity(bay_id: str, status: str, last_ts: float | None, lot: dict, now: float) -> Entity:
    """One bay as a ParkingSpot: `status` free/occupied/unknown/closed, in its lot.

    Bays carry no position of their own here, so `location` (required by the model) is the lot's
    point. A free or occupied status was observed by the bay's newest reading; unknown and closed
    are what the rule (contract §5) and the opening hours say at `now`.
    """
    observed = last_ts if status in ("free", "occupied") else now
    attrs = {
        "name": Attr("Property", bay_id),
        "location": Attr("GeoProperty", {"type": "Point", "coordinates": [lot["lon"], lot["lat"]]}),
        "category": Attr("Property", ["onStreet" if lot["category"] == "onStreet" else "offStreet"]),
        "refParkingSite": Attr("Relationship", lot_urn(lot["id"], lot["category"])),
        "status": Attr("Property", status, observed),
    }
    return Entity(spot_urn(bay_id), SPOT_TYPE, attrs)


def render(entity: Entity, *, key_values: bool, attrs: set[str] | None = None,
           context: bool = True) -> dict:
    """The entity as NGSI-LD JSON: normalized, or key-values; `attrs` keeps only those named."""
    out: dict = {"id": entity.id, "type": entity.type}
    for name, attr in entity.attrs.items():
        if attrs is not None and name not in attrs:
            continue
        if key_values:
            out[name] = attr.value
            continue
        body = {"type": attr.kind, ("object" if attr.kind == "Relationship" else "value"): attr.value}
        if attr.observed_at is not None:
            body["observedAt"] = utc_z(attr.observed_at)
        out[name] = body
    if context:
        out["@context"] = CONTEXT
    return out


# ---- q: the NGSI-LD query language, the subset a poller needs ----------------------------------

# The grammar as regular expressions: the parser and the OpenAPI `pattern` of `q` are the same.
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_NUMBER = r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?"
_TEXT = r'"[^"]*"'
_BARE = r"[A-Za-z0-9_.:/#@+~%!$*-]+"  # a number, a word or a URI: no operator, quote or grouping
_VALUE = f"(?:{_TEXT}|{_BARE})"
_TERM = f"({_NAME})(?:(==|!=)({_VALUE}(?:,{_VALUE})*)|(>=|<=|>|<)({_NUMBER}))?"
Q_PATTERN = f"^{_TERM}(?:;{_TERM})*$".replace("(", "(?:").replace("(?:?:", "(?:")
_TERM_RE = re.compile(_TERM)
_VALUE_RE = re.compile(_VALUE)


@dataclass(frozen=True)
class Term:
    """`attr op value(s)`, or `attr` alone (the attribute exists)."""

    attr: str
    op: str | None = None
    values: tuple = ()


def parse_q(text: str) -> list[Term]:
    """Terms joined by `;` (and): `attr==v`, `attr==v1,v2`, `attr!=v`, `attr>n` (>=, <, <=),
    or a bare `attr`; values are numbers, "quoted text" or unquoted words and URIs.
    ValueError saying where the text stops being understood."""
    terms, pos = [], 0
    while True:
        match = _TERM_RE.match(text, pos)
        if not match:
            raise ValueError(f"cannot read {text[pos:]!r}: use attr==value, terms joined by ';'")
        attr, eq_op, eq_values, cmp_op, number = match.groups()
        if eq_op:
            terms.append(Term(attr, eq_op, tuple(map(_value, _VALUE_RE.findall(eq_values)))))
        elif cmp_op:
            terms.append(Term(attr, cmp_op, (_value(number),)))
        else:
            terms.append(Term(attr))
        pos = match.end()
        if pos == len(text):
            return terms
        if text[pos] != ";":
            raise ValueError(f"cannot read {text[pos:]!r}: terms are joined by ';'")
        pos += 1


def _value(raw: str):
    """A q value: "quoted text" as its text, a number as a number, else the word or URI."""
    if raw.startswith('"'):
        return raw[1:-1]
    if not re.fullmatch(_NUMBER, raw):
        return raw
    return int(raw) if raw.lstrip("-").isdigit() else float(raw)


def matches(entity: Entity, terms: list[Term]) -> bool:
    """Whether the entity satisfies every term (an array value matches if one element does)."""
    return all(_match(entity.attrs.get(term.attr), term) for term in terms)


def _match(attr: Attr | None, term: Term) -> bool:
    """One term against one attribute (absent: never matches)."""
    if attr is None:
        return False
    if term.op is None:
        return True
    candidates = attr.value if isinstance(attr.value, list) else [attr.value]
    if term.op == "==":
        return any(_same(c, v) for c in candidates for v in term.values)
    if term.op == "!=":
        return not any(_same(c, v) for c in candidates for v in term.values)
    bound = term.values[0]
    numbers = [c for c in candidates if isinstance(c, (int, float)) and not isinstance(c, bool)]
    compare = {">": lambda a: a > bound, ">=": lambda a: a >= bound,
               "<": lambda a: a < bound, "<=": lambda a: a <= bound}[term.op]
    return any(compare(n) for n in numbers)


def _same(candidate, wanted) -> bool:
    """Equality as q means it: numbers by value, everything else as text."""
    if isinstance(candidate, bool) or isinstance(wanted, bool):
        return candidate is wanted
    if isinstance(candidate, (int, float)) and isinstance(wanted, (int, float)):
        return candidate == wanted
    return str(candidate) == str(wanted)
