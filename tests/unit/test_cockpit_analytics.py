"""Analytics for managers on a hand-made handful of deliveries: rates, trends, scorecards."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cockpit.analytics import carrier_scorecard, for_people, summary, weekly


def _delivered():
    weeks = [f"2025-10-{d:02d}" for d in (6, 13, 20, 27)] + ["2025-11-03", "2025-11-10",
                                                             "2025-11-17", "2025-11-24"]
    rows = []
    for i, week in enumerate(weeks):
        # carrier K: late once a week in the first four weeks, twice in the last four (of 4)
        for j in range(4):
            late = j < (1 if i < 4 else 2)
            rows.append(("K", week, late, 10.0 if late else -2.0, 700.0 if late else 0.0))
        rows.append(("L", week, False, -1.0, 0.0))
    frame = pd.DataFrame(rows, columns=["carrier", "week", "late", "delay_h", "penalty"])
    frame["shipment_id"] = [f"S{i}" for i in range(len(frame))]
    return frame


def test_summary_rates_penalties_and_trend_by_hand():
    out = summary(_delivered(), "carrier").set_index("carrier")
    assert out.loc["K", "shipments"] == 32 and out.loc["K", "late_rate"] == 12 / 32
    assert out.loc["K", "penalties"] == 12 * 700.0
    assert np.isclose(out.loc["K", "trend_points"], (2 / 4 - 1 / 4) * 100)
    assert out.loc["L", "trend_points"] == 0 and out.index[0] == "K"


def test_weekly_rates():
    out = weekly(_delivered(), "carrier")
    k = out[out["carrier"] == "K"].set_index("week")["late_rate"]
    assert k.tolist() == [0.25] * 4 + [0.5] * 4


def test_scorecard_joins_the_past_and_the_risk_in_flight():
    in_flight = pd.DataFrame({"shipment_id": ["A", "B", "C"], "carrier": ["K", "K", "M"],
                              "risk_band": ["high", "low", "medium"],
                              "exposure": [100.0, 5.0, 40.0]})
    card = carrier_scorecard(_delivered(), in_flight).set_index("carrier")
    assert card.loc["K", ["in_flight", "at_risk"]].tolist() == [2, 1]
    assert card.loc["K", "exposure"] == 105.0 and card.loc["M", "at_risk"] == 1
    assert card.loc["L", "in_flight"] == 0
    assert card.loc["K", "p90_delay_h"] == 10.0
    shown = for_people(card.reset_index()).set_index("carrier")
    assert shown.loc["K", "late_%"] == 37.5
