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
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    log_loss,
    roc_auc_score,
)

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


def test_psi_flags_the_shifted_input_and_no_alarm_while_p_late_holds(summary):
    """The synthetic model's P(late) does not read the shifted input: its drift is measured
    overall and in every mode, and asks for no new model."""
    assert [a for a in summary.alarms if a.kind == "drift"] == []
    table = pd.DataFrame(json.loads(summary.json_path.read_text())["tables"]["drift_recent"])
    shifted = table[(table["feature"] == synthetic.SHIFTED) & (table["psi"] > 0.25)]
    assert set(shifted["slice"]) >= {"overall", *(f"mode={m}" for m in synthetic.MODES)}
    others = table[(table["slice"] == "overall") & (table["feature"] != synthetic.SHIFTED)
                   & (table["expected_drift"] == "")]
    assert others["psi"].max() < 0.25
    assert not summary.should_retrain, [a.message for a in summary.alarms]


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


def _judged_by_hand(settings) -> pd.DataFrame:
    """The judged rows as a person would build them: every log file read whole, duplicates
    dropped, a pandas merge with the outcomes, each derived column from its definition."""
    from training.evaluate import journey_stage

    files = [f for fs in log_days(settings.predictions_dir).values() for f in fs]
    log = pd.concat([read_table(f).to_pandas() for f in files], ignore_index=True)
    log = log.sort_values("logged_at", kind="stable").drop_duplicates(
        ["path", "shipment_id", "instant", "model_version"])
    outcomes = open_lake(settings.lake_dir).read("outcomes")
    rows = log.merge(outcomes[outcomes["delivered_at"] <= AS_OF], on="shipment_id")
    rows = rows[rows["instant"] <= AS_OF]
    rows["day"] = rows["instant"].dt.tz_convert("UTC").dt.strftime("%Y-%m-%d")
    rows["stage"] = journey_stage(rows).astype(str)
    rows["eta_err_h"] = (rows["eta"] - rows["delivered_at"]).abs().dt.total_seconds() / 3600
    return rows


def _sklearn_metrics(part: pd.DataFrame) -> dict[str, float]:
    y = part["is_late"].astype(float).to_numpy()
    p = part["p_late"].clip(1e-4, 1 - 1e-4).to_numpy()
    two = 0 < y.sum() < len(y)
    bins = np.minimum((p * 15).astype(int), 14)
    ece = sum(abs(y[bins == b].sum() - p[bins == b].sum()) for b in range(15)) / len(y)
    inside = (part["delay_hours"] >= part["delay_p10_h"]) & \
        (part["delay_hours"] <= part["delay_p90_h"])
    return {"roc_auc": roc_auc_score(y, p) if two else np.nan,
            "pr_auc": average_precision_score(y, p) if two else np.nan,
            "log_loss": log_loss(y, p, labels=[0, 1]), "brier": brier_score_loss(y, p),
            "ece": ece, "late_rate": y.mean(), "mean_p": p.mean(), "n": float(len(y)),
            "coverage_p10_p90": inside.mean(), "eta_mae_h": part["eta_err_h"].mean(),
            "expected_log_loss": float(np.mean(-(p * np.log(p) + (1 - p) * np.log(1 - p)))),
            # a calibrated model's spread of that mean, on as many outcomes as shipments
            "log_loss_se": float(np.sqrt(np.mean(p * (1 - p) * np.log(p / (1 - p)) ** 2)
                                         / part["shipment_id"].nunique()))}


def _assert_same(got: pd.DataFrame, want: dict[str, float], where: str) -> None:
    shown = dict(zip(got["metric"], got["value"]))
    for metric, value in want.items():
        assert shown[metric] == pytest.approx(value, abs=1e-8, nan_ok=True), (where, metric)


def test_every_day_and_slice_group_equals_sklearn_on_a_pandas_join(world, summary):
    settings, _ = world
    rows = _judged_by_hand(settings)
    tables = json.loads(summary.json_path.read_text())["tables"]
    daily = pd.DataFrame(tables["realized_by_day"])
    daily["day"] = daily["day"].str[:10]
    assert set(daily["day"]) == set(rows["day"])
    for day, today in rows.groupby("day"):
        at = daily[daily["day"] == day]
        _assert_same(at[at["slice"] == "overall"], _sklearn_metrics(today), day)
        for path, part in today.groupby("path"):
            mine = at[(at["slice"] == "path") & (at["group"] == path)]
            assert len(mine) == (len(_sklearn_metrics(part)) if len(part) >= 50 else 0)
            if len(part) >= 50:
                _assert_same(mine, _sklearn_metrics(part), f"{day} {path}")
    slices = pd.DataFrame(tables["realized_by_slice"])
    _assert_same(slices[slices["slice"] == "overall"], _sklearn_metrics(rows), "overall")
    columns = {"mode": "main_mode", "lane": "lane_id", "carrier": "carrier_id",
               "customer": "customer_id", "stage": "stage", "path": "path",
               "model_version": "model_version"}
    for name, column in columns.items():
        sizes = rows[column].value_counts()
        shown = slices[slices["slice"] == name]
        assert shown["group"].nunique() == min(25, int((sizes >= 50).sum())), name
        for group, mine in shown.groupby("group"):
            part = rows[rows[column].astype(str) == group]
            assert len(part) >= 50 and len(part) >= sizes.iloc[min(24, len(sizes) - 1)]
            _assert_same(mine, _sklearn_metrics(part), f"{name}={group}")


def test_grouped_metrics_equal_sklearn_with_tied_scores_and_one_class_groups():
    from monitoring.grouped import realized_groups

    rng = np.random.default_rng(8)
    n = 6_000
    p = np.round(rng.beta(2, 4, n), 2)  # ties on purpose
    group = rng.integers(0, 6, n)
    y = (rng.random(n) < p).astype(float)
    y[group == 5] = 0.0  # a group without a late shipment: no AUC
    group[:40] = -1  # rows in no group
    delay = rng.normal(size=n) * 10
    rows = pd.DataFrame({"p": p, "y": y, "delay": delay, "q10": delay - rng.random(n) * 20,
                         "q50": delay, "q90": delay + rng.normal(size=n) * 5,
                         "eta_err_h": rng.random(n) * 30,
                         # a shipment predicted several times: fewer outcomes than rows
                         "shipment_id": pd.Categorical(rng.integers(0, 2_500, n).astype(str))})
    got = realized_groups(rows, group, 6)
    for g in range(6):
        part = rows[group == g].rename(columns={"p": "p_late", "y": "is_late",
                                                "delay": "delay_hours", "q10": "delay_p10_h",
                                                "q90": "delay_p90_h"})
        want = _sklearn_metrics(part)
        for metric, value in want.items():
            assert got.loc[g, metric] == pytest.approx(value, abs=1e-10, nan_ok=True), (g, metric)
    assert np.isnan(got.loc[5, "roc_auc"]) and np.isnan(got.loc[5, "pr_auc"])
