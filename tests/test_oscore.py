"""Sensor credentials and OSCORE (contract §7), as deployed (PARKING_SENSOR_AUTH=oscore): real
aiocoap OSCORE clients, holding the settings `credentials add` printed, against the real gateway
over loopback, on SQLite and PostgreSQL; the CLI and the admin API; no secret in any log."""
from __future__ import annotations

import asyncio
import json
import logging
import secrets
import shutil
import threading
import time

import aiocoap
import pytest
from aiocoap import Message, oscore
from aiocoap.numbers.codes import Code
from sqlalchemy import func, select

from gateway.server import run_in_thread
from parking import credentials
from parking.extensions import db
from parking.models import StoredReading as Row
from parking.models import CredentialBay, SensorCredential

from .conftest import ADMIN_TOKEN

TS = time.time() - 600


# --- helpers ------------------------------------------------------------------------------------
def provision(tmp_path, sensor_id: str, bays: list[str], name: str | None = None):
    """Add a credential; write the printed settings where an aiocoap client reads them (a folder
    with settings.json, as aiocoap-client --credentials expects)."""
    made = credentials.add(sensor_id, bays)
    folder = tmp_path / (name or sensor_id)
    folder.mkdir()
    (folder / "settings.json").write_text(json.dumps(made["settings"]))
    return folder


def copy_of(folder, name: str):
    """A copy of a sensor's context folder: a second device holding the same key."""
    return shutil.copytree(folder, folder.parent / name)


class Devices:
    """Sensors talking to the gateway: each one aiocoap client context for the whole test (a device
    keeps its OSCORE context and its sequence number), on one client event loop in a thread."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.contexts: dict = {}

    def run(self, coroutine, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def post(self, address, folder, payload) -> Message:
        """POST /occupancy from the device holding `folder` (None: an unprotected client).

        An unprotected answer to a protected request (unknown key, replay) reaches an aiocoap
        client as NotAProtectedMessage; its plain message is what the gateway said.
        """
        return self.run(self._post(address, folder, payload))

    async def _post(self, address, folder, payload) -> Message:
        base = f"coap://{address[0]}:{address[1]}"
        context = self.contexts.get(folder)
        if context is None:
            context = self.contexts[folder] = await aiocoap.Context.create_client_context()
            if folder is not None:
                # Any port of the host: one device talks to several gateway processes with one context.
                context.client_credentials.load_from_dict(
                    {f"coap://{address[0]}:*": {"oscore": {"basedir": str(folder) + "/"}}})
        request = Message(code=Code.POST, uri=base + "/occupancy", payload=json.dumps(payload).encode(),
                          content_format=50)
        try:
            answer = await context.request(request).response
        except oscore.NotAProtectedMessage as exc:
            answer = exc.plain_message
            answer.unprotected_answer = True
        return answer

    def close(self):
        for context in self.contexts.values():
            self.run(context.shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def devices():
    made = Devices()
    yield made
    made.close()


def stored() -> list[tuple]:
    db.session.rollback()
    return [tuple(r) for r in db.session.execute(select(Row.bay_id, Row.ts, Row.occupied).order_by(Row.ts))]


@pytest.fixture
def oscore_app(city):
    """The app as deployed: readings only through OSCORE."""
    city.config["SENSOR_AUTH"] = "oscore"
    return city


@pytest.fixture
def gateway(oscore_app):
    """Start (and restart) gateways on the app; all stopped after the test."""
    handles = []

    class Gateways:
        def start(self, port: int = 0):
            handle = run_in_thread(oscore_app, "127.0.0.1", port)
            handles.append(handle)
            return handle

        @property
        def keys(self):
            return handles[-1].gateway.keys

        @property
        def address(self):
            return ("127.0.0.1", handles[-1].port)

        def restart(self):
            port = handles[-1].port
            handles[-1].stop()
            return self.start(port)

    gateways = Gateways()
    gateways.start()
    yield gateways
    for handle in handles:
        handle.stop()


# --- answers ------------------------------------------------------------------------------------
def test_protected_reading_is_stored(gateway, devices, tmp_path):
    folder = provision(tmp_path, "sensor-1", ["PRW-001", "PRW-002"])
    answer = devices.post(gateway.address, folder, [{"bay": "PRW-001", "occupied": True, "ts": TS},
                                            {"bay": "PRW-002", "occupied": False, "ts": TS + 1}])
    assert answer.code == Code.CHANGED, answer.payload
    assert not getattr(answer, "unprotected_answer", False)
    assert stored() == [("PRW-001", TS, True), ("PRW-002", TS + 1, False)]


def test_unprotected_post_is_401_and_signs_stay_open(gateway, devices):
    answer = devices.post(gateway.address, None, {"bay": "PRW-001", "occupied": True, "ts": TS})
    assert answer.code == Code.UNAUTHORIZED
    assert answer.payload == b"OSCORE required"
    assert stored() == []

    async def reads():
        context = await aiocoap.Context.create_client_context()
        base = f"coap://{gateway.address[0]}:{gateway.address[1]}"
        try:
            lot = await context.request(Message(code=Code.GET, uri=base + "/lots/PR-WEST")).response
            links = await context.request(Message(code=Code.GET, uri=base + "/.well-known/core")).response
        finally:
            await context.shutdown()
        return lot, links

    lot, links = asyncio.run(reads())
    assert lot.code == Code.CONTENT and json.loads(lot.payload)["total"] == 4
    assert links.code == Code.CONTENT and b"</occupancy>" in links.payload


def test_foreign_bay_is_403_naming_it_and_nothing_is_stored(gateway, devices, tmp_path):
    folder = provision(tmp_path, "sensor-1", ["PRW-001"])
    credentials.add("sensor-2", ["PRW-002"])
    answer = devices.post(gateway.address, folder, [{"bay": "PRW-001", "occupied": True, "ts": TS},
                                            {"bay": "PRW-002", "occupied": True, "ts": TS}])
    assert answer.code == Code.FORBIDDEN
    assert answer.payload.decode() == "bay PRW-002 is not bound to sensor sensor-1"
    assert stored() == []


def test_unknown_and_revoked_keys_are_401(gateway, devices, tmp_path, oscore_app):
    folder = provision(tmp_path, "sensor-1", ["PRW-001"])
    assert devices.post(gateway.address, folder, {"bay": "PRW-001", "occupied": True, "ts": TS}).code == Code.CHANGED
    credentials.revoke("sensor-1")
    # At once: the gateway holds the context in memory, and still refuses it.
    answer = devices.post(gateway.address, folder, {"bay": "PRW-001", "occupied": False, "ts": TS + 5})
    assert answer.code == Code.UNAUTHORIZED and answer.unprotected_answer
    assert answer.payload == b"unknown or revoked key"
    again = devices.post(gateway.address, folder, {"bay": "PRW-001", "occupied": False, "ts": TS + 6})
    assert again.code == Code.UNAUTHORIZED and again.unprotected_answer
    assert stored() == [("PRW-001", TS, True)]
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "settings.json").write_text(json.dumps(
        {"sender-id_hex": "0a0b0c0d0e0f", "recipient-id_hex": "00", "secret_hex": "11" * 32, "salt_hex": "22" * 8}))
    answer = devices.post(gateway.address, stranger, {"bay": "PRW-001", "occupied": False, "ts": TS + 7})
    assert answer.code == Code.UNAUTHORIZED and answer.unprotected_answer
    assert stored() == [("PRW-001", TS, True)]
    health = oscore_app.extensions["parking_parts"]["gateway"]()
    assert health["refused"]["revoked"] == 1 and health["refused"]["unknown_key"] == 2


def test_same_sequence_number_twice_is_stored_once_also_after_a_restart(gateway, devices, tmp_path):
    first = provision(tmp_path, "sensor-1", ["PRW-001"])
    second, third = copy_of(first, "copy-2"), copy_of(first, "copy-3")
    # Sequence number 0 from the first device: stored.
    assert devices.post(gateway.address, first, {"bay": "PRW-001", "occupied": True, "ts": TS}).code == Code.CHANGED
    # Sequence number 0 again from a copy of the context, with other content: a replay.
    answer = devices.post(gateway.address, second, {"bay": "PRW-001", "occupied": False, "ts": TS + 1})
    assert answer.code == Code.UNAUTHORIZED and answer.payload == b"Replay detected"
    assert stored() == [("PRW-001", TS, True)]
    gateway.restart()
    answer = devices.post(gateway.address, third, {"bay": "PRW-001", "occupied": False, "ts": TS + 2})
    assert answer.code == Code.UNAUTHORIZED and answer.payload == b"Replay detected"
    assert stored() == [("PRW-001", TS, True)]
    # The device itself goes on with its next sequence number, after the restart too.
    assert devices.post(gateway.address, first, {"bay": "PRW-001", "occupied": False, "ts": TS + 3}).code == Code.CHANGED
    assert stored() == [("PRW-001", TS, True), ("PRW-001", TS + 3, False)]


def test_1000_sensors_are_found_by_key_id_not_by_scanning(gateway, devices, tmp_path, runner, backend):
    from gateway.security import key_query
    from parking.lots import import_lots

    bays = [f"BIG-{n:04d}" for n in range(1000)]
    import_lots({"type": "FeatureCollection", "features": [{
        "type": "Feature", "id": "BIG", "geometry": {"type": "Point", "coordinates": [12.1, 49.0]},
        "properties": {"name": "Big garage", "bays": bays}}]}, "Europe/Berlin")
    # 998 provisioned in one commit (as `credentials add` makes them), the first and last by the CLI.
    db.session.add_all(SensorCredential(
        sensor_id=f"sensor-{n:04d}", kid=secrets.token_bytes(credentials.KID_BYTES), gateway_id=credentials.GATEWAY_ID,
        secret=secrets.token_bytes(32), salt=secrets.token_bytes(8), created_at=time.time(), replay_index=0,
        replay_bits=0, bays=[CredentialBay(bay_id=bays[n])]) for n in range(1, 999))
    db.session.commit()
    folders = {}
    for n in (0, 999):
        result = runner.invoke(args=["credentials", "add", f"sensor-{n:04d}", "--bay", bays[n]])
        assert result.exit_code == 0, result.output
        folders[n] = tmp_path / str(n)
        folders[n].mkdir()
        (folders[n] / "settings.json").write_text(result.stdout)
    assert db.session.scalar(select(func.count()).select_from(SensorCredential)) == 1000
    assert devices.post(gateway.address, folders[0], {"bay": "BIG-0000", "occupied": True, "ts": TS}).code == Code.CHANGED
    assert devices.post(gateway.address, folders[999], {"bay": "BIG-0999", "occupied": True, "ts": TS}).code == Code.CHANGED
    keys = gateway.keys
    assert type(keys.keys) is dict and len(keys.keys) == 2  # contexts by key id; only those in use
    # The database look-up of a key id not yet in memory is one probe of the unique index on kid.
    kid = db.session.scalar(select(SensorCredential.kid).where(SensorCredential.sensor_id == "sensor-0500"))
    statement = key_query([kid]).compile(db.engine, compile_kwargs={"render_postcompile": True})
    connection = db.session.connection()
    params = tuple(statement.params[name] for name in statement.positiontup) if statement.positional else statement.params
    if backend == "sqlite":
        plan = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + str(statement), params).all()
        assert any("USING INDEX" in row[-1] and "kid" in row[-1] for row in plan), plan
    else:
        connection.exec_driver_sql("ANALYZE sensor_credentials")
        plan = connection.exec_driver_sql("EXPLAIN " + str(statement), params).scalars().all()
        assert "Index Scan" in plan[0] and "kid" in plan[0], plan


def test_no_secret_in_any_log_listing_or_answer(gateway, devices, tmp_path, runner, caplog, capfd):
    from gateway.security import sensor_context

    caplog.set_level(logging.DEBUG)  # everything, aiocoap's OSCORE details included
    caplog.set_level(logging.DEBUG, logger="parking.gateway.aiocoap")
    made = runner.invoke(args=["credentials", "add", "sensor-1", "--bay", "PRW-001"])
    settings = json.loads(made.stdout)
    folder = tmp_path / "sensor-1"
    folder.mkdir()
    (folder / "settings.json").write_text(made.stdout)
    answers = [
        devices.post(gateway.address, copy_of(folder, "copy"), {"bay": "PRW-001", "occupied": True, "ts": TS}),
        devices.post(gateway.address, folder, {"bay": "PRW-001", "occupied": True, "ts": TS}),  # a replay
        devices.post(gateway.address, folder, {"bay": "GAR-001", "occupied": True, "ts": TS}),  # not its bay
        devices.post(gateway.address, folder, {"bay": "PRW-001", "occupied": "yes"}),  # invalid
    ]
    assert [a.code for a in answers] == [Code.CHANGED, Code.UNAUTHORIZED, Code.FORBIDDEN, Code.BAD_REQUEST]
    listing = runner.invoke(args=["credentials", "list"]).output
    runner.invoke(args=["credentials", "revoke", "sensor-1"])
    answers.append(devices.post(gateway.address, folder, {"bay": "PRW-001", "occupied": False, "ts": TS + 1}))
    assert answers[-1].code == Code.UNAUTHORIZED
    context = sensor_context(settings)
    # The master secret and the keys derived from it (the Common IV is not secret: nonces are
    # public in AEAD, and aiocoap logs it at DEBUG).
    secrets_ = [settings["secret_hex"], context.sender_key.hex(), context.recipient_key.hex()]
    written = caplog.text + "".join(capfd.readouterr()) + listing + "".join(a.payload.decode("utf-8", "replace") for a in answers)
    assert "Protecting message" in caplog.text or "Unprotecting" in caplog.text  # the detail was logged
    for secret in secrets_:
        assert secret not in written
        assert repr(bytes.fromhex(secret))[2:-1] not in written


def test_a_protected_batch_larger_than_a_datagram_goes_block_wise(gateway, devices, tmp_path):
    folder = provision(tmp_path, "sensor-1", ["PRW-001"])
    batch = [{"bay": "PRW-001", "occupied": n % 2 == 0, "ts": TS + n} for n in range(40)]
    assert len(json.dumps(batch)) > 1024  # the client sends it in Block1 blocks, each protected
    answer = devices.post(gateway.address, folder, batch)
    assert answer.code == Code.CHANGED, answer.payload
    assert len(stored()) == 40


def test_new_key_ids_arriving_together_are_read_in_batches(oscore_app):
    """After a restart every sensor's key id is new: those asked for while a read is under way
    wait for the next read, one query for all of them, not a query each (which kept the reader
    threads busy for seconds with 10,000 sensors); each still gets its own context and bays."""
    import concurrent.futures

    from gateway.security import KeyStore

    bays = ["PRW-001", "PRW-002", "PRW-003", "PRW-004", "GAR-001", "GAR-002", "GAR-003", "GAR-004",
            "GAR-005", "GAR-006", "STR-001", "STR-002"]
    made = credentials.add_many({f"sensor-{bay}": [bay] for bay in bays})
    kids = {bytes.fromhex(m["key_id"]): m["bays"] for m in made.values()}
    reads = []

    class Counting(concurrent.futures.ThreadPoolExecutor):
        def submit(self, fn, /, *args, **kwargs):
            reads.append(len(args[0]))
            return super().submit(fn, *args, **kwargs)

    async def scenario():
        with Counting(2) as executor:
            store = KeyStore(oscore_app, executor)
            asked = [*kids, *kids, b"\x00unknown"]  # each twice, and one no credential has
            return asked, await asyncio.gather(*(store.find(kid) for kid in asked))

    asked, found = asyncio.run(scenario())
    for kid, key in zip(asked, found):
        if kid in kids:
            assert (key.sensor_id, sorted(key.bays)) == (f"sensor-{kids[kid][0]}", kids[kid])
        else:
            assert key is None
    assert found[0] is found[len(kids)]  # one context per key id, however many asked
    assert reads == [1, len(kids)], reads  # the first alone; all that came meanwhile in one read


class Recorder:
    """A UDP relay in front of a gateway that keeps every datagram the device sent through it:
    what an attacker on the path captures, to replay later from anywhere."""

    def __init__(self, target):
        import socket

        self.target = target
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.connect(target)
        self.back.settimeout(0.2)
        self.front.settimeout(0.2)
        self.captured: list[bytes] = []
        self.device = None
        self.running = True
        self.threads = [threading.Thread(target=self._forward, daemon=True),
                        threading.Thread(target=self._answer, daemon=True)]
        for thread in self.threads:
            thread.start()

    @property
    def address(self):
        return self.front.getsockname()

    def _forward(self):
        while self.running:
            try:
                data, self.device = self.front.recvfrom(65536)
            except OSError:
                continue
            self.captured.append(data)
            self.back.send(data)

    def _answer(self):
        while self.running:
            try:
                data = self.back.recv(65536)
            except OSError:
                continue
            if self.device is not None:
                self.front.sendto(data, self.device)

    def close(self):
        self.running = False
        for thread in self.threads:
            thread.join(5)
        self.front.close()
        self.back.close()


def test_a_replay_sent_to_another_gateway_process_is_refused(gateway, devices, tmp_path):
    """Two gateway processes on one database, each with its own copy of a sensor's replay window:
    a request captured on its way to one and replayed to the other is refused there (4.01), by
    the window the writer reads from the database, and nothing of it is stored."""
    import socket

    first, second = gateway.start(), gateway.start()  # the fixture's own one stays unused
    folder = provision(tmp_path, "sensor-1", ["PRW-001"])
    at = lambda handle: ("127.0.0.1", handle.port)  # noqa: E731
    # The second process meets the key first (and keeps a copy of its window from then on).
    assert devices.post(at(second), folder, {"bay": "PRW-001", "occupied": True}).code == Code.CHANGED
    # The next request goes to the first process, through a relay that records it.
    relay = Recorder(at(first))
    try:
        assert devices.post(relay.address, folder, {"bay": "PRW-001", "occupied": False}).code == Code.CHANGED
    finally:
        relay.close()
    assert relay.captured  # (more than one when the device had to retransmit: the same bytes)
    before = stored()
    assert len(before) == 2

    # The attacker sends the captured datagram, as it was, to the second process.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker:
        attacker.settimeout(10)
        attacker.sendto(relay.captured[0], at(second))
        answer = Message.decode(attacker.recv(65536))
    assert answer.code == Code.UNAUTHORIZED and answer.payload == b"Replay detected"
    assert stored() == before  # its reading, stamped at receipt, would have been a new one
    # The sensor itself goes on, at either process.
    assert devices.post(at(second), folder, {"bay": "PRW-001", "occupied": True}).code == Code.CHANGED
    assert devices.post(at(first), folder, {"bay": "PRW-001", "occupied": False}).code == Code.CHANGED
    assert len(stored()) == 4
