"""What one OSCORE-protected request costs the gateway's event loop, side by side in one process:
decoding a plain request (the cost every request has), unprotecting a protected one, and
protecting its 2.04 answer with aiocoap's `protect` and with `gateway.security.SensorKey.protect`.

    python -m bench.oscore_cost [--requests 2000] [--rounds 5]

Prints the median per request of each; the end-to-end rates are `python -m bench --only ingest`.
"""
from __future__ import annotations

import argparse
import statistics
import time

from aiocoap import CHANGED, CON, POST, Message, oscore
from aiocoap.message import Direction

from gateway.security import SensorKey, sensor_context

SETTINGS = {"sender-id_hex": "b8afe59e2ef5", "recipient-id_hex": "00", "secret_hex": "11" * 32, "salt_hex": "22" * 8}
PAYLOAD = b'{"bay":"L0000-000","occupied":true,"ts":1764000000.1234,"seq":1}'


def _requests(sensor, count: int) -> list[bytes]:
    """`count` protected POST /occupancy datagrams from the sensor side, sequence numbers rising."""
    out = []
    for i in range(count):
        outer, _ = sensor.protect(Message(code=POST, uri_path=("occupancy",), content_format=50, payload=PAYLOAD))
        outer.mtype, outer.mid, outer.token = CON, i & 0xFFFF, i.to_bytes(4, "big")
        out.append(outer.encode())
    return out


def _incoming(raw: bytes) -> Message:
    message = Message.decode(raw)
    message.direction = Direction.INCOMING
    return message


def measure(count: int, rounds: int) -> dict[str, float]:
    """Median seconds per request of each step."""
    sensor = sensor_context(SETTINGS)
    gateway = SensorKey(1, "sensor", frozenset({"L0000-000"}), kid=bytes.fromhex(SETTINGS["sender-id_hex"]),
                        gateway_id=b"\x00", secret=bytes.fromhex(SETTINGS["secret_hex"]),
                        salt=bytes.fromhex(SETTINGS["salt_hex"]), replay=(0, 0))
    steps: dict[str, list[float]] = {"decode a plain CoAP request": [], "unprotect": [],
                                     "protect the answer, aiocoap": [], "protect the answer, SensorKey": []}
    for _ in range(rounds):
        raw = _requests(sensor, count)
        start = time.perf_counter()
        for data in raw:
            Message.decode(data)
        steps["decode a plain CoAP request"].append((time.perf_counter() - start) / count)
        for name, protect in (("protect the answer, aiocoap", lambda m, r: oscore.CanProtect.protect(gateway, m, r)),
                              ("protect the answer, SensorKey", gateway.protect)):
            messages = [_incoming(data) for data in _requests(sensor, count)]
            start = time.perf_counter()
            ids = [gateway.unprotect(message)[1] for message in messages]
            steps["unprotect"].append((time.perf_counter() - start) / count)
            start = time.perf_counter()
            for request_id in ids:
                protect(Message(code=CHANGED), request_id)
            steps[name].append((time.perf_counter() - start) / count)
    return {name: statistics.median(values) for name, values in steps.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    for name, seconds in measure(args.requests, args.rounds).items():
        print(f"{name:<32} {seconds * 1e6:7.0f} µs per request (median of {args.rounds})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
