"""A CoAP load generator that can keep a Python server busy: pre-encoded datagrams, raw UDP.

Run as its own process (so that its CPU is not the server's), it sends confirmable
`POST /occupancy` requests (Content-Format 50, one JSON reading each, every request a new reading:
distinct bay/ts/seq; with `--oscore`, each protected with its bay's sensor context) to 127.0.0.1, keeps at most `--window` of them outstanding, and, with
`--rate`, paces them at that many per second. Answers are matched by token; a piggy-backed answer
and a separate one (empty ACK first) both count, and a separate CON answer is acknowledged.
Nothing is retransmitted: a request unanswered after `--timeout` s is counted as a timeout and its
slot reused. Each socket (source port) numbers its message ids on from `--mid-base`, so none
repeats within a run (there are enough sockets for that: 65,536 ids each), and it prints
`mid_next`, the base for the next run: the kernel may give a later run a source port of an earlier
one, and a message id repeated from the same address and port within the server's duplicate
window (67 s in the gateway, 247 s in bare aiocoap) is answered from its cache with the earlier
request's token, i.e. lost to this generator, and not stored.

By default request i goes out on socket i mod (sockets), a few sockets per port. `--sensor-sockets S`
sends instead from S sockets, each bay's readings always from the same one (bay index mod S), as a
sensor keeps its source address and port: the kernel's SO_REUSEPORT hash then spreads the bays over
the processes that share a port, each bay staying with one process for the run.

It stops by itself: after `--count` requests or `--seconds` of sending, whichever comes first,
plus at most `--timeout` s for the last answers. It prints one JSON object on stdout.

    python -m bench.loadgen --port 5683 --bays L0000-000 L0000-001 --count 1000 --window 64
"""
from __future__ import annotations

import argparse
import json
import math
import select
import socket
import struct
import sys
import time

HOST = "127.0.0.1"  # load only ever goes to this machine
URI_PATH = b"occupancy"
MIDS_PER_SOCKET = 60_000


def encode_post(mid: int, token: bytes, payload: bytes) -> bytes:
    """CON POST /occupancy, Content-Format 50 (RFC 7252 §3): header, token, options, payload."""
    header = bytes([0x40 | len(token), 0x02]) + struct.pack("!H", mid) + token
    # Uri-Path (11): delta 11, length 9; Content-Format (12): delta 1, length 1, value 50.
    options = bytes([0xB0 | len(URI_PATH)]) + URI_PATH + bytes([0x11, 50])
    return header + options + b"\xff" + payload


def build(count: int, bays: list[str], serial: int, t0: float, sockets: int,
          keys: dict | None = None, by_bay: bool = False, mid_base: int = 0) -> list[tuple[int, int, bytes]]:
    """(socket index, token, datagram) for every request, encoded (and, with `keys`, protected)
    before the clock starts; `by_bay`: each bay always on the same socket."""
    out = []
    mids = [mid_base] * sockets  # the next message id of each socket
    for i in range(count):
        n = serial + i
        sock = (n % len(bays)) % sockets if by_bay else i % sockets
        mid = mids[sock] & 0xFFFF
        mids[sock] += 1
        token = n & 0xFFFFFFFF
        bay = bays[n % len(bays)]
        payload = ('{"bay":"%s","occupied":%s,"ts":%.4f,"seq":%d}'
                   % (bay, "true" if n & 1 else "false", t0 + n * 1e-4, n & 0xFFFFFFFF))
        if keys is None:
            out.append((sock, token, encode_post(mid, struct.pack("!I", token), payload.encode())))
        else:
            # The n-th request of a bay's sensor uses sequence number n // bays: rising across the
            # runs of a benchmark (`--serial`), so none is ever a replay.
            out.append((sock, token, protect_post(keys[bay], n // len(bays), mid, struct.pack("!I", token),
                                                  payload.encode())))
    return out


def protect_post(context, seqno: int, mid: int, token: bytes, payload: bytes) -> bytes:
    """The same POST, OSCORE-protected (RFC 8613) with the sensor's context and this sequence number."""
    from aiocoap import CON, POST, Message

    context.sender_sequence_number = seqno
    plain = Message(code=POST, uri_path=("occupancy",), content_format=50, payload=payload)
    outer, _ = context.protect(plain)
    outer.mtype, outer.mid, outer.token = CON, mid, token
    return outer.encode()


def load_keys(path: str) -> dict:
    """{bay: the sensor's OSCORE context} from a JSON file {bay: settings as `credentials add` prints}."""
    from gateway.security import sensor_context

    with open(path) as fh:
        return {bay: sensor_context(settings) for bay, settings in json.load(fh).items()}


def percentile(sorted_values: list[float], p: float) -> float | None:
    """The p-quantile (0..1) of sorted values, nearest rank."""
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(p * len(sorted_values)) - 1))]


def run(ports: list[int], bays: list[str], count: int, seconds: float, window: int, rate: float | None,
        timeout: float, serial: int, t0: float, keys: dict | None = None, sensor_sockets: int | None = None,
        mid_base: int = 0) -> dict:
    """Send, collect, and summarise (see the module doc)."""
    if sensor_sockets:
        nsock = sensor_sockets
        # The busiest socket carries its bays' share of the run: its message ids must not wrap.
        busiest = math.ceil(count / len(bays)) * math.ceil(len(bays) / min(nsock, len(bays)))
        if busiest > MIDS_PER_SOCKET:
            raise ValueError(f"--sensor-sockets {nsock}: up to {busiest:,} requests on one socket, "
                             f"over {MIDS_PER_SOCKET:,} message ids: give more sockets or fewer requests")
    else:
        nsock = max(4 * len(ports), math.ceil(count / MIDS_PER_SOCKET))
    nsock += (-nsock) % len(ports)  # the same number of sockets per port
    requests = build(count, bays, serial, t0, nsock, keys, by_bay=bool(sensor_sockets), mid_base=mid_base)
    socks = []
    for i in range(nsock):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.bind((HOST, 0))
        s.connect((HOST, ports[i % len(ports)]))
        s.setblocking(False)
        socks.append(s)
    by_fd = {s.fileno(): s for s in socks}
    poller = select.epoll()
    for s in socks:
        poller.register(s.fileno(), select.EPOLLIN)

    outstanding: dict[int, float] = {}
    latencies: list[float] = []
    codes: dict[str, int] = {}
    separate = empty_acks = resets = timeouts = send_errors = 0
    sent = 0
    perf = time.perf_counter
    cpu_start = time.process_time()
    start = perf()
    send_until = start + seconds
    hard_stop = send_until + timeout + 2.0
    next_expiry = start + 0.05
    last_answer = start
    sending = True
    while True:
        now = perf()
        if sending and (sent >= count or now >= send_until):
            sending = False
            send_end = now
        if not sending and not outstanding:
            break
        if now >= hard_stop:
            break
        if sending:
            allowed = count if rate is None else min(count, int((now - start) * rate) + 1)
            while sent < allowed and len(outstanding) < window:
                sock_index, token, datagram = requests[sent]
                try:
                    socks[sock_index].send(datagram)
                except (BlockingIOError, ConnectionRefusedError):
                    send_errors += 1  # the kernel refused it: retried on the next pass
                    break
                outstanding[token] = perf()
                sent += 1
        if rate is not None and sending and len(outstanding) < window:
            wait = max(0.0, min(0.002, start + sent / rate - perf()))
        else:
            wait = 0.002
        for fd, _ in poller.poll(wait):
            s = by_fd[fd]
            while True:
                try:
                    data = s.recv(2048)
                except (BlockingIOError, ConnectionRefusedError):
                    break
                if len(data) < 4:
                    continue
                kind, tkl, code = (data[0] >> 4) & 3, data[0] & 0x0F, data[1]
                if kind == 3:
                    resets += 1
                    continue
                if code == 0:  # empty ACK: the answer comes separately
                    empty_acks += 1
                    continue
                if kind == 0:  # a separate CON answer must be acknowledged
                    s.send(bytes([0x60, 0]) + data[2:4])
                if tkl != 4:
                    continue
                token = struct.unpack_from("!I", data, 4)[0]
                sent_at = outstanding.pop(token, None)
                if sent_at is None:
                    continue  # late after a timeout, or a duplicate
                last_answer = perf()
                latencies.append(last_answer - sent_at)
                if kind != 2:
                    separate += 1
                dotted = f"{code >> 5}.{code & 0x1F:02d}"
                codes[dotted] = codes.get(dotted, 0) + 1
        now = perf()
        if now >= next_expiry:
            next_expiry = now + 0.05
            expired = [t for t, at in outstanding.items() if now - at > timeout]
            for t in expired:
                del outstanding[t]
            timeouts += len(expired)
    if sending:
        send_end = perf()
    timeouts += len(outstanding)
    for s in socks:
        s.close()
    poller.close()
    latencies.sort()
    ok = codes.get("2.04", 0)
    per_socket = [0] * nsock
    for sock_index, _, _ in requests[:sent]:
        per_socket[sock_index] += 1
    # Throughput over the time requests were being sent (and answered): the answer phase after
    # the last send is at most one window's worth.
    busy = max(1e-9, max(send_end, last_answer) - start)

    def ms(value):
        return None if value is None else round(value * 1000, 3)

    return {
        "sent": sent, "answered": len(latencies), "ok": ok, "codes": codes, "timeouts": timeouts,
        "separate": separate, "empty_acks": empty_acks, "resets": resets, "send_errors": send_errors,
        "seconds": round(busy, 3), "rps": ok / busy, "client_cpu": (time.process_time() - cpu_start) / busy, "offered_rate": rate, "window": window, "sockets": nsock,
        "mid_next": (mid_base + max(per_socket)) & 0xFFFF,
        "p50_ms": ms(percentile(latencies, 0.50)), "p90_ms": ms(percentile(latencies, 0.90)),
        "p99_ms": ms(percentile(latencies, 0.99)), "max_ms": ms(latencies[-1] if latencies else None),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="raw-UDP CoAP load generator (127.0.0.1 only)")
    parser.add_argument("--port", type=int, action="append", required=True, help="server port (repeat for several)")
    parser.add_argument("--bays", nargs="+", help="bay ids to post readings for")
    parser.add_argument("--bays-file", help="a file with one bay id per line")
    parser.add_argument("--count", type=int, required=True, help="at most this many requests")
    parser.add_argument("--seconds", type=float, default=10.0, help="at most this long sending")
    parser.add_argument("--window", type=int, default=128, help="requests outstanding at most")
    parser.add_argument("--rate", type=float, help="requests per second (default: as fast as answered)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds before a request counts as lost")
    parser.add_argument("--serial", type=int, default=0, help="first request number (distinct readings across runs)")
    parser.add_argument("--mid-base", type=int, default=0, help="first message id of every socket (see the module doc)")
    parser.add_argument("--t0", type=float, default=None, help="ts of request 0 (default: an hour ago)")
    parser.add_argument("--sensor-sockets", type=int, metavar="S",
                        help="send from S source ports, each bay always from the same one (see the module doc)")
    parser.add_argument("--oscore", metavar="FILE",
                        help="protect each request with its bay's OSCORE context (JSON {bay: settings})")
    args = parser.parse_args(argv)
    bays = list(args.bays or [])
    if args.bays_file:
        with open(args.bays_file) as fh:
            bays += [line.strip() for line in fh if line.strip()]
    if not bays:
        parser.error("no bays given")
    if args.count > 5_000_000 or args.seconds > 3600:
        parser.error("refusing an unbounded run: count ≤ 5,000,000 and seconds ≤ 3600")
    t0 = args.t0 if args.t0 is not None else time.time() - 3600
    keys = load_keys(args.oscore) if args.oscore else None
    if args.sensor_sockets is not None and not 1 <= args.sensor_sockets <= 1000:
        parser.error("--sensor-sockets: 1 to 1000 (one file descriptor each)")
    try:
        result = run(args.port, bays, args.count, args.seconds, args.window, args.rate, args.timeout, args.serial,
                     t0, keys, args.sensor_sockets, args.mid_base & 0xFFFF)
    except ValueError as exc:
        parser.error(str(exc))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
