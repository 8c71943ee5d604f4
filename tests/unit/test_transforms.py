"""The shipment-progress state: milestone encoding, recent notes, and the one fold shared by the
backfill and the stream (order independence, duplicates, micro-batch parity, leakage)."""

from __future__ import annotations

import time
from itertools import pairwise

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from features.schema import SHIPMENT_PROGRESS, TIMESTAMP
from features.transforms import (
    advance_progress,
    latest,
    milestone_bit,
    milestone_ord,
)
from shipdelay.contract import STR, UTC
from shipdelay.world.notes import POOL

T0 = pd.Timestamp("2025-10-01", tz="UTC")
S0 = T0.timestamp()
H = 3600.0
# a 2-leg plan by ord: picked_up, departed 0, arrived 0, departed 1, arrived 1, ofd, delivered
PLAN_HOURS = (0, 2, 10, 12, 30, 32, 36)
PLAN_HUBS = ["A", "A", "B", "B", "C", "C", "C"]
PLAN_MODES = ["truck", "truck", "truck", "air", "air", "truck", "truck"]


def plan_2leg(sid: str = "S1", hours=PLAN_HOURS) -> dict:
    return {"shipment_id": sid, "n_legs": 2, "booked_at_s": S0 - H,
            "plan_times_s": [S0 + h * H for h in hours], "plan_hubs": list(PLAN_HUBS),
            "plan_modes": list(PLAN_MODES)}


def plans_of(*rows: dict) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows))
    frame["shipment_id"] = frame["shipment_id"].astype(STR)
    return frame


def make_events(rows) -> pd.DataFrame:
    """rows: (event_id, shipment_id, event_type, leg_index, event_hour, ingest_hour[, note])."""
    rows = [tuple(r) + (None,) * (7 - len(r)) for r in rows]
    eid, sid, etype, leg, t, ing, note = map(list, zip(*rows))
    return pd.DataFrame({
        "event_id": pd.array(eid, dtype=STR), "shipment_id": pd.array(sid, dtype=STR),
        "event_type": pd.array(etype, dtype=STR),
        "leg_index": pd.array(leg, dtype="Int64"),
        "event_time": T0 + pd.to_timedelta(np.asarray(t, float), unit="h"),
        "ingested_at": T0 + pd.to_timedelta(np.asarray(ing, float), unit="h"),
        "hub_id": pd.array(["X"] * len(rows), dtype=STR),
        "note": pd.array(note, dtype=STR)})


CLEAN = [("e1", "S1", "picked_up", 0, 0.5, 0.6),
         ("e2", "S1", "departed", 0, 3.0, 3.1, "cong. at hub"),
         ("e3", "S1", "arrived", 0, 12.0, 12.1),
         ("e4", "S1", "departed", 1, 12.5, 12.6),
         ("e5", "S1", "arrived", 1, 33.0, 33.1, "WX DELAY"),
         ("e6", "S1", "out_for_delivery", 1, 34.0, 34.1),
         ("e7", "S1", "delivered", 1, 37.0, 37.1)]


def fold_stream(events: pd.DataFrame, plans: pd.DataFrame, cuts) -> pd.DataFrame:
    """The streaming updater: batches split at ingestion times `cuts`, the online store as prior,
    and event ids already folded in dropped before each call."""
    edges = [-np.inf, *cuts, np.inf]
    hours = (events["ingested_at"] - T0).dt.total_seconds().to_numpy() / H
    store, seen, out = None, set(), []
    for lo, hi in pairwise(edges):
        batch = events[(hours > lo) & (hours <= hi)]
        batch = batch[~batch["event_id"].isin(seen)]
        if batch.empty:
            continue
        rows = advance_progress(store, batch, plans)
        seen |= set(batch["event_id"])
        store = latest(pd.concat([store, rows], ignore_index=True) if store is not None else rows)
        out.append(rows)
    return pd.concat(out, ignore_index=True)


def messy_world(seed: int, n_ship: int = 12):
    """Random in-flight and finished journeys with re-scans, gaps, duplicates, late uploads."""
    rng = np.random.default_rng(seed)
    plans, rows, k = [], [], 0
    notes = list(POOL) + [None] * 200
    for s in range(n_ship):
        sid = f"S{s:03d}"
        n = int(rng.integers(1, 5))
        hours = np.cumsum(rng.uniform(0.5, 12.0, 2 * n + 3))
        modes = rng.choice(["truck", "rail", "air", "ocean"], n)
        plans.append({"shipment_id": sid, "n_legs": n, "booked_at_s": S0,
                      "plan_times_s": list(S0 + hours * H),
                      "plan_hubs": [f"H{s}_{o}" for o in range(2 * n + 3)],
                      "plan_modes": [modes[0]] + [modes[min((o - 1) // 2, n - 1)]
                                                  for o in range(1, 2 * n + 3)]})
        ms = [("picked_up", 0)]
        for i in range(n):
            ms += [("departed", i)]
            if rng.random() < 0.3:
                ms += [("exception", i)]
            ms += [("arrived", i)]
            if rng.random() < 0.3:
                ms += [("customs_hold", i)] + ([("customs_released", i)] if rng.random() < 0.7
                                               else [])
        ms += [("out_for_delivery", n - 1), ("delivered", n - 1)]
        ms = ms[: int(rng.integers(1, len(ms) + 1))]
        t = rng.uniform(0, 1)
        for etype, leg in ms:
            t += rng.uniform(0.2, 10.0)
            for _ in range(int(rng.integers(0, 4))):  # 0 parcels scanned = a missing milestone
                et = t + rng.uniform(0, 0.5)
                ing = et + rng.choice([0.1, 0.3, 5.0], p=[0.6, 0.3, 0.1])
                ing = np.ceil(ing * 4) / 4  # shared ingestion moments
                note = notes[int(rng.integers(0, len(notes)))]
                rows.append((f"E{k:05d}", sid, etype, leg, et, ing, note))
                if rng.random() < 0.1:  # exact duplicate, sometimes uploaded again later
                    rows.append((f"E{k:05d}", sid, etype, leg, et,
                                 ing + (2.0 if rng.random() < 0.5 else 0.0), note))
                k += 1
    return make_events(rows), plans_of(*plans)


def progress_cols(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[["shipment_id", *SHIPMENT_PROGRESS]].reset_index(drop=True)


# ---------------------------------------------------------------------- milestone codes

def test_milestone_bits_and_ords():
    types = ["picked_up", "departed", "arrived", "customs_hold", "customs_released",
             "exception", "out_for_delivery", "delivered", "departed", "arrived", "departed"]
    legs = pd.array([None, 0, 1, 2, 3, 9, 1, 1, 7, -2, 2], dtype="Int64")
    # a leg event without a valid leg (-2) is no milestone: never leg 0's
    assert milestone_bit(types, legs).tolist() == [0, 1, 10, 19, 28, 40, 41, 42, 8, -1, 3]
    assert milestone_ord(types, legs, 2).tolist() == [0, 1, 4, -1, -1, -1, 5, 6, -1, -1, -1]
    steps = ["received", "checked_in", "handed_over", "collected", "checked_in", "departed"]
    step_legs = pd.array([None, 2, 9, None, None, None], dtype="Int64")
    assert milestone_bit(steps, step_legs).tolist() == [43, 46, 59, 60, -1, -1]
    assert milestone_ord(types, legs, np.full(11, 3)).tolist()[-1] == 5


# ----------------------------------------------------------------------------- the state

def test_clean_journey_state_at_each_moment():
    out = advance_progress(None, make_events(CLEAN), plans_of(plan_2leg()))
    assert list(out.columns) == ["shipment_id", TIMESTAMP, *SHIPMENT_PROGRESS]
    assert out[TIMESTAMP].dtype == UTC
    for col, kind in SHIPMENT_PROGRESS.items():
        assert out[col].dtype == {"int": "int64", "float": "float64", "str": STR}[kind], col
    assert out[TIMESTAMP].tolist() == [T0 + pd.Timedelta(hours=r[5]) for r in CLEAN]
    assert out["furthest_ord"].tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert out["slip_h"].round(9).tolist() == [0.5, 1.0, 2.0, 0.5, 3.0, 2.0, 1.0]
    assert out["slip_trend_h"].round(9).tolist() == [0.0, 0.0, 1.0, -0.5, 2.0, 1.0, 0.0]
    assert out["current_hub"].tolist() == ["A", "A", "B", "B", "C", "C", "C"]
    assert out["current_mode"].tolist() == ["truck", "truck", "truck", "air", "air", "truck",
                                            "truck"]
    assert out["current_leg"].tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert out["milestones_done"].tolist() == [1, 2, 3, 4, 5, 6, 7]
    assert out["core_done"].tolist() == [1, 2, 3, 4, 5, 6, 7]
    assert out["event_count"].tolist() == [1, 2, 3, 4, 5, 6, 7]
    assert (out["milestones_planned"] == 7).all() and (out["missing_milestones"] == 0).all()
    assert out["delivered"].tolist() == [0] * 6 + [1]
    assert out["last_event_type"].tolist() == [r[2] for r in CLEAN]
    assert out["furthest_time_s"].tolist() == [S0 + r[4] * H for r in CLEAN]
    assert out["first_departure_s"].isna().tolist() == [True] + [False] * 6
    congestion, weather = "2025-10-01T03:00:00Z cong. at hub", "2025-10-02T09:00:00Z WX DELAY"
    assert out["recent_notes"].tolist() == ["", *[congestion] * 3,
                                            *[f"{weather}\n{congestion}"] * 3]
    assert out["milestone_mask"].iloc[-1] == (1 | 0b11 << 1 | 0b11 << 9 | 1 << 41 | 1 << 42)
    # the route still ahead of the furthest milestone, from the plan
    assert out["planned_h_ahead"].tolist() == [36.0 - h for h in PLAN_HOURS]
    assert out["legs_ahead"].tolist() == [2, 1, 1, 0, 0, 0, 0]
    assert out["next_mode"].tolist() == ["truck", "truck", "air", "air", "truck", "truck",
                                         "truck"]


def test_nothing_seen_yet_uses_origin_and_none():
    ev = make_events([("x1", "S1", "customs_hold", 0, 1.0, 1.5)])
    row = advance_progress(None, ev, plans_of(plan_2leg())).iloc[0]
    assert row["furthest_ord"] == -1 and np.isnan(row["furthest_time_s"])
    assert (row["current_hub"], row["current_mode"], row["current_leg"]) == ("A", "truck", 0)
    assert row["slip_h"] == 0.0 and row["slip_trend_h"] == 0.0
    assert row["customs_open"] == 1 and row["core_done"] == 0 and row["missing_milestones"] == 0
    assert (row["legs_ahead"], row["planned_h_ahead"], row["next_mode"]) == (2, 36.0, "truck")


def test_duplicates_and_rescans_change_nothing_but_counts_and_last_scan():
    clean = advance_progress(None, make_events(CLEAN), plans_of(plan_2leg()))
    messy = list(CLEAN) + [CLEAN[2], CLEAN[4]]  # exact duplicates (same event id)
    messy += [("r" + r[0], *r[1:4], r[4] + 0.2, r[5]) for r in CLEAN[1:3]]  # re-scans, later
    got = advance_progress(None, make_events(messy), plans_of(plan_2leg()))
    moved = ["event_count", "last_event_s", "last_event_code"]  # a later re-scan is a later scan
    assert_frame_equal(got.drop(columns=moved), clean.drop(columns=moved), check_exact=True)
    assert got["event_count"].tolist() == [1, 3, 5, 6, 7, 8, 9]
    assert got["last_event_s"].tolist()[1:3] == [S0 + 3.2 * H, S0 + 12.2 * H]
    assert_frame_equal(got.iloc[3:, :-1], clean.iloc[3:, :-1], check_exact=True)


def test_furthest_time_is_the_first_scan_and_a_further_milestone_takes_over():
    rows = [("a", "S1", "departed", 0, 4.0, 4.5), ("b", "S1", "departed", 0, 3.0, 5.0),
            ("c", "S1", "departed", 0, 3.5, 6.0), ("d", "S1", "arrived", 0, 11.0, 11.2)]
    out = advance_progress(None, make_events(rows), plans_of(plan_2leg()))
    assert out["furthest_time_s"].tolist() == [S0 + 4 * H, S0 + 3 * H, S0 + 3 * H, S0 + 11 * H]
    assert out["slip_h"].tolist() == [2.0, 1.0, 1.0, 1.0]
    assert out["first_departure_s"].tolist() == [S0 + 4 * H, S0 + 3 * H, S0 + 3 * H, S0 + 3 * H]


def test_customs_missing_and_delivered_flags():
    rows = [("1", "S1", "picked_up", 0, 0.5, 1.0),
            ("2", "S1", "customs_hold", 0, 11.0, 12.0),
            ("3", "S1", "arrived", 1, 31.0, 32.0),  # departed 0, arrived 0, departed 1 missing
            ("4", "S1", "customs_released", 0, 13.0, 33.0),
            ("5", "S1", "customs_hold", 1, 31.5, 34.0),
            ("5b", "S1", "customs_hold", 1, 31.7, 34.0),  # re-scan: still one hold
            ("6", "S1", "exception", 1, 20.0, 35.0, "eqpt fail trk"),
            ("7", "S1", "exception", 1, 21.0, 36.0),
            ("8", "S1", "delivered", 1, 40.0, 41.0)]
    out = advance_progress(None, make_events(rows), plans_of(plan_2leg()))
    assert out["customs_holds"].tolist() == [0, 1, 1, 1, 2, 2, 2, 2]
    assert out["customs_open"].tolist() == [0, 1, 1, 0, 1, 1, 1, 1]
    assert out["exceptions"].tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    assert out["recent_notes"].tolist() == [""] * 5 + ["2025-10-01T20:00:00Z eqpt fail trk"] * 3
    assert out["furthest_ord"].tolist() == [0, 0, 4, 4, 4, 4, 4, 6]
    assert out["missing_milestones"].tolist() == [0, 0, 3, 3, 3, 3, 3, 4]
    assert out["core_done"].tolist() == [1, 1, 2, 2, 2, 2, 2, 3]
    assert out["milestones_done"].tolist() == [1, 2, 3, 4, 5, 6, 6, 7]
    assert out["delivered"].tolist() == [0] * 7 + [1]
    assert out["last_event_type"].tolist()[-1] == "delivered"
    assert out["current_leg"].tolist() == [0, 0, 1, 1, 1, 1, 1, 1]
    assert out["event_count"].tolist() == [1, 2, 3, 4, 6, 7, 8, 9]


def test_legs_beyond_the_plan_are_not_core():
    rows = [("1", "S1", "departed", 3, 1.0, 1.0), ("2", "S1", "picked_up", None, 0.5, 1.0)]
    row = advance_progress(None, make_events(rows), plans_of(plan_2leg())).iloc[-1]
    assert (row["milestones_done"], row["core_done"], row["furthest_ord"]) == (2, 1, 0)


def test_missing_plan_is_named():
    with pytest.raises(ValueError, match="no plan"):
        advance_progress(None, make_events(CLEAN), plans_of(plan_2leg("OTHER")))


def test_empty_events_give_an_empty_typed_frame():
    out = advance_progress(None, make_events(CLEAN).iloc[:0], plans_of(plan_2leg()))
    assert out.empty and list(out.columns) == ["shipment_id", TIMESTAMP, *SHIPMENT_PROGRESS]
    assert out[TIMESTAMP].dtype == UTC and out["milestone_mask"].dtype == "int64"


@pytest.mark.parametrize("seed", range(4))
def test_any_event_order_gives_the_same_rows(seed):
    events, plans = messy_world(seed)
    expected = advance_progress(None, events, plans)
    rng = np.random.default_rng(seed)
    for _ in range(3):
        shuffled = events.iloc[rng.permutation(len(events))]
        assert_frame_equal(advance_progress(None, shuffled, plans), expected, check_exact=True)


@pytest.mark.parametrize("seed,k", [(0, 2), (1, 3), (2, 5), (3, 9)])
def test_micro_batches_match_the_backfill_row_for_row(seed, k):
    events, plans = messy_world(seed)
    backfill = advance_progress(None, events, plans)
    moments = np.sort(backfill[TIMESTAMP].unique())
    rng = np.random.default_rng(seed)
    cuts = sorted((pd.Timestamp(t) - T0).total_seconds() / H
                  for t in rng.choice(moments, k - 1, replace=False))
    stream = fold_stream(events, plans, cuts)
    stream = stream.sort_values([TIMESTAMP, "shipment_id"], kind="stable").reset_index(drop=True)
    assert_frame_equal(stream, backfill, check_exact=True)
    assert_frame_equal(latest(stream), latest(backfill), check_exact=True)


@pytest.mark.parametrize("seed", range(3))
def test_any_batch_split_gives_the_same_final_state(seed):
    """Batches not cut by time: the state is still a commutative fold."""
    events, plans = messy_world(seed)
    final = latest(advance_progress(None, events, plans))
    rng = np.random.default_rng(seed)
    part = rng.integers(0, 4, len(events))
    store, seen = None, set()
    for b in range(4):
        batch = events[part == b]
        batch = batch[~batch["event_id"].isin(seen)]
        if batch.empty:
            continue
        rows = latest(advance_progress(store, batch, plans))
        seen |= set(batch["event_id"])
        store = rows if store is None else pd.concat([store, rows]).drop_duplicates(
            "shipment_id", keep="last")
    store = store.sort_values("shipment_id").reset_index(drop=True)
    assert_frame_equal(progress_cols(store), progress_cols(final), check_exact=True)


def test_replaying_a_batch_is_idempotent_except_event_count():
    events, plans = messy_world(5)
    first = latest(advance_progress(None, events, plans))
    again = latest(advance_progress(first, events, plans))
    assert_frame_equal(progress_cols(again).drop(columns="event_count"),
                       progress_cols(first).drop(columns="event_count"), check_exact=True)


@pytest.mark.parametrize("seed", range(3))
def test_no_leakage_from_later_ingestion(seed):
    events, plans = messy_world(seed)
    full = advance_progress(None, events, plans)
    t = full[TIMESTAMP].quantile(0.5)
    later = events["ingested_at"] > t
    before = full[full[TIMESTAMP] <= t].reset_index(drop=True)

    removed = advance_progress(None, events[~later], plans)
    assert_frame_equal(removed[removed[TIMESTAMP] <= t].reset_index(drop=True), before,
                       check_exact=True)

    altered = events.copy()
    altered.loc[later, "event_type"] = "delivered"
    altered.loc[later, "event_time"] = T0 - pd.Timedelta(hours=1)
    altered.loc[later, "note"] = "customs hold, typhoon"
    changed = advance_progress(None, altered, plans)
    assert_frame_equal(changed[changed[TIMESTAMP] <= t].reset_index(drop=True), before,
                       check_exact=True)


def test_vectorized_at_scale():
    """20,000 shipments x ~20 events: built and folded without per-event Python loops."""
    rng = np.random.default_rng(0)
    n_ship, n = 20_000, 3
    n_ord = 2 * n + 3
    hours = np.cumsum(rng.uniform(0.5, 12.0, (n_ship, n_ord)), axis=1)
    sids = np.array([f"S{i:06d}" for i in range(n_ship)], dtype=object)
    plans = pd.DataFrame({"shipment_id": pd.array(sids, dtype=STR), "n_legs": n,
                          "booked_at_s": S0, "plan_times_s": list(S0 + hours * H),
                          "plan_hubs": [[f"H{o}" for o in range(n_ord)]] * n_ship,
                          "plan_modes": [["truck"] * n_ord] * n_ship})
    types = np.array(["picked_up"] + ["departed", "arrived"] * n
                     + ["out_for_delivery", "delivered"], dtype=object)
    legs = np.r_[0, np.repeat(np.arange(n), 2), n - 1, n - 1]
    parcels = rng.integers(1, 4, (n_ship, n_ord)).ravel()
    ship = np.repeat(np.repeat(np.arange(n_ship), n_ord), parcels)
    o = np.repeat(np.tile(np.arange(n_ord), n_ship), parcels)
    t = np.repeat((hours + rng.uniform(-1, 4, hours.shape)).ravel(), parcels)
    t = t + rng.uniform(0, 0.3, len(t))
    ing = t + rng.lognormal(np.log(0.15), 0.8, len(t))
    notes = np.where(rng.random(len(t)) < 0.1, POOL[rng.integers(0, len(POOL), len(t))], None)
    events = pd.DataFrame({
        "event_id": pd.array(np.char.add("E", np.arange(len(t)).astype(str)), dtype=STR),
        "shipment_id": pd.array(sids[ship], dtype=STR),
        "event_type": pd.array(types[o], dtype=STR), "leg_index": pd.array(legs[o], dtype="Int64"),
        "event_time": T0 + pd.to_timedelta(t, unit="h"),
        "ingested_at": T0 + pd.to_timedelta(ing, unit="h"),
        "hub_id": pd.array(np.full(len(t), "X"), dtype=STR), "note": pd.array(notes, dtype=STR)})
    start = time.perf_counter()
    out = advance_progress(None, events, plans)
    print(f"\n{len(events):,} events of {n_ship:,} shipments -> {len(out):,} state rows "
          f"in {time.perf_counter() - start:.2f} s")
    final = latest(out)
    assert len(final) == n_ship
    assert (final["delivered"] == 1).all() and (final["core_done"] == n_ord).all()
