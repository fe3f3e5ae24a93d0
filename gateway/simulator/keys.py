"""The simulated sensors' credentials (contract §7): one OSCORE context per simulated bay sensor.

`provision(app, bays)` makes a credential `sim-<bay id>` for every bay that no other sensor holds
(replacing the simulator's own from an earlier run), all in one commit, and returns each bay's
sensor-side context; `protect` / `answer_of` wrap one request and its answer with it, as a
sensor's firmware would. Fresh credentials at every start: a new key whose sequence numbers start
at 0, so nothing sent in an earlier run can be taken for a replay of this one, and the simulator
keeps no counters between runs (a real sensor persists its counter instead; docs/sensors.md).
"""
from __future__ import annotations

import logging

from gateway.security import OscoreContext, sensor_context

log = logging.getLogger("gateway.simulator")

SENSOR_PREFIX = "sim-"


def sensor_id(bay: str) -> str:
    """The simulated sensor of a bay (ids are at most 64 characters, like bay ids)."""
    return (SENSOR_PREFIX + bay)[:64]


def provision(app, bays: list[str]) -> dict[str, OscoreContext]:
    """{bay: the sensor's context} for every bay the simulator may speak for (one commit)."""
    from parking.credentials import add_many, holders
    from parking.extensions import db

    with app.app_context():
        held = {bay: sensor for bay, sensor in holders(bays).items() if sensor != sensor_id(bay)}
        free = [bay for bay in bays if bay not in held]
        made = add_many({sensor_id(bay): [bay] for bay in free}, replace=True) if free else {}
        db.session.remove()
    if held:
        example = ", ".join(f"{bay} ({sensor})" for bay, sensor in sorted(held.items())[:3])
        log.warning("simulator: %d bays have sensors of their own and are not simulated: %s", len(held), example)
    log.info("simulator: %d sensors provisioned, each with its own OSCORE key", len(free))
    return {bay: sensor_context(made[sensor_id(bay)]["settings"]) for bay in free}


def protect(context: OscoreContext, request):
    """(the protected request to send, what `answer_of` needs to read its answer)."""
    outer, request_id = context.protect(request)
    outer.remote = request.remote
    return outer, request_id


def answer_of(context: OscoreContext, response, request_id):
    """The gateway's answer: unprotected from inside OSCORE, or as it came (an unprotected 4.01)."""
    if response.opt.oscore is None:
        return response
    plain, _ = context.unprotect(response, request_id)
    return plain
