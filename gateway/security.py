"""OSCORE in the gateway (contract §7, RFC 8613): sensors' security contexts and the Site wrapper.

This module owns
- `OscoreContext`: an aiocoap security context built from a credential's material (the
  default algorithms: AES-CCM-16-64-128, HKDF-SHA-256, a 32-entry replay window); the sensor's
  side of it too (`sensor_context`, for the simulator and the benchmark).
- `SensorKey`: the gateway's side, with the sensor's id and bound bays, its replay window
  started from the state stored with the credential; it never sends a sequence number of its
  own (every answer reuses the request's nonce, RFC 8613 §8.3), so there is none to lose.
- `KeyStore`: contexts by key id in a dict; a key id not yet seen is looked up by its unique
  index on a reader thread (never on the event loop), once however many requests wait for it;
  unknown ids are remembered briefly so a flood of them does not become a flood of queries; a
  revoked key is forgotten as soon as the writer reports it.
- `ProtectedSite`: wraps the gateway's Site. A protected request is unprotected with its
  sensor's context (replays refused: 4.01), rendered by the inner Site with the context as its
  remote, and its answer protected; an unprotected one goes to the inner Site as it is, where
  `OccupancyResource` decides whether it is welcome (PARKING_SENSOR_AUTH).

The replay window's durability is the writer's: each request carries its key's window, and the
writer stores the newest with the readings, in their commit (gateway/writer_process.py).
"""
from __future__ import annotations

import asyncio
import logging

import aiocoap
from aiocoap import error, oscore
from aiocoap.numbers.codes import Code
from sqlalchemy import select

from .errors import KeyRevoked, ReplayedElsewhere, Unavailable
from .transport import OSCOREAddress, reused_nonce_and_aad

log = logging.getLogger("parking.gateway")

WINDOW = oscore.DEFAULT_WINDOWSIZE  # 32: how far out of order a sensor's requests may arrive
UNKNOWN_FOR = 2.0  # seconds an unknown key id is answered 4.01 without asking the database again
UNKNOWN_LIMIT = 10_000  # unknown key ids remembered at most (memory bounded under a flood)
# Key ids being looked up at once; beyond that 5.03 (the database is slow). A restarted gateway
# meets every sensor anew, so this is a few seconds of a large city's new key ids.
LOADING_LIMIT = 4_096
BATCH_LIMIT = 500  # key ids per query


class Refused(error.ConstructionRenderableError):
    """An answer the wrapper sends unprotected (the sender may not hold the context), with a reason
    for the counters: `unknown_key`, `replay`, `undecodable`, `decryption_failed`. (A key found
    revoked by the writer is `gateway.errors.KeyRevoked`, answered unprotected too.)"""

    def __init__(self, code: Code, reason: str, text: str, sensor: str | None = None):
        super().__init__(text)
        self.code = code
        self.reason = reason
        self.sensor = sensor  # the sensor whose key it was, when the key is known

    def to_message(self):
        """The answer; Max-Age 0 so that no proxy keeps it."""
        message = super().to_message()
        message.opt.max_age = 0
        return message


class OscoreContext(oscore.CanProtect, oscore.CanUnprotect, oscore.SecurityContextUtils):
    """An OSCORE security context from its material: aiocoap's default algorithms, no ID Context."""

    alg_aead = oscore.algorithms[oscore.DEFAULT_ALGORITHM]
    hashfun = oscore.hashfunctions[oscore.DEFAULT_HASHFUNCTION]
    id_context = None
    echo_recovery = None  # the window is stored, never lost: no RFC 8613 B.1.2 recovery round

    def __init__(self, sender_id: bytes, recipient_id: bytes, secret: bytes, salt: bytes,
                 replay: tuple[int, int] = (0, 0)):
        self.sender_id = sender_id
        self.recipient_id = recipient_id
        self.derive_keys(salt, secret)
        self.sender_sequence_number = 0
        self.recipient_replay_window = oscore.ReplayWindow(WINDOW, lambda: None)
        self.recipient_replay_window.initialize_from_persisted({"index": replay[0], "bitfield": replay[1]})

    def post_seqnoincrease(self) -> None:
        """Nothing to store: see the subclasses' use of sequence numbers."""

    @property
    def replay_state(self) -> tuple[int, int]:
        """The replay window as (index, bitfield), what the credential row stores."""
        state = self.recipient_replay_window.persist()
        return state["index"], state["bitfield"]

    def __repr__(self) -> str:  # never the keys: aiocoap puts contexts into log lines
        return f"<{type(self).__name__} sender {self.sender_id.hex()} recipient {self.recipient_id.hex()}>"


def sensor_context(settings: dict) -> OscoreContext:
    """The sensor's side from the settings `credentials add` prints (sequence numbers from 0:
    a fresh credential's)."""
    return OscoreContext(
        bytes.fromhex(settings["sender-id_hex"]), bytes.fromhex(settings["recipient-id_hex"]),
        bytes.fromhex(settings["secret_hex"]), bytes.fromhex(settings["salt_hex"]),
    )


class SensorKey(OscoreContext):
    """The gateway's side of one sensor's context: which credential, which sensor, which bays."""

    def __init__(self, credential_id: int, sensor_id: str, bays: frozenset[str], *, kid: bytes,
                 gateway_id: bytes, secret: bytes, salt: bytes, replay: tuple[int, int]):
        super().__init__(gateway_id, kid, secret, salt, replay)
        self.credential_id = credential_id
        self.sensor_id = sensor_id
        self.bays = bays

    def new_sequence_number(self):
        """Refused: the gateway answers with the request's nonce and keeps no sequence of its own."""
        raise oscore.ContextUnavailable("the gateway sends no OSCORE message with a sequence number of its own")

    def protect(self, message, request_id=None, *, kid_context=True):
        """An answer protected with the request's nonce (RFC 8613 §8.3), as aiocoap's `protect`
        does it, without its copy of the message.

        aiocoap copies the answer (deep-copying its options) only to split off the outer
        options; an answer's options are all inner, so the plaintext is the message as it is.
        That copy was the largest cost of a protected request on the event loop. Anything else
        (a request, a notification, a nonce that may not be reused) is aiocoap's own path.
        """
        reusable = None
        if request_id is not None and message.opt.observe is None and request_id.can_reuse_nonce:
            reusable = request_id.get_reusable_kid_and_piv()
        if reusable is None or reusable[0] is None:
            return super().protect(message, request_id, kid_context=kid_context)
        kid, piv = reusable
        outer = aiocoap.Message(code=request_id.code_style.response)
        outer.transport_tuning = message.transport_tuning
        outer.opt.oscore = b""  # no Partial IV, no kid: the request's nonce, as RFC 8613 §6.1 allows
        plaintext = bytes([message.code]) + message.opt.encode()
        if message.payload:
            plaintext += b"\xff" + message.payload
        nonce, aad = reused_nonce_and_aad(self, outer, request_id, kid, piv)
        outer.payload = self.alg_aead.encrypt(plaintext, aad, self.sender_key, nonce)
        return outer, request_id


class KeyStore:
    """The gateway's sensor contexts by key id; loads from the database on a reader thread.

    Key ids not yet in memory are looked up in batches, one query for all that arrived while the
    previous batch was read: after a restart every one of 10,000 sensors is new at once, and a
    query per key id kept the reader threads (shared with the lot reads) busy for seconds.
    """

    def __init__(self, app, executor):
        self.app = app
        self.executor = executor
        self.keys: dict[bytes, SensorKey] = {}
        self._unknown: dict[bytes, float] = {}  # key id -> loop time until which it is unknown
        self._loading: dict[bytes, asyncio.Future] = {}  # key ids asked for, settled by their batch
        self._waiting: list[bytes] = []  # of those, the ones the next batch reads
        self._reading = False  # a batch is being read

    async def find(self, kid: bytes) -> SensorKey | None:
        """The key's context, or None for an unknown or revoked key (event loop only)."""
        key = self.keys.get(kid)
        if key is not None:
            return key
        loop = asyncio.get_running_loop()
        if self._unknown.get(kid, 0.0) > loop.time():
            return None
        pending = self._loading.get(kid)
        if pending is None:
            if len(self._loading) >= LOADING_LIMIT:
                raise Unavailable("gateway busy: too many unknown keys at once", 1)
            pending = self._loading[kid] = loop.create_future()
            self._waiting.append(kid)
            if not self._reading:
                self._read_batch()
        await asyncio.shield(pending)
        return self.keys.get(kid)

    def _read_batch(self) -> None:
        """Start reading the key ids waiting (at most BATCH_LIMIT), on a reader thread (on the loop)."""
        kids, self._waiting = self._waiting[:BATCH_LIMIT], self._waiting[BATCH_LIMIT:]
        self._reading = True
        future = asyncio.get_running_loop().run_in_executor(self.executor, self._load, kids)
        future.add_done_callback(lambda done: self._loaded(kids, done))

    def _loaded(self, kids: list[bytes], future: asyncio.Future) -> None:
        """Keep what the reader thread found, then wake those who asked (on the loop): every
        waiter of a key id finds the one context in the dict, so they share one replay window."""
        self._reading = False
        failure = None if future.cancelled() else future.exception()
        found = {} if future.cancelled() or failure is not None else future.result()
        for kid in kids:
            waiter = self._loading.pop(kid)
            if failure is not None or future.cancelled():
                if not waiter.done():
                    waiter.set_exception(failure or Unavailable())
                continue
            key = found.get(kid)
            if key is None:
                self._remember_unknown(kid)
            else:
                self.keys.setdefault(kid, key)
            if not waiter.done():
                waiter.set_result(None)
        if self._waiting:
            self._read_batch()

    def forget(self, kid: bytes) -> None:
        """Drop a revoked key: its next request is looked up again (and found revoked)."""
        self.keys.pop(kid, None)
        self._remember_unknown(kid)

    def _remember_unknown(self, kid: bytes) -> None:
        if len(self._unknown) >= UNKNOWN_LIMIT:
            self._unknown.clear()
        self._unknown[kid] = asyncio.get_running_loop().time() + UNKNOWN_FOR

    def _load(self, kids: list[bytes]) -> dict[bytes, SensorKey]:
        """The credentials in force with these key ids, by their unique index: two queries for
        the whole batch (reader thread)."""
        from parking.extensions import db
        from parking.models import CredentialBay

        with self.app.app_context():
            rows = db.session.execute(key_query(kids)).all()
            bays: dict[int, set[str]] = {row.id: set() for row in rows}
            if rows:
                for credential_id, bay_id in db.session.execute(
                        select(CredentialBay.credential_id, CredentialBay.bay_id)
                        .where(CredentialBay.credential_id.in_(list(bays)))):
                    bays[credential_id].add(bay_id)
        return {row.kid: SensorKey(row.id, row.sensor_id, frozenset(bays[row.id]), kid=row.kid,
                                   gateway_id=row.gateway_id, secret=row.secret, salt=row.salt,
                                   replay=(row.replay_index, row.replay_bits)) for row in rows}


def key_query(kids: list[bytes]):
    """The SELECT finding the credentials in force with these key ids (unique index on kid)."""
    from parking.models import SensorCredential as C

    return select(C.id, C.kid, C.sensor_id, C.gateway_id, C.secret, C.salt, C.replay_index, C.replay_bits).where(
        C.kid.in_(kids), C.revoked_at.is_(None))


class ProtectedSite:
    """The gateway's Site behind OSCORE: protected requests in, protected answers out."""

    def __init__(self, inner, gateway, keys: KeyStore):
        # gateway: gateway.server.Gateway (its count, refused); not imported, so that the
        # server module may import this one.
        self.inner = inner
        self.gateway = gateway
        self.keys = keys

    def get_resources_as_linkheader(self):
        """The inner Site's links (/.well-known/core is served unprotected)."""
        return self.inner.get_resources_as_linkheader()

    async def render_to_pipe(self, pipe) -> None:
        """Unprotected: the inner Site as it is. Protected: unprotect, render, protect the answer."""
        request = pipe.request
        if request.opt.oscore is None:
            await self.inner.render_to_pipe(pipe)
            return
        try:
            key, plain, request_id = await self._unprotect(request)
        except Refused as exc:
            self.gateway.count(exc.code)
            self.gateway.refused(exc.reason, exc.code.dotted, exc.sensor, request.remote)
            raise
        try:
            response = await self.inner.render(plain)
        except KeyRevoked:  # answered unprotected, like any unknown key (the resource counted it)
            self.keys.forget(key.recipient_id)
            self.gateway.refused("revoked", "4.01", key.sensor_id, request.remote)
            raise
        except ReplayedElsewhere:  # answered unprotected, like the replays this process sees itself
            self.gateway.refused("replay", "4.01", key.sensor_id, request.remote)
            raise
        except error.RenderableError as exc:
            response = exc.to_message()
        except Exception:  # noqa: BLE001 - any other failure is a 5.00, protected like any answer
            log.exception("rendering a protected request failed")
            response = aiocoap.Message(code=Code.INTERNAL_SERVER_ERROR)
        protected, _ = key.protect(response, request_id)
        pipe.add_response(protected, is_last=True)

    async def _unprotect(self, request):
        """(context, plain request, request id) of a protected request, or a Refused to answer."""
        try:
            bag = oscore.verify_start(request)
        except oscore.DecodeError:
            raise Refused(Code.BAD_OPTION, "undecodable", "Failed to decode COSE") from None
        kid = bag.get(oscore.COSE_KID)
        key = None if kid is None or oscore.COSE_KID_CONTEXT in bag else await self.keys.find(kid)
        if key is None:
            raise Refused(Code.UNAUTHORIZED, "unknown_key", "unknown or revoked key")
        try:
            plain, request_id = key.unprotect(request)
        except oscore.ReplayError:
            raise Refused(Code.UNAUTHORIZED, "replay", "Replay detected", key.sensor_id) from None
        except oscore.DecodeError:
            raise Refused(Code.BAD_OPTION, "undecodable", "Failed to decode COSE", key.sensor_id) from None
        except oscore.ProtectionInvalid:
            raise Refused(Code.BAD_REQUEST, "decryption_failed", "Decryption failed", key.sensor_id) from None
        plain.remote = OSCOREAddress(key, request.remote)
        # The writer checks it against the window stored in the database (`take_seqno`):
        # another gateway process may have let the same sequence number through already.
        plain.oscore_seqno = int.from_bytes(request_id.partial_iv, "big")
        return key, plain, request_id


def request_seqno(request) -> int | None:
    """The OSCORE sequence number a protected request came with, None when it came unprotected."""
    return getattr(request, "oscore_seqno", None)


def take_seqno(window: tuple[int, int], seqno: int) -> tuple[int, int] | None:
    """The window after letting `seqno` through, or None when it was seen (or is too old)."""
    replay = oscore.ReplayWindow(WINDOW, lambda: None)
    replay.initialize_from_persisted({"index": window[0], "bitfield": window[1]})
    if not replay.is_valid(seqno):
        return None
    replay.strike_out(seqno)
    state = replay.persist()
    return state["index"], state["bitfield"]


def sender_key(request) -> SensorKey | None:
    """The sensor context a request came through, None when it came unprotected."""
    remote = request.remote
    return remote.security_context if isinstance(remote, OSCOREAddress) else None
