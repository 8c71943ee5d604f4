"""The in-memory rows of the online reader: fetched once per period, never for streamed views,
never remembered for entities the store does not hold."""

from __future__ import annotations

import numpy as np

from features.online_cache import CachedTables
from features.online_fast import ViewRead

PROFILE = ViewRead("shipment_profile", "t1", "shipment_id", ("lane_id", "weight_kg"),
                   ("str", "num"))
PROGRESS = ViewRead("shipment_progress", "t2", "shipment_id", ("slip_h",), ("num",))


class FakeTables:
    """Holds rows per view; records what each read asked for."""

    def __init__(self):
        self.rows = {"shipment_profile": {"A": ("L1", 10.0), "B": ("L2", np.nan)},
                     "shipment_progress": {"A": (1.5,), "B": (2.5,)}}
        self.asked: list[dict[str, list[str]]] = []

    def read(self, wanted):
        self.asked.append({read.view: list(values) for read, values in wanted})
        out = []
        for read, values in wanted:
            blank = tuple(None if k == "str" else np.nan for k in read.kinds)
            rows = [self.rows[read.view].get(v, blank) for v in values]
            out.append([np.array([r[j] for r in rows], dtype=object if k == "str" else float)
                        for j, k in enumerate(read.kinds)])
        return out


def _read(cache, ids):
    return cache.read([(PROFILE, ids), (PROGRESS, ids)])


def test_built_views_are_fetched_once_per_period_streamed_ones_always():
    tables, now = FakeTables(), [0.0]
    cache = CachedTables(tables, 60, {"shipment_profile"}, clock=lambda: now[0])
    first = _read(cache, ["A", "ZZ", "B"])
    assert tables.asked[-1] == {"shipment_profile": ["A", "ZZ", "B"],
                                "shipment_progress": ["A", "ZZ", "B"]}
    tables.rows["shipment_profile"]["A"] = ("L9", 99.0)  # a rebuild, not yet seen
    tables.rows["shipment_progress"]["A"] = (7.0,)  # a streamed update, seen at once
    again = _read(cache, ["B", "A", "ZZ", "A"])
    assert tables.asked[-1] == {"shipment_profile": ["ZZ"],  # unknown: asked again
                                "shipment_progress": ["B", "A", "ZZ", "A"]}
    assert again[0][0].tolist() == ["L2", "L1", None, "L1"]
    np.testing.assert_array_equal(again[0][1], [np.nan, 10.0, np.nan, 10.0])
    np.testing.assert_array_equal(again[1][0], [2.5, 7.0, np.nan, 7.0])
    assert first[0][0].tolist() == ["L1", None, "L2"]
    now[0] = 61.0  # the period is over: everything is read again
    fresh = _read(cache, ["A"])
    assert tables.asked[-1]["shipment_profile"] == ["A"] and fresh[0][0].tolist() == ["L9"]


def test_zero_seconds_keeps_nothing():
    tables = FakeTables()
    cache = CachedTables(tables, 0, {"shipment_profile"})
    for _ in range(2):
        _read(cache, ["A"])
        assert tables.asked[-1] == {"shipment_profile": ["A"], "shipment_progress": ["A"]}


def test_an_empty_request_reads_empty_columns():
    cache = CachedTables(FakeTables(), 60, {"shipment_profile"})
    profile, progress = _read(cache, [])
    assert [len(a) for a in profile + progress] == [0, 0, 0]
    assert profile[0].dtype == object and profile[1].dtype == float


LANE = ViewRead("lane_stats", "t3", "lane_id", ("late_rate",), ("num",))


def test_entities_without_statistics_are_remembered_as_such():
    tables = FakeTables()
    tables.rows["lane_stats"] = {"L1": (0.25,)}
    cache = CachedTables(tables, 60, {"shipment_profile", "lane_stats"},
                         absent_too={"lane_stats"})
    for _ in range(2):
        (lanes,) = cache.read([(LANE, ["L1", "L-NEW"])])
        np.testing.assert_array_equal(lanes[0], [0.25, np.nan])
    # the second read finds both held, the lane without statistics too: no store call at all
    assert [a["lane_stats"] for a in tables.asked] == [["L1", "L-NEW"]]


def test_a_first_read_of_unknown_entities_only_holds_nothing_and_breaks_nothing():
    """The readiness probe's first read asks for an id no store holds: nothing is remembered,
    and the next reads (unknown again, then known) are answered as the store answers."""
    tables = FakeTables()
    cache = CachedTables(tables, 60, {"shipment_profile"})
    for ids in (["__readyz__"], ["__readyz__", "nope"], ["B", "__readyz__", "A"]):
        profile, _ = _read(cache, ids)
        want = [tables.rows["shipment_profile"].get(i, (None, np.nan)) for i in ids]
        assert profile[0].tolist() == [w[0] for w in want]
        np.testing.assert_array_equal(profile[1], [w[1] for w in want])
    assert "__readyz__" not in cache.held("shipment_profile")
