"""GET /api/lots answers from a snapshot: fresh within the interval, refreshed off the request path."""
import time

import pytest

from parking.ingest import Reading, ingest
from parking.lot_list import HARD_MAX_AGE_FACTOR, lot_list

INTERVAL = 0.5


@pytest.fixture
def snapshot_city(city):
    """The city with a snapshot interval short enough to wait out in a test."""
    city.config["LOTS_SNAPSHOT_SECONDS"] = INTERVAL
    city.extensions.pop("parking.lot_list", None)
    return city


def garage(client) -> dict:
    """The GARAGE feature's properties as the list shows them now."""
    features = {f["id"]: f for f in client.get("/api/lots").json["features"]}
    return features["GARAGE"]["properties"]


def wait_for(condition, timeout: float = 10.0) -> None:
    """Poll until condition() holds (bounded)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_list_is_served_from_the_snapshot_and_refreshed_in_the_background(snapshot_city, client):
    snapshots = lot_list(snapshot_city)
    before = garage(client)
    assert snapshots.refreshes == 1
    ingest([Reading("GAR-001", True)])
    # Inside the interval: the same snapshot, no counting.
    assert garage(client) == before
    assert snapshots.refreshes == 1
    time.sleep(INTERVAL)
    # The first request after the interval is answered at once from the old snapshot...
    assert garage(client)["occupied"] == before["occupied"]
    # ...and a refresh on another thread brings the reading in.
    wait_for(lambda: snapshots.refreshes == 2)
    assert garage(client)["occupied"] == before["occupied"] + 1


def test_filters_apply_to_the_snapshot(snapshot_city, client):
    ingest([Reading("PRW-001", False)])
    everything = client.get("/api/lots").json["features"]
    pr = client.get("/api/lots?park_and_ride=true").json["features"]
    assert pr and [f["id"] for f in pr] == [f["id"] for f in everything if f["properties"]["park_and_ride"]]
    with_free = client.get("/api/lots?min_free=1").json["features"]
    assert "PR-WEST" in [f["id"] for f in with_free]
    assert all(f["properties"]["free"] >= 1 for f in with_free)
    assert client.get("/api/lots?bbox=0,0,1,1").json["features"] == []
    assert lot_list(snapshot_city).refreshes == 1


def test_snapshot_too_old_is_never_served(snapshot_city, client):
    snapshots = lot_list(snapshot_city)
    before = garage(client)
    ingest([Reading("GAR-002", True)])
    # Pretend no refresh has happened for far longer than allowed (a failing refresh thread).
    snapshot = snapshots._snapshot
    snapshots._snapshot = type(snapshot)(snapshot.taken_at - INTERVAL * HARD_MAX_AGE_FACTOR,
                                         snapshot.features, snapshot.body)
    assert garage(client)["occupied"] == before["occupied"] + 1


def test_import_shows_new_lots_at_once(snapshot_city, client):
    from tests.conftest import ADMIN_TOKEN

    assert "NEW" not in {f["id"] for f in client.get("/api/lots").json["features"]}
    doc = {"type": "FeatureCollection", "features": [{
        "type": "Feature", "id": "NEW",
        "geometry": {"type": "Point", "coordinates": [12.1, 49.0]},
        "properties": {"name": "New lot", "category": "parkingLot", "bays": ["NEW-1"]},
    }]}
    answer = client.post("/api/lots", json=doc, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert answer.status_code == 200, answer.json
    assert "NEW" in {f["id"] for f in client.get("/api/lots").json["features"]}
