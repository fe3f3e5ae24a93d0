"""The opening_hours subset behind the `closed` status."""
import datetime as dt

import pytest

from parking.opening_hours import is_open

MONDAY = dt.datetime(2026, 11, 23)


@pytest.mark.parametrize(
    "spec, day, hour, minute, expected",
    [
        ("24/7", 6, 3, 0, True),
        ("Mo-Fr 07:00-20:00", 0, 6, 59, False),
        ("Mo-Fr 07:00-20:00", 0, 7, 0, True),
        ("Mo-Fr 07:00-20:00", 0, 20, 0, False),
        ("Mo-Fr 07:00-20:00", 5, 12, 0, False),
        ("Mo-Sa 07:00-24:00", 5, 23, 59, True),
        ("Mo-Sa 07:00-24:00; Su off", 6, 12, 0, False),
        ("Mo-Su 08:00-12:00,14:00-18:00", 2, 13, 0, False),
        ("Mo-Su 08:00-12:00,14:00-18:00", 2, 15, 0, True),
        ("Fr,Sa 22:00-02:00", 5, 1, 30, True),  # Saturday early hours, from Friday night
        ("Fr,Sa 22:00-02:00", 0, 1, 30, False),
        ("Mo-Fr 06:00-22:00; PH off", 1, 12, 0, True),
        ("sunrise-sunset", 1, 12, 0, None),
        ("", 1, 12, 0, None),
        (None, 1, 12, 0, None),
    ],
)
def test_is_open(spec, day, hour, minute, expected):
    local = MONDAY + dt.timedelta(days=day, hours=hour, minutes=minute)
    assert is_open(spec, local) is expected
