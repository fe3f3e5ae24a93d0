"""The gateway's CoAP resources and the Site that serves them (contract §3; docs/sensors.md).

This module owns, one Resource subclass per path: `POST /occupancy` (`OccupancyResource`, with
its size limit; its Block1 blocks are joined by `gateway.blockwise`; and who may send:
OSCORE-protected requests only, each for its sensor's bays, unless PARKING_SENSOR_AUTH=none),
`GET /lots/<lot id>` with Observe (`LotResource`, `lot_message`) and `/.well-known/core`
(`DiscoveryResource`); and `build_site`. The errors they answer with are in `gateway.errors`. The
resources reach storage only through the gateway they are given (`GatewayPort`: its writer and
`read_states`), never the database directly.
"""
from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from typing import Protocol

import aiocoap
import cbor2
from aiocoap import error, resource
from aiocoap.numbers.codes import Code
from sqlalchemy.exc import SQLAlchemyError

from parking.current import LotState
from parking.timefmt import iso_utc
from parking.validation import is_id

from . import payloads
from .blockwise import Block1Assembler, Whole
from .errors import ForeignBay, OscoreRequired, TooLarge, Unavailable
from .security import request_seqno, sender_key
from .transport import GatewaySite, Link, LinkFormat

# --- Limits (stated for sensor makers in docs/sensors.md) --------------------------------------
# A request body (one datagram, or all Block1 blocks together) may be this large: about 200
# readings as JSON. Larger bodies get 4.13 with Size1 saying this number.
MAX_PAYLOAD = 16 * 1024
# Up to this much payload always travels in one datagram (aiocoap and libcoap clients switch to
# Block1 above it); larger single datagrams are accepted up to MAX_PAYLOAD but may be fragmented.
SAFE_DATAGRAM_PAYLOAD = 1024


class GatewayPort(Protocol):
    """What the resources use of the gateway that serves them (`gateway.server.Gateway`)."""

    closing: bool
    inflight: int
    require_oscore: bool  # PARKING_SENSOR_AUTH=oscore: unprotected readings are refused
    writer: object  # its `submit(readings, received_at, key)` returns a future settled after the commit

    def count(self, code: Code) -> None: ...

    def refused(self, reason: str, code: str, sensor: str | None, remote) -> None: ...

    async def read_states(self, lot_ids) -> tuple[float, dict[str, LotState]]: ...


# --- Resources ----------------------------------------------------------------------------------
class OccupancyResource(resource.Resource):
    """POST /occupancy: one reading or a batch, stored whole (2.04 after the commit) or refused whole."""

    rt = "parking.occupancy"
    ct = " ".join(str(c) for c in payloads.CONTENT_FORMATS)

    def __init__(self, gateway: GatewayPort):
        super().__init__()
        self.gateway = gateway
        self._blocks = Block1Assembler()  # bounded, unlike aiocoap's Block1Spool (gateway/blockwise.py)

    async def needs_blockwise_assembly(self, request):
        """No: Block1 is assembled here, where its total size can be capped."""
        return False

    async def render_post(self, request):
        """Check the sender, decode, hand to the writer, answer when committed."""
        self.gateway.inflight += 1
        try:
            key = sender_key(request)
            if key is None and self.gateway.require_oscore:
                self.gateway.refused("unprotected", "4.01", None, request.remote)
                raise OscoreRequired()
            whole = self._assemble(request)
            received_at = time.time()
            readings = payloads.decode(whole.payload, whole.content_format, now=received_at)
            if key is not None:
                _check_bound(readings, key, self.gateway, request.remote)
            if self.gateway.closing:
                raise Unavailable("gateway shutting down")
            await self.gateway.writer.submit(readings, received_at, key, request_seqno(request))
        except error.ConstructionRenderableError as exc:
            self.gateway.count(exc.code)
            raise
        except Exception:
            self.gateway.count(Code.INTERNAL_SERVER_ERROR)  # aiocoap answers 5.00 and logs it; /healthz counts it
            raise
        finally:
            self.gateway.inflight -= 1
        self.gateway.count(Code.CHANGED)
        response = aiocoap.Message(code=Code.CHANGED)
        response.opt.block1 = whole.block1
        return response

    def _assemble(self, request) -> Whole:
        """The whole body: a single datagram as it is, Block1 blocks (RFC 7959) joined up to MAX_PAYLOAD."""
        block1 = request.opt.block1
        end = len(request.payload) if block1 is None else block1.start + len(request.payload)
        announced = request.opt.size1 or 0
        if max(end, announced) > MAX_PAYLOAD:
            self._blocks.discard(request)
            raise TooLarge(max(end, announced), MAX_PAYLOAD)
        return self._blocks.feed(request)


def _check_bound(readings, key, gateway: GatewayPort, remote) -> None:
    """4.03 naming the first bay that is not the sensor's: the whole request is refused."""
    bays = key.bays
    for reading in readings:
        if reading.bay not in bays:
            gateway.refused("foreign_bay", "4.03", key.sensor_id, remote)
            raise ForeignBay(reading.bay, key.sensor_id)


@dataclass(eq=False)
class _Watch:
    """One observation of a lot: the request it renders and the free count it last saw."""

    request: aiocoap.Message
    free: int | None = None


class LotResource(resource.ObservableResource, resource.PathCapable):
    """GET /lots/<lot id>: the lot's counts now; observers are notified when `free` changes."""

    rt = "parking.lot"
    ct = "50 60"

    def __init__(self, gateway: GatewayPort):
        super().__init__()
        self.gateway = gateway
        self.known: list[str] = []  # lot ids for /.well-known/core, as last read
        self.observed: frozenset[str] = frozenset()  # the lots that have observers
        self._watches: dict[str, dict[object, _Watch]] = {}
        self._newest: dict[str, tuple[float, LotState]] = {}  # (read start, counts) per lot

    async def render_get(self, request):
        """The counts as JSON (or CBOR when asked with Accept: 60)."""
        lot_id = _lot_id(request)
        accept = _accepted(request)
        stamp, states = await self.gateway.read_states([lot_id])
        state = states.get(lot_id)
        if state is None:
            raise error.NotFound(f"unknown lot: {lot_id}")
        newest = self._newest.get(lot_id)
        if newest is not None and newest[0] > stamp:
            state = newest[1]  # published while this read was on its way: newer news
        for watch in self._watches.get(lot_id, {}).values():
            if watch.request is request:
                watch.free = state.free
        return lot_message(state, accept)

    async def add_observation(self, request, serverobservation):
        """Remember the observer under its lot; it is dropped when the observation ends."""
        try:
            lot_id = _lot_id(request)
        except error.NotFound:
            lot_id = None
        if lot_id is None or request.code != Code.GET:
            # Nothing to observe: render answers 4.04 / 4.05. aiocoap 0.4 calls the cancellation
            # callback whether or not an observation was accepted, and without one that answer
            # became an AttributeError (5.00); found by the fuzz run (bench/abuse.py).
            serverobservation.accept(lambda: None)
            return
        self._watches.setdefault(lot_id, {})[serverobservation] = _Watch(request)
        serverobservation.accept(functools.partial(self._forget, lot_id, serverobservation))
        self.observed = frozenset(self._watches)

    def _forget(self, lot_id: str, serverobservation) -> None:
        """Drop an ended observation."""
        watches = self._watches.get(lot_id, {})
        watches.pop(serverobservation, None)
        if not watches:
            self._watches.pop(lot_id, None)
        self.observed = frozenset(self._watches)

    def publish(self, stamp: float, states: dict[str, LotState]) -> None:
        """Notify the observers whose lot's free count differs from what they last got."""
        for lot_id, state in states.items():
            # A read that started earlier than the last one published is older news.
            if lot_id in self._newest and stamp < self._newest[lot_id][0]:
                continue
            self._newest[lot_id] = (stamp, state)
            for serverobservation, watch in list(self._watches.get(lot_id, {}).items()):
                # free None: its first answer is still being rendered, and will use this state.
                if watch.free is not None and watch.free != state.free:
                    watch.free = state.free
                    serverobservation.trigger(lot_message(state, _accepted(watch.request)))

    def get_resources_as_linkheader(self):
        """One link per known lot, for /.well-known/core."""
        return LinkFormat([Link("/" + lot_id, rt=self.rt, ct=self.ct, obs=None) for lot_id in self.known])


def _lot_id(request) -> str:
    """The lot id from the path below /lots/; raises 4.04 for anything else."""
    path = request.opt.uri_path
    if len(path) != 1 or not is_id(path[0]):
        raise error.NotFound("unknown lot: " + "/".join(path)[:64])
    return path[0]


def _accepted(request) -> int:
    """The content format the client asked for: JSON unless Accept says CBOR; others are 4.06."""
    accept = request.opt.accept
    if accept is None or int(accept) == payloads.JSON:
        return payloads.JSON
    if int(accept) == payloads.CBOR:
        return payloads.CBOR
    raise error.NotAcceptable("Accept: use 50 (JSON) or 60 (CBOR)")


def lot_message(state: LotState, content_format: int = payloads.JSON) -> aiocoap.Message:
    """A lot's counts as a 2.05 answer (contract §3)."""
    body = {
        "free": state.free,
        "occupied": state.occupied,
        "unknown": state.unknown,
        "total": state.total,
        "updated_at": iso_utc(state.updated_at),
    }
    if content_format == payloads.CBOR:
        payload = cbor2.dumps(body)
    else:
        payload = json.dumps(body, separators=(",", ":")).encode()
    return aiocoap.Message(code=Code.CONTENT, payload=payload, content_format=content_format)


class DiscoveryResource(resource.WKCResource):
    """/.well-known/core (RFC 6690), with the lot list read fresh first."""

    def __init__(self, site: resource.Site, lots: LotResource):
        super().__init__(site.get_resources_as_linkheader, impl_info=None)
        self.lots = lots

    async def render_get(self, request):
        """The links; with the lots last known when the database cannot be read."""
        try:
            _, states = await self.lots.gateway.read_states(None)
        except (error.Error, SQLAlchemyError):
            pass
        else:
            self.lots.known = sorted(states)
        return await super().render_get(request)


def build_site(occupancy: OccupancyResource, lots: LotResource) -> resource.Site:
    """The gateway's resources, /.well-known/core included."""
    site = GatewaySite()
    site.add_resource([".well-known", "core"], DiscoveryResource(site, lots))
    site.add_resource(["occupancy"], occupancy)
    site.add_resource(["lots"], lots)
    return site
