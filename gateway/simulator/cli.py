"""The simulator's commands: the `parking-simulate` console script and `flask --app app simulate`.

Both parse nothing themselves beyond their options: `run_simulator` backfills
(`gateway.simulator.history`) and then sends live traffic (`gateway.simulator.sender`). The
`simulate` command is registered from here through the `flask.commands` entry point group
(pyproject.toml), so the core (`parking`) never imports the gateway.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import threading
import time

import click
from flask import current_app
from flask.cli import with_appcontext

from parking.cli import ensure_lots, init_db
from parking.config import coap_target
from parking.startup import StartupError, check_database, guarded

from .history import backfill, model_from_db
from .model import choose_seed
from .keys import provision
from .sender import run_live

log = logging.getLogger("gateway.simulator")


def run_simulator(app, backfill_days: float = 0, speed: float = 1.0,
                  coap: str | None = None, seed: int | None = None, live: bool = True) -> None:
    """Backfill `backfill_days` of history, then (if `live`) simulate until SIGINT/SIGTERM, sending
    to `coap` (HOST:PORT; default: the gateway of the settings, PARKING_COAP_HOST/PORT)."""
    seed = choose_seed(seed)
    coap = coap or coap_target(app.config)
    with _sigterm_as_interrupt():
        if backfill_days > 0:
            model = backfill(app, backfill_days, seed=seed)
        else:
            with app.app_context():
                model = model_from_db(time.time(), seed)
            log.info("simulator: starting from the stored bay states, seed %d", seed)
    if live:
        # Each simulated sensor gets a fresh credential of its own, so the demo runs protected end to end.
        sensor_keys = provision(app, [sensor.bay for sensor in model.sensors])
        asyncio.run(run_live(model, coap, speed, keys=sensor_keys))


class _sigterm_as_interrupt:
    """During the (synchronous) backfill, SIGTERM stops it like Ctrl-C does."""

    def __enter__(self):
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._raise)
        return self

    def __exit__(self, *exc_info):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False

    @staticmethod
    def _raise(signum, frame):
        raise KeyboardInterrupt


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of parking-simulate."""
    parser = argparse.ArgumentParser(
        prog="parking-simulate",
        description="Simulated parking bay sensors for the lots in the database: backfill "
        "history, then send live readings to the CoAP gateway.",
    )
    parser.add_argument("--backfill-days", type=float, default=0, metavar="N",
                        help="first write N days of history through the ingest path (default 0)")
    parser.add_argument("--speed", type=float, default=1.0, metavar="X",
                        help="time-lapse factor of the live simulation (default 1: real time)")
    parser.add_argument("--coap", default=None, metavar="HOST:PORT",
                        help="the gateway to send to (default PARKING_COAP_HOST:PARKING_COAP_PORT)")
    parser.add_argument("--seed", type=int, default=None, metavar="N",
                        help="random seed, for a reproducible run")
    parser.add_argument("--debug", action="store_true", help="a start-up error with its traceback, not one line")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console script: parse options, build the app, run until interrupted."""
    options = build_parser().parse_args(argv)
    if options.speed <= 0:
        build_parser().error("--speed must be positive")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return guarded("parking-simulate", options.debug, lambda: _simulate(options))
    except KeyboardInterrupt:
        log.info("simulator interrupted")
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code


def _simulate(options: argparse.Namespace) -> int:
    """Build the app on the settings every command reads, then run the simulator."""
    from parking import create_app

    app = create_app()
    check_database(app)
    run_simulator(app, options.backfill_days, options.speed, options.coap, options.seed)
    return 0


@click.command("simulate")
@click.option("--backfill-days", default=0, show_default=True, type=click.IntRange(0, 3660))
@click.option("--speed", default=1.0, show_default=True, type=click.FloatRange(min=0.01))
@click.option("--coap", default=None, help="gateway HOST:PORT (default PARKING_COAP_HOST:PORT)")
@click.option("--seed", default=1, show_default=True, type=int)
@click.option("--no-live", is_flag=True, help="only backfill, then exit")
@with_appcontext
def simulate_command(backfill_days, speed, coap, seed, no_live):
    """Run simulated bay sensors against the gateway, after writing simulated history."""
    init_db()
    ensure_lots()
    try:
        run_simulator(current_app._get_current_object(), backfill_days, speed, coap, seed, live=not no_live)
    except StartupError as exc:  # as the console script says it: one line, exit code 2
        refused = click.ClickException(str(exc))
        refused.exit_code = 2
        raise refused from exc


if __name__ == "__main__":
    raise SystemExit(main())
