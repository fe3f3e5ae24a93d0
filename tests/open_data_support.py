"""What the open-data tests share: validators for the published schemas vendored in
tests/schemas/ (see its README), and a city whose bays are fresh, stale, never seen and closed.

Every `$ref` resolves inside a local `referencing` registry, never over the network: the DATEX II
files refer to each other by file name, the smart data models to common-schema.json by its `$id`.
"""
from __future__ import annotations

import copy
import json
import time
from functools import cache
from pathlib import Path

from jsonschema import Draft4Validator, Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4, DRAFT202012

from parking.ingest import SensorReading, ingest
from parking.lots import import_lots

SCHEMAS = Path(__file__).parent / "schemas"
CITY = json.loads((Path(__file__).parent / "data" / "city.geojson").read_text(encoding="utf-8"))
DATEX2 = SCHEMAS / "datex2"
SMART_DATA_MODELS = SCHEMAS / "smart-data-models"


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


@cache
def datex2_validator() -> Draft4Validator:
    """The DATEX II v3 D2Payload schema with Parking Publication Light (draft-04, as published)."""
    registry = Registry().with_resources(
        (path.name, Resource.from_contents(_load(path), default_specification=DRAFT4))
        for path in DATEX2.glob("*.json")
    )
    root = _load(DATEX2 / "DATEXII_3_D2Payload.json")
    return Draft4Validator(root, registry=registry, format_checker=Draft4Validator.FORMAT_CHECKER)


@cache
def _sdm_registry() -> Registry:
    """common-schema.json under its published `$id`."""
    common = _load(SMART_DATA_MODELS / "common-schema.json")
    return Registry().with_resource(common["$id"], Resource.from_contents(common, DRAFT202012))


@cache
def smart_data_model_validator(entity_type: str) -> Draft202012Validator:
    """The smart data model schema of OffStreetParking, OnStreetParking or ParkingSpot.

    They validate the key-values form; the common schema they build on is JSON Schema 2020-12.
    """
    schema = _load(SMART_DATA_MODELS / f"{entity_type}.schema.json")
    return Draft202012Validator(schema, registry=_sdm_registry(),
                                format_checker=Draft202012Validator.FORMAT_CHECKER)


def key_values(entity: dict) -> dict:
    """A normalized NGSI-LD entity in key-values form (what the smart data model schemas describe)."""
    out = {}
    for name, attr in entity.items():
        if name in ("id", "type", "@context"):
            out[name] = attr
        else:
            out[name] = attr["object"] if attr["type"] == "Relationship" else attr["value"]
    return out


def errors(validator, document) -> list[str]:
    """Every validation error as 'path: message' (empty when the document is valid)."""
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(document)]


def mixed_city(app) -> dict[str, str]:
    """Make GARAGE closed (opening hours say so) and give the bays every kind of state; returns
    the status each bay must have now (the city of tests/data/city.geojson must be imported).

    PR-WEST (24/7): one free, one occupied, one stale, one never seen. GARAGE: fresh readings,
    but closed. STREET (no opening hours): one occupied, one stale.
    """
    doc = copy.deepcopy(CITY)
    for feature in doc["features"]:
        if feature["id"] == "GARAGE":
            feature["properties"]["opening_hours"] = "Mo-Su off"
    import_lots(doc, "Europe/Berlin")
    now = time.time()
    stale = now - 2 * float(app.config["STALE_AFTER"])
    ingest([SensorReading("PRW-001", False, now - 60), SensorReading("PRW-002", True, now - 30),
            SensorReading("PRW-003", False, stale), SensorReading("GAR-001", False, now - 10),
            SensorReading("GAR-002", True, now - 10), SensorReading("STR-001", True, now - 5),
            SensorReading("STR-002", True, stale)])
    expected = {"PRW-001": "free", "PRW-002": "occupied", "PRW-003": "unknown", "PRW-004": "unknown",
                "STR-001": "occupied", "STR-002": "unknown"}
    expected.update({f"GAR-00{i}": "closed" for i in range(1, 7)})
    return expected


def lot_properties(client) -> dict[str, dict]:
    """GET /api/lots as {lot id: properties}."""
    return {f["id"]: f["properties"] for f in client.get("/api/lots").get_json()["features"]}


HOSTILE_NAME = '</script><img src=x onerror="alert(1)"> & \u2028 \'single\' "double"'


def hostile_lot() -> None:
    """Import a lot whose name and address try to break out of a page or a JSON string."""
    import_lots({"type": "FeatureCollection", "features": [{
        "type": "Feature", "id": "HOSTILE", "geometry": {"type": "Point", "coordinates": [12.1, 49.0]},
        "properties": {"name": HOSTILE_NAME, "address": HOSTILE_NAME, "bays": ["HOS-1"]},
    }]}, "Europe/Berlin")
