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
# MLflow 3's UI opens an experiment on its traces page (GenAI) unless the experiment says it
# holds machine-learning runs: this tag (the value its UI's own kind selector writes).
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"


def client(settings: Settings) -> MlflowClient:
    """An MlflowClient on `settings.tracking_uri`. It leaves the process-wide URIs alone: a
    background reader (the service's model refresh) must not move where another part of the
    process logs its runs."""
    uri = settings.tracking_uri
    if uri.startswith("sqlite:///"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)  # SQLite will not create the folder
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def activate(settings: Settings) -> MlflowClient:
    """`client`, and `settings.tracking_uri` becomes the process-wide tracking and registry URI,
    so that fluent calls (`mlflow.start_run`, `log_model`, `register_model`,
    `pyfunc.load_model("models:/...")`) agree with it."""
    c = client(settings)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    return c


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
    """Create the experiment if missing, make it the active one, and return its id. An
    experiment of no kind yet is marked as machine learning, so that MLflow opens it on its
    runs."""
    c = activate(settings)
    found = c.get_experiment_by_name(name)
    if found is None or KIND_TAG not in found.tags:
        experiment_id = _create(c, settings, name) if found is None else found.experiment_id
        c.set_experiment_tag(experiment_id, KIND_TAG, KIND)
    else:
        experiment_id = found.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def _create(c: MlflowClient, settings: Settings, name: str) -> str:
    """Create the experiment, or return the one another process created meanwhile."""
    try:
        return c.create_experiment(name, artifact_location(settings, name))
    except MlflowException:
        found = c.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id

