"""The clock-tick snapshot rule and the request-time feature hours_overdue.

Ticks: on a fixed UTC grid (every_h apart, one seeded offset per shipment), strictly inside the
journey (after booking, before delivery), at most `cap` per shipment, the same rows whatever
the input order, and weighted so that one shipment's ticks weigh min(n, tick_weight).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.request_time import request_features
from shipdelay.snapshots import (
    NO_TICKS,
    TICK,
    TickRule,
    snapshot_kind,
    snapshot_times,
    tick_offsets_ns,
    tick_times,
)

T0 = pd.Timestamp("2026-03-02 07:13:20", tz="UTC")
RULE = TickRule(every_h=12, cap=6, tick_weight=2.5, seed=3)


def _journeys(n: int = 200, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    booked = T0 + pd.to_timedelta(rng.uniform(0, 30 * 24, n), unit="h")
    hours = rng.choice([0.5, 5.0, 30.0, 100.0, 2000.0], n)  # below one tick to far beyond cap
    delivered = pd.Series(booked + pd.to_timedelta(hours, unit="h"))
    delivered[rng.random(n) < 0.1] = pd.NaT  # in flight: no known end
    return pd.DataFrame({"shipment_id": [f"SH{i:05d}" for i in range(n)],
                         "booked_at": booked, "delivered_at": delivered})


def _reference(journeys: pd.DataFrame, rule: TickRule) -> pd.DataFrame:
    """The rule written out plainly, one shipment at a time: every grid instant inside the
    journey, then the cap's evenly spread picks."""
    period = pd.Timedelta(hours=rule.every_h)
    offsets = tick_offsets_ns(journeys["shipment_id"], rule)
    rows = []
    for (sid, b, d), off in zip(journeys.itertuples(index=False), offsets):
        if pd.isna(d):
            continue
        t = pd.Timestamp(0, tz="UTC") + pd.Timedelta(int(off), unit="ns")
        t += period * int((b - t) // period)
        inside = []
        while t < d:
            if t > b:
                inside.append(t)
            t += period
        n = len(inside)
        keep = inside if n <= rule.cap else [inside[(2 * j + 1) * n // (2 * rule.cap)]
                                             for j in range(rule.cap)]
        rows += [(sid, x, min(1.0, rule.tick_weight / len(keep))) for x in keep]
    return pd.DataFrame(rows, columns=["shipment_id", "as_of", "weight"])


def test_ticks_follow_the_rule_written_out_plainly():
    journeys = _journeys()
    got = tick_times(journeys["shipment_id"], journeys["booked_at"], journeys["delivered_at"],
                     RULE)
    want = _reference(journeys, RULE)
    assert len(want) > 300  # short, long and capped journeys all there
    assert got["shipment_id"].tolist() == want["shipment_id"].tolist()
    assert (got["as_of"].to_numpy() == pd.DatetimeIndex(want["as_of"]).to_numpy()).all()
    np.testing.assert_allclose(got["weight"], want["weight"])
    assert (got["milestone"] == TICK).all()


def test_ticks_are_in_flight_on_the_clock_grid_bounded_and_weighed():
    journeys = _journeys()
    got = tick_times(journeys["shipment_id"], journeys["booked_at"], journeys["delivered_at"],
                     RULE).merge(journeys, on="shipment_id")
    assert (got["as_of"] > got["booked_at"]).all() and (got["as_of"] < got["delivered_at"]).all()
    assert not got["shipment_id"].isin(journeys.loc[journeys["delivered_at"].isna(),
                                                    "shipment_id"]).any()
    per = got.groupby("shipment_id").agg(n=("as_of", "size"), w=("weight", "sum"))
    assert per["n"].max() == RULE.cap and per["n"].min() >= 1
    np.testing.assert_allclose(per["w"], np.minimum(per["n"], RULE.tick_weight))
    # the grid: whole seconds, every_h apart within a shipment, one offset per shipment
    ns = got["as_of"].astype("int64")
    assert (ns % 10**9 == 0).all()
    phase = ns % int(RULE.every_h * 3600 * 1e9)
    assert (phase.groupby(got["shipment_id"]).nunique() == 1).all()
    assert phase.nunique() > 50  # offsets spread the ticks, not one instant for everyone
    # a long journey's capped ticks span it rather than bunch at its start
    long = got[(got["delivered_at"] - got["booked_at"]) > pd.Timedelta(days=50)]
    spread = long.groupby("shipment_id")["as_of"].agg(lambda t: t.max() - t.min())
    assert (spread > pd.Timedelta(days=40)).all()


def test_same_rows_whatever_the_order_and_seeded():
    journeys = _journeys()
    a = tick_times(journeys["shipment_id"], journeys["booked_at"], journeys["delivered_at"], RULE)
    shuffled = journeys.sample(frac=1.0, random_state=5)
    b = tick_times(shuffled["shipment_id"], shuffled["booked_at"], shuffled["delivered_at"], RULE)
    b = b.sort_values(["shipment_id", "as_of"], ignore_index=True)
    pd.testing.assert_frame_equal(a, b)
    other = tick_times(journeys["shipment_id"], journeys["booked_at"], journeys["delivered_at"],
                       TickRule(every_h=12, cap=6, tick_weight=2.5, seed=4))
    assert not a["as_of"].equals(other["as_of"])


def test_snapshot_times_puts_ticks_between_milestones_and_none_at_or_after_delivery():
    booked = T0
    shipments = pd.DataFrame({"shipment_id": ["SH1", "SH2"], "booked_at": [booked, booked]})
    at = [booked + pd.Timedelta(hours=h) for h in (3, 40, 41, 90)]
    events = pd.DataFrame({
        "shipment_id": ["SH1", "SH1", "SH1", "SH1"],
        "event_type": ["picked_up", "departed", "departed", "delivered"],
        "leg_index": pd.array([None, 0, 0, None], dtype="Int64"),
        "ingested_at": at})
    outcomes = pd.DataFrame({"shipment_id": ["SH1"], "delivered_at": [at[-1]]})
    rule = TickRule(every_h=12, cap=20, tick_weight=2.5, seed=3)
    snaps = snapshot_times(shipments, events, outcomes, rule)
    one = snaps[snaps["shipment_id"] == "SH1"]
    assert one[one["milestone"] != TICK]["milestone"].tolist() == ["booked", "picked_up:",
                                                                   "departed:0"]
    ticks = one[one["milestone"] == TICK]
    want = _reference(pd.DataFrame({"shipment_id": ["SH1"], "booked_at": [booked],
                                    "delivered_at": [at[-1]]}), rule)
    assert len(ticks) in (7, 8) and ticks["as_of"].tolist() == want["as_of"].tolist()
    assert (ticks["as_of"] < at[-1]).all() and (ticks["as_of"] > booked).all()
    assert snaps.loc[snaps["shipment_id"] == "SH2", "milestone"].tolist() == ["booked"]
    assert (snaps.loc[snaps["milestone"] != TICK, "weight"] == 1.0).all()
    assert snaps.equals(snaps.sort_values(["shipment_id", "as_of", "milestone"],
                                          ignore_index=True))
    plain = snapshot_times(shipments, events, outcomes, NO_TICKS)
    assert plain["milestone"].tolist() == ["booked", "picked_up:", "departed:0", "booked"]
    assert snapshot_kind(snaps["milestone"]).tolist() == [
        "tick" if m == TICK else "milestone" for m in snaps["milestone"]]


def test_hours_overdue():
    now = 1_000_000.0
    nxt = np.array([now - 7200.0, now, now + 60.0, np.nan])
    out = request_features(np.zeros(4), np.full(4, now + 3600), np.full(4, now + 1800),
                           np.full(4, now - 600), nxt, np.full(4, now))
    np.testing.assert_array_equal(out["hours_overdue"][:3], [2.0, 0.0, 0.0])
    assert np.isnan(out["hours_overdue"][3])
    np.testing.assert_allclose(out["hours_since_last_scan"], 600 / 3600)
    assert set(out) == {"hours_to_promised", "transit_elapsed_frac", "hours_since_last_scan",
                        "hours_overdue"}


def test_a_tick_rule_that_cannot_tick_is_refused():
    with pytest.raises(ValueError, match="every_h"):
        TickRule(every_h=0)
