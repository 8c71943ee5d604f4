"""Volume alarms on feeds with a weekly rhythm: a quiet Sunday is the usual Sunday, not an
incident; a Tuesday as quiet as a Sunday is, and so is a Sunday with nothing at all."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd

from monitoring.inputs import volume_drops

START = date(2025, 3, 3)  # a Monday


def _daily(days: int, seed: int = 3, **override: int) -> pd.DataFrame:
    """`days` days of bookings: about 200 on weekdays, 60 on Saturdays, 20 on Sundays (Poisson
    draws); `override` sets a day's rows by its ISO date."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(days):
        day = START + timedelta(days=i)
        usual = {5: 60, 6: 20}.get(day.weekday(), 200)
        rows.append(override.get(day.isoformat(), int(rng.poisson(usual))))
    return pd.DataFrame({"source": "shipments",
                         "day": [START + timedelta(days=i) for i in range(days)], "rows": rows})


def test_a_feed_with_quiet_weekends_raises_nothing():
    assert volume_drops(_daily(28), 0.5).empty


def test_a_weekday_as_quiet_as_a_sunday_and_an_empty_sunday_are_drops():
    tuesday, sunday = "2025-03-25", "2025-03-30"
    drops = volume_drops(_daily(28, **{tuesday: 20, sunday: 0}), 0.5)
    got = {d.isoformat(): m for d, m in zip(drops["day"], drops["median"])}
    assert set(got) == {tuesday, sunday}
    assert 180 < got[tuesday] < 220 and 10 < got[sunday] < 30  # each against its own weekday


def test_a_short_window_judges_each_day_against_every_day():
    """Fewer than three days of a weekday: the median of every day is the usual, so a Sunday
    with a tenth of it is a drop, and a Saturday too (too short to know weekends are quiet)."""
    drops = volume_drops(_daily(10), 0.5)
    assert [d.weekday() for d in drops["day"]] == [5, 6]  # the Saturday and the Sunday
    assert (drops["median"] == _daily(10)["rows"].median()).all()
