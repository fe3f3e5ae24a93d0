"""forecast-backtest: the grid rules, no peeking, and a real slice on which the forecaster must
beat the Helsinki method (a regression guard; docs/forecast.md has the full held-out table)."""
from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from parking import backtest as bt
from parking import create_app
from parking.forecast import LotForecaster

SLICE = Path(__file__).parent / "data" / "trace-slice.csv.gz"


@pytest.fixture
def cli():
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": "sqlite://"})
    return app.test_cli_runner()


def test_grid_carries_at_most_six_hours():
    t0 = 1736121600  # 2025-01-06 00:00 UTC, on the grid
    site = bt.Site("a", [(t0, 100.0), (t0 + 600, 90.0), (t0 + 7 * 3600, 40.0)], 100.0)
    start, values = bt.grid(site)
    assert start * bt.STEP == t0
    assert values[:3] == [100.0, 90.0, 90.0]  # the 00:10 value first counts at 00:15
    # 00:10 carried until 06:10: the 06:00 point has it, 06:15 ... 06:45 are unknown.
    assert values[24] == 90.0 and values[25] is None and values[27] is None
    assert values[28] == 40.0


def test_sentinels_dropped():
    rows = "".join(f"2025-01-06T{i // 12:02d}:{i % 12 * 5:02d}:00+00:00,{i % 50}\n" for i in range(240))
    trace = "timestamp,a,empty\n" + rows + "2025-01-06T20:00:00+00:00,9999,\n"
    (site,) = bt.read_trace(io.StringIO(trace))  # the column with no value is left out
    assert site.capacity == pytest.approx(49)
    assert max(v for _, v in site.observations) == 49 and len(site.observations) == 240


def test_capacity_is_the_995th_percentile():
    rows = "".join(f"2025-01-06T{h:02d}:{m:02d}:00+00:00,{v}\n" for (h, m), v in zip(
        [(h, m) for h in range(10) for m in range(0, 60, 5)], list(range(100)) + [5000] * 20))
    (site,) = bt.read_trace(io.StringIO("timestamp,a\n" + rows))
    assert site.capacity == pytest.approx(bt.percentile(list(range(100)) + [5000] * 20, 99.5))
    assert bt.percentile([1, 2, 3, 4], 50) == 2.5


class Recording(LotForecaster):
    """A forecaster that remembers what it predicted at each origin."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.made = {}

    def predict(self, now, horizons):
        out = super().predict(now, horizons)
        self.made[now] = out
        return out


def test_backtest_never_lets_the_forecaster_see_the_future():
    """Changing a site's values after time X changes nothing forecast at origins before X."""
    with __import__("gzip").open(SLICE, "rt", encoding="utf-8") as fh:
        site = bt.read_trace(fh)[0]
    cut = site.observations[len(site.observations) * 3 // 4][0]
    changed = bt.Site(site.name, [(t, v if t < cut else site.capacity - v) for t, v in site.observations], site.capacity)
    made = []
    for s in (site, changed):
        rec = {}

        def make(**kw):
            f = Recording(**kw)
            rec["f"] = f
            return f

        bt.backtest_site(s, "Europe/Berlin", "DE-BY", make_forecaster=make)
        made.append(rec["f"].made)
    before = [t for t in made[0] if t < cut]
    assert len(before) > 500
    assert all(made[0][t] == made[1][t] for t in before)
    assert any(made[0][t] != made[1].get(t) for t in made[0] if t >= cut)


def test_backtest_on_a_real_slice_beats_helsinki(cli):
    """Three real lots (Regensburg, Potsdam, Cologne), two held-out weeks after three of warm-up."""
    result = cli.invoke(args=["forecast-backtest", str(SLICE), "--from", "2025-04-28"])
    assert result.exit_code == 0, result.output
    overall = {}
    for line in result.output.splitlines():
        m = re.match(r"overall\s+(\d+)h\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)%", line)
        if m:
            h, n, fc, *_, hel, ratio, band = m.groups()
            overall[int(h)] = (int(n), float(fc), float(hel), float(band))
    assert set(overall) == {1, 3, 24}, result.output
    for h, (n, fc, hel, band) in overall.items():
        assert n > 1000
        # Three weeks of warm-up only (the full year does better, docs/forecast.md): a guard, not the benchmark.
        # (On this slice the forecaster is at about 0.87 / 0.81 / 0.73 x Helsinki.)
        bar = {1: 0.92, 3: 0.86, 24: 0.80}[h]
        assert fc < bar * hel, f"{h} h: forecast {fc} vs Helsinki {hel}"
        assert 60 <= band <= 95, f"{h} h: band holds {band} %"


def test_backtest_refuses_a_file_that_is_no_trace(cli, tmp_path):
    bad = tmp_path / "x.csv"
    bad.write_text("when,a\n1,2\n")
    result = cli.invoke(args=["forecast-backtest", str(bad)])
    assert result.exit_code != 0 and "not a trace" in result.output and "Traceback" not in result.output
    result = cli.invoke(args=["forecast-backtest", str(SLICE), "--from", "tomorrow"])
    assert result.exit_code == 2 and "2025-03-01" in result.output
