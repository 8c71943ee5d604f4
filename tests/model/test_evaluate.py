"""Evaluation metrics, baselines and plots on small synthetic frames with known answers."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from training import baselines, plots
from training.baselines import LOGISTIC_FEATURES
from training.evaluate import (
    PROB_CLIP,
    STAGES,
    _weighted_auc,
    beats,
    classification_metrics,
    compare_paired,
    evaluate,
    evaluate_many,
    expected_calibration_error,
    gap_closed,
    interval_metrics,
    journey_stage,
    paired_bootstrap,
)

MODES = ["truck", "rail", "air", "ocean"]


def synthetic(n: int = 2_000, seed: int = 0) -> pd.DataFrame:
    """Snapshots whose lateness is driven by slip, plus every column the baselines read."""
    rng = np.random.default_rng(seed)
    slip = rng.normal(0, 6, n)
    slip[rng.random(n) < 0.1] = np.nan
    done = rng.integers(0, 8, n).astype(float)
    frac = np.where(done == 0, 0.0, rng.uniform(0, 1.3, n))
    lane = rng.choice([f"L{i}" for i in range(12)], n)
    lane_bias = pd.Series(np.linspace(-1.5, 1.5, 12), index=[f"L{i}" for i in range(12)])
    logit = -1.0 + 0.35 * np.nan_to_num(slip) + lane_bias[lane].to_numpy()
    p_true = 1 / (1 + np.exp(-logit))
    late = rng.random(n) < p_true
    frame = pd.DataFrame({
        "shipment_id": [f"SH{i:08d}" for i in range(n)],
        "as_of": pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 10**6, n),
                                                                        unit="s"),
        "lane_id": lane,
        "main_mode": rng.choice(MODES, n),
        "milestones_done": done,
        "transit_elapsed_frac": frac,
        "slip_h": slip,
        "slip_trend_h": rng.normal(0, 2, n),
        "promised_slack_h": rng.uniform(0, 48, n),
        "planned_transit_h": rng.uniform(10, 300, n),
        "hours_to_promised": rng.uniform(-20, 200, n),
        "customs_holds": rng.integers(0, 2, n),
        "exceptions": rng.integers(0, 3, n),
        "lane_late_rate_28d": np.where(rng.random(n) < 0.3, np.nan, rng.uniform(0, 1, n)),
        "hub_dep_slip_24h": rng.normal(1, 1, n),
        "is_late": late,
        "delay_hours": np.where(late, rng.exponential(10, n), -rng.exponential(5, n)),
        "p_true": p_true,
    })
    return frame


# --- calibration and classification metrics -------------------------------------------------

def test_ece_of_calibrated_scores_is_near_zero_and_of_shifted_ones_large():
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 1, 50_000)
    y = rng.random(len(p)) < p
    assert expected_calibration_error(y, p) < 0.02
    assert expected_calibration_error(y, np.clip(p + 0.3, 0, 1)) > 0.2


def test_ece_by_hand():
    # two bins of 10 (bins=2): [0, .5) holds p=.2 with 1/2 late, [.5, 1] p=.9 with 2/2 late
    y = np.array([0, 1, 1, 1])
    p = np.array([0.2, 0.2, 0.9, 0.9])
    assert expected_calibration_error(y, p, bins=2) == pytest.approx(0.5 * 0.3 + 0.5 * 0.1)


def test_classification_metrics_match_sklearn():
    y = np.array([0, 0, 1, 1, 0, 1, 0, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9, 0.6, 0.55])
    m = classification_metrics(y, p)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert m["pr_auc"] == pytest.approx(average_precision_score(y, p))
    assert m["log_loss"] == pytest.approx(log_loss(y, p))
    assert m["brier"] == pytest.approx(brier_score_loss(y, p))
    assert m["n"] == 8 and m["late_rate"] == 0.5 and m["mean_p"] == pytest.approx(p.mean())


def test_classification_metrics_single_class_and_nan_scores():
    m = classification_metrics(np.zeros(5), np.full(5, 0.1))
    assert np.isnan(m["roc_auc"]) and np.isnan(m["pr_auc"])
    assert m["log_loss"] == pytest.approx(-np.log(0.9))
    # NaN scores (no ceiling row) are left out and counted out of n
    m = classification_metrics([0, 1, 1], [0.2, np.nan, 0.7])
    assert m["n"] == 2 and m["roc_auc"] == 1.0
    assert np.isnan(classification_metrics([], [])["log_loss"])


def test_interval_metrics_by_hand():
    delay = np.array([0.0, 5.0, 10.0, -4.0])
    q10 = np.array([-1.0, 0.0, 0.0, 0.0])
    q50 = np.array([0.0, 2.0, 4.0, 1.0])
    q90 = np.array([1.0, 6.0, 8.0, 2.0])
    m = interval_metrics(delay, q10, q50, q90)
    assert m["coverage_p10_p90"] == 0.5  # rows 0 and 1 inside
    assert m["mean_width_h"] == pytest.approx((2 + 6 + 8 + 2) / 4)
    assert m["mae_p50"] == pytest.approx((0 + 3 + 6 + 5) / 4)
    # pinball p90: y - q90 = -1, -1, 2, -6 -> 0.1, 0.1, 1.8, 0.6
    assert m["pinball_p90"] == pytest.approx((0.1 + 0.1 + 1.8 + 0.6) / 4)
    # pinball p10: y - q10 = 1, 5, 10, -4 -> 0.1, 0.5, 1.0, 3.6
    assert m["pinball_p10"] == pytest.approx((0.1 + 0.5 + 1.0 + 3.6) / 4)
    assert m["pinball_p50"] == pytest.approx(m["mae_p50"] / 2)


def test_every_score_is_clipped_by_the_same_bound():
    # a confident miss costs every scorer the same, whoever made the score: a ceiling's 0 of
    # 100 re-simulations late and a baseline's clipped rate are judged alike
    y = np.array([1.0, 0.0, 1.0])
    p = np.array([0.0, 0.0, 1.0])
    expected = -(np.log(PROB_CLIP) + np.log(1 - PROB_CLIP) + np.log(1 - PROB_CLIP)) / 3
    assert classification_metrics(y, p)["log_loss"] == pytest.approx(expected)
    train = pd.DataFrame({"shipment_id": ["a", "b"], "lane_id": ["X", "X"],
                          "is_late": [True, True]})
    test = pd.DataFrame({"lane_id": ["X"], "lane_late_rate_28d": [np.nan]})
    assert baselines.lane_history(train, test, prior_rows=0)[0] == 1 - PROB_CLIP


# --- model against ceiling: paired bootstrap ---------------------------------------------

def _two_scorers(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p_true = rng.beta(1.2, 3.0, n)
    y = (rng.random(n) < p_true).astype(float)
    noisy = np.clip(p_true + rng.normal(0, 0.15, n), 0.001, 0.999)
    return y, p_true, noisy


def test_weighted_auc_matches_sklearn_with_weights_and_ties():
    rng = np.random.default_rng(4)
    y = (rng.random(2_000) < 0.3).astype(float)
    p = np.round(rng.random(2_000) * 0.6 + 0.3 * y, 2)  # many ties
    w = rng.poisson(1.0, (4, len(y))).astype(float)
    expected = [roc_auc_score(y, p, sample_weight=row) for row in w]
    assert _weighted_auc(y, p, w) == pytest.approx(expected)


def test_paired_bootstrap_sees_a_better_scorer_and_no_difference_with_itself():
    y, good, noisy = _two_scorers(4_000, 5)
    res = paired_bootstrap(y, good, noisy)
    auc, loss = res["roc_auc"], res["log_loss"]
    assert auc["diff"] == pytest.approx(roc_auc_score(y, good) - roc_auc_score(y, noisy))
    assert loss["a"] == pytest.approx(log_loss(y, good)) and loss["b"] == pytest.approx(
        log_loss(y, noisy))
    assert auc["lo"] > 0 and loss["hi"] < 0  # beyond noise at this size
    assert auc["lo"] < auc["diff"] < auc["hi"] and loss["lo"] < loss["diff"] < loss["hi"]
    same = paired_bootstrap(y, good, good)
    assert all(same[m][k] == 0 for m in ("roc_auc", "log_loss") for k in ("diff", "lo", "hi"))
    # missing scores on either side leave the row out of both
    holes = good.copy()
    holes[:100] = np.nan
    assert paired_bootstrap(y, holes, noisy)["n"] == len(y) - 100


def test_paired_bootstrap_resamples_whole_shipments():
    y, good, noisy = _two_scorers(1_500, 6)
    width = lambda res: res["log_loss"]["hi"] - res["log_loss"]["lo"]
    base = width(paired_bootstrap(y, good, noisy))
    # every shipment seen five times (five snapshots, one label): no more evidence than once
    rep = [np.repeat(a, 5) for a in (y, good, noisy)]
    ids = np.repeat(np.arange(len(y)), 5)
    by_shipment = width(paired_bootstrap(*rep, clusters=ids))
    by_row = width(paired_bootstrap(*rep))
    assert by_shipment == pytest.approx(base, rel=0.2)
    assert by_row < 0.6 * by_shipment  # resampling rows would claim sqrt(5) times the evidence


def test_compare_paired_by_stage_and_beats():
    frame = synthetic(3_000, 12)
    y = frame["is_late"].to_numpy(float)
    good = frame["p_true"].to_numpy()
    flat = np.full(len(frame), y.mean())
    table = compare_paired(frame, good, flat, draws=300)
    assert list(table.columns) == ["slice", "group", "metric", "a", "b", "diff", "lo", "hi", "n"]
    assert table[table["slice"] == "stage"]["group"].unique().tolist() == list(STAGES)
    overall = table[table["slice"] == "overall"].set_index("metric")
    direct = paired_bootstrap(y, good, flat, frame["shipment_id"], draws=300)
    assert overall.loc["roc_auc", "lo"] == pytest.approx(direct["roc_auc"]["lo"])
    assert overall.loc["log_loss", "n"] == len(frame)
    won = beats(table)
    assert ("overall", "roc_auc") in set(zip(won["slice"], won["metric"]))
    assert beats(compare_paired(frame, flat, good, draws=300)).empty  # the other way round


# --- stages and the tidy table --------------------------------------------------------------

def test_journey_stage_bands():
    frame = pd.DataFrame({
        "milestones_done": [np.nan, 0, 0, 1, 2, 2, 2, 3, 3, 4, 5],
        "transit_elapsed_frac": [0.5, 0.0, 1.5, -0.1, 0.1, 0.33, 0.5, 0.66, 1.0, 1.01, np.nan],
    }, index=range(10, 21))
    stage = journey_stage(frame)
    assert list(stage.cat.categories) == list(STAGES) and stage.cat.ordered
    assert stage.index.equals(frame.index)
    assert stage.astype(object).where(stage.notna(), None).tolist() == [
        "booked", "booked", "booked", "early", "early", "early", "mid", "mid", "late", "overdue",
        None]


def test_evaluate_table_shape_and_slices():
    frame = synthetic(1_500)
    q = {0.1: frame["delay_hours"].to_numpy() - 5, 0.5: frame["delay_hours"].to_numpy(),
         0.9: frame["delay_hours"].to_numpy() + 5}
    table = evaluate(frame, frame["p_true"], q)
    assert list(table.columns) == ["slice", "group", "metric", "value"]
    groups = table.drop_duplicates(["slice", "group"])
    assert groups[groups["slice"] == "main_mode"]["group"].tolist() == sorted(MODES)
    assert groups[groups["slice"] == "stage"]["group"].tolist() == list(STAGES)
    per_group = table.groupby(["slice", "group"]).size()
    assert (per_group == 14).all()  # 8 classification + 6 interval metrics
    overall = table[table["slice"] == "overall"].set_index("metric")["value"]
    assert overall["n"] == len(frame) and overall["coverage_p10_p90"] == 1.0
    mode_n = table[(table["slice"] == "main_mode") & (table["metric"] == "n")]["value"].sum()
    assert mode_n == len(frame)
    assert "coverage_p10_p90" not in set(evaluate(frame, frame["p_true"])["metric"])
    with pytest.raises(ValueError):
        evaluate(frame, frame["p_true"].to_numpy()[:-1])


def test_evaluate_many_stacks_models():
    frame = synthetic(800)
    table = evaluate_many(frame, {"model": frame["p_true"], "flat": np.full(len(frame), 0.4)})
    assert list(table.columns) == ["model", "slice", "group", "metric", "value"]
    auc = table[(table["slice"] == "overall") & (table["metric"] == "roc_auc")]
    assert auc.set_index("model")["value"]["model"] > 0.7
    assert auc.set_index("model")["value"]["flat"] == 0.5


def test_gap_closed():
    assert gap_closed(0.8, 0.7, 0.9) == pytest.approx(0.5)
    assert gap_closed(0.9, 0.7, 0.9) == pytest.approx(1.0)
    assert gap_closed(0.65, 0.7, 0.9) == pytest.approx(-0.25)
    assert np.isnan(gap_closed(0.8, 0.9, 0.9)) and np.isnan(gap_closed(0.8, 0.9, 0.85))
    # for losses the ceiling is lower than the baseline
    assert gap_closed(0.4, 0.5, 0.3, higher_is_better=False) == pytest.approx(0.5)
    assert np.isnan(gap_closed(0.4, 0.3, 0.5, higher_is_better=False))


# --- baselines ------------------------------------------------------------------------------

def test_behind_schedule_ranks_by_slip_and_is_calibrated():
    train, test = synthetic(2_000, 1), synthetic(1_000, 2)
    p = baselines.behind_schedule(train, test)
    assert p.shape == (len(test),) and (p > 0).all() and (p < 1).all()
    slip = test["slip_h"].fillna(0).to_numpy()
    order = np.argsort(slip, kind="stable")
    assert (np.diff(p[order]) >= -1e-12).all()  # non-decreasing in slip
    assert p[slip > 10].mean() > p[slip < -10].mean() + 0.4
    assert abs(p.mean() - test["is_late"].mean()) < 0.05  # calibrated on average
    # a NaN slip scores as on schedule
    nan_row = test["slip_h"].isna().to_numpy()
    zero = baselines.behind_schedule(train, test.assign(slip_h=0.0))
    assert np.allclose(p[nan_row], zero[nan_row])


def test_lane_history_falls_back():
    train = pd.DataFrame({"shipment_id": ["a", "b", "c", "d", "d"],
                          "lane_id": ["X", "X", "Y", "Y", "Y"],
                          "is_late": [True, True, False, True, True]})
    # overall per shipment: 3 of 4 late; X: 2/2, Y: 1/2 (d counted once)
    test = pd.DataFrame({"lane_id": ["X", "Y", "Z", "X"],
                         "lane_late_rate_28d": [np.nan, np.nan, np.nan, 0.2]})
    raw = baselines.lane_history(train, test, prior_rows=0)
    assert raw == pytest.approx([1 - 1e-4, 0.5, 0.75, 0.2])
    shrunk = baselines.lane_history(train, test, prior_rows=2)
    assert shrunk == pytest.approx([(2 + 1.5) / 4, (1 + 1.5) / 4, 0.75, 0.2])


def test_logistic_learns_the_signal():
    train, test = synthetic(2_000, 3), synthetic(1_000, 4)
    p = baselines.logistic(train, test)
    assert p.shape == (len(test),) and (p > 0).all() and (p < 1).all()
    assert roc_auc_score(test["is_late"], p) > 0.75
    # all-NaN column in test and a missing value pattern never seen in train: still scores
    odd = test.assign(hub_dep_slip_24h=np.nan)
    assert np.isfinite(baselines.logistic(train, odd)).all()


def test_ceiling_join_aligns_to_test_rows():
    test = synthetic(50, 5).iloc[::-1]  # a non-default index order
    test.index = test.index + 100
    picked = test.iloc[[3, 10, 20]]
    table = pd.DataFrame({
        "shipment_id": pd.array(picked["shipment_id"], dtype="string"),
        # microsecond resolution as the lake stores it, the join normalises
        "as_of": picked["as_of"].astype("datetime64[us, UTC]").to_numpy(),
        "p_late": [0.1, 0.2, 0.3], "draws": 100})
    table = pd.concat([table, pd.DataFrame({"shipment_id": ["SHnope"], "as_of": [
        pd.Timestamp("2026-01-01", tz="UTC")], "p_late": [0.9], "draws": [100]})])
    out = baselines.ceiling(test, table)
    assert out.index.equals(test.index)
    assert out.loc[picked.index].tolist() == [0.1, 0.2, 0.3]
    assert out.drop(picked.index).isna().all()
    # the same shipment at another moment does not match
    moved = table.assign(as_of=table["as_of"] + pd.Timedelta(seconds=1))
    assert baselines.ceiling(test, moved).isna().all()


def test_all_baselines():
    train, test = synthetic(1_000, 6), synthetic(300, 7)
    table = pd.DataFrame({"shipment_id": test["shipment_id"][:10], "as_of": test["as_of"][:10],
                          "p_late": 0.5})
    out = baselines.all_baselines(train, test, table)
    assert set(out) == {"behind_schedule", "lane_history", "logistic", "ceiling"}
    assert all(len(v) == len(test) for v in out.values())
    assert np.isfinite(out["ceiling"]).sum() == 10
    assert "ceiling" not in baselines.all_baselines(train, test)
    assert set(LOGISTIC_FEATURES) <= set(test.columns)


# --- plots ----------------------------------------------------------------------------------

def _png(path) -> bool:
    return path.exists() and path.stat().st_size > 1_000 and \
        path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def scored():
    train, test = synthetic(1_500, 8), synthetic(600, 9)
    scores = {"model": test["p_true"].to_numpy(), **baselines.all_baselines(train, test)}
    scores["ceiling"] = np.where(np.arange(len(test)) % 3 == 0, test["p_true"], np.nan)
    return test, scores


def test_calibration_and_roc_plots(tmp_path, scored):
    test, scores = scored
    y = test["is_late"].to_numpy()
    assert _png(plots.calibration_curve(y, scores, tmp_path / "cal.png"))
    assert _png(plots.roc_pr_curves(y, scores, tmp_path / "sub" / "roc.png"))


def test_metric_by_stage_plot(tmp_path, scored):
    test, scores = scored
    table = evaluate_many(test, scores)
    assert _png(plots.metric_by_stage(table, "roc_auc", tmp_path / "stage.png"))
    single = evaluate(test, scores["model"])
    assert _png(plots.metric_by_stage(single, "log_loss", tmp_path / "single.png"))
    with pytest.raises(ValueError):
        plots.metric_by_stage(table, "no_such_metric", tmp_path / "x.png")


@pytest.fixture(scope="module")
def booster():
    frame = synthetic(1_000, 10)
    X = frame[LOGISTIC_FEATURES].astype(float)
    params = {"objective": "binary", "num_leaves": 7, "verbose": -1, "num_threads": 1, "seed": 1}
    return lgb.train(params, lgb.Dataset(X, frame["is_late"].astype(float)), 20), X


def test_model_minus_ceiling_plot(tmp_path, scored):
    test, scores = scored
    covered = ~np.isnan(scores["ceiling"])
    paired = compare_paired(test[covered], scores["model"][covered], scores["ceiling"][covered],
                            draws=100)
    assert _png(plots.model_minus_ceiling(paired, tmp_path / "versus.png"))


def test_importance_and_shap_plots(tmp_path, booster):
    model, X = booster
    assert _png(plots.feature_importance(model, tmp_path / "imp.png", top=5))
    assert _png(plots.shap_summary(model, X, tmp_path / "shap.png", top=8, max_rows=500))
