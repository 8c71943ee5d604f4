"""The stream's alert rule: which risk changes alert, and as what."""

from __future__ import annotations

import numpy as np

from serving.stream_batch import AlertRule, pick_alerts

RULE = AlertRule(threshold=0.6, jump=0.2)


def test_crossing_the_threshold_alerts_once():
    p = np.array([0.61, 0.65, 0.59, 0.60])
    previous = np.array([0.55, 0.62, 0.30, np.nan])  # the last: first score ever
    hit, kind = pick_alerts(p, previous, np.ones(4, bool), RULE)
    assert hit.tolist() == [True, False, True, True]
    assert kind.tolist() == ["crossed threshold", "jumped", "crossed threshold"]


def test_a_jump_below_the_threshold_alerts_and_both_are_named():
    p = np.array([0.45, 0.75, 0.44])
    previous = np.array([0.20, 0.50, 0.25])
    hit, kind = pick_alerts(p, previous, np.ones(3, bool), RULE)
    assert hit.tolist() == [True, True, False]  # +0.25 jumps; +0.19 does not
    assert kind.tolist() == ["jumped", "crossed threshold and jumped"]


def test_falling_risk_and_delivered_shipments_never_alert():
    p = np.array([0.10, 0.90, 0.95])
    previous = np.array([0.90, 0.10, 0.10])
    moving = np.array([True, False, True])
    hit, kind = pick_alerts(p, previous, moving, RULE)
    assert hit.tolist() == [False, False, True]
    assert kind.tolist() == ["crossed threshold and jumped"]


def test_a_first_score_only_alerts_by_crossing():
    """No previous score: there is nothing to jump from."""
    hit, _ = pick_alerts(np.array([0.5]), np.array([np.nan]), np.array([True]), RULE)
    assert not hit.any()
