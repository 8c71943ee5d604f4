"""The stream's warm statistics (`serving.stream_stats.WarmStats`) answer every point-in-time
lookup exactly as `features.stats_at.StatsAt` does, read the cold days of a span in one call,
reuse the assembled rows across micro-batches, and see a roll's new part at the next lookup."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features import offline as off
from features.schema import HUB_STATS, LANE_STATS, TIMESTAMP
from features.stats_at import StatsAt
from serving.stream_stats import WarmStats

START = pd.Timestamp("2025-06-01", tz="UTC")


def _rows(view: str, key: str, ids: list[str], stamps: pd.DatetimeIndex, seed: int):
    """One row per (id, stamp) with random values (and some missing ones) of every column."""
    rng = np.random.default_rng(seed)
    columns = LANE_STATS if view == "lane_stats" else HUB_STATS
    grid = pd.MultiIndex.from_product([ids, stamps], names=[key, TIMESTAMP]).to_frame(
        index=False)
    for c, kind in columns.items():
        values = rng.normal(0, 10, len(grid))
        values[rng.random(len(grid)) < 0.1] = np.nan
        grid[c] = (pd.array(np.round(np.abs(values)), dtype="Int64") if kind == "int"
                   else values)
        if kind == "int":
            grid.loc[rng.random(len(grid)) < 0.1, c] = pd.NA
    return grid


@pytest.fixture
def store(tmp_path):
    offline = tmp_path / "offline"
    lanes = [f"L{i}" for i in range(30)]
    hubs = [f"H{i}" for i in range(12)]
    days = pd.date_range(START, periods=9, freq="D")
    off.write_parts(offline, "lane_stats", _rows("lane_stats", "lane_id", lanes, days, 1), "a")
    hours = pd.date_range(START, periods=9 * 24, freq="h")
    off.write_parts(offline, "hub_stats", _rows("hub_stats", "hub_id", hubs, hours, 2), "a")
    return offline, {"lane_stats": lanes, "hub_stats": hubs}


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for c, values in a.items():
        x, y = np.asarray(values), np.asarray(b[c])
        if x.dtype == object:
            assert [None if pd.isna(v) else v for v in x] == \
                [None if pd.isna(v) else v for v in y], c
        else:
            np.testing.assert_array_equal(x, y, err_msg=c)


def _ask(rng, ids: list[str], lo: pd.Timestamp, hi: pd.Timestamp, n: int = 400):
    keys = rng.choice(np.array([*ids, "unknown", None], dtype=object), n)
    now = rng.uniform(lo.value // 1000, hi.value // 1000, n)
    return keys, now


@pytest.mark.parametrize("view", ["lane_stats", "hub_stats"])
def test_warm_lookups_equal_stats_at_across_batches_and_a_roll(store, view):
    offline, ids = store
    cold, warm = StatsAt(offline), WarmStats(offline)
    columns = list(LANE_STATS if view == "lane_stats" else HUB_STATS)
    rng = np.random.default_rng(7)
    # micro-batches moving forward through the days, some spanning several
    for day in range(1, 9):
        for span in (pd.Timedelta(minutes=5), pd.Timedelta(days=2)):
            hi = START + pd.Timedelta(days=day, hours=7)
            keys, now = _ask(rng, ids[view], hi - span, hi)
            _same(cold.lookup(view, keys, now, columns), warm.lookup(view, keys, now, columns))
    assembled = warm.assembled
    keys, now = _ask(rng, ids[view], START + pd.Timedelta(days=8), START + pd.Timedelta(days=8,
                                                                                   hours=6))
    _same(cold.lookup(view, keys, now, columns), warm.lookup(view, keys, now, columns))
    _same(cold.lookup(view, keys, now, columns), warm.lookup(view, keys, now, columns))
    assert warm.assembled == assembled + 1  # the same span twice: assembled once

    # a roll appends a part to the newest day: the next lookup sees its rows
    key = "lane_id" if view == "lane_stats" else "hub_id"
    late = START + pd.Timedelta(days=8, hours=23, minutes=30)
    rolled = _rows(view, key, ids[view][:5], pd.DatetimeIndex([late]), 3)
    off.write_parts(offline, view, rolled, "roll-1")
    keys = np.array(ids[view][:5], dtype=object)
    now = np.full(5, (late + pd.Timedelta(minutes=1)).value / 1000)
    got = warm.lookup(view, keys, now, columns)
    _same(cold.lookup(view, keys, now, columns), got)
    expected = rolled[columns[1]].to_numpy(dtype=float, na_value=np.nan)
    np.testing.assert_array_equal(np.asarray(got[columns[1]], dtype=float), expected)


def test_a_span_of_cold_days_is_read_in_one_call(store, monkeypatch):
    offline, ids = store
    import serving.stream_stats as module

    calls = []
    real = module.dataset
    monkeypatch.setattr(module, "dataset", lambda files: calls.append(len(files)) or real(files))
    warm = WarmStats(offline)
    keys, now = _ask(np.random.default_rng(1), ids["lane_stats"], START + pd.Timedelta(days=2),
                     START + pd.Timedelta(days=7))
    warm.lookup("lane_stats", keys, now, list(LANE_STATS))
    assert len(calls) == 1 and calls[0] >= 6  # the five days and the TTL's before them
    warm.lookup("lane_stats", keys[::-1], now, list(LANE_STATS))
    assert len(calls) == 1  # nothing cold left


@pytest.mark.parametrize("view", ["lane_stats", "hub_stats"])
def test_rows_of_one_stamp_twice_and_instants_at_the_edges_answer_as_stats_at(store, view):
    """Two parts holding a row of the same key and stamp (a rewrite), instants exactly on a
    stamp and exactly at the TTL's edge: the warm index takes the row `merge_asof` takes."""
    from features.instant import TTL_US

    offline, ids = store
    key = "lane_id" if view == "lane_stats" else "hub_id"
    columns = list(LANE_STATS if view == "lane_stats" else HUB_STATS)
    stamp = START + pd.Timedelta(days=3)
    # the first four keys once more at that stamp; a key with that one row only
    off.write_parts(offline, view, _rows(view, key, [*ids[view][:4], "edge"],
                                         pd.DatetimeIndex([stamp]), 9), "again")
    cold, warm = StatsAt(offline), WarmStats(offline)
    on_stamp = stamp.value / 1000
    keys = np.array([*ids[view][:5], "edge"] * 3, dtype=object)
    now = np.repeat([on_stamp, on_stamp + TTL_US[view], on_stamp + TTL_US[view] + 1], 6)
    for part in (slice(0, 6), slice(6, 12), slice(12, 18), slice(0, 18)):
        _same(cold.lookup(view, keys[part], now[part], columns),
              warm.lookup(view, keys[part], now[part], columns))
    got = warm.lookup(view, keys, now, columns)[columns[0]]
    assert [pd.notna(got[i]) for i in (5, 11, 17)] == [True, True, False]  # the TTL's edge
