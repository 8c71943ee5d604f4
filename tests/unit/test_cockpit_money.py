"""The cockpit's money at stake: expected penalties against hand computations and sampling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from cockpit.money import Penalties, expected_hours_late, exposure, money_text


def test_expected_hours_late_matches_sampling_of_the_normal():
    rng = np.random.default_rng(0)
    p50, p90 = np.array([-10.0, 0.0, 12.0]), np.array([5.0, 20.0, 30.0])
    s = (p90 - p50) / norm.ppf(0.9)
    draws = rng.normal(p50[:, None], s[:, None], (3, 400_000))
    sampled = np.maximum(draws, 0).mean(axis=1)
    np.testing.assert_allclose(expected_hours_late(p50, p90), sampled, rtol=0.01, atol=0.02)


def test_no_spread_means_the_median_for_sure_and_missing_means_zero():
    got = expected_hours_late(np.array([7.0, -3.0, np.nan]), np.array([7.0, -3.0, np.nan]))
    np.testing.assert_allclose(got, [7.0, 0.0, 0.0])


def test_exposure_of_two_shipments_by_hand():
    frame = pd.DataFrame({"customer": ["A", "B"], "service_level": ["express", "economy"],
                          "p_late": [0.5, 0.1], "delay_p50_h": [10.0, -20.0],
                          "delay_p90_h": [10.0, -20.0]})
    out = exposure(frame, Penalties(per_late=1000.0, per_hour=50.0))
    # A: 0.5 x 1000 + 10 h x 50 = 1000; B: 0.1 x 1000 + 0 h = 100 (no spread: hours are sure)
    np.testing.assert_allclose(out["exposure"], [1000.0, 100.0])


def test_overrides_customer_before_service_level_before_defaults(tmp_path):
    path = tmp_path / "penalties.csv"
    path.write_text("customer_id,service_level,per_late,per_hour\n"
                    "A,,2000,\n"
                    ",express,800,40\n")
    penalties = Penalties.load(500.0, 20.0, path)
    late, hour = penalties.terms(pd.Series(["A", "B", "C"]),
                                 pd.Series(["express", "express", "economy"]))
    assert late.tolist() == [2000.0, 800.0, 500.0]
    assert hour.tolist() == [40.0, 40.0, 20.0]  # A's empty per_hour keeps its level's


def test_a_bad_penalties_file_is_a_clear_error(tmp_path):
    path = tmp_path / "penalties.csv"
    path.write_text("who,amount\nA,3\n")
    with pytest.raises(ValueError, match="needs the columns"):
        Penalties.load(500.0, 20.0, path)
    path.write_text("customer_id,per_late,per_hour\nA,-1,2\n")
    with pytest.raises(ValueError, match="negative per_late"):
        Penalties.load(500.0, 20.0, path)


def test_money_for_people():
    assert money_text(12_400.4) == "12,400"
    assert money_text(2_345_000) == "2.3 M"
