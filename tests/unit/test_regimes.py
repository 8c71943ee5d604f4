"""Regime changes in the simulated world: each acts from its date on, and only from then.

Worlds with and without a change share their seed, so their shipments draw the same random
numbers: before the change their journeys agree, and their scans to within the parcels' jitter
(a change after the date alters how many notes are drawn, which moves the scans' own draws).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shipdelay.lake import Lake
from shipdelay.world.regimes import Regime, parse_regime
from shipdelay.world.simulate import SimConfig, simulate

BASE = {"shipments": 2_500, "start": "2025-10-01", "days": 60, "seed": 23,
        "ceiling_shipments": 250, "ceiling_draws": 30, "chunk_size": 2_500}
CHANGE = "2025-11-01"
CHANGE_TS = pd.Timestamp(CHANGE, tz="UTC")
CHANGED = (Regime("carrier_degrades", "TRU-02", CHANGE, 4.0),
           Regime("customs_tightens", "US", CHANGE, 4.0, 2.0))
SCAN_JITTER_H = 0.31  # a parcel's scan of a milestone is up to 0.3 h after the first parcel's
REPORTING = (Regime("feed_silent", "P-CNSHA", CHANGE), Regime("feed_silent", "AIR-01", CHANGE),
             Regime("new_lane", "shanghai>chicago", CHANGE, 0.05))


def _world(tmp_path_factory, name: str, regimes=(), **options) -> Lake:
    link = tmp_path_factory.mktemp(name) / "lake"
    simulate(SimConfig(**{**BASE, **options}, regimes=regimes), link)
    return Lake(link)


@pytest.fixture(scope="module")
def worlds(tmp_path_factory) -> dict[str, Lake]:
    return {"stable": _world(tmp_path_factory, "stable"),
            "changed": _world(tmp_path_factory, "changed", CHANGED),
            "reporting": _world(tmp_path_factory, "reporting", REPORTING, ceiling_shipments=0)}


def _departures(lake: Lake) -> pd.DataFrame:
    """Each leg's first departure scan next to its plan and carrier."""
    ev = lake.read("tracking_events")
    dep = ev[ev["event_type"] == "departed"].groupby(["shipment_id", "leg_index"])[
        "event_time"].min().reset_index()
    legs = lake.read("legs").astype({"leg_index": "Int64"})
    out = dep.astype({"leg_index": "Int64"}).merge(legs, on=["shipment_id", "leg_index"])
    out["slip_h"] = (out["event_time"] - out["planned_departure"]).dt.total_seconds() / 3600
    return out.set_index(["shipment_id", "leg_index"]).sort_index()


def test_degraded_carrier_is_slower_after_its_date_and_not_before(worlds):
    stable, changed = _departures(worlds["stable"]), _departures(worlds["changed"])
    both = stable.join(changed[["event_time", "slip_h"]], rsuffix="_changed", how="inner")
    mine = both["carrier_id"] == "TRU-02"
    # the change counts from the service's departure slot: a little margin for the slip itself
    before = both["event_time"] < CHANGE_TS - pd.Timedelta(hours=1)
    assert (mine & before).sum() > 100 and (mine & ~before).sum() > 100
    jitter = both["slip_h_changed"] - both["slip_h"]
    assert (jitter[before].abs() <= SCAN_JITTER_H).all(), \
        "a change from a date must leave the journeys before it untouched"
    after = mine & (both["event_time"] >= CHANGE_TS + pd.Timedelta(days=1))
    extra = jitter[after]
    assert (extra >= -SCAN_JITTER_H).all() and extra.mean() > 2.0
    others = ~mine & (both["event_time"] >= CHANGE_TS + pd.Timedelta(days=1)) & \
        (both.reset_index()["leg_index"].to_numpy() == 0)
    first_legs = both.loc[others, "slip_h_changed"] - both.loc[others, "slip_h"]
    assert abs(first_legs.mean()) < 0.05 * extra.mean(), "other carriers' first legs unchanged"


def test_tightened_customs_holds_more_imports_after_its_date(worlds):
    def holds(lake: Lake) -> pd.Series:
        ev = lake.read("tracking_events")
        hubs = lake.read("hubs").set_index("hub_id")["country"]
        held = ev[ev["event_type"] == "customs_hold"].drop_duplicates("shipment_id")
        held = held[held["hub_id"].map(hubs) == "US"]
        return held["event_time"] >= CHANGE_TS + pd.Timedelta(days=2)

    stable, changed = holds(worlds["stable"]), holds(worlds["changed"])
    assert (~changed).sum() == pytest.approx((~stable).sum(), abs=2)
    assert changed.sum() > 1.8 * max(stable.sum(), 1)


def test_ceiling_follows_the_regime(worlds):
    """The hidden truth knows the degraded carrier: on shipments that travel with it after the
    change, the ceiling's P(late) rises with the realized late rate."""
    def on_carrier(lake: Lake) -> pd.DataFrame:
        legs = lake.read("legs")
        ids = legs.loc[(legs["carrier_id"] == "TRU-02")
                       & (legs["planned_departure"] >= CHANGE_TS), "shipment_id"].unique()
        ceiling = lake.read("ceiling")
        return ceiling[ceiling["shipment_id"].isin(ids)].merge(
            lake.read("outcomes")[["shipment_id", "is_late"]], on="shipment_id")

    stable, changed = on_carrier(worlds["stable"]), on_carrier(worlds["changed"])
    assert len(stable) > 100 and len(changed) > 100
    assert changed["p_late"].mean() > stable["p_late"].mean() + 0.03
    assert changed["is_late"].mean() > stable["is_late"].mean()


def test_silent_feed_emits_no_scans_after_its_date(worlds):
    ev = worlds["reporting"].read("tracking_events")
    legs = worlds["reporting"].read("legs")
    at_hub = ev[ev["hub_id"] == "P-CNSHA"]
    assert (at_hub["event_time"] < CHANGE_TS).sum() > 10
    assert (at_hub["event_time"] >= CHANGE_TS).sum() == 0
    legs = legs.astype({"leg_index": "Int64"})
    carried = ev.astype({"leg_index": "Int64"}).merge(
        legs[["shipment_id", "leg_index", "carrier_id"]], on=["shipment_id", "leg_index"])
    air = carried[carried["carrier_id"] == "AIR-01"]
    assert (air["event_time"] < CHANGE_TS).sum() > 50
    assert (air["event_time"] >= CHANGE_TS).sum() == 0
    # the shipments still move: the stable world's scans after the date exist for that hub
    stable = worlds["stable"].read("tracking_events")
    assert ((stable["hub_id"] == "P-CNSHA") & (stable["event_time"] >= CHANGE_TS)).sum() > 10


def test_new_lane_is_never_booked_before_it_opens(worlds):
    for name in ("reporting", "stable"):
        sh = worlds[name].read("shipments")
        lane = (sh["origin_hub"] == "D-SHA") & (sh["destination_hub"] == "D-CHI")
        after = sh["booked_at"] >= CHANGE_TS
        assert (lane & ~after).sum() == 0 if name == "reporting" else True
        if name == "reporting":
            share = (lane & after).sum() / after.sum()
            assert 0.03 < share < 0.08


@pytest.mark.parametrize("text, message", [
    ("carrier_degrades:TRU-02", "kind:target"),
    ("slows_down:TRU-02:2025-11-01", "unknown regime kind"),
    ("carrier_degrades:TRU-02:someday", "not a date"),
    ("carrier_degrades:TRU-02:2025-11-01:fast", "must be numbers"),
    ("new_lane:shanghai>chicago:2025-11-01:1.5", "share of bookings"),
])
def test_bad_regimes_are_refused_with_a_reason(text, message):
    with pytest.raises(ValueError, match=message):
        parse_regime(text)


def test_regimes_from_a_json_file(tmp_path):
    path = tmp_path / "regimes.json"
    path.write_text('[{"kind": "hub_congestion", "target": "P-CNSHA", "start": "2025-11-01"},'
                    ' {"kind": "customs_tightens", "target": "US", "start": "2025-11-02",'
                    ' "factor": 3, "factor2": 1.5}]')
    regimes = parse_regime(str(path))
    assert [r.kind for r in regimes] == ["hub_congestion", "customs_tightens"]
    assert regimes[0].factor == 2.0 and regimes[1].factor2 == 1.5
    assert np.isclose(regimes[1].start_hours(pd.Timestamp("2025-11-01", tz="UTC")), 24.0)


def test_hub_congestion_doubles_from_its_date_in_the_world_and_its_ceiling_view():
    from shipdelay.world.disruptions import build_world
    from shipdelay.world.network import build_network
    from shipdelay.world.regimes import scales

    net = build_network(3)
    start = pd.Timestamp("2025-10-01", tz="UTC")
    plain = build_world(net.hubs, start, 60, 3)
    changed = build_world(net.hubs, start, 60, 3)
    changed.regime = scales([Regime("hub_congestion", "P-CNSHA", "2025-10-11")], net, changed)
    hub = np.full(4, int(np.flatnonzero(net.hubs["hub_id"] == "P-CNSHA")[0]))
    other = np.full(4, int(np.flatnonzero(net.hubs["hub_id"] == "A-PVG")[0]))
    t = np.array([5 * 24.0, 9 * 24 + 23, 10 * 24.0, 30 * 24.0])
    ratio = changed.congestion(hub, t) / plain.congestion(hub, t)
    assert np.allclose(ratio, [1, 1, 2, 2])
    assert np.array_equal(changed.congestion(other, t), plain.congestion(other, t))
    # the ceiling's view knows the regime too, as of any moment
    view = changed.conditional(np.full(4, 8 * 24.0), np.random.default_rng(0))
    same = plain.conditional(np.full(4, 8 * 24.0), np.random.default_rng(0))
    assert np.allclose(view.congestion(hub, t) / same.congestion(hub, t), [1, 1, 2, 2])
