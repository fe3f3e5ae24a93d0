"""`python -m gateway.simulator`: the parking-simulate console script."""
from .model import main

raise SystemExit(main())
