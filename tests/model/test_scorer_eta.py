"""Every door's scorer gives delivery times of a shipment in flight at or after the instant its
features describe, and leaves the model's delay quantiles as they are when they all lie after
it (`serving.eta`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from registry.loader import MODEL_NAME, bundle_folder, client
from serving.scorer import Scorer
from training.bundle import Bundle

NOW = pd.Timestamp("2025-06-01", tz="UTC")


@pytest.fixture(scope="module")
def scorer_and_rows(trained):
    settings, split, report = trained
    c = client(settings)
    mv = c.get_model_version(MODEL_NAME, str(report.version))
    scorer = Scorer(Bundle.load(bundle_folder(settings, c, mv), version=str(mv.version)))
    rows = split.test.sample(min(200, len(split.test)), random_state=5).reset_index(drop=True)
    rows = rows[["shipment_id", *scorer.inputs]].copy()
    rows["request_time_s"] = NOW.timestamp()
    return scorer, rows


def test_overdue_shipments_are_never_expected_in_the_past(scorer_and_rows):
    scorer, rows = scorer_and_rows
    overdue = rows.assign(hours_to_promised=-500.0)  # 500 h past the promise, still moving
    scored = scorer.score(overdue, reasons=False)
    for c in ("eta_p10", "eta", "eta_p90"):
        assert (scored[c] >= NOW).all(), c
    assert (scored["eta_p10"] <= scored["eta"]).all() and (scored["eta"] <= scored["eta_p90"]).all()
    assert (scored["delay_p50_h"] >= 500.0).all()


def test_quantiles_after_now_are_the_model_s_own(scorer_and_rows):
    scorer, rows = scorer_and_rows
    early = rows.assign(hours_to_promised=5_000.0)  # the promise far ahead: nothing to condition
    scored = scorer.score(early, reasons=False)
    raw = scorer.bundle.delay_quantiles(scorer.matrix(early))  # the model alone
    assert (raw[0.1] > -5_000.0).all()
    np.testing.assert_allclose(scored["delay_p50_h"], raw[0.5])
    np.testing.assert_allclose(scored["delay_p90_h"], raw[0.9])
    promised = NOW + pd.Timedelta(hours=5_000)
    p10 = (scored["eta_p10"] - promised) / pd.Timedelta(hours=1)
    np.testing.assert_allclose(p10, raw[0.1], atol=1e-6)
