"""Where the risk is: at-risk volume per hub and risk per lane, on a hand-made handful."""

from __future__ import annotations

import pandas as pd

from cockpit.geo import arriving_by_day, hub_load, lane_risk, outlines
from cockpit.pages_map import hub_filter

NOW = pd.Timestamp("2025-11-01T00:00:00Z")
H = pd.Timedelta(hours=1)


def _world():
    shipments = pd.DataFrame({
        "shipment_id": ["A", "B", "C", "D"],
        "risk_band": ["high", "medium", "low", "high"],
        "p_late": [0.9, 0.4, 0.1, 0.7],
        "current_hub": ["X", "Y", "X", "Z"],
        "origin_hub": ["X", "X", "Y", "Z"], "destination_hub": ["Y", "Y", "X", "X"]})
    legs = pd.DataFrame({
        "shipment_id": ["A", "A", "B", "C", "D", "D"],
        "to_hub": ["Y", "W", "X", "Y", "X", "W"],
        "planned_arrival": [NOW + 10 * H, NOW + 60 * H, NOW + 30 * H, NOW + 5 * H,
                            NOW - 5 * H, NOW + 70 * H]})
    return shipments, legs


def test_hub_load_counts_at_risk_shipments_present_or_arriving_once_each():
    shipments, legs = _world()
    day = hub_load(shipments, legs, NOW, 24).set_index("hub_id")
    # X: A there now (C is low risk; D arrived before now); Y: B there now, A arriving in 10 h
    assert day.loc["X"].tolist() == [1, 0, 1]
    assert day.loc["Y"].tolist() == [1, 1, 2]
    assert day.loc["Z"].tolist() == [1, 0, 1]
    assert "W" not in day.index
    three = hub_load(shipments, legs, NOW, 72).set_index("hub_id")
    # within 72 h B reaches X (X: A there, B arriving) and A and D reach W
    assert three.loc["X"].tolist() == [1, 1, 2] and three.loc["W"].tolist() == [0, 2, 2]
    assert three["volume"].is_monotonic_decreasing


def test_lane_risk_is_the_mean_per_origin_destination():
    shipments, _ = _world()
    lanes = lane_risk(shipments).set_index(["origin_hub", "destination_hub"])
    assert lanes.loc[("X", "Y"), "p_late"] == (0.9 + 0.4) / 2
    assert lanes.loc[("X", "Y"), "at_risk"] == 2 and lanes.loc[("Y", "X"), "at_risk"] == 0


def test_arriving_by_day_spreads_arrivals_over_days():
    shipments, legs = _world()
    table = arriving_by_day(shipments, legs, NOW, days=3).set_index("hub_id")
    assert table.loc["W", "2025-11-03"] == 2 and table.loc["W", "total"] == 2
    assert table.loc["Y", "2025-11-01"] == 1 and table.loc["X", "2025-11-02"] == 1


def test_outlines_are_closed_rings_on_the_globe_and_the_hub_filter_reads_both_columns():
    rings = outlines()
    assert len(rings) >= 6
    for ring in rings:
        assert ring[0] == ring[-1]
        assert all(-180 <= x <= 180 and -90 <= y <= 90 for x, y in ring)
    assert hub_filter('Port "A"') == '{hub} = "Port A" || {hubs_ahead} contains "Port A"'
    assert hub_filter(None) == ""
