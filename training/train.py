"""`shipdelay train`: training set -> time split -> fit -> evaluate against baselines and the
ceiling -> log everything to MLflow -> register the model as the challenger.

Everything a data scientist compares lives in one MLflow run: parameters, the split, the
training set as an input, metrics overall / by mode / by journey stage for the model and each
baseline on every test snapshot; on the snapshots the ceiling covers (and only there) the same
for the ceiling next to them, the model-minus-ceiling AUC and log loss per stage with a paired
bootstrap interval, and the share of the baseline-to-ceiling gap the model closes; the plots;
and the model with its signature and FeatureService.

A run is reproducible: the same lake, settings, split, feature set and seed give the same model
bit for bit (the training set comes in a fixed row order, LightGBM runs deterministically). A run
can choose its split (`SplitOptions`: test and validation windows from dates or shares, the gap
between them) and leave feature groups out (`features.feature_sets`: a FeatureService of its
own, applied to the feature store so that serving can check the model against it); both are
parameters of the run.
"""

from __future__ import annotations

import functools
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from features.feature_sets import FeatureSet
from features.online import require_features
from features.repo.services import apply_feature_set
from features.schema import model_feature_names
from features.store import get_store, offline_dir
from monitoring.drift import save_training_reference
from registry.register import CHALLENGER, log_bundle, register
from registry.store import ensure_experiment
from shipdelay.lake import Lake
from shipdelay.settings import Settings, get_settings
from shipdelay.snapshots import TickRule
from training import baselines, plots, run_logging
from training.bundle import Bundle
from training.dataset import build_training_set
from training.evaluate import (
    BOOTSTRAP_LEVEL,
    classification_metrics,
    compare_paired,
    evaluate_many,
    gap_closed,
    journey_stage,
)
from training.model import fit_bundle
from training.params import BoosterParams
from training.split import Split, SplitError, SplitOptions

HEADLINE = ["roc_auc", "log_loss", "ece", "brier", "pr_auc"]
DEFAULT_SEED = 7  # LightGBM's seed for every booster of a run


@dataclass
class TrainReport:
    run_id: str
    version: str | None
    metrics: pd.DataFrame  # model, slice, group, metric, value: model and baselines, all rows
    gap: pd.DataFrame  # stage x baseline: share of the gap to the ceiling closed (AUC)
    sizes: dict[str, int] = field(default_factory=dict)
    on_ceiling: pd.DataFrame = field(default_factory=pd.DataFrame)  # AUC per scorer, covered rows
    fit_seconds: float = 0.0
    # every scorer, the ceiling included, on the rows the ceiling covers (as `metrics`)
    ceiling_metrics: pd.DataFrame = field(default_factory=pd.DataFrame)
    # model minus ceiling on those rows: [slice, group, metric, model, ceiling, diff, lo, hi, n]
    versus_ceiling: pd.DataFrame = field(default_factory=pd.DataFrame)
    bounds: dict[str, pd.Timestamp] = field(default_factory=dict)  # the split's window bounds
    gap_days: float = float("nan")  # between the windows
    feature_service: str = ""  # the FeatureService the model was trained on
    dropped_groups: tuple[str, ...] = ()
    seed: int = DEFAULT_SEED

    def split_text(self) -> str:
        """The split in one line, for people."""
        b = self.bounds
        return (f"train before {b['train_end']:%Y-%m-%d %H:%M}, validation "
                f"{b['valid_start']:%Y-%m-%d %H:%M} to {b['valid_end']:%Y-%m-%d %H:%M}, test from "
                f"{b['test_start']:%Y-%m-%d %H:%M} (UTC, {self.gap_days:g}-day gaps)")

    @property
    def has_ceiling(self) -> bool:
        """Whether the lake had a ceiling for the test snapshots (simulated worlds only)."""
        return not self.gap.empty

    @property
    def ceiling_rows(self) -> int:
        """How many test snapshots the ceiling covers (0 without a ceiling)."""
        m = self.ceiling_metrics
        if m.empty:
            return 0
        return int(m[(m["slice"] == "overall") & (m["metric"] == "n")
                     & (m["model"] == "ceiling")]["value"].iloc[0])

    def headline(self) -> pd.DataFrame:
        """Overall metrics of the model and each baseline on every test snapshot; with a
        ceiling, then the model and the ceiling on the snapshots the ceiling covers, labelled
        "<scorer>, <n> ceiling rows": the ceiling only ever next to the model on the same rows."""
        frames = [(self.metrics, None)]
        if self.has_ceiling:
            frames.append((self.ceiling_metrics[self.ceiling_metrics["model"].isin(
                ["model", "ceiling"])], f"{self.ceiling_rows:,} ceiling rows"))
        parts = []
        for table, label in frames:
            overall = table[table["slice"] == "overall"]
            wide = overall.pivot_table(index="model", columns="metric", values="value", sort=False)
            if label:
                wide.index = [f"{m}, {label}" for m in wide.index]
            parts.append(wide[[m for m in HEADLINE if m in wide.columns]])
        return pd.concat(parts).rename_axis("scorer")


def current_split(settings: Settings, options: SplitOptions | None = None) -> Split:
    """The current training set of the feature store, split by time (`options`: the default
    split unless given)."""
    lake = Lake(settings.lake_dir)
    require_features(get_store(settings), model_feature_names())
    ticks = TickRule(every_h=settings.snapshot_tick_hours)
    return (options or SplitOptions()).split(build_training_set(lake, offline_dir(settings),
                                                                ticks=ticks))


def score_frame(bundle: Bundle, frame: pd.DataFrame) -> tuple[np.ndarray, dict]:
    X = bundle.spec.matrix(frame)
    return bundle.p_late(X), bundle.delay_quantiles(X)


def compare(split: Split, bundle: Bundle, ceiling: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Model and baselines on every test snapshot; and on the snapshots the ceiling covers, every
    scorer with the ceiling, the model minus the ceiling per stage with a paired bootstrap
    interval, and the share of each baseline's AUC gap to the ceiling the model closes.

    Real data has no ceiling: then the ceiling tables and the gap table are empty."""
    test = split.test
    p, q = score_frame(bundle, test)
    scores = {"model": p, **{k: np.asarray(v, dtype=float) for k, v in
                             baselines.all_baselines(split.train, test, ceiling).items()}}
    ceiling_p = scores.pop("ceiling")
    covered = ~np.isnan(ceiling_p)
    table = evaluate_many(test, scores, {"model": q})
    scored = {"p": p, "q": q, "scores": scores, "covered": covered, "on_ceiling": pd.DataFrame(),
              "ceiling_metrics": pd.DataFrame(), "versus_ceiling": pd.DataFrame()}
    if not covered.any():
        return table, pd.DataFrame(), scored
    rows = test[covered]
    on_rows = {**{k: v[covered] for k, v in scores.items()}, "ceiling": ceiling_p[covered]}
    metrics = evaluate_many(rows, on_rows, {"model": {k: v[covered] for k, v in q.items()}})
    auc = metrics[metrics["metric"] == "roc_auc"].pivot_table(
        index=["slice", "group"], columns="model", values="value")
    gap = pd.DataFrame({b: [gap_closed(m, bl, c) for m, bl, c in
                            zip(auc["model"], auc[b], auc["ceiling"])]
                        for b in scores if b != "model"}, index=auc.index)
    versus = compare_paired(rows, on_rows["model"], on_rows["ceiling"]).rename(
        columns={"a": "model", "b": "ceiling"})
    scored |= {"on_ceiling": auc, "ceiling_metrics": metrics, "versus_ceiling": versus,
               "ceiling": ceiling_p}
    return table, gap, scored


def _metrics(table: pd.DataFrame, gap: pd.DataFrame, scored: dict) -> dict[str, float]:
    """The evaluation under `training.run_logging`'s names. They are logged with the model
    (`log_bundle`), linked to it: logged before it, MLflow would read each one's history back
    to link them, one query per metric (seconds for the few hundred a run has)."""
    return run_logging.metric_names(table, gap, scored["ceiling_metrics"],
                                    scored["versus_ceiling"])


def _log_plots(split: Split, bundle: Bundle, table: pd.DataFrame, scored: dict) -> None:
    y = split.test["is_late"].to_numpy(float)
    scores = {k: np.asarray(v, float) for k, v in scored["scores"].items()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        plots.calibration_curve(y, scores, tmp / "calibration.png")
        plots.roc_pr_curves(y, scores, tmp / "roc_pr.png")
        plots.metric_by_stage(table, "roc_auc", tmp / "auc_by_stage.png")
        plots.metric_by_stage(table, "log_loss", tmp / "log_loss_by_stage.png")
        table.to_csv(tmp / "metrics.csv", index=False)
        if scored["covered"].any():  # the ceiling only ever next to others on its own rows
            covered = scored["covered"]
            on_rows = {**{k: v[covered] for k, v in scores.items()},
                       "ceiling": scored["ceiling"][covered]}
            metrics, versus = scored["ceiling_metrics"], scored["versus_ceiling"]
            plots.calibration_curve(y[covered], on_rows, tmp / "calibration_on_ceiling_rows.png")
            plots.roc_pr_curves(y[covered], on_rows, tmp / "roc_pr_on_ceiling_rows.png")
            plots.metric_by_stage(metrics, "roc_auc", tmp / "auc_by_stage_on_ceiling_rows.png")
            plots.metric_by_stage(metrics, "log_loss",
                                  tmp / "log_loss_by_stage_on_ceiling_rows.png")
            plots.model_minus_ceiling(versus, tmp / "model_minus_ceiling.png", BOOTSTRAP_LEVEL)
            metrics.to_csv(tmp / "metrics_on_ceiling_rows.csv", index=False)
            versus.to_csv(tmp / "model_minus_ceiling.csv", index=False)
        plots.feature_importance(bundle.classifier, tmp / "feature_importance.png")
        X = bundle.spec.matrix(split.test.sample(min(3000, len(split.test)), random_state=0))
        plots.shap_summary(bundle.classifier, X, tmp / "shap_summary.png")
        mlflow.log_artifacts(str(tmp), artifact_path="evaluation")


def train(settings: Settings | None = None, params: dict | None = None,
          split: Split | None = None, register_model: bool = True,
          on_step: Callable[[str], None] | None = None, run_name: str = "train", *,
          split_options: SplitOptions | None = None, feature_set: FeatureSet | None = None,
          seed: int = DEFAULT_SEED, tuned: BoosterParams | None = None,
          challenger: bool = False, engine: str = "local",
          scheduler: str | None = None) -> TrainReport:
    """Fit, evaluate and register one model; returns what a person wants to see.

    `split_options` choose the split (ignored when `split` is given); `feature_set` the
    features (default all: `features.feature_sets.choose`); `seed` LightGBM's seed; `tuned`
    parameters per booster (a study's best or a file's: `training.params`), under `params`.
    A registered version gets the alias "challenger" only with `challenger` (`shipdelay train`,
    the nightly retrain): an experiment never becomes promotable by accident. `engine` "dask"
    fits the same boosters across the Dask cluster at `scheduler` (default a local one of two
    workers: `training.dask_fit`)."""
    settings = settings or get_settings()
    step = on_step or (lambda _: None)
    feature_set = feature_set or FeatureSet()
    options = split_options or SplitOptions()
    step("building the training set")
    split = split or current_split(settings, options)
    if not feature_set.is_full:  # its FeatureService, for serving to check the model against
        step(f"applying FeatureService {feature_set.service}")
        apply_feature_set(get_store(settings), offline_dir(settings), feature_set)
    gap_days = (split.gaps[0] / pd.Timedelta(days=1)) if split.bounds else float("nan")
    ceiling = Lake(settings.lake_dir).read("ceiling") if Lake(settings.lake_dir).exists(
        "ceiling") else pd.DataFrame(columns=["shipment_id", "as_of", "p_late"])
    ensure_experiment(settings)
    with mlflow.start_run(run_name=run_name) as run:
        sizes = {k: len(getattr(split, k)) for k in ("train", "valid", "test")}
        mlflow.log_params({**(params or {}), **{f"rows_{k}": v for k, v in sizes.items()},
                           **{k: str(v) for k, v in split.bounds.items()},
                           "label_horizon_days": split.horizon.days,
                           **options.params(), "split.gap_days": f"{gap_days:g}", "seed": seed,
                           "feature_service": feature_set.service, "fit_engine": engine,
                           "dropped_feature_groups": ",".join(feature_set.dropped),
                           "n_features": len(feature_set.model_inputs)})
        mlflow.log_input(mlflow.data.from_pandas(
            split.train[["shipment_id", "as_of", *feature_set.features, "is_late",
                         "delay_hours"]], name="training_set"), context="training")
        step("fitting the models")
        started = time.perf_counter()
        if tuned is not None:  # where they came from; the boosters record what they used
            mlflow.set_tag("params_source", tuned.source)
            mlflow.log_dict(tuned.by_booster, "tuned_params.json")
        fit = fit_bundle
        if engine == "dask":
            from training.dask_fit import fit_bundle_on_cluster

            fit = functools.partial(fit_bundle_on_cluster, scheduler=scheduler)
        bundle = fit(split, {**(tuned.classifier if tuned else {}), **(params or {})},
                     feature_set=feature_set, seed=seed,
                     quantile_params=tuned.quantiles if tuned else None)
        fit_seconds = time.perf_counter() - started
        mlflow.log_metric("fit/seconds", fit_seconds)
        window = run_logging.log_model_facts(bundle, split)
        if bundle.spec.notes is not None:  # the note model's own numbers, next to the trees'
            mlflow.log_metrics(run_logging.grouped(bundle.spec.notes.metrics(), "note_model"))
        step("evaluating against baselines (and the ceiling, if the lake has one)")
        table, gap, scored = compare(split, bundle, ceiling)
        metrics = _metrics(table, gap, scored)
        headline = {k: v for k, v in metrics.items() if k.count("/") == 1
                    and k.startswith("test/")}
        _log_plots(split, bundle, table, scored)
        step("registering the model")
        model_uri = log_bundle(bundle, input_example=split.test, metrics=metrics)
        version = (register(settings, model_uri, alias=CHALLENGER if challenger else None)
                   if register_model else None)
        run_logging.describe(run_name=run_name, bundle=bundle, split=split, window=window,
                             headline={k: headline[f"test/{k}"] for k in HEADLINE
                                       if f"test/{k}" in headline},
                             version=version, challenger=challenger)
        if version is not None:  # what monitoring measures drift against: these very rows
            step("saving the monitoring reference")
            save_training_reference(settings, str(version), bundle, split)
    return TrainReport(run.info.run_id, version, table, gap, sizes, scored["on_ceiling"],
                       fit_seconds, scored["ceiling_metrics"], scored["versus_ceiling"],
                       dict(split.bounds), gap_days, bundle.spec.service, feature_set.dropped,
                       seed)


def challenger_test_start(settings: Settings) -> pd.Timestamp | None:
    """Where the challenger's own test window opens (its run's `test_start` parameter), or None
    when there is no challenger or its run records none."""
    from registry.loader import run_of, version_by_alias
    from registry.store import client

    c = client(settings)
    mv = version_by_alias(c, CHALLENGER)
    if mv is None:
        return None
    try:
        recorded = c.get_run(run_of(mv)).data.params.get("test_start")
    except (LookupError, mlflow.exceptions.MlflowException):
        return None
    return pd.Timestamp(recorded) if recorded else None


def holdout_rows(settings: Settings, test_start: pd.Timestamp | None = None) -> pd.DataFrame:
    """The newest holdout: the training set's rows booked from `test_start` on (default: where
    the challenger's test window opens, so that the gate judges on the window the challenger
    was held out from, with the gaps it was trained with; without a challenger, the default
    split's test window)."""
    test_start = test_start if test_start is not None else challenger_test_start(settings)
    if test_start is None:
        return current_split(settings).test
    lake = Lake(settings.lake_dir)
    require_features(get_store(settings), model_feature_names())
    frame = build_training_set(lake, offline_dir(settings),
                               ticks=TickRule(every_h=settings.snapshot_tick_hours))
    booked = pd.to_datetime(frame["booked_at_s"], unit="s", utc=True)
    test = frame[(booked >= test_start).to_numpy()].reset_index(drop=True)
    if test.empty:
        raise SplitError(f"the holdout from {test_start:%Y-%m-%d} holds no labelled snapshot: "
                         "train a challenger on the current lake (`shipdelay train`)",
                         "--test-from")
    return test


def holdout_evaluator(settings: Settings | None = None,
                      test_start: pd.Timestamp | None = None) -> Callable[[Bundle], dict]:
    """Scores a bundle on the newest holdout (`holdout_rows`), for the promotion gate."""
    test = holdout_rows(settings or get_settings(), test_start)
    stage = journey_stage(test)

    def evaluate_bundle(bundle: Bundle) -> dict:
        p, _ = score_frame(bundle, test)
        y = test["is_late"].to_numpy(float)
        overall = classification_metrics(y, p)
        stages = {}
        for name in stage.cat.categories:
            rows = (stage == name).to_numpy()
            if rows.sum() > 50:
                stages[str(name)] = classification_metrics(y[rows], p[rows])["log_loss"]
        return {"log_loss": overall["log_loss"], "ece": overall["ece"], "stages": stages}

    return evaluate_bundle
