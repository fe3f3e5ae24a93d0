"""WSGI entry point: `flask --app app …` and any WSGI server use this."""
import sys

from parking import create_app
from parking.startup import EXIT_STARTUP, StartupError

try:
    app = create_app()
except StartupError as exc:  # a wrong setting: one line naming it, as every command says it
    print(f"error: {exc}", file=sys.stderr)
    raise SystemExit(EXIT_STARTUP) from None
