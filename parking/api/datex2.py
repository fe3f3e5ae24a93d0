"""GET /api/datex2/parking.json: the lots as a DATEX II v3 Parking Publication Light (contract §8).

The schemas here only document the answer in the OpenAPI document; the body is built by
`parking.datex2` from the same snapshot `GET /api/lots` answers from, and tests validate it
against DATEX II's own JSON schema (tests/schemas/datex2/).
"""
from __future__ import annotations

from flask import Response, current_app
from flask.views import MethodView
from marshmallow import INCLUDE, Schema, fields

from ..datex2 import publication
from ..extensions import Blueprint
from ..open_data import encode, snapshot

blp = Blueprint("datex2", __name__, url_prefix="/api/datex2",
                description="Open data: DATEX II v3 Parking Publication Light (docs/open-data.md)")


class _Open(Schema):
    """DATEX II objects may carry more than we fill in (extensions): documented as open."""

    class Meta:
        unknown = INCLUDE


class Datex2EnumValueSchema(_Open):
    """A DATEX II enumeration value in its JSON encoding."""

    value = fields.String(required=True)


class Datex2CoordinateSchema(_Open):
    """ETRS89 (for our purposes WGS 84) decimal degrees."""

    latitude = fields.Float(required=True)
    longitude = fields.Float(required=True)


class Datex2LocationAndDimensionSchema(_Open):
    """Where the lot is: its point and, if imported, its address."""

    coordinatesForDisplay = fields.Nested(Datex2CoordinateSchema, required=True)
    locationDescriptor = fields.String()


class Datex2AssignmentSchema(_Open):
    """Who the lot is meant for (park-and-ride lots)."""

    typeOfAssignment = fields.Nested(Datex2EnumValueSchema, required=True)
    user = fields.Nested(Datex2EnumValueSchema)


class Datex2ParkingSiteSchema(_Open):
    """One lot."""

    id = fields.String(data_key="_id", required=True, metadata={"description": "the lot id"})
    name = fields.String()
    type = fields.Nested(Datex2EnumValueSchema, required=True)
    locationAndDimension = fields.Nested(Datex2LocationAndDimensionSchema, required=True)
    numberOfSpaces = fields.Integer(metadata={"description": "bays of the lot"})
    availableSpaces = fields.Integer(
        metadata={"description": "free bays (absent when no bay has a fresh reading)"})
    isOpenNow = fields.Boolean(metadata={"description": "from the opening hours; absent when unknown"})
    openingTimesDescription = fields.List(fields.String())
    lastUpdate = fields.String(metadata={"description": "newest reading, ISO 8601 UTC"})
    urlLinkAddress = fields.String()
    assignedFor = fields.List(fields.Nested(Datex2AssignmentSchema))


class Datex2PublicationCreatorSchema(_Open):
    """Who publishes."""

    country = fields.String(required=True)
    nationalIdentifier = fields.String(required=True)


class Datex2ParkingPublicationLightSchema(_Open):
    """The publication: one parkingSite per lot."""

    lang = fields.String(required=True)
    publicationTime = fields.String(required=True)
    publicationCreator = fields.Nested(Datex2PublicationCreatorSchema, required=True)
    name = fields.String()
    parkingSite = fields.List(fields.Nested(Datex2ParkingSiteSchema), required=True)


class Datex2PayloadSchema(_Open):
    """A DATEX II v3 payload holding a Parking Publication Light."""

    modelBaseVersion = fields.String(data_key="_modelBaseVersion", required=True)
    version = fields.String(data_key="_version")
    parkingPublicationLight = fields.Nested(Datex2ParkingPublicationLightSchema, required=True)


@blp.route("/parking.json")
class ParkingPublicationView(MethodView):
    """The lots as DATEX II."""

    @blp.response(200, Datex2PayloadSchema)
    def get(self):
        """Every lot as a DATEX II parkingSite: position, spaces, free spaces, open or closed."""
        shot = snapshot()
        config = current_app.config
        document = publication(
            list(shot.features.values()), shot.taken_at, lang=config["OPEN_DATA_LANG"],
            country=config["REGION"].split("-")[0], publisher=config["PUBLISHER"],
        )
        return Response(encode(document), mimetype="application/json")
