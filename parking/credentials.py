"""Sensor credentials (contract §7): creating, revoking and listing sensors' OSCORE contexts.

This module owns a credential's life in the database: `add` makes a fresh OSCORE security
context (RFC 8613: a random key id, master secret and salt) bound to bays and returns the
sensor's side of it as aiocoap's `settings.json` (`sensor_settings`); `revoke` ends it at once
(its secret is wiped); `listing` describes credentials without any secret. The gateway's side
(finding a context by key id, replay windows) is `gateway/security.py`; docs/sensors.md tells
sensor makers what to do with the settings.
"""
from __future__ import annotations

import secrets
import time

from sqlalchemy import select

from .extensions import db
from .validation import ID_ERROR, is_id
from .models import Bay, CredentialBay, SensorCredential
from .timefmt import iso_utc

# AES-CCM-16-64-128 (OSCORE's default algorithm) has a 13-byte nonce, so Sender IDs of at most
# 7 bytes; 6 random bytes make a collision among even a million sensors unlikely (and the
# unique index catches the one that happens: a fresh id is drawn).
KID_BYTES = 6
SECRET_BYTES = 32  # RFC 8613 §3.1: at least the key length (16 bytes); more costs nothing
SALT_BYTES = 8  # RFC 8613 §3.1 recommends 8 bytes of salt
# The gateway's Sender ID (the sensor's Recipient ID), the same in every context: it only has to
# differ from the sensor's own id within one context, and the key id the gateway looks up is the
# sensor's.
GATEWAY_ID = b"\x00"


class CredentialError(Exception):
    """A request about credentials that cannot be done; `status` is its HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


def sensor_settings(credential: SensorCredential) -> dict:
    """The sensor's side of the context, as aiocoap's OSCORE settings.json (contains the secret)."""
    return {
        "sender-id_hex": credential.kid.hex(),
        "recipient-id_hex": credential.gateway_id.hex(),
        "secret_hex": credential.secret.hex(),
        "salt_hex": credential.salt.hex(),
    }


def add(sensor_id: str, bays: list[str], *, replace: bool = False, now: float | None = None) -> dict:
    """Create a fresh credential for the sensor, bound to the bays, and commit it.

    Returns {"sensor_id", "bays", "key_id", "settings"}; settings is the sensor's side (with the
    secret: show it to whoever provisions the sensor, log it nowhere). With `replace`, the
    sensor's current credential is revoked in the same transaction.
    """
    return add_many({sensor_id: bays}, replace=replace, now=now)[sensor_id]


def add_many(sensors: dict[str, list[str]], *, replace: bool = False, now: float | None = None) -> dict[str, dict]:
    """`add` for many sensors at once ({sensor id: bays}), checked as a whole, in one commit:
    all are made or none (e.g. the simulator provisioning a city's sensors)."""
    now = time.time() if now is None else now
    wanted = {sensor_id: sorted(set(bays)) for sensor_id, bays in sensors.items()}
    _check(wanted)
    current = list(db.session.scalars(select(SensorCredential).where(
        SensorCredential.sensor_id.in_(wanted), SensorCredential.revoked_at.is_(None))))
    if current and not replace:
        raise CredentialError(f"sensor {current[0].sensor_id} already has a credential: revoke it first, "
                              "or replace it", 409)
    _check_bays_free(wanted)
    for credential in current:
        _revoke(credential, now)
    kids = _fresh_kids(len(wanted))
    made = {}
    for (sensor_id, bays), kid in zip(wanted.items(), kids):
        credential = SensorCredential(
            sensor_id=sensor_id, kid=kid, gateway_id=GATEWAY_ID, secret=secrets.token_bytes(SECRET_BYTES),
            salt=secrets.token_bytes(SALT_BYTES), created_at=now, replay_index=0, replay_bits=0,
            bays=[CredentialBay(bay_id=bay) for bay in bays],
        )
        db.session.add(credential)
        made[sensor_id] = {"sensor_id": sensor_id, "bays": bays, "key_id": kid.hex(),
                           "settings": sensor_settings(credential)}
    db.session.commit()
    return made


def _fresh_kids(count: int) -> list[bytes]:
    """Random key ids not in use (a collision is unlikely; the unique index is the last guard)."""
    kids: set[bytes] = set()
    while len(kids) < count:
        drawn = {secrets.token_bytes(KID_BYTES) for _ in range(count - len(kids))} - kids
        taken = set(db.session.scalars(select(SensorCredential.kid).where(SensorCredential.kid.in_(drawn))))
        kids |= drawn - taken
    return list(kids)


def revoke(sensor_id: str, now: float | None = None) -> dict:
    """Revoke the sensor's credential and commit: from then on its key is answered 4.01."""
    credential = active(sensor_id)
    if credential is None:
        raise CredentialError(f"sensor {sensor_id} has no active credential", 404)
    _revoke(credential, time.time() if now is None else now)
    db.session.commit()
    return describe(credential)


def active(sensor_id: str) -> SensorCredential | None:
    """The sensor's credential in force, if any."""
    return db.session.scalar(
        select(SensorCredential).where(SensorCredential.sensor_id == sensor_id, SensorCredential.revoked_at.is_(None))
    )


def holders(bays: list[str]) -> dict[str, str]:
    """{bay: the sensor whose credential in force holds it} for those of the bays that are held."""
    return dict(db.session.execute(
        select(CredentialBay.bay_id, SensorCredential.sensor_id)
        .join(SensorCredential, SensorCredential.id == CredentialBay.credential_id)
        .where(CredentialBay.bay_id.in_(bays), SensorCredential.revoked_at.is_(None))
    ).all())


def listing(include_revoked: bool = False) -> list[dict]:
    """Every credential in force (and the revoked ones if asked), by sensor id; never a secret."""
    query = select(SensorCredential).order_by(SensorCredential.sensor_id, SensorCredential.id)
    if not include_revoked:
        query = query.where(SensorCredential.revoked_at.is_(None))
    return [describe(c) for c in db.session.scalars(query)]


def describe(credential: SensorCredential) -> dict:
    """A credential without its secret: what listings and logs may show."""
    return {
        "sensor_id": credential.sensor_id,
        "key_id": credential.kid.hex(),
        "bays": [b.bay_id for b in credential.bays],
        "created_at": iso_utc(credential.created_at),
        "revoked_at": iso_utc(credential.revoked_at),
    }


def _revoke(credential: SensorCredential, now: float) -> None:
    """Mark revoked and wipe the secret (nobody needs it any more)."""
    credential.revoked_at = now
    credential.secret = None


def _check(wanted: dict[str, list[str]]) -> None:
    """Each sensor id's form; at least one bay each, every bay known and claimed by one sensor."""
    claimed: dict[str, str] = {}
    for sensor_id, bays in wanted.items():
        if not is_id(sensor_id):
            raise CredentialError(f"sensor id: {ID_ERROR}")
        if not bays:
            raise CredentialError("give at least one bay the sensor reports (--bay)")
        for bay in bays:
            if claimed.setdefault(bay, sensor_id) != sensor_id:
                raise CredentialError(f"bay {bay} given to two sensors: {claimed[bay]} and {sensor_id}", 409)
    known = set(db.session.scalars(select(Bay.id).where(Bay.id.in_(claimed))))
    missing = [bay for bay in claimed if bay not in known]
    if missing:
        # A body naming a bay the city does not have is bad request data (as in a lot import), not a
        # missing resource of the URL.
        raise CredentialError(f"unknown bay: {', '.join(sorted(missing))}")


def _check_bays_free(wanted: dict[str, list[str]]) -> None:
    """A bay speaks through one sensor: refuse bays another sensor's credential holds."""
    held = holders([bay for bays in wanted.values() for bay in bays])
    taken = sorted((bay, sensor) for bay, sensor in held.items() if sensor not in wanted)
    if taken:
        shown = ", ".join(f"{bay} (sensor {sensor})" for bay, sensor in taken[:10])
        raise CredentialError(f"bay already bound to another sensor: {shown}; revoke that first", 409)
