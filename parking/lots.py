"""Lot definitions: GeoJSON import (contract §2) and the lot/bay lookups the API shares.

An import is all or nothing: the whole file is validated first, with messages naming the
feature and the field, and only then written. Re-importing updates lots and adds bays; it never
drops a bay or its history. A key the schema does not know is refused with the nearest known
one (`"bay"`: did you mean `"bays"`?) rather than dropped: a misspelled key would otherwise
import a lot without its bays. Keys of one's own (OSM tags, internal codes) go under
`properties.extra`, which is accepted and not stored.
"""
from __future__ import annotations

import difflib
from collections import Counter
import json
import time
import zoneinfo
from pathlib import Path
from typing import Any

import geojson
from marshmallow import EXCLUDE, Schema, ValidationError, fields, pre_load, validate, validates_schema
from sqlalchemy import func, select

from .extensions import db
from .ingest import forget_bays
from .models import Bay, Lot
from .validation import IdFormat, describe_errors

CATEGORIES = ("parkingLot", "parkingGarage", "underground", "onStreet")
_id_field = dict(validate=IdFormat())


class LotFileError(Exception):
    """The lot file was refused; `message` names the feature and the field."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _http_url(value: str) -> None:
    """Only http(s) links: they end up as clickable links in drivers' and planners' pages."""
    if not value.lower().startswith(("http://", "https://")):
        raise ValidationError("must be an http:// or https:// URL")


class KnownKeysSchema(Schema):
    """A schema that refuses keys it does not declare, naming the nearest declared one."""

    # Keys allowed besides the declared fields (GeoJSON's own optional members).
    also_allowed: tuple[str, ...] = ()

    class Meta:
        unknown = EXCLUDE  # never reached: _known_keys refuses them first, with a suggestion

    @pre_load
    def _known_keys(self, data: Any, **kwargs) -> Any:
        """Refuse undeclared keys, each with the nearest declared key (difflib) when one is close."""
        if not isinstance(data, dict):
            return data
        known = sorted({f.data_key or name for name, f in self.fields.items()} | set(self.also_allowed))
        errors = {}
        for key in data:
            if key in known:
                continue
            near = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean '{near[0]}'? " if near else ""
            errors[key] = [f"unknown key ({hint}keys of your own go under properties.extra)"]
        if errors:
            raise ValidationError(errors)
        return data


class StopSchema(KnownKeysSchema):
    """A transit stop of a park-and-ride lot."""

    name = fields.String(required=True, validate=validate.Length(1, 200))
    lines = fields.List(fields.String(validate=validate.Length(1, 50)), load_default=list)
    url = fields.String(validate=_http_url, allow_none=True, load_default=None)


class ParkAndRideSchema(KnownKeysSchema):
    """Park-and-ride details: stops, an info page, minutes to the centre."""

    stops = fields.List(fields.Nested(StopSchema), required=True)
    url = fields.String(validate=_http_url, allow_none=True, load_default=None)
    minutes_to_centre = fields.Integer(
        allow_none=True, load_default=None, validate=validate.Range(0, 600)
    )


def _timezone(value: str) -> None:
    """A known IANA time zone name."""
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError("unknown IANA time zone") from exc


REGION_PATTERN = r"^[A-Z]{2}(-[A-Z0-9]{1,3})?$"


class LotPropertiesSchema(KnownKeysSchema):
    """The `properties` of a lot feature."""

    name = fields.String(required=True, validate=validate.Length(1, 200))
    bays = fields.List(fields.String(**_id_field), load_default=list)
    category = fields.String(
        validate=validate.OneOf(CATEGORIES), allow_none=True, load_default=None
    )
    timezone = fields.String(validate=_timezone, load_default=None, allow_none=True)
    address = fields.String(validate=validate.Length(max=300), allow_none=True, load_default=None)
    url = fields.String(validate=_http_url, allow_none=True, load_default=None)
    opening_hours = fields.String(
        validate=validate.Length(max=200), allow_none=True, load_default=None
    )
    park_and_ride = fields.Nested(ParkAndRideSchema, allow_none=True, load_default=None)
    # Whose public and school holidays shape the forecast (None: PARKING_REGION).
    region = fields.String(
        validate=validate.Regexp(REGION_PATTERN, error="must be an ISO 3166-2 code like DE-BY"),
        allow_none=True, load_default=None,
    )
    # Keys of the file's own (e.g. OSM tags): accepted as they are, not stored.
    extra = fields.Dict(keys=fields.String(), load_default=None, allow_none=True)

    @validates_schema
    def _unique_bays(self, data: dict, **kwargs) -> None:
        """A bay appears once per lot."""
        dupes = sorted(b for b, n in Counter(data.get("bays") or []).items() if n > 1)
        if dupes:
            raise ValidationError(f"duplicate bay ids in this lot: {', '.join(dupes[:5])}", "bays")


class GeometrySchema(KnownKeysSchema):
    """A Point or a Polygon in WGS 84 lon/lat."""

    also_allowed = ("bbox",)
    type = fields.String(required=True, validate=validate.OneOf(("Point", "Polygon")))
    coordinates = fields.Raw(required=True)

    @validates_schema
    def _coordinates(self, data: dict, **kwargs) -> None:
        """Coordinates of the right shape and range: positions here (numbers, not booleans, in
        WGS 84 range), an outline's rings by the geojson library (closed, 4 positions or more)."""
        coords = data.get("coordinates")
        try:
            if data.get("type") == "Point":
                _check_position(coords)
            else:
                if not coords or not isinstance(coords, list) or not all(isinstance(r, list) for r in coords):
                    raise ValueError("a polygon is a list of rings, the outline first")
                for ring in coords:
                    for pos in ring:
                        _check_position(pos)
                problem = geojson.Polygon(coords).errors()
                if problem:
                    raise ValueError(problem)
        except (TypeError, ValueError) as exc:
            raise ValidationError(str(exc) or "invalid coordinates", "coordinates") from exc


def _check_position(pos: Any) -> None:
    """A [lon, lat] pair in range."""
    if not isinstance(pos, list | tuple) or len(pos) < 2:
        raise ValueError("a position is [lon, lat]")
    lon, lat = pos[0], pos[1]
    if isinstance(lon, bool) or isinstance(lat, bool) or not isinstance(lon, int | float) or not isinstance(lat, int | float):
        raise ValueError("lon and lat must be numbers")
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise ValueError("lon must be -180..180 and lat -90..90")


class FeatureSchema(KnownKeysSchema):
    """One lot."""

    also_allowed = ("bbox",)
    type = fields.String(required=True, validate=validate.Equal("Feature"))
    id = fields.String(required=True, **_id_field)
    geometry = fields.Nested(GeometrySchema, required=True)
    properties = fields.Nested(LotPropertiesSchema, required=True)


def load_lot_file(path: str | Path) -> dict:
    """Read a lot file as JSON, refusing unreadable files with a clear message."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise LotFileError(f"cannot read {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise LotFileError(f"{path} is not valid JSON: {exc}") from exc


def validate_collection(doc: Any, default_timezone: str) -> list[dict]:
    """Validate a whole FeatureCollection; returns the features or raises LotFileError."""
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise LotFileError("the file must be a GeoJSON FeatureCollection")
    features = doc.get("features")
    if not isinstance(features, list):
        raise LotFileError("'features' must be a list")
    loaded, errors, owners = [], [], {}
    for index, raw in enumerate(features):
        label = f"feature {index}" + (
            f" (id {raw.get('id')!r})" if isinstance(raw, dict) and raw.get("id") else ""
        )
        try:
            feature = FeatureSchema().load(raw if isinstance(raw, dict) else {})
        except ValidationError as exc:
            errors.append(f"{label}: {describe_errors(exc.messages)}")
            continue
        feature["properties"]["timezone"] = feature["properties"]["timezone"] or default_timezone
        for bay in feature["properties"]["bays"]:
            if bay in owners and owners[bay] != feature["id"]:
                errors.append(f"{label}: properties.bays: bay {bay} is also in lot {owners[bay]}")
            owners[bay] = feature["id"]
        first = next((i for i, f in loaded if f["id"] == feature["id"]), None)
        if first is not None:
            errors.append(f"{label}: id: duplicate lot id, also feature {first}")
        loaded.append((index, feature))
    if errors:
        more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
        raise LotFileError("; ".join(errors[:10]) + more)
    return [feature for _, feature in loaded]


def import_lots(doc: Any, default_timezone: str) -> dict[str, int]:
    """Validate then upsert lots and add their bays in one transaction; returns counts."""
    features = validate_collection(doc, default_timezone)
    existing_bays = {
        bay_id: lot_id for bay_id, lot_id in db.session.execute(select(Bay.id, Bay.lot_id))
    }
    moved = [
        f"feature (id {f['id']!r}): properties.bays: bay {b} belongs to lot {existing_bays[b]}"
        for f in features
        for b in f["properties"]["bays"]
        if b in existing_bays and existing_bays[b] != f["id"]
    ]
    if moved:
        raise LotFileError("; ".join(moved[:10]) + " (moving a bay would rewrite its lot's history)")
    counts = {"lots_added": 0, "lots_updated": 0, "bays_added": 0}
    now = time.time()
    try:
        for feature in features:
            props = feature["properties"]
            lot = db.session.get(Lot, feature["id"])
            if lot is None:
                lot = Lot(id=feature["id"])
                db.session.add(lot)
                counts["lots_added"] += 1
            else:
                counts["lots_updated"] += 1
            lon, lat = centroid(feature["geometry"])
            lot.name = props["name"]
            lot.category = props["category"]
            lot.timezone = props["timezone"]
            lot.address = props["address"]
            lot.url = props["url"]
            lot.opening_hours = props["opening_hours"]
            lot.park_and_ride = props["park_and_ride"]
            lot.region = props["region"]
            lot.geometry = feature["geometry"]
            lot.lon, lot.lat = lon, lat
            lot.updated_at = now
            for bay_id in props["bays"]:
                if bay_id not in existing_bays:
                    db.session.add(Bay(id=bay_id, lot_id=lot.id))
                    existing_bays[bay_id] = lot.id
                    counts["bays_added"] += 1
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    forget_bays()
    return counts


def import_lot_file(path: str | Path, default_timezone: str) -> dict[str, int]:
    """Import a lot file from disk."""
    return import_lots(load_lot_file(path), default_timezone)


def has_lots() -> bool:
    """Whether any lot is defined yet."""
    return bool(db.session.scalar(select(func.count()).select_from(Lot)))


def centroid(geometry: dict) -> tuple[float, float]:
    """(lon, lat) of a Point, or the area centroid of a Polygon's outer ring (planar: lots are small)."""
    if geometry["type"] == "Point":
        return float(geometry["coordinates"][0]), float(geometry["coordinates"][1])
    ring = geometry["coordinates"][0]
    area = cx = cy = 0.0
    for (x0, y0, *_), (x1, y1, *_) in zip(ring, ring[1:]):
        cross = x0 * y1 - x1 * y0
        area += cross
        cx += (x0 + x1) * cross
        cy += (y0 + y1) * cross
    if abs(area) < 1e-15:  # degenerate ring: fall back to the mean of its vertices
        return (sum(p[0] for p in ring) / len(ring), sum(p[1] for p in ring) / len(ring))
    return cx / (3 * area), cy / (3 * area)
