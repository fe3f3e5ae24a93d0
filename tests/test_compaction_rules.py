"""`occupancy.fold` against the raw readings it folds: every figure of contract §5 the same.

Pure properties (hypothesis): a bay's history folded up to a cutoff and read back with the
readings after it (`history.merged`, what every reader does) gives the same hourly figures,
intervals, stays, state changes and run start as the raw readings; folding in two goes gives the
same runs as in one; late readings after a fold are exact unless they contradict a folded run,
and folding them in later changes no figure either way. The database end of it (the command,
PostgreSQL, the reports) is tests/test_compaction.py.
"""
from __future__ import annotations

from bisect import bisect_right

from hypothesis import given, settings
from hypothesis import strategies as st

from parking.history import merged
from parking.occupancy import (
    as_runs,
    bay_intervals,
    fold,
    hourly_figures,
    run_start,
    state_changes,
    stays,
)

from .hypothesis_profiles import examples
from .test_occupancy import bay_readings, lots, storage_order


def figures(readings_by_bay, bay_count, hours, stale_after, now):
    """Everything §5 derives from a lot's history, as comparable values."""
    per_bay = {
        bay: (
            bay_intervals(runs, stale_after),
            stays(runs, stale_after),
            [(ts, occupied) for ts, occupied in state_changes(runs)],
            run_start(list(reversed(as_runs(runs))), stale_after),
        )
        for bay, runs in readings_by_bay.items()
    }
    hourly = [f.as_tuple() for f in hourly_figures(readings_by_bay, bay_count, hours, stale_after, now=now)]
    return hourly, per_bay


def folded_up_to(readings, cutoff, stale_after, max_span):
    """The bay's history after compaction at `cutoff`: runs of what came before, raw after."""
    before = [(ts, occupied, ts, 1) for ts, occupied in readings if ts < cutoff]
    after = [(ts, occupied, ts) for ts, occupied in readings if ts >= cutoff]
    return fold(before, stale_after, max_span), after


def spans(stale_after):
    """max_span values: tight ones make fold split long runs, which must change nothing."""
    return st.sampled_from([stale_after, 3 * stale_after, 86400])


def cutoffs(readings):
    """A cutoff among the readings' instants (so equal-ts groups are split at it), or beyond."""
    stamps = sorted({ts for ts, _ in readings}) or [0]
    return st.sampled_from(stamps) | st.integers(stamps[0] - 10, stamps[-1] + 10)


@settings(max_examples=examples(300))
@given(lots(), st.data())
def test_a_fold_changes_no_figure(lot, data):
    readings_by_bay, bay_count, hours, stale_after, now = lot
    max_span = data.draw(spans(stale_after))
    compacted = {}
    for bay, readings in readings_by_bay.items():
        runs, after = folded_up_to(readings, data.draw(cutoffs(readings)), stale_after, max_span)
        compacted[bay] = merged(runs, after)
        assert sum(count for *_, count in runs) + len(after) == len(readings)  # every reading counted once
    assert figures(compacted, bay_count, hours, stale_after, now) == \
        figures(readings_by_bay, bay_count, hours, stale_after, now)


@settings(max_examples=examples(300))
@given(st.integers(30, 1800).flatmap(lambda s: st.tuples(st.just(s), bay_readings(0, 3600, s, max_size=30))),
       st.data())
def test_folding_in_two_goes_gives_the_runs_of_one(case, data):
    stale_after, readings = case
    max_span = data.draw(spans(stale_after))
    items = [(ts, occupied, ts, 1) for ts, occupied in readings]
    split = data.draw(st.integers(0, len(items)))
    once = fold(items, stale_after, max_span)
    assert fold(fold(items[:split], stale_after, max_span) + items[split:], stale_after, max_span) == once
    assert fold(once, stale_after, max_span) == once


def absorb(runs, late):
    """What parking.compaction.absorb_late does to runs for late readings (in ts order):
    inside a run of the same state the reading is absorbed; of the other state it ends the run.
    Returns (runs, readings still to store, whether any contradicted a run)."""
    runs = [list(run) for run in runs]
    kept, contradicted = [], False
    for ts, occupied in sorted(late, key=lambda r: r[0]):
        i = bisect_right([run[0] for run in runs], ts) - 1
        if i >= 0 and ts <= runs[i][2]:
            if runs[i][1] == occupied:
                continue
            if ts < runs[i][2]:
                runs[i][2] = ts
                contradicted = True
        kept.append((ts, occupied))
    return [tuple(run) for run in runs], kept, contradicted


@settings(max_examples=examples(300))
@given(lots(), st.data())
def test_late_readings_after_a_fold(lot, data):
    """Exact unless a late reading contradicts a folded run; folding them in changes nothing."""
    readings_by_bay, bay_count, hours, stale_after, now = lot
    max_span = data.draw(spans(stale_after))
    raw_world, compacted, refolded = {}, {}, {}
    any_contradiction = False
    for bay, readings in readings_by_bay.items():
        cutoff = data.draw(cutoffs(readings))
        runs, after = folded_up_to(readings, cutoff, stale_after, max_span)
        lo = readings[0][0] - stale_after if readings else 0
        late = data.draw(st.lists(st.tuples(st.integers(lo, lo + 4 * stale_after + 7200), st.booleans()),
                                  max_size=4))
        # Raw world: late readings arrive last, so at equal ts they come after the stored ones.
        raw_world[bay] = storage_order(readings + late)
        runs, kept, contradicted = absorb(runs, late)
        any_contradiction |= contradicted
        raw_after = sorted(after + [(ts, occupied, ts) for ts, occupied in kept], key=lambda r: r[0])
        compacted[bay] = merged(runs, raw_after)
        # A later compaction at a later cutoff folds the late readings in too.
        later = data.draw(cutoffs(readings + late))
        items = [run for run in runs] + [(ts, occupied, ts, 1) for ts, occupied, _ in raw_after if ts < later]
        items.sort(key=lambda r: r[0])
        refolded[bay] = merged(fold(items, stale_after, max_span),
                               [r for r in raw_after if r[0] >= later])
    got = figures(compacted, bay_count, hours, stale_after, now)
    assert figures(refolded, bay_count, hours, stale_after, now) == got
    if not any_contradiction:
        assert got == figures(raw_world, bay_count, hours, stale_after, now)
