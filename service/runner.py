"""`parking-run`: the whole system in one process (web app, CoAP gateway, scheduler), plus the
simulator as a child process for the demo. Ctrl-C (SIGINT) or SIGTERM stops every part cleanly.

Several `parking-run` processes, on one machine or several, may share one PostgreSQL database:
their schedulers elect one leader among them (parking.leader), so the jobs run once per
deployment, and another process takes over within a minute when the leader dies; on SQLite the
process runs its scheduler by itself. Their starts take turns at migrating the schema and
importing the first lots. A larger deployment can run the gateway alone (`parking-gateway
--processes N`) and the web app under gunicorn instead (docs/scaling.md).

Every part starts or none keeps running: the parts are started in order (the web server's
socket first, so a port in use ends the start before the gateway takes sensors' readings), and a
part that fails to start stops those already started; the process then exits with 2. A mistake
in a setting (a port in use, a database that is missing or silent, a refused lot file) is one
line naming the setting (`parking.startup`); `--debug` adds the traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import subprocess
import sys
import threading

from flask import Flask

from parking.config import client_host, coap_target
from parking.startup import EXIT_STARTUP, StartupError, check_database, guarded, port_problem

from .stopping import StopSignals

log = logging.getLogger("parking")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="parking-run",
        description="Run the web app, the CoAP gateway and the scheduler in one process "
        "(with --simulate also simulated sensors); Ctrl-C or SIGTERM stops every part.",
    )
    parser.add_argument("--simulate", action="store_true", help="also run the sensor simulator")
    parser.add_argument("--backfill-days", type=float, default=28, help="days of simulated history first (with --simulate)")
    parser.add_argument("--speed", type=float, default=1.0, help="simulated time speed-up")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-scheduler", action="store_true",
                        help="run no scheduler here (on PostgreSQL not needed: the processes elect one)")
    parser.add_argument("--debug", action="store_true", help="a start-up error with its traceback, not one line")
    return parser.parse_args(argv)


def prepare(app: Flask, args: argparse.Namespace) -> None:
    """Database reachable, schema up to date, lots imported, simulated history written when asked."""
    from parking.cli import ensure_lots, init_db
    from parking.leader import startup_lock
    from parking.lots import LotFileError

    check_database(app)
    with app.app_context(), startup_lock(app.config["SQLALCHEMY_DATABASE_URI"],
                                         app.config.get("SQLALCHEMY_ENGINE_OPTIONS")):
        init_db()
        try:
            ensure_lots()
        except LotFileError as exc:
            raise StartupError(
                f"PARKING_LOTS_FILE {app.config['LOTS_FILE']} was refused, nothing imported: {exc.message}"
            ) from exc
        if args.simulate and args.backfill_days > 0:
            from gateway.simulator.history import backfill

            backfill(app, args.backfill_days, seed=args.seed)


def bind_web(app: Flask):
    """The waitress server with its socket bound (not yet serving); a port in use is one line."""
    from waitress.server import create_server

    host, port = app.config["HTTP_HOST"], app.config["HTTP_PORT"]
    try:
        return create_server(app, host=host, port=port, threads=8)
    except OSError as exc:
        problem = port_problem(exc, "the web server", host, port, "PARKING_HTTP_PORT")
        if problem is None:
            raise
        raise problem from exc


def start_simulator(app: Flask, args: argparse.Namespace) -> subprocess.Popen:
    """The simulator as a child process speaking real CoAP to our gateway."""
    command = [sys.executable, "-m", "gateway.simulator", "--coap", coap_target(app.config),
               "--speed", str(args.speed), "--seed", str(args.seed)]
    return subprocess.Popen(command)


def stop_simulator(simulator: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it has not ended within 10 s."""
    if simulator.poll() is None:
        simulator.terminate()
        try:
            simulator.wait(timeout=10)
        except subprocess.TimeoutExpired:
            simulator.kill()
            simulator.wait()


def banner(app: Flask, simulate: bool) -> str:
    """Where to look, printed once everything is up."""
    base = f"http://{client_host(app.config['HTTP_HOST'])}:{app.config['HTTP_PORT']}"
    coap = f"coap://{coap_target(app.config)}"
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


def start_parts(app: Flask, args: argparse.Namespace, parts: contextlib.ExitStack) -> subprocess.Popen | None:
    """Start every part, registering each one's stop in `parts` (undone in reverse order)."""
    from gateway.server import run_in_thread
    from parking.jobs import start_scheduler

    web = bind_web(app)
    parts.callback(web.close)
    gateway = run_in_thread(app, app.config["COAP_HOST"], app.config["COAP_PORT"])
    parts.callback(gateway.stop)
    if not args.no_scheduler:
        parts.callback(start_scheduler(app).shutdown, wait=True)
    threading.Thread(target=web.run, name="http", daemon=True).start()
    simulator = start_simulator(app, args) if args.simulate else None
    if simulator is not None:
        parts.callback(stop_simulator, simulator)
    return simulator


def run(args: argparse.Namespace) -> int:
    """Start the parts, serve until SIGINT/SIGTERM or a part ends, then stop them in reverse order."""
    from parking import create_app

    app = create_app()
    prepare(app, args)
    # Installed before the parts start: a stop signal during their start is kept, not lost.
    with StopSignals() as signals, contextlib.ExitStack() as parts:
        parts.callback(log.info, "stopped")
        try:
            simulator = start_parts(app, args, parts)
        except StartupError:
            log.info("stopping the parts that started")
            raise
        except Exception:
            log.critical("a part failed to start; stopping the others", exc_info=True)
            return EXIT_STARTUP
        print(banner(app, args.simulate), flush=True)
        while (signum := signals.wait(1.0)) is None:
            if simulator is not None and simulator.poll() is not None:
                log.error("the simulator exited with %s; stopping", simulator.returncode)
                return 1
        log.info("stopping (%s)", signal.Signals(signum).name)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Console script `parking-run`."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # APScheduler logs every run at INFO; our rollup job logs what it did itself.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    args = parse_args(argv)
    try:
        return guarded("parking-run", args.debug, lambda: run(args))
    except KeyboardInterrupt:  # Ctrl-C before the parts started (during the backfill)
        log.info("interrupted before the start was complete")
        return 130


if __name__ == "__main__":
    sys.exit(main())
