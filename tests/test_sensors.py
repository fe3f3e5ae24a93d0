"""The operators' listing of sensors, over HTTP and the CLI."""
import time

from parking.ingest import SensorReading, ingest


def test_sensor_listing(city, client, runner):
    now = time.time()
    ingest([SensorReading("STR-001", True, now - 10, battery=9)], now=now)
    ingest([SensorReading("STR-002", False, now - 4000, battery=80)], now=now - 4000)
    rows = {r["bay"]: r for r in client.get("/api/sensors?lot=STREET").json}
    assert rows["STR-001"]["problem"] == "low_battery"
    assert rows["STR-002"]["problem"] == "silent" and rows["STR-002"]["silent_for_s"] >= 4000
    everything = client.get("/api/sensors?all=true").json
    assert len(everything) == 12
    assert {r["problem"] for r in everything} >= {"never_seen", "silent", "low_battery"}
    assert client.get("/api/sensors?lot=NOPE").status_code == 404
    result = runner.invoke(args=["sensors"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()}
    assert "silent" in lines["STR-002"] and "low_battery" in lines["STR-001"]
    assert all(" ok " not in line for line in lines.values())  # only sensors needing attention
    result = runner.invoke(args=["sensors", "--all"])
    assert result.exit_code == 0 and len(result.output.splitlines()) == 12
    result = runner.invoke(args=["sensors", "--bogus"])
    assert result.exit_code == 2 and "No such option '--bogus'" in result.output
