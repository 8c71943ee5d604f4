"""Tuning behaviour: a study over a local journal file logs one MLflow parent run in the
project's experiment with a nested run per trial; two worker processes share one study on
PostgreSQL."""

from __future__ import annotations

import multiprocessing
import uuid

import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest

from features.schema import CATEGORICAL, model_feature_names
from registry.store import EXPERIMENT, ensure_experiment
from tests.conftest import services_required
from training.split import Split
from training.tune import load_split, make_storage, open_study, run_worker, save_split, tune

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
ROUNDS = 80  # a cap that keeps trials quick: the loss only has to improve, not converge
# One LightGBM thread: on a busy 2-core machine two OpenMP threads were 3-9x slower per fit.
FIXED = {"num_threads": 1}
DONE = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def _frame(rng: np.random.Generator, n: int) -> pd.DataFrame:
    cols = {}
    for c in model_feature_names():
        if c in CATEGORICAL:
            cols[c] = rng.choice([f"{c[:3]}{i}" for i in range(4)], n)
        else:
            cols[c] = rng.normal(size=n)
    frame = pd.DataFrame(cols)
    logit = 1.5 * frame["slip_h"] + 0.5 * frame["promised_slack_h"] * -1 - 0.3
    frame["is_late"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    frame["delay_hours"] = np.where(frame["is_late"] == 1, rng.gamma(2.0, 6.0, n), 0.0)
    return frame


@pytest.fixture(scope="module")
def split() -> Split:
    rng = np.random.default_rng(3)
    t0 = pd.Timestamp("2025-10-01", tz="UTC")
    bounds = {"train_end": t0 + pd.Timedelta(days=40), "valid_start": t0 + pd.Timedelta(days=47),
              "valid_end": t0 + pd.Timedelta(days=57), "test_start": t0 + pd.Timedelta(days=64)}
    return Split(_frame(rng, 1500), _frame(rng, 500), _frame(rng, 300), bounds,
                 pd.Timedelta(days=7))


@pytest.fixture
def tracking(tmp_path, monkeypatch) -> str:
    """MLflow on SQLite in tmp_path, through Settings' environment so that spawned workers see
    it."""
    from shipdelay.settings import get_settings

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("SHIPDELAY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SHIPDELAY_MLFLOW_TRACKING_URI", uri)
    get_settings.cache_clear()
    yield uri
    get_settings.cache_clear()
    mlflow.set_tracking_uri(None)


def _runs(uri: str, experiment: str = EXPERIMENT) -> list:
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], max_results=1000)


def test_split_round_trip(split, tmp_path):
    back = load_split(save_split(split, tmp_path / "split"))
    pd.testing.assert_frame_equal(back.train, split.train)
    pd.testing.assert_frame_equal(back.test, split.test)
    assert back.bounds == split.bounds and back.horizon == split.horizon


def test_make_storage_kinds(tmp_path):
    assert isinstance(make_storage(f"journal:{tmp_path}/a/j.log"), optuna.storages.JournalStorage)
    assert isinstance(make_storage(str(tmp_path / "b.log")), optuna.storages.JournalStorage)
    assert (tmp_path / "a" / "j.log").exists()
    assert isinstance(make_storage(f"sqlite:///{tmp_path}/o.db"), optuna.storages.RDBStorage)


def test_study_on_local_journal_logs_nested_runs(split, tmp_path, tracking):
    storage = f"journal:{tmp_path / 'optuna' / 'journal.log'}"
    study = tune(split, 6, study_name="t-local", storage=storage, max_rounds=ROUNDS,
                 fixed_params=FIXED, boosters=("classifier",)).studies["classifier"]

    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 6 and all(t.state in DONE for t in trials)
    assert 0 < study.best_value < 0.7  # better than a coin flip on a learnable label
    assert isinstance(study.pruner, optuna.pruners.MedianPruner)
    assert study.pruner._n_warmup_steps >= 30
    assert isinstance(study.sampler, optuna.samplers.TPESampler)

    runs = _runs(tracking)
    parents = [r for r in runs if r.data.tags.get("role") == "study"]
    assert len(parents) == 1
    parent = parents[0]
    nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(nested) == 6 and len(runs) == 7
    assert {r.info.run_name for r in nested} == {f"classifier-trial-{i}" for i in range(6)}
    for r in nested:
        assert {"learning_rate", "num_leaves", "lambda_l2"} <= set(r.data.params)
        assert r.data.tags["optuna.trial_state"] in ("COMPLETE", "PRUNED")
        if r.data.tags["optuna.trial_state"] == "COMPLETE":
            assert r.data.metrics["best_valid_loss"] > 0
            assert r.data.metrics["best_iteration"] >= 1
    assert parent.data.metrics["classifier.best_value"] == pytest.approx(study.best_value)
    assert float(parent.data.params["best.classifier.learning_rate"]) == pytest.approx(
        study.best_params["learning_rate"])
    assert parent.info.artifact_uri.startswith((tmp_path / "data").resolve().as_uri())

    # Joining the same study adds trials instead of starting over.
    again = tune(split, 1, study_name="t-local", storage=storage, max_rounds=ROUNDS,
                 fixed_params=FIXED, parent_run=False, boosters=("classifier",))
    assert len(again.studies["classifier"].trials) == 7


def test_pruned_trials_are_tagged(split, tmp_path, tracking, monkeypatch):
    # Force the pruning path: every trial is stopped once round 10 (step 9) is reported.
    monkeypatch.setattr(optuna.pruners.MedianPruner, "prune",
                        lambda self, study, trial: (trial.last_step or 0) >= 9)
    study = tune(split, 2, study_name="t-pruned", storage=f"journal:{tmp_path / 'j.log'}",
                 max_rounds=ROUNDS, fixed_params=FIXED,
                 boosters=("classifier",)).studies["classifier"]
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED] * 2
    runs = _runs(tracking)
    nested = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(nested) == 2
    for r in nested:
        assert r.data.tags["optuna.trial_state"] == "PRUNED" and r.data.tags["pruned"] == "true"
        assert r.info.status == "FINISHED"
        assert r.data.metrics["pruned_at_iteration"] == 9
        assert 1 <= r.data.metrics["best_iteration"] <= 9
    parent = next(r for r in runs if r.data.tags.get("role") == "study")
    assert parent.data.tags["best"] == "none"
    assert parent.data.metrics["classifier.n_pruned"] == 2


def _postgres_or_skip() -> None:
    try:
        import psycopg

        psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", connect_timeout=3).close()
    except Exception as exc:  # noqa: BLE001 - any failure means no usable service
        if services_required():
            pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is required in CI and is not usable: {exc}")
        pytest.skip(f"no PostgreSQL at 127.0.0.1:5432 ({exc})")


@pytest.mark.services
@pytest.mark.slow
def test_two_workers_share_a_study_on_postgres(split, tmp_path, tracking):
    from shipdelay.settings import get_settings

    _postgres_or_skip()
    name = f"test-tune-{uuid.uuid4().hex[:12]}"
    split_dir = save_split(split, tmp_path / "split")
    # Create the study, the Optuna tables and the MLflow database once, before the workers
    # start: concurrent first-time schema creation is racy on both.
    open_study(name, PG_URL)
    ensure_experiment(get_settings())
    ctx = multiprocessing.get_context("spawn")
    kwargs = {"max_rounds": ROUNDS, "fixed_params": FIXED, "boosters": ("classifier",)}
    workers = [ctx.Process(target=run_worker, args=(str(split_dir), 4, PG_URL, name),
                           kwargs=kwargs) for _ in range(2)]
    try:
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=600)
        assert [w.exitcode for w in workers] == [0, 0]

        study = optuna.load_study(study_name=f"{name}.classifier", storage=make_storage(PG_URL))
        trials = study.get_trials(deepcopy=False)
        assert len(trials) == 8 and all(t.state in DONE for t in trials)
        pids = {t.user_attrs["worker_pid"] for t in trials}
        assert pids == {w.pid for w in workers}

        runs = _runs(tracking)
        parents = [r for r in runs if r.data.tags.get("role") == "study"]
        assert sorted(int(p.data.tags["worker_pid"]) for p in parents) == sorted(pids)
        for p in parents:
            assert p.data.tags["optuna.study_name"] == name
            assert p.data.params["boosters"] == "classifier"
            kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == p.info.run_id]
            assert len(kids) == 4
    finally:
        for w in workers:
            if w.is_alive():
                w.kill()
        optuna.delete_study(study_name=f"{name}.classifier", storage=make_storage(PG_URL))
