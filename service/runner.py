"""`parking-run`: the whole system in one process (web app, CoAP gateway, scheduler), plus the
simulator as a child process for the demo. Ctrl-C (SIGINT) or SIGTERM stops every part cleanly.

One process means one scheduler per deployment by construction. A larger deployment can run the
gateway alone (`parking-gateway`) and the web app under any WSGI server instead.
"""
from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
import threading

from flask import Flask

log = logging.getLogger("parking")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="parking-run", description=__doc__.split("\n")[0])
    parser.add_argument("--simulate", action="store_true", help="also run the sensor simulator")
    parser.add_argument("--backfill-days", type=float, default=28, help="days of simulated history first (with --simulate)")
    parser.add_argument("--speed", type=float, default=1.0, help="simulated time speed-up")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-scheduler", action="store_true", help="when another process runs the rollup")
    return parser.parse_args(argv)


def prepare(app: Flask, args: argparse.Namespace) -> None:
    """Schema up to date, lots imported, simulated history written when asked."""
    from parking.cli import ensure_lots, init_db

    with app.app_context():
        init_db()
        ensure_lots()
        if args.simulate and args.backfill_days > 0:
            from gateway.simulator.history import backfill

            backfill(app, args.backfill_days, seed=args.seed)


def start_web(app: Flask):
    """Serve the app with waitress in a thread; returns the server."""
    from waitress.server import create_server

    server = create_server(app, host=app.config["HTTP_HOST"], port=app.config["HTTP_PORT"], threads=8)
    threading.Thread(target=server.run, name="http", daemon=True).start()
    return server


def start_simulator(app: Flask, args: argparse.Namespace) -> subprocess.Popen:
    """The simulator as a child process speaking real CoAP to our gateway."""
    coap = f"{_client_host(app.config['COAP_HOST'])}:{app.config['COAP_PORT']}"
    command = [sys.executable, "-m", "gateway.simulator", "--coap", coap,
               "--speed", str(args.speed), "--seed", str(args.seed)]
    return subprocess.Popen(command)


def _client_host(host: str) -> str:
    """Where a local client reaches a server bound to `host`."""
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, host)


def banner(app: Flask, simulate: bool) -> str:
    """Where to look, printed once everything is up."""
    base = f"http://{_client_host(app.config['HTTP_HOST'])}:{app.config['HTTP_PORT']}"
    coap = f"coap://{_client_host(app.config['COAP_HOST'])}:{app.config['COAP_PORT']}"
    lines = [
        "",
        "Parking occupancy is running" + (" with simulated sensors" if simulate else "") + ":",
        f"  drivers' map     {base}/",
        f"  planners' page   {base}/planner",
        f"  live lots (JSON) {base}/api/lots",
        f"  OpenAPI          {base}/api/openapi.json",
        f"  health           {base}/healthz",
        f"  sensors post to  {coap}/occupancy",
        "Press Ctrl-C to stop.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run until SIGINT/SIGTERM, then stop the parts in reverse order."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # APScheduler logs every run at INFO; our rollup job logs what it did itself.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    args = parse_args(argv)
    from gateway.server import run_in_thread

    from parking import create_app
    from parking.jobs import start_scheduler

    app = create_app()
    prepare(app, args)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    gateway = run_in_thread(app, app.config["COAP_HOST"], app.config["COAP_PORT"])
    scheduler = None if args.no_scheduler else start_scheduler(app)
    web = start_web(app)
    simulator = start_simulator(app, args) if args.simulate else None
    print(banner(app, args.simulate), flush=True)
    try:
        while not stop.wait(1.0):
            if simulator is not None and simulator.poll() is not None:
                log.error("the simulator exited with %s; stopping", simulator.returncode)
                break
    finally:
        log.info("stopping")
        if simulator is not None and simulator.poll() is None:
            simulator.terminate()
            try:
                simulator.wait(timeout=10)
            except subprocess.TimeoutExpired:
                simulator.kill()
        web.close()
        if scheduler is not None:
            scheduler.shutdown(wait=True)
        gateway.stop()
        log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
