"""The lots as a DATEX II v3 Parking Publication Light (JSON), as Germany's national parking hub
(ParkAPI v3) serves it: one `parkingSite` per lot (contract §8; docs/open-data.md).

Pure: it turns the lot list snapshot's features into the publication and does no counting of its
own, so every number is the one `GET /api/lots` shows at the same instant. The JSON encoding is
the one DATEX II's own JSON schema defines (tests/schemas/datex2/): enumerations are objects,
`{"value": "carPark"}`, where ParkAPI writes a bare string.
"""
from __future__ import annotations

from .open_data import has_counts, open_now, utc_z

MODEL_BASE_VERSION = "3"
VERSION = "3.0"  # the DATEX II version of the vendored Parking Publication Light schema

# Our lot categories (contract §2) as DATEX II ParkingSiteTypeEnum values.
SITE_TYPES = {
    "parkingLot": "offStreetParkingGround",
    "parkingGarage": "carPark",
    "underground": "carPark",
    "onStreet": "onStreet",
}


def publication(features: list[dict], taken_at: float, *, lang: str, country: str,
                publisher: str) -> dict:
    """The D2Payload document: a ParkingPublicationLight with one parkingSite per feature."""
    return {
        "_modelBaseVersion": MODEL_BASE_VERSION,
        "_version": VERSION,
        "parkingPublicationLight": {
            "lang": lang,
            "publicationTime": utc_z(taken_at),
            "publicationCreator": {"country": country, "nationalIdentifier": publisher},
            "name": publisher,
            "parkingSite": [parking_site(feature, taken_at) for feature in features],
        },
    }


def parking_site(feature: dict, now: float) -> dict:
    """One lot feature of `GET /api/lots` as a DATEX II ParkingSite."""
    props = feature["properties"]
    lon, lat = feature["geometry"]["coordinates"]
    location = {"coordinatesForDisplay": {"latitude": lat, "longitude": lon}}
    if props["address"]:
        location["locationDescriptor"] = props["address"]
    site = {
        "_id": feature["id"],
        "name": props["name"],
        "type": {"value": SITE_TYPES.get(props["category"], "other")},
        "locationAndDimension": location,
        "numberOfSpaces": props["total"],
    }
    if has_counts(props):  # with no fresh reading, 0 free would claim "full": say nothing instead
        site["availableSpaces"] = props["free"]
    is_open = False if props["status"] == "closed" else open_now(props, now)
    if is_open is not None:
        site["isOpenNow"] = is_open
    if props["opening_hours"]:
        site["openingTimesDescription"] = [props["opening_hours"]]
    if props["updated_at"]:
        site["lastUpdate"] = props["updated_at"].replace("+00:00", "Z")
    if props["url"]:
        site["urlLinkAddress"] = props["url"]
    if props["park_and_ride"]:
        site["assignedFor"] = [{"typeOfAssignment": {"value": "optimisedFor"},
                                "user": {"value": "parkAndRideUsers"}}]
    return site
