#!/usr/bin/env python3
"""Fit the forecaster's small model (parking/data/forecast_model.json) on real traces (run by hand).

    .venv/bin/pip install -e ".[train]"
    .venv/bin/python tools/train_forecast.py ../shared/data/parking-traces/free-spaces-2024-09_2025-08.csv \
        --until 2025-03-01 --alpha 0.1 [--write]

It feeds every site of the trace to a `LotForecaster` in time order (the same grid and origin
rules as `flask forecast-backtest`, see parking/backtest.py), and at origins before ``--until``
(the months it may tune on; the months after are held out for docs/forecast.md) records, for each
horizon knot, the forecaster's features and what then happened. Per knot it fits the coefficients
by least absolute deviations (iteratively reweighted least squares: the backtest scores MAE) and
takes the 10th and 90th percentiles of the residual divided by the forecaster's band scale, which
become the 80 % band. All in fractions of capacity, sites pooled with equal weight per origin.
numpy is needed here only, not by the forecaster.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from parking import backtest as bt  # noqa: E402
from parking.forecast import GROUP_HOURS, MODEL_PATH, LotForecaster, _load_model  # noqa: E402

KNOTS_H = [0.25, 0.5, 1, 2, 3, 4, 6, 9, 12, 18, 24, 48]
ORIGIN_EVERY = 2  # half-hourly origins: ~70,000 rows per knot


def collect(sites, model, until_ts, timezone="Europe/Berlin"):
    """Per knot: (features, residual target, band scale) arrays over all training origins."""
    rows = {k: ([], [], [], []) for k in KNOTS_H}
    for site in sites:
        region = bt.region_of(site.name, "DE-BY")
        start, values = bt.grid(site)
        cap = site.capacity
        f = LotForecaster(cap, timezone, region, model=model, adapt=False)
        obs, oi = site.observations, 0
        tz = bt.ZoneInfo(timezone)
        for j in range(len(values)):
            t = (start + j) * bt.STEP
            if t >= until_ts:
                break
            while oi < len(obs) and obs[oi][0] <= t:
                f.observe(obs[oi][0], cap - obs[oi][1])
                oi += 1
            if j % ORIGIN_EVERY or values[j] is None or f.reason():
                continue
            for k in KNOTS_H:
                jj = j + int(k * 3600) // bt.STEP
                if jj >= len(values) or values[jj] is None:
                    continue
                hour = dt.datetime.fromtimestamp((start + jj) * bt.STEP, tz).hour
                if not bt.TARGET_HOURS[0] <= hour < bt.TARGET_HOURS[1]:
                    continue
                x, base, spread, g = f.features(t, k * 3600)
                actual = 1.0 - values[jj] / cap
                rows[k][0].append(x)
                rows[k][1].append(actual - base)
                rows[k][2].append(spread)
                rows[k][3].append(g)
        print(f"  {site.name}: done", file=sys.stderr)
    return {k: tuple(np.asarray(a, dtype=float) for a in v) for k, v in rows.items()}


def lad(X, y, iterations=8):
    """Least absolute deviations by iteratively reweighted least squares."""
    w = np.ones(len(y))
    coef = np.zeros(X.shape[1])
    for _ in range(iterations):
        sw = np.sqrt(w)
        coef, *_ = np.linalg.lstsq(X * sw[:, None], y * sw, rcond=None)
        w = 1.0 / np.maximum(np.abs(y - X @ coef), 1e-3)
    return coef


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trace")
    ap.add_argument("--until", default="2025-03-01", help="local date: origins before it are trained on")
    ap.add_argument("--alpha", type=float, default=None, help="profile forgetting rate (default: the model's)")
    ap.add_argument("--floor", type=float, default=None, help="band scale floor (default: the model's)")
    ap.add_argument("--write", action="store_true", help=f"write {MODEL_PATH}")
    args = ap.parse_args()
    model = _load_model()
    if args.alpha is not None:
        model["alpha"] = args.alpha
    if args.floor is not None:
        model["band_floor"] = args.floor
    until_ts = dt.datetime.combine(dt.date.fromisoformat(args.until), dt.time(), bt.ZoneInfo("Europe/Berlin")).timestamp()
    with open(args.trace, encoding="utf-8") as fh:
        sites = bt.read_trace(fh)
    data = collect(sites, model, until_ts)
    coefs, bands = [], []
    for k in KNOTS_H:
        X, r, s, g = data[k]
        per_group = []
        resid = np.empty_like(r)
        for grp in range(len(GROUP_HOURS) + 1):
            sel = g == grp
            # Groups with no daytime target (none, with the shipped hours) share the neighbours' fit.
            c = lad(X[sel], r[sel]) if sel.sum() > X.shape[1] * 50 else lad(X, r)
            resid[sel] = r[sel] - X[sel] @ c
            per_group.append([round(float(v), 5) for v in c])
        q = np.percentile(resid / (s + model["band_floor"]), [10, 90])
        print(f"h={k:>5}h n={len(r):>7} band={np.round(q, 2).tolist()} "
              f"MAE profile-only {100 * np.mean(np.abs(r)):.2f} -> {100 * np.mean(np.abs(resid)):.2f} pts")
        coefs.append(per_group)
        bands.append([round(float(v), 4) for v in q])
    model.update(knots_h=KNOTS_H, coef=coefs, band=bands, trained_until=args.until,
                 trained_on=Path(args.trace).name, script="tools/train_forecast.py")
    if args.write:
        MODEL_PATH.write_text(json.dumps(model, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {MODEL_PATH}")


if __name__ == "__main__":
    main()
