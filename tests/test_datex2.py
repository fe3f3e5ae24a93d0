"""GET /api/datex2/parking.json: a DATEX II v3 Parking Publication Light that validates against
DATEX II's published JSON schema and shows the numbers of GET /api/lots (contract §8)."""
import json
import re

import pytest

from tests.open_data_support import (
    HOSTILE_NAME, datex2_validator, errors, hostile_lot, lot_properties, mixed_city,
)

URL = "/api/datex2/parking.json"


def sites(client) -> dict[str, dict]:
    """The publication's parking sites by id."""
    doc = client.get(URL).get_json()
    return {s["_id"]: s for s in doc["parkingPublicationLight"]["parkingSite"]}


def test_publication_validates_against_the_datex2_schema(city, client):
    mixed_city(city)
    response = client.get(URL)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    doc = response.get_json()
    assert errors(datex2_validator(), doc) == []
    light = doc["parkingPublicationLight"]
    assert light["publicationCreator"] == {"country": "DE", "nationalIdentifier": "parking-occupancy"}
    assert light["lang"] == "de" and light["publicationTime"].endswith("Z")
    assert {s["_id"] for s in light["parkingSite"]} == {"PR-WEST", "GARAGE", "STREET"}


def test_the_schema_check_can_fail(city, client):
    """ParkAPI writes enumerations as bare strings; DATEX II's own schema does not allow that."""
    doc = client.get(URL).get_json()
    doc["parkingPublicationLight"]["parkingSite"][0]["type"] = "carPark"
    del doc["parkingPublicationLight"]["publicationCreator"]
    problems = errors(datex2_validator(), doc)
    assert any("'carPark' is not of type 'object'" in p for p in problems)
    assert any("'publicationCreator' is a required property" in p for p in problems)


def test_numbers_equal_the_lot_list_with_stale_closed_and_unknown_bays(city, client):
    mixed_city(city)
    lots = lot_properties(client)
    published = sites(client)
    for lot_id, props in lots.items():
        site = published[lot_id]
        assert site["numberOfSpaces"] == props["total"]
        assert site["availableSpaces"] == props["free"]
        assert site["lastUpdate"].replace("Z", "+00:00") == props["updated_at"]
        assert site["locationAndDimension"]["coordinatesForDisplay"]["latitude"] == pytest.approx(
            client.get(f"/api/lots/{lot_id}").get_json()["geometry"]["coordinates"][1])
    # Stale and never-seen bays are not free: PR-WEST has one free of four.
    assert published["PR-WEST"]["availableSpaces"] == 1
    assert published["STREET"]["availableSpaces"] == 0
    # Closed by its opening hours, open 24/7, and no hours known (so not said).
    assert lots["GARAGE"]["status"] == "closed" and published["GARAGE"]["isOpenNow"] is False
    assert published["PR-WEST"]["isOpenNow"] is True
    assert "isOpenNow" not in published["STREET"]
    assert published["GARAGE"]["type"] == {"value": "carPark"}
    assert published["STREET"]["type"] == {"value": "onStreet"}


def test_a_lot_with_no_fresh_reading_claims_no_free_spaces(city, client):
    """0 available would tell a navigation app "full"; with nothing known the field is absent."""
    site = sites(client)["GARAGE"]
    assert lot_properties(client)["GARAGE"]["status"] == "unknown"
    assert "availableSpaces" not in site and "lastUpdate" not in site
    assert site["numberOfSpaces"] == 6


def test_hostile_lot_names_come_out_as_data_never_markup(city, client):
    hostile_lot()
    response = client.get(URL)
    assert response.mimetype == "application/json"
    for raw in (b"<", b">", b"&", "\u2028".encode()):  # escaped in the JSON text, so never markup
        assert raw not in response.data
    site = {s["_id"]: s for s in json.loads(response.data)["parkingPublicationLight"]["parkingSite"]}["HOSTILE"]
    assert site["name"] == HOSTILE_NAME
    assert site["locationAndDimension"]["locationDescriptor"] == HOSTILE_NAME
    assert errors(datex2_validator(), response.get_json()) == []


def test_documented_in_the_openapi_document(client):
    spec = client.get("/api/openapi.json").get_json()
    answer = spec["paths"][URL]["get"]["responses"]["200"]["content"]["application/json"]
    assert answer["schema"]["$ref"].endswith("/Datex2Payload")


def test_linked_from_the_map_footer(city, client):
    """The map's footer links both feeds and the API document, and every link answers."""
    page = client.get("/").get_data(as_text=True)
    footer = re.search(r'<footer class="site-footer">(.*?)</footer>', page, re.S).group(1)
    links = re.findall(r'href="([^"]+)"', footer)
    assert links == ["http://localhost/api/datex2/parking.json",
                     "http://localhost/ngsi-ld/v1/entities?type=OffStreetParking",
                     "http://localhost/api/openapi.json"]
    for link in links:
        assert client.get(link).status_code == 200
