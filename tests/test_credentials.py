"""Sensor credentials (contract §7): the CLI and the admin API; a secret shown once, never listed."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from parking.extensions import db
from parking.models import SensorCredential

from .conftest import ADMIN_TOKEN

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def test_cli_add_prints_the_sensor_side_as_aiocoap_settings(city, runner):
    result = runner.invoke(args=["credentials", "add", "sensor-1", "--bay", "PRW-001", "--bay", "PRW-002"])
    assert result.exit_code == 0, result.output
    settings = json.loads(result.stdout)  # one JSON object, nothing else on standard output
    assert list(settings) == ["sender-id_hex", "recipient-id_hex", "secret_hex", "salt_hex"]
    assert len(bytes.fromhex(settings["secret_hex"])) == 32 and len(bytes.fromhex(settings["salt_hex"])) == 8
    assert 1 <= len(bytes.fromhex(settings["sender-id_hex"])) <= 7
    assert settings["sender-id_hex"] != settings["recipient-id_hex"]
    row = db.session.scalar(select(SensorCredential))
    assert row.kid.hex() == settings["sender-id_hex"] and sorted(b.bay_id for b in row.bays) == ["PRW-001", "PRW-002"]

    listed = runner.invoke(args=["credentials", "list"])
    assert "sensor-1" in listed.output and settings["sender-id_hex"] in listed.output
    assert "PRW-001 PRW-002" in listed.output
    assert settings["secret_hex"] not in listed.output and settings["salt_hex"] not in listed.output


@pytest.mark.parametrize("args, message", [
    (["sensor-1", "--bay", "NOPE"], "unknown bay: NOPE"),
    (["bad id!", "--bay", "PRW-001"], "sensor id: must be 1-64 of A-Z a-z 0-9 _ -"),
    (["sensor-2", "--bay", "PRW-003"], "bay already bound to another sensor: PRW-003 (sensor sensor-3)"),
    (["sensor-3", "--bay", "PRW-004"], "sensor sensor-3 already has a credential"),
])
def test_cli_add_refuses_with_one_clear_line(city, runner, args, message):
    assert runner.invoke(args=["credentials", "add", "sensor-3", "--bay", "PRW-003"]).exit_code == 0
    result = runner.invoke(args=["credentials", "add", *args])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert db.session.scalar(select(SensorCredential.sensor_id).where(SensorCredential.sensor_id != "sensor-3")) is None


def test_cli_revoke_and_replace(city, runner):
    first = json.loads(runner.invoke(args=["credentials", "add", "sensor-1", "--bay", "PRW-001"]).stdout)
    second = json.loads(runner.invoke(args=["credentials", "add", "sensor-1", "--bay", "PRW-001", "--replace"]).stdout)
    assert second["sender-id_hex"] != first["sender-id_hex"] and second["secret_hex"] != first["secret_hex"]
    assert runner.invoke(args=["credentials", "revoke", "sensor-1"]).exit_code == 0
    assert "sensor-1" not in runner.invoke(args=["credentials", "list"]).output
    everything = runner.invoke(args=["credentials", "list", "--all"]).output
    assert everything.count("sensor-1") == 2 and "revoked" in everything
    # Nobody needs a revoked secret again: it is gone from the database.
    assert db.session.scalars(select(SensorCredential.secret)).all() == [None, None]
    again = runner.invoke(args=["credentials", "revoke", "sensor-1"])
    assert again.exit_code == 1 and "sensor sensor-1 has no active credential" in again.output


def test_api_needs_the_admin_token(city, client):
    body = {"sensor_id": "sensor-1", "bays": ["PRW-001"]}
    assert client.post("/api/credentials", json=body).status_code == 401
    assert client.post("/api/credentials", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/api/credentials").status_code == 401
    assert client.delete("/api/credentials/sensor-1").status_code == 401
    assert db.session.scalar(select(SensorCredential)) is None
    city.config["ADMIN_TOKEN"] = None
    refused = client.post("/api/credentials", json=body, headers=AUTH)
    assert refused.status_code == 403 and refused.json["code"] == 403


def test_api_create_list_revoke(city, client):
    made = client.post("/api/credentials", json={"sensor_id": "sensor-1", "bays": ["PRW-002", "PRW-001"]}, headers=AUTH)
    assert made.status_code == 201, made.json
    body = made.json
    assert body["sensor_id"] == "sensor-1" and body["bays"] == ["PRW-001", "PRW-002"]
    assert set(body["settings"]) == {"sender-id_hex", "recipient-id_hex", "secret_hex", "salt_hex"}
    assert body["key_id"] == body["settings"]["sender-id_hex"]
    secret = body["settings"]["secret_hex"]

    listed = client.get("/api/credentials", headers=AUTH)
    assert listed.status_code == 200 and [c["sensor_id"] for c in listed.json] == ["sensor-1"]
    assert secret not in listed.get_data(as_text=True)

    clash = client.post("/api/credentials", json={"sensor_id": "sensor-2", "bays": ["PRW-001"]}, headers=AUTH)
    assert clash.status_code == 409 and "PRW-001 (sensor sensor-1)" in clash.json["message"]
    assert secret not in clash.get_data(as_text=True)
    bad = client.post("/api/credentials", json={"sensor_id": "sensor-2", "bays": []}, headers=AUTH)
    assert bad.status_code == 400 and "bays" in bad.json["message"]

    revoked = client.delete("/api/credentials/sensor-1", headers=AUTH)
    assert revoked.status_code == 200 and revoked.json["revoked_at"] is not None
    assert secret not in revoked.get_data(as_text=True)
    assert client.get("/api/credentials", headers=AUTH).json == []
    assert len(client.get("/api/credentials?all=true", headers=AUTH).json) == 1
    gone = client.delete("/api/credentials/sensor-1", headers=AUTH)
    assert gone.status_code == 404 and gone.json["message"] == "sensor sensor-1 has no active credential"


def test_openapi_describes_the_credentials_api(city, client):
    spec = client.get("/api/openapi.json").json
    assert {"get", "post"} <= set(spec["paths"]["/api/credentials"])
    assert "delete" in spec["paths"]["/api/credentials/{sensor_id}"]
    assert spec["paths"]["/api/credentials"]["post"]["security"] == [{"bearerAuth": []}]
