"""Hyper-parameter search for the P(late) classifier: Optuna (seeded TPE, median pruning on the
validation log loss as LightGBM boosts), every trial an MLflow run nested under the study's run.

Storage decides who can join a study:
- `journal:<path>` or a plain file path: an Optuna JournalStorage file (the local default,
  `<data_dir>/optuna/journal.log`); several processes on one machine can share it.
- an SQLAlchemy URL such as `postgresql://postgres@host:5432/shipdelay`: RDB storage for
  workers on several machines, with heartbeats so that trials of a dead worker are marked
  failed instead of staying RUNNING forever. SQLite URLs work for one process only.

Workers join with `load_if_exists=True`: start as many `run_worker` processes as you like
against the same storage and study name.
"""

from __future__ import annotations

import json
import os
import socket
import warnings
from pathlib import Path
from typing import Any

import lightgbm as lgb
import mlflow
import optuna
import pandas as pd
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna_integration.lightgbm import LightGBMPruningCallback

from shipdelay.parquet_io import read_frame, write_options
from training.features import FeatureSpec
from training.model import MAX_ROUNDS, fit_classifier
from training.split import Split

STUDY_NAME = "shipdelay-delay"
METRIC = "binary_logloss"
WARMUP_ROUNDS = 30  # early rounds say little about the final loss: never prune before this
HEARTBEAT_S = 30
GRACE_S = 120  # a trial without a heartbeat for this long belongs to a dead worker


# ---------------------------------------------------------------------------------- storage

def storage_url(settings: Any = None, storage: str | None = None) -> str:
    """Where studies live: the explicit `storage`, else `settings.optuna_storage` (when Settings
    grows that field), else a journal file under `<data_dir>/optuna/`."""
    if storage:
        return storage
    if settings is None:
        from shipdelay.settings import get_settings

        settings = get_settings()
    configured = getattr(settings, "optuna_storage", None)
    if configured:
        return str(configured)
    return f"journal:{(Path(settings.data_dir) / 'optuna' / 'journal.log').resolve()}"


def make_storage(url: str) -> BaseStorage:
    """The storage object for a `storage_url`: `journal:<path>` or a file path -> JournalStorage;
    an SQLAlchemy URL (`postgresql://...`, `sqlite:///...`) -> RDBStorage with heartbeats."""
    if url.startswith("journal:"):
        return _journal(url.removeprefix("journal:"))
    if "://" not in url:
        return _journal(url)
    with warnings.catch_warnings():
        # heartbeat_interval is still flagged experimental; we opt in on purpose.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RDBStorage(url, engine_kwargs={"pool_pre_ping": True},
                          heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)


def _journal(path: str) -> JournalStorage:
    file = Path(path).expanduser()
    file.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(file)))


def _resolve(storage: str | BaseStorage | None) -> BaseStorage:
    if isinstance(storage, BaseStorage):
        return storage
    return make_storage(storage_url(storage=storage))


def open_study(study_name: str = STUDY_NAME, storage: str | BaseStorage | None = None,
               seed: int | None = 7) -> optuna.Study:
    """Create the study or join it. Creating it once before starting parallel workers spares
    them a race on a fresh database's tables."""
    return optuna.create_study(
        study_name=study_name, storage=_resolve(storage), direction="minimize",
        load_if_exists=True, sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=WARMUP_ROUNDS))


# ----------------------------------------------------------------------------------- search

def search_space(trial: optuna.Trial) -> dict:
    """LightGBM parameters to search; everything else comes from model.CLASSIFIER_PARAMS."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.2, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 15, 255, log=True),
        "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 10, 400, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.5, 1.0),
        "bagging_fraction": trial.suggest_float("bagging_fraction", 0.5, 1.0),
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 10.0, log=True),
        "min_gain_to_split": trial.suggest_float("min_gain_to_split", 0.0, 1.0),
    }


def tune(split: Split, n_trials: int, *, study_name: str = STUDY_NAME,
         storage: str | BaseStorage | None = None, timeout: float | None = None,
         parent_run: bool = True, seed: int | None = 7, max_rounds: int = MAX_ROUNDS,
         fixed_params: dict | None = None, experiment: str | None = None,
         tracking_uri: str | None = None) -> optuna.Study:
    """Run `n_trials` more trials of the study (created or joined) and return it.

    `storage`: see the module doc; None = `storage_url()` from Settings.
    `parent_run`: open an MLflow run for this call (nested if a run is already active) under
    which every trial is a nested run; False = trials nest under whatever run is active.
    `fixed_params` override both the defaults and the search (e.g. `{"num_threads": 1}`).
    `experiment`: MLflow experiment; default the active run's, else one named after the study.
    `tracking_uri`: default MLFLOW_TRACKING_URI or mlflow's current URI, else Settings'.
    """
    _use_tracking(tracking_uri)
    study = open_study(study_name, storage, seed)
    spec = FeatureSpec.fit(split.train)
    experiment_id = _experiment_id(experiment or study_name)
    tags = {"optuna.study_name": study_name, "worker_pid": str(os.getpid()),
            "worker_host": socket.gethostname()}

    def objective(trial: optuna.Trial) -> float:
        # the study's seed seeds the boosters too: the same split and seed, run trial after
        # trial in one process, give the same trials and the same losses
        params = {**search_space(trial), **({} if seed is None else {"seed": seed}),
                  **(fixed_params or {})}
        trial.set_user_attr("worker_pid", os.getpid())
        history: dict = {}
        callbacks = [LightGBMPruningCallback(trial, METRIC, valid_name="valid"),
                     lgb.record_evaluation(history)]
        pruned: optuna.TrialPruned | None = None
        loss, best_iteration = float("nan"), 0
        with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True,
                              experiment_id=experiment_id,
                              tags={**tags, "optuna.trial_number": str(trial.number)}) as run:
            trial.set_user_attr("mlflow_run_id", run.info.run_id)
            mlflow.log_params(params)
            try:
                booster = fit_classifier(spec, split.train, split.valid, params,
                                         callbacks=callbacks, max_rounds=max_rounds)
            except optuna.TrialPruned as exc:
                # The pruning callback runs before record_evaluation, so the curve holds the
                # rounds before the one that was pruned.
                curve = history.get("valid", {}).get(METRIC, [])
                if curve:
                    best = min(curve)
                    mlflow.log_metrics({"best_valid_logloss": best,
                                        "best_iteration": curve.index(best) + 1})
                mlflow.log_metric("pruned_at_iteration", len(curve))
                mlflow.set_tags({"optuna.trial_state": "PRUNED", "pruned": "true"})
                pruned = exc
            else:
                loss = float(booster.best_score["valid"][METRIC])
                best_iteration = int(booster.best_iteration)
                mlflow.log_metrics({"best_valid_logloss": loss, "best_iteration": best_iteration})
                mlflow.set_tag("optuna.trial_state", "COMPLETE")
        if pruned is not None:
            raise pruned
        trial.set_user_attr("best_iteration", best_iteration)
        return loss

    if not parent_run:
        study.optimize(objective, n_trials=n_trials, timeout=timeout)
        return study
    with mlflow.start_run(run_name=f"tune-{study_name}", nested=mlflow.active_run() is not None,
                          experiment_id=experiment_id, tags={**tags, "role": "study"}):
        mlflow.log_params({"n_trials": n_trials, "seed": seed, "max_rounds": max_rounds,
                           "sampler": "TPESampler", "pruner": "MedianPruner",
                           "warmup_rounds": WARMUP_ROUNDS})
        study.optimize(objective, n_trials=n_trials, timeout=timeout)
        _log_study_summary(study)
    return study


def _log_study_summary(study: optuna.Study) -> None:
    """Best over the whole study so far (all workers), not only this call's trials."""
    states = [t.state for t in study.get_trials(deepcopy=False)]
    state = optuna.trial.TrialState
    mlflow.log_metrics({"n_complete": states.count(state.COMPLETE),
                        "n_pruned": states.count(state.PRUNED),
                        "n_failed": states.count(state.FAIL)})
    try:
        best = study.best_trial
    except ValueError:  # no trial completed yet
        mlflow.set_tag("best", "none")
        return
    mlflow.log_params({f"best_{k}": v for k, v in best.params.items()})
    mlflow.log_metrics({"best_value": float(best.value), "best_trial": best.number})


def _use_tracking(tracking_uri: str | None) -> None:
    from mlflow.tracking._tracking_service.utils import is_tracking_uri_set

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    elif not is_tracking_uri_set():
        from shipdelay.settings import get_settings

        mlflow.set_tracking_uri(get_settings().tracking_uri)


def _experiment_id(name: str) -> str:
    """The active run's experiment, else `name` (created if missing; workers may race)."""
    active = mlflow.active_run()
    if active is not None:
        return active.info.experiment_id
    client = mlflow.MlflowClient()
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except mlflow.exceptions.MlflowException:  # another worker created it first
        return client.get_experiment_by_name(name).experiment_id


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
    """One of several parallel tuning processes joining the same study, started as
    `python -c "from training.tune import run_worker; run_worker('split/', 20, url, name)"`
    or as a multiprocessing "spawn" target. Each worker opens its own MLflow parent run (tagged
    with the study name and its pid). The sampler is unseeded unless `seed=` is given: workers
    sharing a seed would propose identical parameters for their start-up trials. Several
    workers on one machine should share its cores: `fixed_params={"num_threads": 1}`."""
    tune_kwargs.setdefault("seed", None)
    tune(load_split(split_path), n_trials, study_name=study_name, storage=storage, **tune_kwargs)
