"""The trained model behaves as operations need it to, the split never leaks, and the registry
only lets a better model through."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from registry.loader import alias_version, load_by_alias
from registry.promote import promote, rollback
from training.train import holdout_evaluator, train


@pytest.fixture(scope="module")
def bundle(trained):
    settings, _, _report = trained
    return load_by_alias(settings, "challenger")


def _p(bundle, frame):
    return bundle.p_late(bundle.spec.matrix(frame))


def test_training_run_is_complete(trained):
    _, split, report = trained
    head = report.headline()
    assert {"model", "ceiling", "behind_schedule", "lane_history", "logistic"} <= set(head.index)
    assert head.loc["model", "roc_auc"] > head.loc["behind_schedule", "roc_auc"]
    assert head.loc["ceiling", "roc_auc"] > head.loc["model", "roc_auc"] - 0.1
    assert report.version is not None and len(split.test) > 500


def test_split_never_leaks(trained):
    _, split, _ = trained
    b = split.bounds
    booked = {k: pd.to_datetime(getattr(split, k)["booked_at_s"], unit="s", utc=True)
              for k in ("train", "valid", "test")}
    assert booked["train"].max() < b["train_end"] <= b["valid_start"] - split.horizon
    assert booked["valid"].min() >= b["valid_start"] and booked["valid"].max() < b["valid_end"]
    assert booked["test"].min() >= b["test_start"] >= b["valid_end"] + split.horizon
    # every label used in training was known before the next window opened
    assert split.train["delivered_at"].max() < b["valid_start"]
    assert split.valid["delivered_at"].max() < b["test_start"]
    assert not set(split.train["shipment_id"]) & set(split.test["shipment_id"])


def test_risk_never_falls_as_slip_grows(bundle, trained):
    _, split, _ = trained
    rows = split.test.sample(300, random_state=1)
    rows = rows.assign(slip_h=rows["slip_h"].fillna(0.0))  # from a known slip upwards
    previous = _p(bundle, rows)
    for extra in (2, 6, 12, 24, 48, 96):
        later = rows.assign(slip_h=rows["slip_h"] + extra)
        now = _p(bundle, later)
        assert (now >= previous - 1e-12).all()
        previous = now
    assert (previous > _p(bundle, rows)).mean() > 0.5  # and it does rise for most


def test_shipment_id_has_no_effect(bundle, trained):
    _, split, _ = trained
    rows = split.test.head(200)
    renamed = rows.assign(shipment_id=[f"X{i}" for i in range(len(rows))])
    assert np.array_equal(_p(bundle, rows), _p(bundle, renamed))


def test_customs_hold_note_raises_risk(bundle, trained):
    _, split, _ = trained
    rows = split.test[split.test["note_customs"] == 0].sample(300, random_state=2)
    held = rows.assign(note_customs=1, customs_holds=1, customs_open=1)
    before, after = _p(bundle, rows), _p(bundle, held)
    assert (after >= before - 1e-12).all() and after.mean() > before.mean() + 0.02


def test_interval_and_probability_are_sane(bundle, trained):
    _, split, _ = trained
    X = bundle.spec.matrix(split.test)
    q = bundle.delay_quantiles(X)
    assert (q[0.1] <= q[0.5]).all() and (q[0.5] <= q[0.9]).all()
    p = bundle.p_late(X)
    assert ((p > 0) & (p < 1)).all()


def test_gate_refuses_a_worse_model_and_rollback_restores(trained):
    settings, split, _ = trained
    evaluate = holdout_evaluator(settings)
    first = promote(settings, evaluate)
    assert first.ok and alias_version(settings, "champion") is not None
    champion = alias_version(settings, "champion")
    # a crippled challenger: two leaves, a handful of rounds
    train(settings, params={"num_leaves": 2, "learning_rate": 0.01}, split=split,
          run_name="worse")
    refused = promote(settings, evaluate)
    assert not refused.ok and refused.reasons  # said why: log loss, calibration or a stage
    assert alias_version(settings, "champion") == champion
    forced = promote(settings, evaluate, force=True)
    assert forced.ok and alias_version(settings, "champion") != champion
    _rolled_from, rolled_to = rollback(settings)
    assert rolled_to == champion and alias_version(settings, "champion") == champion
