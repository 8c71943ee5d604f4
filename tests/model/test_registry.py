"""The model registry's behaviour: log + register, the promotion gate, load by alias, rollback.

Runs against a real MLflow tracking store (SQLite in a temporary folder) with tiny real Bundles:
LightGBM boosters trained on a few hundred synthetic rows.
"""

from __future__ import annotations

import os

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
import pytest

from registry.gate import decide
from registry.loader import NoChampionError, alias_version, cache_dir, load_by_alias
from registry.promote import NoChallengerError, NoPreviousChampionError, promote, rollback
from registry.register import log_bundle, register
from registry.store import MODEL_NAME, client, ensure_experiment
from shipdelay.settings import Settings
from training.bundle import QUANTILES, Bundle, Calibrator
from training.features import FeatureSpec

FEATURES = ["slip_h", "distance_km", "legs"]
PARAMS = {"verbose": -1, "num_threads": 1, "num_leaves": 7, "min_data_in_leaf": 10}


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    n = 300
    df = pd.DataFrame({"slip_h": rng.exponential(3, n), "distance_km": rng.uniform(50, 3000, n),
                       "legs": rng.integers(1, 5, n).astype(float)})
    delay = df["slip_h"] * 1.5 + df["legs"] - 2 + rng.normal(0, 2, n)
    return df.assign(delay_hours=delay, is_late=(delay > 2).astype(float))


def tiny_bundle(frame: pd.DataFrame, seed: int, rounds: int) -> Bundle:
    spec = FeatureSpec(service="delay_model_v1", features=list(FEATURES), categories={})
    X = spec.matrix(frame)
    classifier = lgb.train({**PARAMS, "objective": "binary", "seed": seed},
                           lgb.Dataset(X, frame["is_late"]), num_boost_round=rounds)
    quantiles = {q: lgb.train({**PARAMS, "objective": "quantile", "alpha": q, "seed": seed},
                              lgb.Dataset(X, frame["delay_hours"]), num_boost_round=rounds)
                 for q in QUANTILES}
    calibrator = Calibrator.fit(classifier.predict(X), frame["is_late"].to_numpy())
    return Bundle(classifier, quantiles, calibrator, spec)


@pytest.fixture(scope="module")
def bundles(frame) -> list[Bundle]:
    return [tiny_bundle(frame, seed, rounds) for seed, rounds in [(1, 5), (2, 8), (3, 12)]]


@pytest.fixture
def settings(tmp_path) -> Settings:
    """A fresh registry in a temporary folder; MLflow's process-wide URIs are reset afterwards."""
    yield Settings(data_dir=tmp_path / "data", mlflow_tracking_uri=None)
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
    os.environ.pop("MLFLOW_REGISTRY_URI", None)


def log_and_register(settings: Settings, bundle: Bundle, frame: pd.DataFrame,
                     by_run_id: bool = False) -> str:
    ensure_experiment(settings)
    with mlflow.start_run() as run:
        uri = log_bundle(bundle, input_example=frame.head(20), metrics={"log_loss": 0.5})
    return register(settings, run.info.run_id if by_run_id else uri)


def evaluation(log_loss: float, ece: float = 0.02, **stages: float) -> dict:
    return {"log_loss": log_loss, "ece": ece, "stages": stages or {"road": log_loss}}


def test_lifecycle_register_gate_promote_rollback(settings, bundles, frame, monkeypatch):
    scores = {"1": evaluation(0.50), "2": evaluation(0.60), "3": evaluation(0.45)}
    evaluated: list[str] = []

    def evaluate(bundle: Bundle) -> dict:
        evaluated.append(bundle.version)
        return scores[bundle.version]

    # First model: registered as challenger, promoted because there is no champion yet.
    v1 = log_and_register(settings, bundles[0], frame)
    assert v1 == "1" and alias_version(settings, "challenger") == "1"
    mv = client(settings).get_model_version(MODEL_NAME, v1)
    assert mv.tags["feature_service"] == "delay_model_v1" and mv.tags["run_id"]
    result = promote(settings, evaluate)
    assert result.ok and result.reasons == ["no champion yet"]
    assert alias_version(settings, "champion") == "1"
    assert alias_version(settings, "challenger") is None

    # A worse challenger is refused: the champion stays, the challenger keeps its alias.
    v2 = log_and_register(settings, bundles[1], frame)
    result = promote(settings, evaluate)
    assert not result.ok
    assert any("log loss" in reason and "0.6000" in reason for reason in result.reasons)
    assert not result.table.loc["log_loss", "passed"]
    assert alias_version(settings, "champion") == "1" and alias_version(settings, "challenger") == v2
    assert client(settings).get_model_version(MODEL_NAME, v2).tags["gate"] == "refused"

    # A better challenger replaces it; the old champion goes into the history.
    v3 = log_and_register(settings, bundles[2], frame)
    assert promote(settings, evaluate).ok
    assert alias_version(settings, "champion") == v3
    assert set(evaluated) == {"1", "2", "3"}

    # Rollback restores version 1, and scoring loads exactly the bundle that was logged.
    assert rollback(settings) == (v3, "1")
    restored = load_by_alias(settings, "champion")
    X = restored.spec.matrix(frame)
    assert restored.version == "1" and restored.spec.features == FEATURES
    np.testing.assert_allclose(restored.p_late(X), bundles[0].p_late(X), rtol=1e-12)
    for q, values in restored.delay_quantiles(X).items():
        np.testing.assert_allclose(values, bundles[0].delay_quantiles(X)[q], rtol=1e-12)
    with pytest.raises(NoPreviousChampionError):
        rollback(settings)

    # Reloading a version reads the local cache, not the artifact store.
    assert (cache_dir(settings, "1") / "classifier.txt").exists()
    monkeypatch.setattr(mlflow.MlflowClient, "download_artifacts",
                        lambda *a, **k: pytest.fail("cached bundle was downloaded again"))
    assert load_by_alias(settings).version == "1"


def test_force_promotes_past_the_gate(settings, bundles, frame):
    log_and_register(settings, bundles[0], frame)
    promote(settings, lambda b: evaluation(0.5))
    v2 = log_and_register(settings, bundles[1], frame, by_run_id=True)
    assert client(settings).get_model_version(MODEL_NAME, v2).source.startswith("models:/m-")
    result = promote(settings, lambda b: evaluation(0.5 if b.version == "1" else 0.7), force=True)
    assert result.ok and result.reasons[0].startswith("forced")
    assert alias_version(settings, "champion") == v2
    assert client(settings).get_model_version(MODEL_NAME, v2).tags["gate"] == "forced"


def test_empty_registry(settings):
    with pytest.raises(NoChampionError, match="champion") as err:
        load_by_alias(settings)
    assert isinstance(err.value, LookupError)
    assert alias_version(settings, "champion") is None
    with pytest.raises(NoChallengerError):
        promote(settings, lambda b: evaluation(0.5))


def test_register_refuses_a_run_without_bundle(settings):
    ensure_experiment(settings)
    with mlflow.start_run() as run:
        pass
    with pytest.raises(ValueError, match="bundle"):
        register(settings, run.info.run_id)


def test_log_bundle_needs_an_active_run(bundles, frame):
    with pytest.raises(RuntimeError, match="start_run"):
        log_bundle(bundles[0], input_example=frame.head())


# ---- the gate alone -------------------------------------------------------------------------

def test_gate_passes_a_better_model():
    result = decide(evaluation(0.40, road=0.40, rail=0.41), evaluation(0.45, road=0.45, rail=0.42))
    assert result.ok and any("improved" in r for r in result.reasons)
    assert result.table["passed"].all() and set(result.table.index) == {
        "log_loss", "ece", "stage:rail", "stage:road"}


def test_gate_refuses_equal_or_worse_log_loss():
    for worse in (0.45, 0.46):
        result = decide(evaluation(worse), evaluation(0.45))
        assert not result.ok and any("log loss did not improve" in r for r in result.reasons)


def test_gate_stage_margin():
    challenger = evaluation(0.40, road=0.35, air=0.52)
    champion = evaluation(0.45, road=0.45, air=0.50)
    refused = decide(challenger, champion, stage_margin=0.01)
    assert not refused.ok and any("air" in r and "+0.0200" in r for r in refused.reasons)
    assert not refused.table.loc["stage:air", "passed"]
    assert decide(challenger, champion, stage_margin=0.03).ok


def test_gate_ece_tolerance():
    challenger, champion = evaluation(0.40, ece=0.030), evaluation(0.45, ece=0.020)
    refused = decide(challenger, champion)
    assert not refused.ok and any("ECE" in r for r in refused.reasons)
    assert decide(challenger, champion, ece_tolerance=0.015).ok


def test_gate_ignores_stages_scored_for_one_model_only():
    result = decide(evaluation(0.40, road=0.40, ocean=0.9), evaluation(0.45, road=0.45))
    assert result.ok and np.isnan(result.table.loc["stage:ocean", "champion"])


def test_registry_on_postgresql(bundles, frame, tmp_path):
    """Tracking and registry on the local PostgreSQL, as a shared deployment would run them."""
    import psycopg

    from tests.conftest import services_required

    db = f"shipdelay_mlflow_{os.environ.get('PYTEST_XDIST_WORKER', 'gw0')}"
    try:
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True,
                             connect_timeout=3) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {db}")
    except psycopg.OperationalError:
        if services_required():
            pytest.fail("PostgreSQL at 127.0.0.1:5432 is required in CI and is not reachable")
        pytest.skip("no PostgreSQL at 127.0.0.1:5432")
    settings = Settings(data_dir=tmp_path / "data",
                        mlflow_tracking_uri=f"postgresql://postgres@127.0.0.1:5432/{db}")
    try:
        scores = {"1": evaluation(0.5), "2": evaluation(0.4)}
        first = log_and_register(settings, bundles[0], frame)
        assert promote(settings, lambda b: scores[b.version]).ok  # no champion yet
        assert alias_version(settings, "champion") == first == "1"
        second = log_and_register(settings, bundles[1], frame)
        assert promote(settings, lambda b: scores[b.version]).ok
        assert load_by_alias(settings, "champion").version == second
        assert not any(tmp_path.parent.glob("mlruns"))
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
        os.environ.pop("MLFLOW_REGISTRY_URI", None)
