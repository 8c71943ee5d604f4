"""`shipdelay train`: training set -> time split -> fit -> evaluate against baselines and the
ceiling -> log everything to MLflow -> register the model as the challenger.

Everything a data scientist compares lives in one MLflow run: parameters, the split, the
training set as an input, metrics overall / by mode / by journey stage for the model, each
baseline and the ceiling on the same test snapshots, the share of the baseline-to-ceiling gap the
model closes per stage, the plots, and the model with its signature and FeatureService.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from features.online import require_features
from features.schema import model_feature_names
from features.store import get_store, offline_dir
from registry.register import log_bundle, register
from registry.store import ensure_experiment
from shipdelay.lake import Lake
from shipdelay.settings import Settings, get_settings
from training import baselines, plots
from training.bundle import Bundle
from training.dataset import build_training_set
from training.evaluate import (
    classification_metrics,
    evaluate_many,
    gap_closed,
    journey_stage,
)
from training.model import fit_bundle
from training.split import Split, time_split

HEADLINE = ["roc_auc", "log_loss", "ece", "brier", "pr_auc"]


@dataclass
class TrainReport:
    run_id: str
    version: str | None
    metrics: pd.DataFrame  # model, slice, group, metric, value
    gap: pd.DataFrame  # stage x baseline: share of the gap to the ceiling closed (AUC)
    sizes: dict[str, int] = field(default_factory=dict)
    on_ceiling: pd.DataFrame = field(default_factory=pd.DataFrame)  # AUC per scorer, covered rows
    fit_seconds: float = 0.0

    @property
    def has_ceiling(self) -> bool:
        """Whether the lake had a ceiling for the test snapshots (simulated worlds only)."""
        return not self.gap.empty

    def headline(self) -> pd.DataFrame:
        overall = self.metrics[self.metrics["slice"] == "overall"]
        return overall.pivot_table(index="model", columns="metric", values="value")[
            [m for m in HEADLINE if m in set(overall["metric"])]]


def current_split(settings: Settings) -> Split:
    """The current training set of the feature store, split by time."""
    lake = Lake(settings.lake_dir)
    require_features(get_store(settings), model_feature_names())
    return time_split(build_training_set(lake, offline_dir(settings)))


def score_frame(bundle: Bundle, frame: pd.DataFrame) -> tuple[np.ndarray, dict]:
    X = bundle.spec.matrix(frame)
    return bundle.p_late(X), bundle.delay_quantiles(X)


def compare(split: Split, bundle: Bundle, ceiling: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Model, baselines and the ceiling on the same test snapshots; and, on the snapshots the
    ceiling covers, the share of each baseline's AUC gap to the ceiling the model closes.

    Real data has no ceiling: then there is no ceiling row and the gap table is empty."""
    test = split.test
    p, q = score_frame(bundle, test)
    scores = {"model": p, **{k: np.asarray(v, dtype=float) for k, v in
                             baselines.all_baselines(split.train, test, ceiling).items()}}
    covered = ~np.isnan(scores["ceiling"])
    if not covered.any():
        del scores["ceiling"]
        return evaluate_many(test, scores, {"model": q}), pd.DataFrame(), {
            "p": p, "q": q, "scores": scores, "on_ceiling": pd.DataFrame()}
    table = evaluate_many(test, scores, {"model": q})
    auc = evaluate_many(test[covered], {k: v[covered] for k, v in scores.items()})
    auc = auc[auc["metric"] == "roc_auc"].pivot_table(index=["slice", "group"], columns="model",
                                                       values="value")
    gap = pd.DataFrame({b: [gap_closed(m, bl, c) for m, bl, c in
                            zip(auc["model"], auc[b], auc["ceiling"])]
                        for b in scores if b not in ("model", "ceiling")}, index=auc.index)
    return table, gap, {"p": p, "q": q, "scores": scores, "on_ceiling": auc}


def _log_metrics(table: pd.DataFrame, gap: pd.DataFrame) -> None:
    out = {}
    for r in table.itertuples():
        if pd.notna(r.value):
            group = "" if r.slice == "overall" else f"{r.slice}.{r.group}."
            out[f"{r.model}.{group}{r.metric}".replace(" ", "_")] = float(r.value)
    for (slc, group), row in gap.iterrows():
        for baseline, value in row.items():
            if pd.notna(value):
                out[f"gap_closed.{slc}.{group}.vs_{baseline}"] = float(value)
    mlflow.log_metrics(out)


def _log_plots(split: Split, bundle: Bundle, table: pd.DataFrame, scored: dict) -> None:
    y = split.test["is_late"].to_numpy(float)
    scores = {k: np.asarray(v, float) for k, v in scored["scores"].items()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        finite = {k: v for k, v in scores.items() if not np.isnan(v).any()}
        plots.calibration_curve(y, finite, tmp / "calibration.png")
        plots.roc_pr_curves(y, finite, tmp / "roc_pr.png")
        plots.metric_by_stage(table, "roc_auc", tmp / "auc_by_stage.png")
        plots.metric_by_stage(table, "log_loss", tmp / "log_loss_by_stage.png")
        plots.feature_importance(bundle.classifier, tmp / "feature_importance.png")
        X = bundle.spec.matrix(split.test.sample(min(3000, len(split.test)), random_state=0))
        plots.shap_summary(bundle.classifier, X, tmp / "shap_summary.png")
        table.to_csv(tmp / "metrics.csv", index=False)
        mlflow.log_artifacts(str(tmp), artifact_path="evaluation")


def train(settings: Settings | None = None, params: dict | None = None,
          split: Split | None = None, register_model: bool = True,
          on_step: Callable[[str], None] | None = None, run_name: str = "train") -> TrainReport:
    """Fit, evaluate and register one model; returns what a person wants to see."""
    settings = settings or get_settings()
    step = on_step or (lambda _: None)
    step("building the training set")
    split = split or current_split(settings)
    ceiling = Lake(settings.lake_dir).read("ceiling") if Lake(settings.lake_dir).exists(
        "ceiling") else pd.DataFrame(columns=["shipment_id", "as_of", "p_late"])
    ensure_experiment(settings)
    with mlflow.start_run(run_name=run_name) as run:
        sizes = {k: len(getattr(split, k)) for k in ("train", "valid", "test")}
        mlflow.log_params({**(params or {}), **{f"rows_{k}": v for k, v in sizes.items()},
                           **{k: str(v) for k, v in split.bounds.items()},
                           "label_horizon_days": split.horizon.days})
        mlflow.log_input(mlflow.data.from_pandas(
            split.train[["shipment_id", "as_of", *model_feature_names(), "is_late", "delay_hours"]],
            name="training_set"), context="training")
        step("fitting the models")
        started = time.perf_counter()
        bundle = fit_bundle(split, params)
        fit_seconds = time.perf_counter() - started
        mlflow.log_metric("fit_seconds", fit_seconds)
        step("evaluating against baselines (and the ceiling, if the lake has one)")
        table, gap, scored = compare(split, bundle, ceiling)
        _log_metrics(table, gap)
        _log_plots(split, bundle, table, scored)
        step("registering the model")
        model_uri = log_bundle(bundle, input_example=bundle.spec.matrix(split.test.head(5)))
        version = register(settings, model_uri) if register_model else None
    return TrainReport(run.info.run_id, version, table, gap, sizes, scored["on_ceiling"],
                       fit_seconds)


def holdout_evaluator(settings: Settings | None = None) -> Callable[[Bundle], dict]:
    """Scores a bundle on the newest holdout (the current test window), for the promotion gate."""
    split = current_split(settings or get_settings())
    stage = journey_stage(split.test)

    def evaluate_bundle(bundle: Bundle) -> dict:
        p, _ = score_frame(bundle, split.test)
        y = split.test["is_late"].to_numpy(float)
        overall = classification_metrics(y, p)
        stages = {}
        for name in stage.cat.categories:
            rows = (stage == name).to_numpy()
            if rows.sum() > 50:
                stages[str(name)] = classification_metrics(y[rows], p[rows])["log_loss"]
        return {"log_loss": overall["log_loss"], "ece": overall["ece"], "stages": stages}

    return evaluate_bundle
