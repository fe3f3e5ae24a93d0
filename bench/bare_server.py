"""The ceiling of the CoAP library: a bare aiocoap server whose POST /occupancy parses the JSON
payload and answers 2.04.

Same transport as the gateway (aiocoap's udp6), no database, no validation: `json.loads` of the
payload is all it does with a request (the outside check of issue #15 compared the gateway with
such a server; `json.loads` of one reading takes about 2 µs here). `--tuned` sets the
transport up as the gateway does (`gateway.server`: its message manager with the shorter
duplicate-detection window, larger receive buffer and read size), to show what those settings
are worth on their own.

    python -m bench.bare_server --port 5683 [--tuned]

Runs until SIGTERM/SIGINT. Prints "bare CoAP server on …" on stderr once bound.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys

import aiocoap
from aiocoap import resource
from aiocoap.numbers.codes import Code


class Changed(resource.Resource):
    """Parses every POST's payload as JSON and answers 2.04 Changed (4.00 if it is not JSON)."""

    async def render_post(self, request):
        try:
            json.loads(request.payload)
        except ValueError:
            return aiocoap.Message(code=Code.BAD_REQUEST)
        return aiocoap.Message(code=Code.CHANGED)


async def tuned_context(site, host: str, port: int):
    """A server context set up exactly as the gateway sets up its own."""
    from gateway.transport import DEDUP_WINDOW, _server_context, _tune_transport

    context, manager = await _server_context(site, host, port, DEDUP_WINDOW)
    _tune_transport(manager)
    return context


async def serve(host: str, port: int, tuned: bool) -> None:
    site = resource.Site()
    site.add_resource(["occupancy"], Changed())
    logging.getLogger("bench.bare.aiocoap").setLevel(logging.WARNING)
    logging.getLogger("parking.gateway.aiocoap").setLevel(logging.WARNING)
    if tuned:
        context = await tuned_context(site, host, port)
    else:
        context = await aiocoap.Context.create_server_context(site, bind=(host, port), transports=["udp6"],
                                                              loggername="bench.bare.aiocoap")
    print(f"bare CoAP server on coap://{host}:{port} (tuned={tuned})", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await context.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tuned", action="store_true", help="the gateway's transport settings")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port, args.tuned))
    return 0


if __name__ == "__main__":
    sys.exit(main())
