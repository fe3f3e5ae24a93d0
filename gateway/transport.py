"""The CoAP-over-UDP transport of the gateway, set up where aiocoap's defaults do not suit it,
and the fence around aiocoap's internals: every private name of aiocoap the gateway uses
(underscore attributes, internal modules) is used here and nowhere else, and each is listed in
`AIOCOAP_INTERNALS`, which tests/test_aiocoap_fence.py checks against the installed aiocoap.
pyproject.toml pins aiocoap to the release these were read from. (Over 400 lines on purpose:
the fence is worth only as long as it is one module.)

This module owns the three aiocoap 0.4 transport defaults a busy gateway must not keep
(docs/sensors.md, "For operators"): the duplicate-detection window (`SensorTuning`,
`DEDUP_WINDOW`) and the message manager that keeps that cache small (`SensorMessageManager`),
the socket receive buffer (`RECEIVE_BUFFER`) and the read size per datagram (`READ_SIZE`); the
transport that counts datagrams which are not CoAP instead of logging each (`SensorUDP6`,
`MalformedInput`); and one per-request cost of aiocoap's Context that a server does not need
(`SensorContext`) and of its Site (`GatewaySite`); the peer's host for block-wise limits
(`peer_host`), the OSCORE nonce and AAD of an answer that reuses the request's nonce
(`reused_nonce_and_aad`), and the internal names others need (`OSCOREAddress`, `Link`,
`LinkFormat`).
`_server_context` binds a UDP server context with them and `_tune_transport` applies the socket
settings. No resources, no database: `gateway.server` hands it a Site.
"""
from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import socket
import time
from collections import deque
from typing import NamedTuple

import aiocoap
from aiocoap import CON, NON, RST, Message, oscore, resource
from aiocoap.numbers.codes import Code
from aiocoap.message import Direction
from aiocoap.messagemanager import MessageManager
from aiocoap.numbers import TransportTuning
from aiocoap.pipe import error_to_message, run_driving_pipe
from aiocoap.tokenmanager import TokenManager
from aiocoap.transports.oscore import OSCOREAddress
from aiocoap.transports.udp6 import MessageInterfaceUDP6, UDP6EndpointAddress
from aiocoap.util import hostportsplit
from aiocoap.util.linkformat import Link, LinkFormat

__all__ = [
    "AIOCOAP_INTERNALS", "GatewaySite", "Link", "LinkFormat", "OSCOREAddress", "SensorContext",
    "SensorMessageManager", "SensorUDP6", "missing_internals", "peer_host", "reused_nonce_and_aad",
]

log = logging.getLogger("parking.gateway")

# aiocoap reads 4,096 bytes per datagram and silently drops the rest, which would turn a large
# request into a misleading 4.00. This is more than any UDP datagram can carry, so none is cut.
READ_SIZE = 65_536
# Bursts of sensors reporting at once (a train arriving at a P+R lot) must queue in the kernel,
# not be dropped by it; the default (~208 KiB) holds only a few hundred datagrams.
RECEIVE_BUFFER = 4 * 1024 * 1024


class SensorTuning(TransportTuning):
    """RFC 7252 timing for our sensors: aiocoap's defaults except MAX_LATENCY (see SensorMessageManager).

    EXCHANGE_LIFETIME, how long a message must be remembered to recognise its retransmissions,
    is 247 s with RFC 7252's internet-wide MAX_LATENCY of 100 s. A city's sensor network delivers
    a datagram within seconds, so MAX_LATENCY = 10 s; the RFC formula then gives 45 s
    (MAX_TRANSMIT_SPAN: a sender's last retransmission) + 2 × 10 s + 2 s = 67 s. A retransmission
    is still recognised for as long as a sensor can send one; one delayed beyond that is stored
    once anyway, by parking.ingest's seq / ts de-duplication.
    """

    MAX_LATENCY = 10.0


# At most one log line per this many seconds about datagrams that are not CoAP (a fuzzer, a flood).
MALFORMED_LOG_INTERVAL = 60.0

DEDUP_WINDOW = SensorTuning().EXCHANGE_LIFETIME  # 67 s
DEDUP_SWEEP = 1.0  # seconds between sweeps of expired duplicate-detection entries


class SensorMessageManager(MessageManager):
    """aiocoap's CoAP-over-UDP message layer, with a duplicate cache that stays small.

    aiocoap remembers every request for EXCHANGE_LIFETIME (247 s) with its answer (a Message,
    with the request it answered), keyed by the peer's address object, and a timer of its own:
    about 2.7 KB and 20 objects for the garbage collector per request, so memory and collection
    pauses grow with the load. Here the window is SensorTuning's (67 s); an entry is keyed by
    the peer's socket address (as aiocoap compares addresses) and message ID and holds the answer
    as the bytes that were sent, so neither key nor value is an object the garbage collector has
    to scan (a full collection over ~100,000 entries of Message objects paused the loop for
    100–230 ms, several times a minute at 1,600 requests/s); entries expire in arrival order
    from one queue swept every second instead of one timer each. Duplicates are recognised
    exactly as before within the window: same peer and message ID, the same answer resent byte
    for byte.
    """

    def __init__(self, token_manager: TokenManager, window: float):
        super().__init__(token_manager)
        self.window = window
        self._arrivals: deque[tuple[float, tuple]] = deque()
        self._sweep_every = min(DEDUP_SWEEP, window / 2)
        self._sweeper = self.loop.call_later(self._sweep_every, self._sweep)

    @staticmethod
    def _key(message) -> tuple:
        """(peer, message ID): the peer as aiocoap's udp6 compares it, its socket address less
        the scope id, a tuple of plain values the garbage collector stops tracking."""
        sockaddr = getattr(message.remote, "sockaddr", None)
        return (message.remote if sockaddr is None else sockaddr[:-1], message.mid)

    def _deduplicate_message(self, message):
        """True for a duplicate (its remembered answer is sent again); remembers a new message."""
        key = self._key(message)
        if key not in self._recent_messages:
            self._recent_messages[key] = None
            self._arrivals.append((self.loop.time() + self.window, key))
            return False
        answer = self._recent_messages[key]
        if message.mtype is not CON:
            self.log.info("Duplicate NON, ACK or RST received")
        elif answer is None:
            self.log.info("Duplicate CON received, no response to send yet")
        else:
            self.log.info("Duplicate CON received, sending old response again")
            again = Message.decode(answer, message.remote.as_response_address())
            again.direction = Direction.OUTGOING  # decode() marks it incoming
            self._send_via_transport(again)
        return True

    def _store_response_for_duplicates(self, message):
        """Remember an answer for resending, as the bytes that go on the wire."""
        key = self._key(message)
        if key in self._recent_messages:
            self._recent_messages[key] = message.encode()

    def _sweep(self) -> None:
        """Forget the messages older than the window."""
        now, arrivals = self.loop.time(), self._arrivals
        while arrivals and arrivals[0][0] <= now:
            self._recent_messages.pop(arrivals.popleft()[1], None)
        self._sweeper = self.loop.call_later(self._sweep_every, self._sweep)

    async def shutdown(self):
        """Stop sweeping, then shut down as aiocoap does."""
        self._sweeper.cancel()
        await super().shutdown()

    @property
    def dedup_entries(self) -> int:
        """Messages currently remembered for duplicate detection."""
        return len(self._recent_messages)

    @property
    def malformed(self) -> int:
        """Datagrams received that were not CoAP messages (SensorUDP6), since start."""
        interface = getattr(self, "message_interface", None)
        return interface.malformed.total if isinstance(interface, SensorUDP6) else 0


class MalformedInput:
    """Datagrams that are not CoAP messages: counted, and logged as one summary line per interval.

    aiocoap logs a WARNING for each one, and lets some (an option that is not UTF-8 where text is
    due) escape as a traceback from the event loop: a few lines of log per datagram, so a flood of
    junk fills the disk. Here each one costs a count; `total` is what /healthz and the metrics show.
    """

    def __init__(self, interval: float = MALFORMED_LOG_INTERVAL):
        self.interval = interval
        self.total = 0
        self._unlogged = 0
        self._next_line = 0.0

    def note(self, address, exc: Exception) -> None:
        """Count one; log a line when the last one is `interval` seconds old (with what came since)."""
        self.total += 1
        self._unlogged += 1
        now = time.monotonic()
        if now >= self._next_line:
            log.warning(
                "ignored %d datagram(s) that are not valid CoAP (latest from %s: %s); %d since start; "
                "at most one such line per %.0f s", self._unlogged, _peer(address), type(exc).__name__,
                self.total, self.interval,
            )
            self._unlogged = 0
            self._next_line = now + self.interval


class RateLimit(logging.Filter):
    """At most one record per message template per `interval` seconds; the next one says how many
    were left out. On aiocoap's logger, whose per-message warnings a peer can trigger at will."""

    def __init__(self, interval: float = MALFORMED_LOG_INTERVAL):
        super().__init__()
        self.interval = interval
        self._next: dict[str, float] = {}
        self._left_out: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """True for a record to log (its text noting how many like it were left out)."""
        key, now = str(record.msg), time.monotonic()
        if now < self._next.get(key, 0.0):
            self._left_out[key] = self._left_out.get(key, 0) + 1
            return False
        if len(self._next) > 1000:  # templates are aiocoap's, a few dozen; never let it grow
            self._next.clear()
        self._next[key] = now + self.interval
        left_out = self._left_out.pop(key, 0)
        if left_out:
            record.msg = f"{record.msg} ({left_out} more like it in the last {self.interval:.0f} s not logged)"
        return True


def limit_aiocoap_log(logger: logging.Logger) -> None:
    """Put one RateLimit on aiocoap's logger (once, however many gateways a process starts)."""
    if not any(isinstance(f, RateLimit) for f in logger.filters):
        logger.addFilter(RateLimit())


def _peer(address) -> str:
    """A socket address as host:port, for the log."""
    host, port = str(address[0]), address[1]
    host = host.removeprefix("::ffff:")  # an IPv4 peer of the dual-stack socket
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class SensorUDP6(MessageInterfaceUDP6):
    """aiocoap's CoAP-over-UDP transport, with datagrams that do not parse counted by `malformed`.

    Everything else is aiocoap's `datagram_msg_received`: the message is decoded with the packet
    information it came with and handed to the message manager.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.malformed = MalformedInput()

    def datagram_msg_received(self, data, ancdata, flags, address):
        """Decode one datagram and dispatch it; one that is not CoAP is counted and dropped."""
        pktinfo = None
        for level, kind, value in ancdata:
            if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
                pktinfo = value
        try:
            message = Message.decode(data, UDP6EndpointAddress(address, self, pktinfo=pktinfo))
        # aiocoap raises UnparsableMessage for bad framing, and whatever its option decoders raise
        # for bad option values (UnicodeDecodeError for a Uri-Path that is not UTF-8, ValueError).
        except Exception as exc:  # noqa: BLE001 - untrusted bytes
            self.malformed.note(address, exc)
            return
        if not _fits(message):
            self.malformed.note(address, TypeMismatch())
            return
        message.direction = Direction.INCOMING
        self._ctx.dispatch_message(message)


class TypeMismatch(Exception):
    """A code with a message type it cannot have (a request as ACK, an empty NON, a 7.xx)."""


def _fits(message) -> bool:
    """Whether the message manager has a use for this code and type; the others it would warn
    about, one log line each ("those don't fit"), and drop."""
    code, mtype = message.code, message.mtype
    if code is Code.EMPTY:
        return mtype is not NON
    if code.is_request():
        return mtype in (CON, NON)
    return code.is_response() and mtype is not RST


class SensorContext(aiocoap.Context):
    """aiocoap's Context, minus the name it gives each request's rendering task.

    aiocoap 0.4 names that task "Rendering for <repr of the request>", and the repr formats the
    peer's address through `ipaddress` (three parses and an interface-name look-up per request):
    about a sixth of the event loop's CPU per POST in the gateway's profile, for a name nobody
    reads. Everything else is aiocoap's `render_to_pipe` as it is.
    """

    def render_to_pipe(self, pipe):
        """Run the site's rendering for one request, errors turned into answers (as aiocoap does)."""
        run_driving_pipe(error_to_message(pipe, self.log), self._render_to_pipe(pipe), name="gateway: render")


async def _server_context(site, host: str, port: int, window: float) -> tuple[aiocoap.Context, SensorMessageManager]:
    """A server context on UDP: the udp6 branch of aiocoap's create_server_context, with our manager."""
    context = SensorContext(loop=asyncio.get_running_loop(), serversite=site, loggername="parking.gateway.aiocoap")
    tokens = TokenManager(context)
    manager = SensorMessageManager(tokens, window)
    try:
        manager.message_interface = await SensorUDP6.create_server_transport_endpoint(
            manager, log=context.log, loop=context.loop, bind=(host, port), multicast=[]
        )
    except BaseException:
        manager._sweeper.cancel()
        raise
    tokens.token_interface = manager
    context.request_interfaces.append(tokens)
    return context, manager


def _tune_transport(manager: SensorMessageManager) -> tuple[int, tuple]:
    """Raise the receive buffer and the read size of the socket; returns (buffer granted, address).

    The socket receive buffer is raised to RECEIVE_BUFFER, so bursts are not dropped, and the
    transport reads READ_SIZE bytes per datagram instead of 4,096, so no request is cut short
    silently (an oversize one is then answered 4.13 by OccupancyResource). Attributes of
    aiocoap 0.4's udp6 transport; tests/test_gateway.py checks both effects.
    """
    transport = manager.message_interface.transport
    sock = transport.get_extra_info("socket")
    granted = _raise_receive_buffer(sock)
    transport.max_size = READ_SIZE
    return granted, sock.getsockname()


def _raise_receive_buffer(sock: socket.socket) -> int:
    """Ask for RECEIVE_BUFFER bytes; return what the kernel granted (it doubles the request)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    except OSError as exc:
        log.warning("could not raise the socket receive buffer: %s", exc)
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    if granted < RECEIVE_BUFFER:
        # Linux caps SO_RCVBUF at net.core.rmem_max; SO_RCVBUFFORCE may pass it with CAP_NET_ADMIN.
        force = getattr(socket, "SO_RCVBUFFORCE", None)
        if force is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, force, RECEIVE_BUFFER)
                granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            except OSError:
                pass
    if granted < RECEIVE_BUFFER:
        log.warning(
            "socket receive buffer is %d KiB, asked for %d KiB: bursts may be dropped; raise it "
            "with `sysctl -w net.core.rmem_max=%d`", granted // 1024, RECEIVE_BUFFER // 1024, RECEIVE_BUFFER,
        )
    return granted


class GatewaySite(resource.Site):
    """aiocoap's Site, minus a per-request cost its fixed-path resources here do not need."""

    def _find_child_and_pathstripped_message(self, request):
        """The resource at exactly this path gets the request as it came; others as in aiocoap."""
        # aiocoap copies each request (deep-copying its options) and rebuilds its full URI before
        # handing it on: about a third of the event loop's CPU per POST. /occupancy and
        # /.well-known/core read neither the copy nor the URI; /lots/<id> still gets both.
        child = self._resources.get(request.opt.uri_path)
        if child is not None:
            return child, request
        return super()._find_child_and_pathstripped_message(request)


def peer_host(remote) -> str:
    """The sending host of a request's remote, without its port."""
    return hostportsplit(remote.hostinfo)[0]


def reused_nonce_and_aad(context, outer, request_id, kid: bytes, piv: bytes) -> tuple[bytes, bytes]:
    """(nonce, AAD) to encrypt an answer under the request's nonce (RFC 8613 §8.3), computed by
    aiocoap's own helpers of the security context `context`, as its `protect` does."""
    nonce = context._construct_nonce(piv, kid, context.alg_aead)
    external_aad = context._extract_external_aad(outer, request_id, local_is_sender=True)
    return nonce, oscore.SymmetricEncryptionAlgorithm._build_encrypt0_structure({}, external_aad)


# --------------------------------------------------------------------------- the canary


class Internal(NamedTuple):
    """A private part of aiocoap this module relies on: `name` in `module` (dotted for a class
    member); with `set_in_init`, an instance attribute that the class's __init__ sets."""

    module: str
    name: str
    set_in_init: str | None = None

    def __str__(self) -> str:
        return f"{self.module}.{self.name}" + (f".{self.set_in_init}" if self.set_in_init else "")


AIOCOAP_INTERNALS = (
    # SensorMessageManager: the duplicate cache (overridden and read), the send it resends with.
    Internal("aiocoap.messagemanager", "MessageManager._deduplicate_message"),
    Internal("aiocoap.messagemanager", "MessageManager._store_response_for_duplicates"),
    Internal("aiocoap.messagemanager", "MessageManager._send_via_transport"),
    Internal("aiocoap.messagemanager", "MessageManager", "_recent_messages"),
    Internal("aiocoap.tokenmanager", "TokenManager"),
    # _server_context: the udp6 branch of aiocoap's create_server_context.
    Internal("aiocoap.transports.udp6", "MessageInterfaceUDP6.create_server_transport_endpoint"),
    Internal("aiocoap.transports.udp6", "MessageInterfaceUDP6.datagram_msg_received"),
    Internal("aiocoap.transports.udp6", "MessageInterfaceUDP6", "_ctx"),
    Internal("aiocoap.transports.udp6", "UDP6EndpointAddress"),
    Internal("aiocoap.protocol", "Context", "request_interfaces"),
    # SensorContext: the rendering of one request, without its task name.
    Internal("aiocoap.protocol", "Context._render_to_pipe"),
    Internal("aiocoap.protocol", "Context.render_to_pipe"),
    Internal("aiocoap.pipe", "error_to_message"),
    Internal("aiocoap.pipe", "run_driving_pipe"),
    # GatewaySite: the child look-up it shortcuts and the table it looks in.
    Internal("aiocoap.resource", "Site._find_child_and_pathstripped_message"),
    Internal("aiocoap.resource", "Site", "_resources"),
    # reused_nonce_and_aad (gateway.security.SensorKey.protect).
    Internal("aiocoap.oscore", "SecurityContextUtils._construct_nonce"),
    Internal("aiocoap.oscore", "SecurityContextUtils._extract_external_aad"),
    Internal("aiocoap.oscore", "SymmetricEncryptionAlgorithm._build_encrypt0_structure"),
    Internal("aiocoap.transports.oscore", "OSCOREAddress"),
    # peer_host (gateway.blockwise), /.well-known/core's links (gateway.resources).
    Internal("aiocoap.util", "hostportsplit"),
    Internal("aiocoap.util.linkformat", "Link"),
    Internal("aiocoap.util.linkformat", "LinkFormat"),
)
"""Checked by `missing_internals` (tests/test_aiocoap_fence.py): an aiocoap release that drops
one of these fails that test naming it, instead of the gateway failing at run time, or worse,
an override of a renamed method silently no longer being called."""


def missing_internals(internals=AIOCOAP_INTERNALS) -> list[str]:
    """The internals the installed aiocoap lacks, each named (empty: all present)."""
    missing = []
    for internal in internals:
        try:
            target = importlib.import_module(internal.module)
            for part in internal.name.split("."):
                target = getattr(target, part)
        except (ImportError, AttributeError):
            missing.append(str(internal))
            continue
        if internal.set_in_init is not None:
            try:
                source = inspect.getsource(target.__init__)
            except (OSError, TypeError):
                source = ""
            if f"self.{internal.set_in_init} =" not in source and f"self.{internal.set_in_init}:" not in source:
                missing.append(str(internal))
    return missing
