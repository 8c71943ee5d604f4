"""The cockpit's pure data functions: texts for people, band counts, fresh answers, alerts."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cockpit.alerts import inbox_rows, merge_alerts, parse
from cockpit.data import apply_answers, band_counts, delay_text, hours_text, time_left_text

T = pd.Timestamp("2025-11-01T12:00:00Z")


def test_hours_for_people():
    assert hours_text(5.4) == "5 h"
    assert hours_text(47.6) == "2 d 0 h"
    assert hours_text(float("nan")) == "-"
    assert time_left_text(-295.3) == "12 d 7 h overdue"
    assert time_left_text(-3.2) == "3 h overdue"
    assert time_left_text(12.0) == "12 h left"
    assert delay_text(5.2) == "5 h late"
    assert delay_text(-3.0) == "3 h early"
    assert delay_text(0.3) == "on time"


def test_band_counts_equal_a_count_of_the_column():
    rng = np.random.default_rng(1)
    bands = rng.choice(["low", "medium", "high"], 1000, p=[0.6, 0.3, 0.1])
    counts = band_counts(pd.DataFrame({"risk_band": bands}))
    assert counts == {b: int((bands == b).sum()) for b in ("high", "medium", "low")}
    assert band_counts(pd.DataFrame({"risk_band": ["low"]})) == {"high": 0, "medium": 0, "low": 1}


def _scores():
    return pd.DataFrame({"shipment_id": ["S1", "S2", "S3"], "p_late": [0.1, 0.2, 0.3],
                         "risk_band": ["low", "low", "medium"],
                         "delay_p50_h": [1.0, 2.0, 3.0], "delay_p90_h": [4.0, 5.0, 6.0],
                         "eta": [T] * 3, "eta_p10": [T] * 3, "eta_p90": [T] * 3,
                         "reasons": [["old"], [], []]})


def test_fresh_answers_replace_only_their_rows_and_keep_old_reasons_when_none():
    answers = [{"shipment_id": "S2", "ok": True, "p_late": 0.9, "risk_band": "high",
                "delay_p50_h": 30.0, "delay_p90_h": 50.0, "eta": "2025-11-03T00:00:00Z",
                "eta_p10": "2025-11-02T00:00:00Z", "eta_p90": "2025-11-04T00:00:00Z",
                "reasons": ["a customs hold"]},
               {"shipment_id": "S1", "ok": True, "p_late": 0.05, "risk_band": "low",
                "delay_p50_h": 0.0, "delay_p90_h": 1.0, "eta": "2025-11-01T13:00:00Z",
                "eta_p10": "2025-11-01T12:00:00Z", "eta_p90": "2025-11-01T14:00:00Z",
                "reasons": []},
               {"shipment_id": "S3", "ok": False, "error": "already delivered"}]
    out = apply_answers(_scores(), answers)
    assert out["source"].tolist() == ["service", "service", "nightly"]
    assert out["p_late"].tolist() == [0.05, 0.9, 0.3]
    assert out["risk_band"].tolist() == ["low", "high", "medium"]
    assert out.loc[1, "eta"] == pd.Timestamp("2025-11-03T00:00:00Z")
    assert out["reasons"].tolist() == [["old"], ["a customs hold"], []]


def test_no_answers_keep_the_nightly_rows():
    out = apply_answers(_scores(), [])
    pd.testing.assert_frame_equal(out.drop(columns="source"), _scores())
    assert set(out["source"]) == {"nightly"}


def test_alerts_once_each_newest_first():
    a = {"alert_id": "S1@1", "shipment_id": "S1", "as_of": "2025-11-01T10:00:00Z", "p_late": 0.7}
    b = {"alert_id": "S2@2", "shipment_id": "S2", "as_of": "2025-11-01T11:00:00Z", "p_late": 0.8}
    inbox = merge_alerts([a], [b, a])
    assert [x["alert_id"] for x in inbox] == ["S2@2", "S1@1"]
    assert len(merge_alerts([], [a, b], size=1)) == 1
    assert parse([b'{"alert_id": "x"}', b"not json", b'{"no_id": 1}']) == [{"alert_id": "x"}]


def test_inbox_rows_say_what_happened_in_words():
    rows = inbox_rows([{"alert_id": "S1@1", "shipment_id": "S1", "kind": "jump",
                        "p_late": 0.72, "previous_p_late": 0.4, "as_of": "2025-11-01T10:00:00Z",
                        "reasons": ["a customs hold", "late departure"]}])
    row = rows.iloc[0]
    assert (row["what"], row["risk"]) == ("risk jumped", "40% → 72%")
    assert row["why"] == "a customs hold; late departure"
    assert row["when"] == "Sat 01 Nov 10:00"
