"""Hyper-parameter search for every booster of the model: the P(late) classifier and the
delay-hour quantile boosters (P10, P50, P90), each an Optuna study of its own (seeded TPE,
median pruning on its validation loss as LightGBM boosts: log loss for the classifier, pinball
loss for a quantile).

One call is one MLflow parent run in the project's experiment (artifacts under the data
folder, like `shipdelay train`'s); every trial is a run nested under it, named and tagged with
its booster. When it ends, the parent run holds each booster's best parameters over the whole
study so far (every worker's trials): as parameters `best.<booster>.<name>`, and as the artifact
`best_params.json` that `shipdelay train --params best|RUN_ID` reads (`training.params`); each
booster's Optuna study keeps them too (user attribute `best_params`).

Storage decides who can join a study (`shipdelay.backends`):
- `journal:<path>` or a plain file path: an Optuna JournalStorage file (the local default,
  `<data_dir>/optuna/journal.log`); several processes on one machine can share it.
- an SQLAlchemy URL: RDB storage with heartbeats, so that trials of a dead worker are marked
  failed instead of staying RUNNING forever. PostgreSQL (the scale profile's `postgres_url` by
  default) serves workers on several machines; its tables live in schema `optuna`, apart from
  MLflow's. SQLite URLs work for one process only.

Workers join with `load_if_exists=True`: start as many `run_worker` processes as you like
against the same storage and study name.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import mlflow
import optuna
import pandas as pd
from optuna.storages import BaseStorage
from optuna_integration.lightgbm import LightGBMPruningCallback

from shipdelay.parquet_io import read_frame, write_options
from training.features import FeatureSpec
from training.model import MAX_ROUNDS, Matrices, fit_classifier, fit_quantile
from training.params import BEST_ARTIFACT, BOOSTERS, QUANTILE_BOOSTERS, TUNING_ROLE
from training.split import Split
from training.study_storage import make_storage, storage_url  # noqa: F401 - the public surface
from training.study_storage import resolve_storage as _resolve

STUDY_NAME = "shipdelay-delay"
METRICS = {"classifier": "binary_logloss", **{b: "quantile" for b in QUANTILE_BOOSTERS}}
WARMUP_ROUNDS = 30  # early rounds say little about the final loss: never prune before this
# how a trial runs, not what it learns: left out of the parameters a study keeps as its best
EXECUTION_ONLY = ("num_threads", "seed", "verbose", "verbosity")


def booster_study(study_name: str, booster: str) -> str:
    """The Optuna study of one booster within the study `study_name`."""
    return f"{study_name}.{booster}"


def open_study(study_name: str = STUDY_NAME, storage: str | BaseStorage | None = None,
               seed: int | None = 7, booster: str = "classifier",
               settings: Any = None) -> optuna.Study:
    """Create one booster's study or join it. Creating the studies once before starting
    parallel workers spares them a race on a fresh database's tables."""
    return optuna.create_study(
        study_name=booster_study(study_name, booster), storage=_resolve(storage, settings),
        direction="minimize", load_if_exists=True, sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=WARMUP_ROUNDS))


# ----------------------------------------------------------------------------------- search

def search_space(trial: optuna.Trial) -> dict:
    """LightGBM parameters to search, for every booster; the rest come from
    model.CLASSIFIER_PARAMS or model.QUANTILE_PARAMS."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.2, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 15, 255, log=True),
        "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 10, 400, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.5, 1.0),
        "bagging_fraction": trial.suggest_float("bagging_fraction", 0.5, 1.0),
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 10.0, log=True),
        "min_gain_to_split": trial.suggest_float("min_gain_to_split", 0.0, 1.0),
    }


@dataclass
class Tuning:
    """What one `tune` call did: its MLflow parent run (None with `parent_run=False`), each
    booster's study, and each booster's best parameters over its whole study so far."""

    run_id: str | None
    studies: dict[str, optuna.Study] = field(default_factory=dict)
    best_params: dict[str, dict] = field(default_factory=dict)

    def best_value(self, booster: str) -> float | None:
        """The booster's best validation loss, None before a trial completed."""
        best = _best_trial(self.studies[booster])
        return None if best is None else float(best.value)


def tune(split: Split, n_trials: int, *, study_name: str = STUDY_NAME,
         storage: str | BaseStorage | None = None, timeout: float | None = None,
         parent_run: bool = True, seed: int | None = 7, max_rounds: int = MAX_ROUNDS,
         fixed_params: dict | None = None, boosters: tuple[str, ...] = BOOSTERS,
         experiment: str | None = None, tracking_uri: str | None = None,
         settings: Any = None) -> Tuning:
    """Run `n_trials` more trials of each booster's study (created or joined), in `boosters`
    order, and return what was found.

    `storage`: see the module doc; None = Settings'. `timeout`: seconds for the whole call,
    shared evenly by the boosters still to tune. `parent_run`: open an MLflow run for this call
    (nested if a run is already active) under which every trial is a nested run; False = trials
    nest under whatever run is active. `fixed_params` override both the defaults and the
    search (e.g. `{"num_threads": 1}`). `experiment`: MLflow experiment, default the active
    run's, else the project's (`registry.store.EXPERIMENT`). `tracking_uri`: default Settings'.
    """
    unknown = [b for b in boosters if b not in BOOSTERS]
    if unknown or not boosters:
        raise ValueError(f"unknown booster {', '.join(unknown) or '(none given)'}: choose among "
                         f"{', '.join(BOOSTERS)}")
    settings = _settings(settings, tracking_uri)
    store = _resolve(storage, settings)
    experiment_id = _experiment_id(settings, experiment)
    tags = {"optuna.study_name": study_name, "worker_pid": str(os.getpid()),
            "worker_host": socket.gethostname()}
    spec = FeatureSpec.fit(split.train)
    data = Matrices.build(spec, split.train, split.valid)  # binned once, shared by every trial
    deadline = None if timeout is None else time.monotonic() + timeout
    studies: dict[str, optuna.Study] = {}

    def run_all() -> None:
        for i, booster in enumerate(boosters):
            # a sampler seed per booster: the same seed would start every study on the same
            # parameters
            sampler_seed = None if seed is None else seed + BOOSTERS.index(booster)
            study = open_study(study_name, store, sampler_seed, booster)
            studies[booster] = study
            left = None if deadline is None else (deadline - time.monotonic()) / (len(boosters) - i)
            if left is not None and left <= 0:
                continue  # time is up: the booster keeps what earlier calls found
            data.relabel(split.train, split.valid,
                         "is_late" if booster == "classifier" else "delay_hours")
            trial_tags = {**tags, "booster": booster, "optuna.study_name": study.study_name}
            study.optimize(_objective(booster, split, spec, data, seed, max_rounds, fixed_params,
                                      experiment_id, trial_tags),
                           n_trials=n_trials, timeout=left)
            best = _best_params(study)
            if best is not None:
                study.set_user_attr("best_params", best)

    if not parent_run:
        run_all()
        return Tuning(None, studies, _all_best(studies))
    with mlflow.start_run(run_name=f"tune-{study_name}", nested=mlflow.active_run() is not None,
                          experiment_id=experiment_id,
                          tags={**tags, "role": TUNING_ROLE,
                                "boosters": ",".join(boosters)}) as run:
        mlflow.log_params({"n_trials": n_trials, "seed": seed, "max_rounds": max_rounds,
                           "boosters": ",".join(boosters), "sampler": "TPESampler",
                           "pruner": "MedianPruner", "warmup_rounds": WARMUP_ROUNDS})
        run_all()
        best = _log_study_summary(studies)
    return Tuning(run.info.run_id, studies, best)


def _objective(booster: str, split: Split, spec: FeatureSpec, data: Matrices, seed: int | None,
               max_rounds: int, fixed_params: dict | None, experiment_id: str, tags: dict):
    """One booster's trial: fit it with the trial's parameters, as a nested MLflow run."""
    metric = METRICS[booster]

    def objective(trial: optuna.Trial) -> float:
        # the study's seed seeds the boosters too: the same split and seed, run trial after
        # trial in one process, give the same trials and the same losses
        params = {**search_space(trial), **({} if seed is None else {"seed": seed}),
                  **(fixed_params or {})}
        trial.set_user_attr("worker_pid", os.getpid())
        trial.set_user_attr("lgb_params", {k: v for k, v in params.items()
                                           if k not in EXECUTION_ONLY})
        history: dict = {}
        callbacks = [LightGBMPruningCallback(trial, metric, valid_name="valid"),
                     lgb.record_evaluation(history)]
        pruned: optuna.TrialPruned | None = None
        loss, best_iteration = float("nan"), 0
        with mlflow.start_run(run_name=f"{booster}-trial-{trial.number}", nested=True,
                              experiment_id=experiment_id,
                              tags={**tags, "optuna.trial_number": str(trial.number)}) as run:
            trial.set_user_attr("mlflow_run_id", run.info.run_id)
            mlflow.log_params({**params, "booster": booster, "metric": metric})
            try:
                if booster == "classifier":
                    fitted = fit_classifier(spec, split.train, split.valid, params,
                                            callbacks=callbacks, max_rounds=max_rounds, data=data)
                else:
                    fitted = fit_quantile(data, QUANTILE_BOOSTERS[booster], params, max_rounds,
                                          callbacks=callbacks)
            except optuna.TrialPruned as exc:
                # The pruning callback runs before record_evaluation, so the curve holds the
                # rounds before the one that was pruned.
                curve = history.get("valid", {}).get(metric, [])
                if curve:
                    best = min(curve)
                    mlflow.log_metrics({"best_valid_loss": best,
                                        "best_iteration": curve.index(best) + 1})
                mlflow.log_metric("pruned_at_iteration", len(curve))
                mlflow.set_tags({"optuna.trial_state": "PRUNED", "pruned": "true"})
                pruned = exc
            else:
                loss = float(fitted.best_score["valid"][metric])
                best_iteration = int(fitted.best_iteration)
                mlflow.log_metrics({"best_valid_loss": loss, "best_iteration": best_iteration})
                mlflow.set_tag("optuna.trial_state", "COMPLETE")
        if pruned is not None:
            raise pruned
        trial.set_user_attr("best_iteration", best_iteration)
        return loss

    return objective


def _best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no trial completed yet
        return None


def _best_params(study: optuna.Study) -> dict | None:
    """The parameters the best trial trained with (searched and fixed, not execution ones)."""
    best = _best_trial(study)
    if best is None:
        return None
    return dict(best.user_attrs.get("lgb_params") or best.params)


def _all_best(studies: dict[str, optuna.Study]) -> dict[str, dict]:
    return {b: p for b, s in studies.items() if (p := _best_params(s)) is not None}


def _log_study_summary(studies: dict[str, optuna.Study]) -> dict[str, dict]:
    """Per booster, over its whole study so far (all workers), not only this call's trials;
    the best parameters also as `best_params.json`, which `shipdelay train --params` reads."""
    state = optuna.trial.TrialState
    metrics, params = {}, {}
    for booster, study in studies.items():
        states = [t.state for t in study.get_trials(deepcopy=False)]
        metrics |= {f"{booster}.n_complete": states.count(state.COMPLETE),
                    f"{booster}.n_pruned": states.count(state.PRUNED),
                    f"{booster}.n_failed": states.count(state.FAIL)}
        best = _best_trial(study)
        if best is not None:
            metrics |= {f"{booster}.best_value": float(best.value),
                        f"{booster}.best_trial": best.number}
            params |= {f"best.{booster}.{k}": v for k, v in _best_params(study).items()}
    mlflow.log_metrics(metrics)
    best_params = _all_best(studies)
    if not best_params:
        mlflow.set_tag("best", "none")
        return best_params
    mlflow.log_params(params)
    mlflow.log_dict(best_params, BEST_ARTIFACT)
    return best_params


def _settings(settings: Any, tracking_uri: str | None) -> Any:
    if settings is None:
        from shipdelay.settings import get_settings

        settings = get_settings()
    if tracking_uri:
        settings = settings.model_copy(update={"mlflow_tracking_uri": tracking_uri})
    return settings


def _experiment_id(settings: Any, name: str | None) -> str:
    """The active run's experiment, else `name` or the project's, created if missing with its
    artifacts under the data folder (`registry.store.ensure_experiment`)."""
    active = mlflow.active_run()
    if active is not None:
        return active.info.experiment_id
    from registry.store import EXPERIMENT, ensure_experiment

    return ensure_experiment(settings, name or EXPERIMENT)


# ---------------------------------------------------------------------------------- workers

def save_split(split: Split, folder: str | Path) -> Path:
    """Write a split for worker processes: train/valid/test Parquet and split.json (bounds,
    label horizon)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("train", "valid", "test"):
        getattr(split, name).to_parquet(folder / f"{name}.parquet", **write_options())
    meta = {"bounds": {k: pd.Timestamp(v).isoformat() for k, v in split.bounds.items()},
            "horizon_s": pd.Timedelta(split.horizon).total_seconds()}
    (folder / "split.json").write_text(json.dumps(meta, indent=2))
    return folder


def load_split(folder: str | Path) -> Split:
    folder = Path(folder)
    meta = json.loads((folder / "split.json").read_text())
    frames = {n: read_frame(folder / f"{n}.parquet") for n in ("train", "valid", "test")}
    return Split(frames["train"], frames["valid"], frames["test"],
                 {k: pd.Timestamp(v) for k, v in meta["bounds"].items()},
                 pd.Timedelta(seconds=meta["horizon_s"]))


def run_worker(split_path: str, n_trials: int, storage: str, study_name: str = STUDY_NAME,
               **tune_kwargs: Any) -> None:
    """One of several parallel tuning processes joining the same studies, started as
    `python -c "from training.tune import run_worker; run_worker('split/', 20, url, name)"`
    or as a multiprocessing "spawn" target. Each worker opens its own MLflow parent run (tagged
    with the study name and its pid) on Settings' tracking store. The sampler is unseeded
    unless `seed=` is given: workers sharing a seed would propose identical parameters for
    their start-up trials. Several workers on one machine should share its cores:
    `fixed_params={"num_threads": 1}`."""
    tune_kwargs.setdefault("seed", None)
    tune(load_split(split_path), n_trials, study_name=study_name, storage=storage, **tune_kwargs)
