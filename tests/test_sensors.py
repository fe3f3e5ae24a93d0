"""The operators' listing of sensors, over HTTP and the CLI."""
import time

from parking.ingest import Reading, ingest


def test_sensor_listing(city, client, runner):
    now = time.time()
    ingest([Reading("STR-001", True, now - 10, battery=9)], now=now)
    ingest([Reading("STR-002", False, now - 4000, battery=80)], now=now - 4000)
    rows = {r["bay"]: r for r in client.get("/api/sensors?lot=STREET").json}
    assert rows["STR-001"]["problem"] == "low_battery"
    assert rows["STR-002"]["problem"] == "silent" and rows["STR-002"]["silent_for_s"] >= 4000
    everything = client.get("/api/sensors?all=true").json
    assert len(everything) == 12
    assert {r["problem"] for r in everything} >= {"never_seen", "silent", "low_battery"}
    assert client.get("/api/sensors?lot=NOPE").status_code == 404
    result = runner.invoke(args=["sensors"])
    assert "STR-002" in result.output and "silent" in result.output
