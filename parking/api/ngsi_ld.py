"""GET /ngsi-ld/v1/entities and /ngsi-ld/v1/entities/<id>: lots and bays as FIWARE smart data
model entities, enough of the NGSI-LD query interface for a FIWARE tool to poll (contract §8).

Not a context broker: read-only, no subscriptions, no temporal API. Lots are rendered from the
lot list snapshot (the numbers of `GET /api/lots`), bays from their stored state, by
`parking.ngsi_ld`. Errors are NGSI-LD ProblemDetails with the ETSI error type URIs, not the
`{"code", "status", "message"}` shape of /api.
"""
from __future__ import annotations

import re
import time

from flask import Response, current_app, request
from flask.views import MethodView
from marshmallow import INCLUDE, RAISE, Schema, ValidationError, fields, validate
from sqlalchemy import select

from ..current import bay_status
from ..extensions import Blueprint, db
from ..lot_list import lot_closed
from ..models import Bay, Lot
from ..ngsi_ld import (
    CONTEXT,
    Entity,
    LOT_TYPES,
    Q_PATTERN,
    SPOT_TYPE,
    TYPES,
    URN_PREFIX,
    lot_entity,
    matches,
    parse_q,
    render,
    spot_entity,
)
from ..open_data import encode, snapshot

blp = Blueprint("ngsi_ld", __name__, url_prefix="/ngsi-ld/v1",
                description="Open data: NGSI-LD entities, FIWARE smart data models (docs/open-data.md)")

ERROR_TYPES = "https://uri.etsi.org/ngsi-ld/errors/"
LD_JSON = "application/ld+json"
MAX_LIMIT = 1000
DEFAULT_LIMIT = 20
COUNT_HEADER = "NGSILD-Results-Count"


class NgsiError(Exception):
    """An NGSI-LD error: answered as ProblemDetails with the ETSI type URI."""

    def __init__(self, status: int, kind: str, detail: str):
        super().__init__(detail)
        self.status, self.kind, self.detail = status, kind, detail


@blp.errorhandler(NgsiError)
def _problem(exc: NgsiError):
    """ProblemDetails (RFC 7807 as NGSI-LD uses it)."""
    title = {"BadRequestData": "Bad request data", "ResourceNotFound": "Resource not found"}
    body = {"type": ERROR_TYPES + exc.kind, "title": title.get(exc.kind, exc.kind),
            "status": exc.status, "detail": exc.detail}
    # The detail may quote the request: encoded like every answer here, never readable as markup.
    return Response(encode(body), status=exc.status, mimetype="application/json")


REPRESENTATIONS = ("keyValues", "simplified", "normalized")
URI = r"[A-Za-z][A-Za-z0-9+.-]*:[^,]+"  # scheme, colon, something: an entity id in a list
ENTITY_ID = r"^[A-Za-z][A-Za-z0-9+.-]*:.+$"  # the same alone (commas allowed)


def comma_list(item: str = "[^,]+", **kwargs) -> fields.Field:
    """A comma-separated list in one query argument (NGSI-LD style), each element matching `item`;
    the pattern is in the OpenAPI document too."""
    pattern = f"^{item}(?:,{item})*$"
    return CommaList(validate=validate.Regexp(pattern, error=f"must match {pattern}"), **kwargs)


class CommaList(fields.String):
    """Loads `a,b,c` as ["a", "b", "c"]. Its validators check the text as given (so the OpenAPI
    `pattern` describes the argument), before it is split."""

    def _deserialize(self, value, attr, data, **kwargs) -> list[str]:
        text = super()._deserialize(value, attr, data, **kwargs)
        super()._validate(text)
        return text.split(",")

    def _validate(self, value) -> None:
        """Already done on the text in _deserialize."""


def _check_q(value: str) -> None:
    """The q subset parking.ngsi_ld.parse_q reads, with its message saying where it stops."""
    try:
        parse_q(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from exc


class _QueryArgsSchema(Schema):
    """What NGSI-LD queries here understand; anything else is refused, never silently ignored."""

    class Meta:
        unknown = RAISE

    attrs = comma_list(metadata={"description": "only these attributes (comma-separated)"})
    options = comma_list("(?:" + "|".join(REPRESENTATIONS) + ")", metadata={
        "description": "keyValues (or simplified) for key-values, normalized (the default)"})
    format = fields.String(validate=validate.OneOf(REPRESENTATIONS),
                           metadata={"description": "the same as options, NGSI-LD 1.8 style"})


class EntitiesQueryArgsSchema(_QueryArgsSchema):
    """GET /entities: which entities (none of type, id, q: all of them), and which page."""

    type = comma_list(metadata={"description": "OffStreetParking, OnStreetParking, ParkingSpot "
                                               "(comma-separated)"})
    id = comma_list(URI, metadata={"description": "entity ids (comma-separated URIs)"})
    q = fields.String(validate=_check_q, metadata={
        "pattern": Q_PATTERN,  # what parse_q reads, exactly (tests/test_ngsi_ld.py)
        "description": 'e.g. refParkingSite==urn:ngsi-ld:OffStreetParking:P1;status=="free"'})
    limit = fields.Integer(load_default=DEFAULT_LIMIT, validate=validate.Range(0, MAX_LIMIT))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0))
    count = fields.Boolean(load_default=False,
                           metadata={"description": f"true: the total in the {COUNT_HEADER} header"})


class EntityQueryArgsSchema(_QueryArgsSchema):
    """GET /entities/<id>: the representation and the attributes."""


class NgsiEntitySchema(Schema):
    """An NGSI-LD entity (its attributes follow the smart data model of its type)."""

    class Meta:
        unknown = INCLUDE

    id = fields.String(required=True)
    type = fields.String(required=True)
    context = fields.List(fields.String(), data_key="@context",
                          metadata={"description": "only in application/ld+json"})


class ProblemDetailsSchema(Schema):
    """An NGSI-LD error."""

    type = fields.String(required=True, metadata={"description": ERROR_TYPES + "BadRequestData, …"})
    title = fields.String(required=True)
    status = fields.Integer(required=True)
    detail = fields.String(required=True)


def _load(schema: Schema) -> dict:
    """The query arguments through `schema`; BadRequestData naming every problem."""
    repeated = [key for key, values in request.args.lists() if len(values) > 1]
    if repeated:
        raise NgsiError(400, "BadRequestData", f"give {repeated[0]} once (comma-separate values)")
    try:
        return schema.load(request.args.to_dict())
    except ValidationError as exc:
        detail = "; ".join(f"{name}: {' '.join(map(str, msgs))}"
                           for name, msgs in sorted(exc.normalized_messages().items()))
        raise NgsiError(400, "BadRequestData", detail) from exc


def _key_values(args: dict) -> bool:
    """Whether the client asked for key-values rather than normalized."""
    wanted = set(args.get("options", []))
    if "format" in args:
        wanted.add(args["format"])
    return bool(wanted & {"keyValues", "simplified"})


def _respond(document, headers: dict | None = None) -> Response:
    """JSON-LD with the @context inside, or plain JSON with it in a Link header, as NGSI-LD says."""
    response = Response(encode(document), headers=headers or {})
    if _wants_ld():
        response.mimetype = LD_JSON
    else:
        response.mimetype = "application/json"
        response.headers["Link"] = (f'<{CONTEXT[0]}>; rel="http://www.w3.org/ns/json-ld#context"; '
                                    f'type="{LD_JSON}"')
    return response


def _wants_ld() -> bool:
    """application/ld+json unless the client asks for application/json only."""
    best = request.accept_mimetypes.best_match([LD_JSON, "application/json"], default=LD_JSON)
    return best == LD_JSON


def _entity_doc(description: str, many: bool) -> dict:
    """The 200 answer in both representations (the body is built by hand, so documented here)."""
    content = {"schema": NgsiEntitySchema(many=many)}
    return {"description": description, "content": {LD_JSON: content, "application/json": content},
            "headers": {
                "Link": {"description": "the @context, when the answer is application/json",
                         "schema": {"type": "string"}},
                COUNT_HEADER: {"description": "the total, with count=true", "schema": {"type": "integer"}},
            }}


@blp.route("/entities")
class EntitiesView(MethodView):
    """Query entities."""

    @blp.doc(parameters=[{"in": "query", "schema": EntitiesQueryArgsSchema}],
             responses={"200": _entity_doc("the matching entities, one page", many=True)})
    @blp.alt_response(400, schema=ProblemDetailsSchema, content_type="application/json",
                      description="BadRequestData: a query this interface does not understand")
    def get(self):
        """Lots (OffStreetParking, OnStreetParking) and bays (ParkingSpot) matching the query."""
        # NGSI-LD brokers refuse a query naming none of type, id, q or attrs; a read-only feed can
        # simply list everything (paged), and an OpenAPI document cannot state "one of" anyway.
        args = _load(EntitiesQueryArgsSchema())
        types = set(args.get("type", TYPES))
        ids = set(args["id"]) if "id" in args else None
        terms = parse_q(args["q"]) if "q" in args else []
        attrs = set(args["attrs"]) if "attrs" in args else None
        found = _find(types, ids, terms, attrs)
        page = found[args["offset"]:args["offset"] + args["limit"]]
        headers = {COUNT_HEADER: str(len(found))} if args["count"] else None
        return _respond([_render(e, args) for e in page], headers)


@blp.route("/entities/<path:entity_id>")
class EntityView(MethodView):
    """One entity."""

    @blp.doc(parameters=[{"in": "query", "schema": EntityQueryArgsSchema},
                         {"in": "path", "name": "entity_id", "required": True,
                          "schema": {"type": "string", "pattern": ENTITY_ID},
                          "example": "urn:ngsi-ld:OffStreetParking:dachauplatz"}],
             responses={"200": _entity_doc("the entity", many=False)})
    @blp.alt_response(400, schema=ProblemDetailsSchema, content_type="application/json",
                      description="BadRequestData: the id is not a URI, or a bad argument")
    @blp.alt_response(404, schema=ProblemDetailsSchema, content_type="application/json",
                      description="ResourceNotFound: no lot or bay with that id")
    def get(self, entity_id):
        """The lot or bay with that id (urn:ngsi-ld:OffStreetParking:<lot id>, …:ParkingSpot:<bay id>)."""
        args = _load(EntityQueryArgsSchema())
        if not re.match(ENTITY_ID, entity_id):
            raise NgsiError(400, "BadRequestData", f"{entity_id!r} is not a URI")
        found = _find(set(TYPES), {entity_id}, [], None)
        if not found:
            raise NgsiError(404, "ResourceNotFound", f"no entity {entity_id}")
        return _respond(_render(found[0], args))


def _render(entity: Entity, args: dict) -> dict:
    """The entity as the request asks: key-values or normalized, only `attrs`, @context if JSON-LD."""
    attrs = set(args["attrs"]) if "attrs" in args else None
    return render(entity, key_values=_key_values(args), attrs=attrs, context=_wants_ld())


def _find(types: set[str], ids: set[str] | None, terms: list, attrs: set[str] | None) -> list:
    """Every entity of those types (and ids) that satisfies the q terms, lots first, then bays.

    With `attrs`, NGSI-LD returns only entities that have at least one of them.
    """
    found = []
    if types & set(LOT_TYPES):
        shot = snapshot()
        lots = (lot_entity(f, shot.taken_at) for f in shot.features.values())
        found.extend(e for e in lots if e.type in types and (ids is None or e.id in ids))
    if SPOT_TYPE in types:
        found.extend(_spots(ids, terms))
    return [e for e in found if matches(e, terms)
            and (attrs is None or attrs & e.attrs.keys())]


def _spots(ids: set[str] | None, terms: list) -> list:
    """ParkingSpot entities of the stored bays, narrowed in SQL by the ids and refParkingSite== terms."""
    query = (select(Bay.id, Bay.state, Bay.last_ts, Lot.id.label("lot_id"), Lot.category, Lot.lon,
                    Lot.lat, Lot.timezone, Lot.opening_hours)
             .join(Lot, Lot.id == Bay.lot_id).order_by(Bay.id))
    prefix = URN_PREFIX + SPOT_TYPE + ":"
    if ids is not None:
        query = query.where(Bay.id.in_([i[len(prefix):] for i in ids if i.startswith(prefix)]))
    for term in terms:
        if term.attr == "refParkingSite" and term.op == "==":
            lot_ids = [str(v).rsplit(":", 1)[-1] for v in term.values]
            query = query.where(Lot.id.in_(lot_ids))  # a superset: matches() checks the full URN
    stale_after = float(current_app.config["STALE_AFTER"])
    now = time.time()
    closed: dict[str, bool] = {}
    spots = []
    for row in db.session.execute(query):
        if row.lot_id not in closed:
            closed[row.lot_id] = lot_closed(row, now)
        status = "closed" if closed[row.lot_id] else bay_status(row, stale_after, now)
        lot = {"id": row.lot_id, "category": row.category, "lon": row.lon, "lat": row.lat}
        spots.append(spot_entity(row.id, status, row.last_ts, lot, now))
    return spots
