"""GET /ngsi-ld/v1/entities: lots and bays as FIWARE smart data model entities that validate
against the published schemas, show the numbers of GET /api/lots, and answer bad queries with
NGSI-LD ProblemDetails (contract §8)."""
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parking.ngsi_ld import CONTEXT, Q_PATTERN, Attr, Entity, matches, parse_q
from tests.open_data_support import (
    HOSTILE_NAME, errors, hostile_lot, key_values, lot_properties, mixed_city,
    smart_data_model_validator,
)

URL = "/ngsi-ld/v1/entities"
LD = "application/ld+json"
CHANGING = ("availableSpotNumber", "occupiedSpotNumber", "occupancy", "status")


def entities(client, query: str) -> list[dict]:
    """The entities a query answers (every page: limit 1000)."""
    response = client.get(f"{URL}?{query}&limit=1000")
    assert response.status_code == 200, response.get_json()
    return response.get_json()


@pytest.mark.parametrize("entity_type", ["OffStreetParking", "OnStreetParking", "ParkingSpot"])
def test_entities_validate_against_the_smart_data_models(city, client, entity_type):
    mixed_city(city)
    response = client.get(f"{URL}?type={entity_type}&limit=1000")
    assert response.mimetype == LD
    normalized = response.get_json()
    assert normalized
    validator = smart_data_model_validator(entity_type)
    for entity in normalized:
        assert entity["type"] == entity_type and entity["@context"] == CONTEXT
        for name, attr in entity.items():
            if name not in ("id", "type", "@context"):
                assert attr["type"] in ("Property", "GeoProperty", "Relationship"), name
        assert errors(validator, key_values(entity)) == []
    simple = entities(client, f"type={entity_type}&options=keyValues")
    assert simple == [key_values(e) for e in normalized]
    for entity in simple:
        assert errors(validator, entity) == []


def test_the_schema_check_can_fail(city, client):
    spot = entities(client, "type=ParkingSpot&options=keyValues")[0]
    spot["status"] = "vacant"
    del spot["refParkingSite"]
    problems = errors(smart_data_model_validator("ParkingSpot"), spot)
    assert any("'vacant' is not one of" in p for p in problems)
    assert any("'refParkingSite' is a required property" in p for p in problems)


def test_changing_properties_carry_observed_at(city, client):
    mixed_city(city)
    lot = entities(client, "id=urn:ngsi-ld:OffStreetParking:PR-WEST")[0]
    for name in CHANGING:
        assert lot[name]["observedAt"].endswith("Z"), name
    assert "observedAt" not in lot["name"] and "observedAt" not in lot["totalSpotNumber"]
    spot = entities(client, "id=urn:ngsi-ld:ParkingSpot:PRW-002")[0]
    assert spot["status"] == {"type": "Property", "value": "occupied",
                              "observedAt": spot["status"]["observedAt"]}
    assert spot["refParkingSite"] == {"type": "Relationship",
                                      "object": "urn:ngsi-ld:OffStreetParking:PR-WEST"}


def test_numbers_equal_the_lot_list_with_stale_closed_and_unknown_bays(city, client):
    expected = mixed_city(city)
    lots = lot_properties(client)
    published = {e["id"].rsplit(":", 1)[1]: e for e in
                 entities(client, "type=OffStreetParking,OnStreetParking&options=keyValues")}
    assert published["STREET"]["type"] == "OnStreetParking"
    for lot_id, props in lots.items():
        lot = published[lot_id]
        assert lot["totalSpotNumber"] == props["total"]
        assert lot["availableSpotNumber"] == props["free"]
        assert lot["occupiedSpotNumber"] == props["occupied"]
        assert lot["occupancy"] == props["occupancy"]
    assert published["GARAGE"]["status"] == ["closed"]
    assert published["PR-WEST"]["status"] == [lots["PR-WEST"]["status"]]
    spots = entities(client, "type=ParkingSpot&options=keyValues")
    assert {s["name"]: s["status"] for s in spots} == expected
    # The bays' states are the ones GET /api/lots/<id> shows (one code path), closed aside.
    for lot_id in ("PR-WEST", "STREET"):
        bays = client.get(f"/api/lots/{lot_id}").get_json()["properties"]["bays"]
        assert {b["id"]: b["status"] for b in bays} == {b: expected[b] for b in (b["id"] for b in bays)}
        free = [s for s in spots if s["refParkingSite"].endswith(f":{lot_id}") and s["status"] == "free"]
        assert len(free) == lots[lot_id]["free"]


def test_a_lot_with_no_fresh_reading_claims_no_free_spaces(city, client):
    lot = entities(client, "id=urn:ngsi-ld:OffStreetParking:GARAGE&options=keyValues")[0]
    assert lot["totalSpotNumber"] == 6
    assert not {"availableSpotNumber", "occupiedSpotNumber", "occupancy", "status"} & lot.keys()


def test_q_ref_parking_site_pages_and_counts(city, client):
    mixed_city(city)
    urn = "urn:ngsi-ld:OffStreetParking:GARAGE"
    spots = entities(client, f"type=ParkingSpot&q=refParkingSite=={urn}&options=keyValues")
    assert [s["name"] for s in spots] == [f"GAR-00{i}" for i in range(1, 7)]
    assert entities(client, "type=ParkingSpot&q=refParkingSite==urn:ngsi-ld:OnStreetParking:GARAGE") == []
    pages, offset = [], 0
    while True:
        response = client.get(f"{URL}?type=ParkingSpot&q=refParkingSite=={urn}&limit=4&offset={offset}&count=true")
        assert response.headers["NGSILD-Results-Count"] == "6"
        if not response.get_json():
            break
        pages.extend(e["id"] for e in response.get_json())
        offset += 4
    assert pages == [s["id"] for s in spots]
    free = entities(client, 'type=ParkingSpot&q=status=="free";refParkingSite==urn:ngsi-ld:OffStreetParking:PR-WEST')
    assert [e["id"] for e in free] == ["urn:ngsi-ld:ParkingSpot:PRW-001"]
    with_space = entities(client, "type=OffStreetParking&q=availableSpotNumber>=1&options=keyValues")
    assert [e["id"] for e in with_space] == ["urn:ngsi-ld:OffStreetParking:GARAGE",
                                             "urn:ngsi-ld:OffStreetParking:PR-WEST"]


def test_one_entity_by_id(city, client):
    mixed_city(city)
    lot = client.get(f"{URL}/urn:ngsi-ld:OffStreetParking:PR-WEST?options=keyValues")
    assert lot.status_code == 200 and lot.mimetype == LD
    assert lot.get_json()["availableSpotNumber"] == lot_properties(client)["PR-WEST"]["free"]
    spot = client.get(f"{URL}/urn:ngsi-ld:ParkingSpot:STR-001?attrs=status")
    assert spot.get_json() == {"id": "urn:ngsi-ld:ParkingSpot:STR-001", "type": "ParkingSpot",
                               "status": spot.get_json()["status"], "@context": CONTEXT}
    assert spot.get_json()["status"]["value"] == "occupied"


def test_no_filter_lists_every_entity_lots_first(city, client):
    everything = [e["id"] for e in entities(client, "options=keyValues")]
    assert everything == [e["id"] for e in entities(client, "type=OffStreetParking,OnStreetParking")] + \
        [e["id"] for e in entities(client, "type=ParkingSpot")]
    assert len(everything) == 3 + 12


def test_plain_json_puts_the_context_in_a_link_header(city, client):
    response = client.get(f"{URL}?type=OffStreetParking", headers={"Accept": "application/json"})
    assert response.mimetype == "application/json"
    assert CONTEXT[0] in response.headers["Link"] and 'rel="http://www.w3.org/ns/json-ld#context"' in response.headers["Link"]
    assert all("@context" not in e for e in response.get_json())


@pytest.mark.parametrize("query", [
    "type=ParkingSpot&q=refParkingSite=",    # no value
    "type=ParkingSpot&q=status>free",        # > needs a number
    "type=ParkingSpot&q=(status==free",      # not in the understood subset
    "type=ParkingSpot&limit=5000",           # over the page limit
    "type=ParkingSpot&limit=-1",
    "type=ParkingSpot&offset=x",
    "type=ParkingSpot&options=sysAttrs",     # not supported: refused, not ignored
    "type=ParkingSpot&georel=near;maxDistance==100",
    "type=ParkingSpot&type=OffStreetParking",
    "id=not-a-uri",
    "type=ParkingSpot,,OffStreetParking",
])
def test_bad_queries_get_ngsi_ld_problem_details(city, client, query):
    response = client.get(f"{URL}?{query}")
    assert response.status_code == 400
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["type"] == "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"
    assert body["title"] and body["detail"] and body["status"] == 400


def test_problem_details_quote_the_request_as_data(city, client):
    response = client.get(URL + "?q=<script>alert(1)</script>")
    assert response.status_code == 400 and b"<" not in response.data
    assert "<script>" in response.get_json()["detail"]


def test_unknown_and_malformed_entity_ids(city, client):
    missing = client.get(f"{URL}/urn:ngsi-ld:ParkingSpot:NOPE")
    assert missing.status_code == 404
    assert missing.get_json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/ResourceNotFound"
    # The lot exists, but it is not on-street: another entity.
    assert client.get(f"{URL}/urn:ngsi-ld:OnStreetParking:GARAGE").status_code == 404
    malformed = client.get(f"{URL}/no uri")
    assert malformed.status_code == 400
    assert malformed.get_json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"


def test_hostile_lot_names_come_out_as_data_never_markup(city, client):
    hostile_lot()
    for query in ("type=OffStreetParking", "type=ParkingSpot&options=keyValues"):
        response = client.get(f"{URL}?{query}")
        for raw in (b"<", b">", b"&", "\u2028".encode()):  # escaped in the JSON text
            assert raw not in response.data
        found = {e["id"]: e for e in json.loads(response.data)}
        if "type=OffStreetParking" in query:
            assert found["urn:ngsi-ld:OffStreetParking:HOSTILE"]["name"]["value"] == HOSTILE_NAME
        else:
            assert found["urn:ngsi-ld:ParkingSpot:HOS-1"]["refParkingSite"] == "urn:ngsi-ld:OffStreetParking:HOSTILE"


def test_documented_in_the_openapi_document(client):
    paths = client.get("/api/openapi.json").get_json()["paths"]
    listing = paths[URL]["get"]
    assert {p["name"] for p in listing["parameters"]} >= {"type", "q", "options", "limit", "offset", "count"}
    assert set(listing["responses"]["200"]["content"]) == {LD, "application/json"}
    assert listing["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/ProblemDetails")
    assert "404" in paths[URL + "/{entity_id}"]["get"]["responses"]


# ---- the q subset, pure ------------------------------------------------------------------------

def _spot(status: str, free: int | None = None) -> Entity:
    attrs = {"status": Attr("Property", status), "refParkingSite": Attr("Relationship", "urn:ngsi-ld:OffStreetParking:P1")}
    if free is not None:
        attrs["availableSpotNumber"] = Attr("Property", free)
    return Entity("urn:ngsi-ld:ParkingSpot:B1", "ParkingSpot", attrs)


@pytest.mark.parametrize("q, expected", [
    ('status=="free"', True),
    ("status==free", True),
    ("status==occupied,free", True),
    ("status!=free", False),
    ("refParkingSite==urn:ngsi-ld:OffStreetParking:P1;status==free", True),
    ("refParkingSite==urn:ngsi-ld:OffStreetParking:P2", False),
    ("availableSpotNumber>=3", True),
    ("availableSpotNumber<3", False),
    ("availableSpotNumber==3.0", True),
    ("availableSpotNumber", True),
    ("occupancy", False),                 # absent attribute: never matches
    ("occupancy!=1", False),
])
def test_q_terms(q, expected):
    assert matches(_spot("free", 3), parse_q(q)) is expected


@pytest.mark.parametrize("q", ["", "status==", "a==1|b==2", "status=~free", 'status=="a"b"', "1abc==2", "x>y"])
def test_q_refuses_what_it_does_not_understand(q):
    with pytest.raises(ValueError):
        parse_q(q)


def _reads(q: str) -> bool:
    try:
        parse_q(q)
    except ValueError:
        return False
    return True


@given(st.one_of(st.from_regex(Q_PATTERN, fullmatch=True),
                 st.text(alphabet='ab=!<>;,"1.-: |()', max_size=30)))
def test_q_pattern_in_the_openapi_document_is_what_the_parser_reads(q):
    """The OpenAPI `pattern` of q and parse_q accept exactly the same texts."""
    assert bool(re.fullmatch(Q_PATTERN, q)) == _reads(q)
