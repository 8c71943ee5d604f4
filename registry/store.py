"""Where the MLflow tracking server and model registry live, taken from `Settings`.

Every registry module gets its client here so that one setting (`Settings.tracking_uri`: SQLite
under `data_dir` by default, a server or PostgreSQL at scale) decides where runs, artifacts and
model versions go. Nothing happens at import time.
"""

from __future__ import annotations

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from shipdelay.settings import Settings

MODEL_NAME = "shipdelay-delay"
EXPERIMENT = "shipdelay"


def client(settings: Settings) -> MlflowClient:
    """An MlflowClient on `settings.tracking_uri`, which also becomes the process-wide tracking
    and registry URI so that fluent calls (`mlflow.start_run`, `log_model`) agree with it."""
    uri = settings.tracking_uri
    if uri.startswith("sqlite:///"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)  # SQLite will not create the folder
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def safe_uri(uri: str) -> str:
    """The URI with any password replaced, for messages and logs."""
    if "://" in uri and "@" in uri:
        scheme, rest = uri.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        if ":" in creds:
            return f"{scheme}://{creds.split(':', 1)[0]}:********@{host}"
    return uri


def artifact_location(settings: Settings, name: str) -> str | None:
    """Artifact root for a new experiment. A tracking server (http/https) keeps its own
    configured root; with a database used directly (SQLite, PostgreSQL) MLflow's default would
    be `./mlruns` in whatever folder the process started from, so artifacts go under `data_dir`
    (point `data_dir` at shared storage when several machines share the database)."""
    if settings.tracking_uri.startswith(("http://", "https://", "databricks")):
        return None
    return (settings.data_dir / "mlartifacts" / name).resolve().as_uri()


def ensure_experiment(settings: Settings, name: str = EXPERIMENT) -> str:
    """Create the experiment if missing, make it the active one, and return its id."""
    c = client(settings)
    found = c.get_experiment_by_name(name)
    if found is None:
        try:
            experiment_id = c.create_experiment(name, artifact_location(settings, name))
        except MlflowException:  # another process created it between our two calls
            found = c.get_experiment_by_name(name)
            if found is None:
                raise
            experiment_id = found.experiment_id
    else:
        experiment_id = found.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id
