"""The scale profile's PostgreSQL (`postgres_url`) holds MLflow's runs and model registry and
Optuna's studies, in one database: MLflow's tables in its default schema, Optuna's in schema
`optuna` (both keep an `alembic_version` table, which one schema cannot hold twice). The local
profile stays on SQLite and a journal file.

Each test run works in a scratch database of the local PostgreSQL and drops it; without
PostgreSQL the tests skip, and fail when CI=true. What the product wrote is read back with
plain SQL, apart from the product's own readers."""

from __future__ import annotations

import uuid

import mlflow
import numpy as np
import optuna
import pandas as pd
import psycopg
import pytest

from features.schema import CATEGORICAL, model_feature_names
from registry.loader import alias_version
from registry.store import EXPERIMENT, MODEL_NAME, client, ensure_experiment
from shipdelay.backends import ensure_schema
from shipdelay.settings import Settings
from tests.conftest import services_required
from training.params import resolve
from training.split import Split
from training.tune import make_storage, tune

ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def database():
    """A scratch database (its plain psycopg URL), dropped afterwards."""
    name = f"shipdelay_backends_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(ADMIN, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f"CREATE DATABASE {name}")
    except psycopg.OperationalError as exc:
        if services_required():
            pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is required in CI and is not usable: {exc}")
        pytest.skip(f"no PostgreSQL at 127.0.0.1:5432 ({exc})")
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
        with psycopg.connect(ADMIN, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def scale(database, tmp_path) -> Settings:
    # the scale profile as deployed, but without sslmode=require: the local server has no TLS
    return Settings(profile="scale", data_dir=tmp_path / "data", postgres_url=database)


def _sql(url: str, query: str, *args) -> list[tuple]:
    with psycopg.connect(url, connect_timeout=3) as conn:
        return conn.execute(query, args).fetchall()


def test_profiles_choose_the_backends(tmp_path):
    local = Settings(data_dir=tmp_path / "data")
    assert local.tracking_uri == f"sqlite:///{(tmp_path / 'data' / 'mlflow.db').resolve()}"
    assert local.optuna_storage_url == f"journal:{(tmp_path / 'data/optuna/journal.log')}"
    scale = Settings(profile="scale")
    assert scale.tracking_uri.startswith("postgresql+psycopg://shipdelay@")
    assert scale.tracking_uri.endswith("/shipdelay?sslmode=require")
    assert scale.optuna_storage_url == (scale.tracking_uri + "&options=-csearch_path%3Doptuna")
    explicit = Settings(profile="scale", mlflow_tracking_uri="http://mlflow:5000",
                        optuna_storage="postgresql://o@db/studies")
    assert explicit.tracking_uri == "http://mlflow:5000"
    assert explicit.optuna_storage_url == ("postgresql+psycopg://o@db/studies"
                                           "?options=-csearch_path%3Doptuna")


def test_mlflow_runs_and_registry_live_in_postgres(scale, database):
    experiment_id = ensure_experiment(scale)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_param("rows", 123)
        mlflow.log_metric("log_loss", 0.25)
        mlflow.log_dict({"a": 1}, "note.json")
    c = client(scale)
    c.create_registered_model(MODEL_NAME)
    version = c.create_model_version(MODEL_NAME, f"{run.info.artifact_uri}/note.json",
                                     run_id=run.info.run_id)
    c.set_registered_model_alias(MODEL_NAME, "challenger", version.version)

    assert alias_version(scale, "challenger") == "1"
    assert _sql(database, "SELECT key, value FROM public.params WHERE run_uuid = %s",
                run.info.run_id) == [("rows", "123")]
    assert _sql(database, "SELECT value FROM public.metrics WHERE run_uuid = %s AND "
                "key = 'log_loss'", run.info.run_id) == [(0.25,)]
    assert _sql(database, "SELECT name FROM public.experiments WHERE experiment_id = %s",
                int(experiment_id)) == [(EXPERIMENT,)]
    assert _sql(database, "SELECT name, alias, version FROM public.registered_model_aliases"
                ) == [(MODEL_NAME, "challenger", 1)]
    # artifacts under the data folder, never ./mlruns in whatever folder the process started in
    assert run.info.artifact_uri.startswith((scale.data_dir / "mlartifacts").resolve().as_uri())
    assert any((scale.data_dir / "mlartifacts").rglob("note.json"))


def _frame(rng: np.random.Generator, n: int) -> pd.DataFrame:
    frame = pd.DataFrame({c: rng.choice(["a", "b", "c"], n) if c in CATEGORICAL
                          else rng.normal(size=n) for c in model_feature_names()})
    late = rng.random(n) < 1 / (1 + np.exp(-1.5 * frame["slip_h"]))
    frame["is_late"] = late.astype(int)
    frame["delay_hours"] = np.where(late, rng.gamma(2.0, 6.0, n), 0.0)
    return frame


@pytest.mark.slow
def test_tuning_studies_and_runs_live_in_postgres(scale, database):
    rng = np.random.default_rng(5)
    t0 = pd.Timestamp("2025-10-01", tz="UTC")
    bounds = {"train_end": t0 + pd.Timedelta(days=40), "valid_start": t0 + pd.Timedelta(days=47),
              "valid_end": t0 + pd.Timedelta(days=57), "test_start": t0 + pd.Timedelta(days=64)}
    split = Split(_frame(rng, 1200), _frame(rng, 400), _frame(rng, 200), bounds,
                  pd.Timedelta(days=7))
    result = tune(split, 2, study_name="pg", max_rounds=30, fixed_params={"num_threads": 1},
                  boosters=("classifier", "p50"), settings=scale)

    studies = _sql(database, "SELECT study_name FROM optuna.studies ORDER BY study_name")
    assert studies == [("pg.classifier",), ("pg.p50",)]
    assert _sql(database, "SELECT count(*) FROM optuna.trials") == [(4,)]
    # Optuna's tables stay out of MLflow's schema, MLflow's out of Optuna's
    tables = set(_sql(database, "SELECT table_schema, table_name FROM information_schema.tables"
                      " WHERE table_schema IN ('public', 'optuna')"))
    assert ("public", "studies") not in tables and ("optuna", "runs") not in tables
    assert ("optuna", "alembic_version") in tables and ("public", "alembic_version") in tables
    roles = _sql(database, "SELECT value FROM public.tags WHERE run_uuid = %s AND key = 'role'",
                 result.run_id)
    assert roles == [("study",)]
    nested = _sql(database, "SELECT count(*) FROM public.tags WHERE key = 'mlflow.parentRunId'"
                  " AND value = %s", result.run_id)
    assert nested == [(4,)]

    # the best parameters reach training from there: MLflow's record equals Optuna's
    best = resolve(scale, "best")
    assert best.source == f"tuning run {result.run_id}"
    storage = make_storage(scale.optuna_storage_url)
    for booster in ("classifier", "p50"):
        study = optuna.load_study(study_name=f"pg.{booster}", storage=storage)
        assert {k: best.by_booster[booster][k] for k in study.best_params} == pytest.approx(
            study.best_params)


def test_a_schema_made_beforehand_needs_no_right_to_create_one(database):
    """An administrator may create the schema and give the application's user no CREATE right
    on the database: then the schema is used as it is."""
    role = f"shipdelay_t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"CREATE SCHEMA studies_made AUTHORIZATION {role}")
    as_app = database.replace("postgres@", f"{role}@")
    try:
        ensure_schema(f"{as_app}?options=-csearch_path%3Dstudies_made")
        with pytest.raises(Exception, match="permission denied"):  # the right it lacks
            ensure_schema(f"{as_app}?options=-csearch_path%3Dstudies_missing")
    finally:
        with psycopg.connect(database, autocommit=True, connect_timeout=3) as conn:
            conn.execute("DROP SCHEMA studies_made")
            conn.execute(f"DROP ROLE {role}")
