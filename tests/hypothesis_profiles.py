"""Hypothesis profiles: `ci` (the default: derandomized, so every run tries the same examples) and
`long` (random, ten times the examples: a hunt by hand, see README "Developing").

Chosen with PARKING_HYPOTHESIS_PROFILE; tests size their runs with `examples(n)` so that the long
profile scales every test, including those that set their own count."""
from __future__ import annotations

import os

from hypothesis import settings

PROFILE_VARIABLE = "PARKING_HYPOTHESIS_PROFILE"
FACTORS = {"ci": 1, "long": 10}


def register() -> str:
    """Register both profiles and load the chosen one; returns its name."""
    settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True)
    settings.register_profile("long", derandomize=False, deadline=None, print_blob=True)
    name = os.environ.get(PROFILE_VARIABLE, "ci")
    if name not in FACTORS:
        raise SystemExit(f"{PROFILE_VARIABLE}={name!r}: choose one of {', '.join(FACTORS)}")
    settings.load_profile(name)
    return name


def examples(n: int) -> int:
    """`n` examples in the ci profile, ten times as many in the long one."""
    return n * FACTORS.get(os.environ.get(PROFILE_VARIABLE, "ci"), 1)
