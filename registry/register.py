"""Logging a trained Bundle to MLflow and registering it as a new model version.

Every trained model goes through here: `log_bundle` inside the training run, then `register`,
which makes a new version and, when asked (`shipdelay train`, the nightly retrain), points the
"challenger" alias at it. Only `registry.promote` makes a version "champion".

Two things are logged per run, for two audiences:
- `model`: the product's scorer as an MLflow pyfunc model (`registry.pyfunc_model`): raw
  feature rows in (categories as text), P(late), band, delay, ETA and reasons out, as the
  service's `/predict_features` answers; with its signature, an input example of raw rows and
  the FeatureService it was trained on (metadata). `mlflow.pyfunc.load_model` and `mlflow models
  serve` work on it.
- `bundle/`: the whole Bundle folder (native boosters as text, calibrator and spec as JSON; no
  pickle). This is what the product's scoring paths load (`registry.loader`): the native
  boosters load fast and are compiled for the service.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient

from registry.pyfunc_model import example_rows, log_scorer_model
from registry.store import MODEL_NAME, activate, client
from shipdelay.settings import Settings
from training.bundle import Bundle

MODEL_PATH = "model"
BUNDLE_PATH = "bundle"
CHALLENGER = "challenger"
EXAMPLE_ROWS = 5
# model version tags `compiled_sha256.<booster>.<machine key>`: the digest of each compiled
# object file (serving.compiled_trees), checked before the file is loaded
COMPILED_TAG_PREFIX = "compiled_sha256."


def log_bundle(bundle: Bundle, *, input_example: pd.DataFrame,
               metrics: dict[str, float] | None = None) -> str:
    """Log `bundle` to the active MLflow run and return the logged model's URI.

    `input_example` is a training or scoring frame (raw values, categoricals as strings): a
    few of its rows become the model's input example, as a caller sends them, and its integer
    columns the signature's long inputs (`registry.pyfunc_model.input_schema`)."""
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("log_bundle must be called inside `with mlflow.start_run():`")
    spec = bundle.spec
    with tempfile.TemporaryDirectory() as tmp:
        folder = bundle.save(Path(tmp) / BUNDLE_PATH)
        mlflow.log_artifacts(str(folder), artifact_path=BUNDLE_PATH)
        info = log_scorer_model(
            folder, name=MODEL_PATH, run_id=run.info.run_id, inputs=spec.inputs,
            example=example_rows(input_example, spec.inputs, EXAMPLE_ROWS),
            metadata={"feature_service": spec.service, "features": list(spec.features),
                      "inputs": list(spec.inputs)})
    mlflow.set_tag("feature_service", spec.service)
    if metrics:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, model_id=info.model_id)
    return info.model_uri


def _resolve(c: MlflowClient, run_id_or_model_uri: str) -> tuple[str, str]:
    """(model URI, run id) for a run id, a `runs:/<run>/<path>` URI or a `models:/<model id>`."""
    ref = run_id_or_model_uri
    if ref.startswith("runs:/"):
        return ref, ref[len("runs:/"):].split("/", 1)[0]
    if ref.startswith("models:/"):
        logged = c.get_logged_model(ref[len("models:/"):].split("/", 1)[0])
        if not logged.source_run_id:
            raise ValueError(f"{ref} was not logged inside a run, so it has no bundle")
        return ref, logged.source_run_id
    # A bare run id: name the model it logged directly (MLflow 3 keeps logged models outside the
    # run's artifacts, so a runs:/ URI would only be redirected, with a warning).
    outputs = c.get_run(ref).outputs
    for out in reversed(outputs.model_outputs if outputs else []):
        if c.get_logged_model(out.model_id).name == MODEL_PATH:
            return f"models:/{out.model_id}", ref
    return f"runs:/{ref}/{MODEL_PATH}", ref


def bundle_spec(c: MlflowClient, run_id: str) -> dict:
    """The FeatureSpec (as a dict) of the bundle logged in `run_id`; refuses runs without one,
    because a version without a bundle could never be scored."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = c.download_artifacts(run_id, f"{BUNDLE_PATH}/spec.json", tmp)
        except Exception as err:  # the artifact store raises its own types (OSError, Mlflow...)
            raise ValueError(f"run {run_id} has no {BUNDLE_PATH}/ artifacts: log the model with "
                             "registry.register.log_bundle") from err
        return json.loads(Path(path).read_text())


def register(settings: Settings, run_id_or_model_uri: str, alias: str | None = CHALLENGER) -> str:
    """Register a logged bundle as a new version of MODEL_NAME, tag it with its FeatureService and
    run, point `alias` at it (default "challenger"; None: no alias, an experiment that
    `promote` never sees), and return the version number as a string."""
    c = activate(settings)  # register_model below is a fluent call
    model_uri, run_id = _resolve(c, run_id_or_model_uri)
    spec = bundle_spec(c, run_id)
    tags = {"feature_service": spec["service"], "run_id": run_id}
    version = str(mlflow.register_model(model_uri, MODEL_NAME, tags=tags).version)
    if alias is not None:
        c.set_registered_model_alias(MODEL_NAME, alias, version)
    return version


def record_compiled_hash(settings: Settings, version: str, key: str, sha256: str) -> None:
    """Record the SHA-256 of a compiled object of model version `version` (`key`: booster and
    machine key), so that a loader can verify the file before it loads it: the cache folder's
    files can be replaced by whoever can write there, the registry's tags cannot."""
    client(settings).set_model_version_tag(MODEL_NAME, str(version), COMPILED_TAG_PREFIX + key,
                                           sha256)
