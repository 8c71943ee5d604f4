"""A real-shaped simulated world: handling steps and consolidations, as the contract holds them.

The lake of a small world with both is read back and checked against the contract and against
what the plan promises: consolidated shipments' merged leg leaves after every inbound truck
arrived, handling scans come in their order and before the leg leaves, and the default world
keeps its shape (no handling scans, no consolidation, no milestone plans).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shipdelay import contract
from shipdelay.lake import Lake
from shipdelay.world.journeys import simulate_journeys
from shipdelay.world.plans import sample_plans
from shipdelay.world.simulate import SimConfig, _setup, simulate

REAL_SHAPED = SimConfig(shipments=2_000, start="2025-10-01", days=60, seed=11,
                        ceiling_shipments=100, ceiling_draws=20, consolidation_share=0.25,
                        handling_steps=True)
HANDLING = ("received", "checked_in", "handed_over", "collected")


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Lake:
    link = tmp_path_factory.mktemp("real_shaped") / "lake"
    simulate(REAL_SHAPED, link)
    return Lake(link)


@pytest.fixture(scope="module")
def truth():
    """The same kind of world in memory: plans and true journeys, before any scan is lost."""
    st = _setup(REAL_SHAPED)
    rng = np.random.default_rng(5)
    n = 8_000
    booked = np.sort(rng.uniform(0, 60 * 24, n))
    plan, book = sample_plans(st.net, st.table, booked, np.arange(n), st.world.customs_rate, rng,
                              consolidation_share=0.25, handling_steps=True)
    return plan, book, simulate_journeys(plan, st.world, st.net.carriers, rng)


def _hours(series: pd.Series) -> np.ndarray:
    return series.astype("int64").to_numpy() / 3.6e12


def test_the_contract_holds_the_new_tables(lake):
    legs, plans = lake.read("legs"), lake.read("milestone_plans")
    events = lake.read("tracking_events")
    for name, frame in (("legs", legs), ("milestone_plans", plans), ("tracking_events", events)):
        contract.validate(name, frame)  # raises on any breach
    assert set(HANDLING) <= set(events["event_type"])
    shipment_level = events["event_type"].isin(["received", "collected"])
    assert events.loc[shipment_level, "leg_index"].isna().all()
    assert events.loc[~shipment_level, "leg_index"].notna().all()
    # every leg is known to the plan: scans carry the leg index of their own (parallel) leg
    known = legs.set_index(["shipment_id", "leg_index"]).index
    leg_scans = events[events["leg_index"].notna()]
    assert pd.MultiIndex.from_frame(
        leg_scans[["shipment_id", "leg_index"]].astype({"leg_index": "int64"})).isin(known).all()
    # ... at that leg's own hubs: departures and handling at its from_hub, arrivals at its to_hub
    hubs = legs.set_index(["shipment_id", "leg_index"])[["from_hub", "to_hub"]]
    scans = leg_scans.astype({"leg_index": "int64"}).join(hubs, on=["shipment_id", "leg_index"])
    at_from = scans["event_type"].isin(["departed", "checked_in", "handed_over"])
    assert (scans.loc[at_from, "hub_id"] == scans.loc[at_from, "from_hub"]).all()
    arrived = scans["event_type"] == "arrived"
    assert (scans.loc[arrived, "hub_id"] == scans.loc[arrived, "to_hub"]).all()
    # feeds_leg, read as the contract defines it: one final leg, every leg feeds a later one
    n_legs = legs.groupby("shipment_id")["leg_index"].transform("size")
    target = legs["feeds_leg"].fillna(legs["leg_index"] + 1).astype("int64")
    final = target >= n_legs
    assert (final.groupby(legs["shipment_id"]).sum() == 1).all()
    assert ((target > legs["leg_index"]) & (final | (target < n_legs))).all()
    # consolidations: two or three inbound legs into one, on about a quarter of the shipments
    inbound = legs.assign(target=target)[~final].groupby(["shipment_id", "target"]).size()
    merged = inbound[inbound >= 2]
    share = merged.index.get_level_values(0).nunique() / legs["shipment_id"].nunique()
    assert 0.18 < share < 0.3 and set(merged.unique()) <= {2, 3}
    # merged inbound legs end at the hub the merged leg leaves from
    by_leg = legs.set_index(["shipment_id", "leg_index"])
    feeders = legs.assign(target=target)[~final]
    leaves = by_leg.loc[list(zip(feeders["shipment_id"], feeders["target"])), "from_hub"]
    assert (feeders["to_hub"].to_numpy() == leaves.to_numpy()).all()


def test_planned_steps_come_before_the_legs_they_prepare(lake):
    legs, plans = lake.read("legs"), lake.read("milestone_plans")
    per_leg = plans[plans["leg_index"].notna()].astype({"leg_index": "int64"}).pivot_table(
        index=["shipment_id", "leg_index"], columns="event_type", values="planned_at",
        aggfunc="first")
    joined = per_leg.join(legs.set_index(["shipment_id", "leg_index"])["planned_departure"])
    assert len(joined) == len(legs)  # every leg has its check-in and hand-over planned
    assert (joined["checked_in"] < joined["handed_over"]).all()
    assert (joined["handed_over"] < joined["planned_departure"]).all()
    shipment = plans[plans["leg_index"].isna()].pivot_table(
        index="shipment_id", columns="event_type", values="planned_at", aggfunc="first")
    first = joined.xs(0, level="leg_index")
    assert (shipment["picked_up"] <= shipment["received"]).all()
    assert (shipment["received"].reindex(first.index) <= first["checked_in"]).all()
    # collection is planned after the last planned arrival, for part of the shipments only,
    # then out for delivery and the delivery itself, before the promise
    last_arrival = legs.groupby("shipment_id")["planned_arrival"].max()
    collected = shipment["collected"].dropna()
    assert 0.2 < len(collected) / len(shipment) < 0.95
    assert (collected > last_arrival.reindex(collected.index)).all()
    assert (collected < shipment["out_for_delivery"].reindex(collected.index)).all()
    assert (shipment["out_for_delivery"] > last_arrival.reindex(shipment.index)).all()
    assert (shipment["out_for_delivery"] < shipment["delivered"]).all()
    promised = lake.read("shipments").set_index("shipment_id")["promised_at"]
    assert (shipment["delivered"] < promised.reindex(shipment.index)).all()


def test_merged_leg_leaves_after_every_inbound_arrival_in_the_scans(lake):
    legs, events = lake.read("legs"), lake.read("tracking_events")
    target = legs["feeds_leg"]
    feeders = legs[target.notna()].assign(target=target[target.notna()].astype("int64"))
    assert len(feeders)
    first = events[events["leg_index"].notna()].astype({"leg_index": "int64"}).groupby(
        ["shipment_id", "leg_index", "event_type"])["event_time"].min()
    arrived = first.xs("arrived", level="event_type")
    departed = first.xs("departed", level="event_type")
    # the explicit feeders and the leg just before the merge (its feeds_leg is empty)
    last_inbound = feeders.groupby("shipment_id")["target"].first()
    inbound = pd.concat([
        feeders[["shipment_id", "leg_index", "target"]],
        pd.DataFrame({"shipment_id": last_inbound.index, "leg_index": last_inbound - 1,
                      "target": last_inbound.to_numpy()})])
    arr = arrived.reindex(pd.MultiIndex.from_frame(inbound[["shipment_id", "leg_index"]]))
    dep = departed.reindex(pd.MultiIndex.from_frame(inbound[["shipment_id", "target"]]))
    seen = arr.notna().to_numpy() & dep.notna().to_numpy()
    assert seen.sum() > 100
    # a parcel other than the first is scanned up to 0.3 h after its milestone
    gap = _hours(dep[seen]) - _hours(arr[seen])
    assert (gap > -0.3).all()
    assert np.median(gap) > 1.0  # handling after the last truck, then the service


def test_true_journeys_follow_the_critical_path(truth):
    plan, _book, j = truth
    n, L = plan.mode.shape
    rows = np.arange(n)
    consolidated = (plan.feeds[:, 0] > 1)
    assert 0.2 < consolidated.mean() < 0.3
    release = np.where(np.isnan(j.arr), np.nan, j.arr)
    release = np.where(plan.customs_leg[:, None] == np.arange(L), j.left_customs[:, None], release)
    for i in range(1, L):
        fed = plan.feeds[:, :i] == i
        last_in = np.where(fed, release[:, :i], -np.inf).max(axis=1)
        on = fed.any(axis=1)
        assert (j.checked_in[on, i] >= last_in[on]).all()
        assert (j.dep[on, i] >= last_in[on]).all()
        if i == 2:  # the merge of two trucks: it waits for the later one
            two = on & (fed.sum(axis=1) >= 2)
            assert two.sum() > 200
            assert (j.dep[two, i] >= np.nanmax(j.arr[two, :2], axis=1)).all()
    # handling steps in order before each leg, and the collection before out for delivery
    has = np.arange(L)[None, :] < plan.n_legs[:, None]
    assert (j.pickup <= j.received).all()
    assert (j.received <= j.checked_in[:, 0]).all()
    assert (j.checked_in[has] <= j.handed_over[has]).all()
    assert (j.handed_over[has] <= j.dep[has]).all()
    assert not np.isnan(j.checked_in[has]).any() and np.isnan(j.checked_in[~has]).all()
    last = release[rows, plan.n_legs - 1]
    col = plan.collects
    assert 0.2 < col.mean() < 0.95
    assert (j.collected[col] >= last[col]).all() and (j.ofd[col] >= j.collected[col]).all()
    assert np.isnan(j.collected[~col]).all()


def test_a_slow_check_in_predicts_a_missed_service(truth):
    plan, _book, j = truth
    from shipdelay.world.handling import planned_steps
    from shipdelay.world.journeys import FINAL_MILE_HOURS, HANDLING_HOURS
    from shipdelay.world.network import SERVICE_INTERVAL_HOURS
    from shipdelay.world.plans import CUSTOMS_PLANNED_HOURS

    planned = planned_steps(plan, HANDLING_HOURS, FINAL_MILE_HOURS, CUSTOMS_PLANNED_HOURS)
    scheduled = SERVICE_INTERVAL_HOURS[np.maximum(plan.mode, 0)] > 0
    legs = (plan.mode >= 0) & scheduled
    slip = (j.checked_in - planned["checked_in"])[legs]
    missed = j.missed[legs]
    slow, fast = slip > np.quantile(slip, 0.9), slip < np.quantile(slip, 0.5)
    assert missed[slow].mean() > 3 * max(missed[fast].mean(), 0.005)


def test_the_default_world_keeps_its_shape(small_world):
    lake, _summary = small_world
    events = lake.read("tracking_events")
    assert not events["event_type"].isin(HANDLING).any()
    assert events["leg_index"].notna().all()
    legs = lake.read("legs")
    assert "feeds_leg" not in legs or legs["feeds_leg"].isna().all()
    assert not lake.exists("milestone_plans")


def test_the_simulate_command_passes_the_shape_options(monkeypatch, data_dir):
    from typer.testing import CliRunner

    import shipdelay.world.simulate as sim
    from shipdelay.cli import app

    seen = []
    monkeypatch.setattr(sim, "simulate", lambda cfg, link, **kw: seen.append(cfg) or
                        sim.SimSummary(now=pd.Timestamp("2026-01-01", tz="UTC")))
    runner = CliRunner()
    result = runner.invoke(app, ["simulate", "--shipments", "50",
                                 "--consolidation-share", "0.2", "--handling-milestones"])
    assert result.exit_code == 0, result.output
    assert seen[-1].consolidation_share == 0.2 and seen[-1].handling_steps
    result = runner.invoke(app, ["simulate", "--shipments", "50"])
    assert seen[-1].consolidation_share == 0.0 and not seen[-1].handling_steps
    bad = runner.invoke(app, ["simulate", "--consolidation-share", "1.5"])
    assert bad.exit_code == 2 and "--consolidation-share" in bad.output
    assert len(seen) == 2  # nothing simulated on bad input
