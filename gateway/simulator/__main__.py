"""`python -m gateway.simulator`: the parking-simulate console script."""
from .cli import main

raise SystemExit(main())
