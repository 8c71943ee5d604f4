"""Training sees silence, and every door agrees on it.

On the trained world (the session's small world, its feature store and model):
1. a clock-tick snapshot, taken while nothing is scanned, has the features of the last scan
   before it, moved on by the time elapsed: the progress columns are the same, hours since the
   last scan grows by exactly the elapsed hours, hours overdue grows once the next planned
   milestone's time has passed, the share of the plan elapsed and the hours to the promise move
   with the clock;
2. at a silent instant after the lake's last ingestion, the service's online reader and Feast's
   own online read give the same request-time features as the training set's point-in-time join.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.online import online_vectors
from features.online_fast import OnlineReader
from features.schema import MODEL_FEATURES, ON_DEMAND
from features.store import get_store, offline_dir
from serving.batch import in_flight
from shipdelay.lake import Lake
from shipdelay.snapshots import DEFAULT_TICKS, TICK
from training.dataset import point_in_time, training_snapshots

SAMPLE = 2_000  # tick snapshots compared with their last scan


@pytest.fixture(scope="module")
def ticks_and_last_scans(trained):
    settings, _, _ = trained
    lake = Lake(settings.lake_dir)
    snaps = training_snapshots(lake)
    ticks = snaps[snaps["milestone"] == TICK]
    ticks = ticks.iloc[np.linspace(0, len(ticks) - 1, min(SAMPLE, len(ticks))).astype(int)]
    events = lake.read("tracking_events", columns=["shipment_id", "ingested_at"])
    events = events[events["shipment_id"].isin(ticks["shipment_id"])].sort_values("ingested_at")
    events["shipment_id"] = events["shipment_id"].astype(object)
    # the last ingestion at or before each tick: from there on, nothing new is known
    last = pd.merge_asof(ticks.sort_values("as_of").reset_index(drop=True),
                         events.rename(columns={"ingested_at": "last_scan"}),
                         left_on="as_of", right_on="last_scan", by="shipment_id",
                         direction="backward")
    last = last.dropna(subset=["last_scan"]).reset_index(drop=True)
    key = ["shipment_id", "as_of"]
    scans = last[["shipment_id"]].assign(as_of=pd.to_datetime(last["last_scan"], utc=True))
    joined = point_in_time(offline_dir(settings), pd.concat([last[key], scans],
                                                            ignore_index=True))
    joined = joined.drop_duplicates(key)  # one join for both instants of every pair
    at_tick = last.merge(joined, on=key, how="left")
    at_scan = last.assign(as_of=scans["as_of"]).merge(joined, on=key, how="left")
    return snaps, last, at_tick, at_scan


def test_training_snapshots_include_weighted_ticks(ticks_and_last_scans):
    snaps, _, at_tick, _ = ticks_and_last_scans
    ticks = snaps[snaps["milestone"] == TICK]
    assert len(ticks) > 0.3 * len(snaps)
    per = ticks.groupby("shipment_id")["weight"].sum()
    assert per.max() <= DEFAULT_TICKS.tick_weight + 1e-9
    assert (snaps.loc[snaps["milestone"] != TICK, "weight"] == 1.0).all()
    # training sees silence: hours since the last scan far from 0 at the ticks
    assert at_tick["hours_since_last_scan"].median() > 3.0


def test_a_silent_instant_is_the_last_scan_moved_on_by_the_clock(ticks_and_last_scans):
    _, last, at_tick, at_scan = ticks_and_last_scans
    assert len(last) > 1_500
    elapsed_h = ((last["as_of"] - pd.to_datetime(last["last_scan"], utc=True))
                 .dt.total_seconds() / 3600).to_numpy()
    assert (elapsed_h >= 0).all() and (elapsed_h > 1).mean() > 0.5
    for c in [*MODEL_FEATURES["shipment_progress"], "next_planned_s", "last_event_s"]:
        pd.testing.assert_series_equal(at_tick[c], at_scan[c], check_names=False)
    grown = (at_tick["hours_since_last_scan"] - at_scan["hours_since_last_scan"]).to_numpy()
    np.testing.assert_allclose(grown, elapsed_h, atol=1e-6)
    np.testing.assert_allclose(
        (at_scan["hours_to_promised"] - at_tick["hours_to_promised"]).to_numpy(), elapsed_h,
        atol=1e-6)
    assert (at_tick["transit_elapsed_frac"] >= at_scan["transit_elapsed_frac"]).all()

    due = at_tick["next_planned_s"].to_numpy(float)
    t_scan = pd.to_datetime(last["last_scan"], utc=True).astype("int64").to_numpy() / 1e9
    t_tick = last["as_of"].astype("int64").to_numpy() / 1e9
    before, after = at_scan["hours_overdue"].to_numpy(), at_tick["hours_overdue"].to_numpy()
    already = due < t_scan  # overdue at the scan: grows by the elapsed time
    np.testing.assert_allclose(after[already] - before[already], elapsed_h[already], atol=1e-6)
    passed = (due >= t_scan) & (due < t_tick)  # falls due in the silence: from 0 to its lateness
    assert (before[passed] == 0).all()
    np.testing.assert_allclose(after[passed], (t_tick[passed] - due[passed]) / 3600, atol=1e-6)
    ahead = due >= t_tick  # not due yet: 0 at both
    assert (before[ahead] == 0).all() and (after[ahead] == 0).all()
    none = np.isnan(due)  # nothing planned any more: missing, never 0
    assert np.isnan(after[none]).all() and np.isnan(before[none]).all()
    assert already.sum() > 20 and passed.sum() > 20 and ahead.sum() > 20, \
        (already.sum(), passed.sum(), ahead.sum())


def test_online_readers_and_the_training_join_agree_at_a_silent_instant(trained):
    settings, _, _ = trained
    lake = Lake(settings.lake_dir)
    newest = lake.read("tracking_events", columns=["ingested_at"])["ingested_at"].max()
    t = newest + pd.Timedelta("7h 41min 13s")  # nothing ingested since: silence
    snaps = in_flight(lake, t)
    snaps = snaps.iloc[np.linspace(0, len(snaps) - 1, min(300, len(snaps))).astype(int)]
    joined = point_in_time(offline_dir(settings), snaps).set_index("shipment_id")
    ids = joined.index[joined["booked_at_s"].notna()].tolist()
    assert len(ids) > 100
    store = get_store(settings)
    reader = OnlineReader(store).vectors(ids, t).set_index("shipment_id").loc[ids]
    feast = online_vectors(store, ids[:60], t).set_index("shipment_id").loc[ids[:60]]
    overdue = joined.loc[ids, "hours_overdue"].to_numpy(float)
    assert (overdue > 0).sum() > 10  # silence makes some shipments overdue
    for c in ON_DEMAND:
        want = joined.loc[ids, c].to_numpy(float)
        np.testing.assert_allclose(reader[c].to_numpy(float), want, rtol=1e-12, atol=1e-9,
                                   err_msg=f"reader {c}")
        np.testing.assert_allclose(feast[c].to_numpy(float), want[:60], rtol=1e-12, atol=1e-9,
                                   err_msg=f"feast {c}")
