"""`run_monitor` on a synthetic log whose truth is known (`monitoring.synthetic`): its realized
metrics equal sklearn's on the same predictions joined by hand, PSI flags the shifted feature
and no other (one alarm, not one per slice), and bad input (duplicates, predictions not judged
yet, outcomes without predictions, an unknown model version, an empty day) is counted, never
fatal."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from monitoring import monitor as mon
from monitoring import synthetic
from monitoring.prediction_log import prediction_table, write_predictions
from monitoring.reader import log_days
from shipdelay.lake import open_lake
from shipdelay.parquet_io import read_table
from shipdelay.settings import Settings

START, DAYS = "2026-01-01", 16
AS_OF = pd.Timestamp("2026-01-17T00:00Z")
SHIFT = pd.Timestamp("2026-01-14T00:00Z")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    settings = Settings(data_dir=tmp_path_factory.mktemp("monitor") / "data",
                        monitor_psi_min_rows=150)
    lake = open_lake(settings.lake_dir)
    made = synthetic.write_log(settings.predictions_dir, lake, 3_000, START, DAYS - 1,
                               shift_from=SHIFT, as_of=AS_OF)
    # bad input: a batch written twice, shipments delivered that nobody predicted, a version
    # the registry does not know, and a day with no prediction at all (the window's first)
    first = sorted(log_days(settings.predictions_dir))[1]
    for f in log_days(settings.predictions_dir)[first]:
        write_predictions(settings.predictions_dir, read_table(f))
    lake.append("outcomes", pd.DataFrame({
        "shipment_id": ["X1", "X2"], "delivered_at": pd.to_datetime(["2026-01-05T00:00Z"] * 2),
        "promised_at": pd.to_datetime(["2026-01-05T00:00Z"] * 2), "delay_hours": [0.0, 0.0],
        "is_late": [False, False]}))
    scored = {"shipment_id": np.array(["S00000001"], dtype=object), "p_late": [0.5],
              "delay_p50_h": [1.0], "delay_p90_h": [2.0], "model_version": ["99"],
              **{k: pd.Series(pd.to_datetime(["2026-01-10T00:00Z"])) for k in
                 ("eta", "eta_p10", "eta_p90")}}
    write_predictions(settings.predictions_dir, prediction_table(
        "service", scored, {"lane_id": ["L0001"]}, pd.Timestamp("2026-01-09T12:00Z")))
    return settings, made


@pytest.fixture(scope="module")
def summary(world):
    settings, _ = world
    patch = pytest.MonkeyPatch()
    patch.setattr(mon, "_registered_versions", lambda settings, counts: {"1"})
    try:
        return mon.run_monitor(settings, as_of=AS_OF, days=DAYS + 1, log_to_mlflow=False,
                               reference=synthetic.reference())
    finally:
        patch.undo()


def _by_hand(settings) -> pd.DataFrame:
    """The window's predictions read file by file with Arrow, de-duplicated and joined to the
    outcomes with pandas: the independent path."""
    files = [f for fs in log_days(settings.predictions_dir).values() for f in fs]
    log = pd.concat([read_table(f, columns=["path", "shipment_id", "instant", "model_version",
                                            "p_late", "delay_p10_h", "delay_p90_h"])
                     .to_pandas() for f in files], ignore_index=True)
    log = log.drop_duplicates(["path", "shipment_id", "instant", "model_version"])
    outcomes = open_lake(settings.lake_dir).read("outcomes")
    return log.merge(outcomes, on="shipment_id", how="left")


def test_realized_metrics_equal_sklearn_on_the_same_rows(world, summary):
    settings, _ = world
    rows = _by_hand(settings)
    judged = rows[rows["delivered_at"].notna()]
    y, p = judged["is_late"].astype(float), judged["p_late"].clip(1e-4, 1 - 1e-4)
    assert summary.logged == len(rows) and summary.judged == len(judged)
    h = summary.headline
    assert h["roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-9)
    assert h["log_loss"] == pytest.approx(log_loss(y, p), abs=1e-9)
    assert h["brier"] == pytest.approx(brier_score_loss(y, p), abs=1e-9)
    inside = (judged["delay_hours"] >= judged["delay_p10_h"]) & \
        (judged["delay_hours"] <= judged["delay_p90_h"])
    assert h["coverage_p10_p90"] == pytest.approx(inside.mean(), abs=1e-9)
    # calibrated by construction: the estimate before labels is close to the realized value
    assert abs(h["expected_roc_auc"] - h["roc_auc"]) < 0.05
    body = json.loads(summary.json_path.read_text())
    assert body["headline"]["judged"] == summary.judged and summary.html_path.exists()


def test_psi_flags_the_shifted_feature_and_no_other(summary):
    drift = [a for a in summary.alarms if a.kind == "drift"]
    # one alarm for the feature, overall, though it drifted in every mode too (slices of fewer
    # than monitor_psi_min_rows are not judged: with ten bins, PSI of a few dozen rows drawn
    # from the reference itself often exceeds 0.25)
    assert [(a.slice, a.metric) for a in drift] == [("overall", f"psi:{synthetic.SHIFTED}")]
    table = pd.DataFrame(json.loads(summary.json_path.read_text())["tables"]["drift_recent"])
    shifted = table[(table["feature"] == synthetic.SHIFTED) & (table["psi"] > 0.25)]
    assert set(shifted["slice"]) >= {f"mode={m}" for m in synthetic.MODES}
    worst = shifted[shifted["slice"] != "overall"].nlargest(1, "psi")["slice"].iloc[0]
    assert worst in drift[0].message
    assert summary.should_retrain


def test_bad_input_is_counted(world, summary):
    settings, _ = world
    rows = _by_hand(settings)
    c = summary.counts
    assert c["empty_days"] >= 1  # the window starts a day before the first prediction
    assert c["duplicates_dropped"] > 0
    assert c["not_judged_yet"] == int(rows["delivered_at"].isna().sum())
    assert c["outcomes_without_predictions"] == 2
    assert c["unknown_model_version_rows"] == 1
    assert any(a.kind == "data" and a.slice == "model_version=99" for a in summary.alarms)


def test_an_empty_log_is_a_report_not_a_crash(tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    got = mon.run_monitor(settings, as_of=AS_OF, days=3, log_to_mlflow=False)
    assert got.logged == 0 and got.judged == 0 and got.counts["empty_days"] == 3
    assert not got.should_retrain and got.json_path.exists()


def test_cbpe_estimates_what_labels_drawn_from_the_probabilities_give():
    from monitoring.judge import estimated

    rng = np.random.default_rng(3)
    p = np.round(rng.beta(2, 5, 600), 2)  # ties on purpose
    draws = rng.random((400, len(p))) < p
    auc = np.mean([roc_auc_score(y, p) for y in draws])
    loss = np.mean([log_loss(y, p, labels=[0, 1]) for y in draws])
    got = estimated(p)
    assert got["expected_roc_auc"] == pytest.approx(auc, abs=0.005)
    assert got["expected_log_loss"] == pytest.approx(loss, abs=0.005)
    assert got["expected_late_rate"] == pytest.approx(draws.mean(), abs=0.005)
