"""The lot counts computed in SQL, and those the lot list counts from bay rows, agree with the pure
rule in parking.occupancy.current_counts; so does each bay's own status."""
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from .hypothesis_profiles import examples
from sqlalchemy import select, update

from parking.current import bay_status, lot_states, state_of_bays
from parking.extensions import db
from parking.models import Bay
from parking.occupancy import current_counts

NOW = 1_800_000_000.0
GARAGE_BAYS = [f"GAR-00{i}" for i in range(1, 7)]
bay_state = st.one_of(
    st.none(),
    st.tuples(st.sampled_from([NOW - 1800, NOW - 1799.5, NOW - 60, NOW, NOW + 120]) | st.floats(NOW - 4000, NOW + 300),
              st.booleans()),
)


@settings(max_examples=examples(60), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(states=st.lists(bay_state, min_size=6, max_size=6))
def test_sql_counts_match_the_pure_rule(city, states):
    for bay_id, state in zip(GARAGE_BAYS, states):
        ts, occupied = state if state else (None, None)
        db.session.execute(update(Bay).where(Bay.id == bay_id).values(last_ts=ts, state=occupied))
    db.session.commit()
    sql = lot_states(1800, NOW)["GARAGE"]
    latest = db.session.execute(select(Bay.last_ts, Bay.state).where(Bay.lot_id == "GARAGE")).all()
    pure = current_counts(latest, len(GARAGE_BAYS), NOW, 1800)
    assert (sql.free, sql.occupied, sql.unknown, sql.total) == (pure.free, pure.occupied, pure.unknown, pure.total)
    rows = db.session.execute(select(Bay.last_ts, Bay.state).where(Bay.lot_id == "GARAGE")).all()
    counted = state_of_bays(rows, 1800, NOW)
    assert counted == sql
    statuses = [bay_status(row, 1800, NOW) for row in rows]
    assert (statuses.count("free"), statuses.count("occupied")) == (pure.free, pure.occupied)
