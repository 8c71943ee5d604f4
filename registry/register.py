"""Logging a trained Bundle to MLflow and registering it as a new model version.

Every trained model goes through here: `log_bundle` inside the training run, then `register`,
which makes the version the "challenger". Only `registry.promote` makes a version "champion".

Two things are logged per run, for two audiences:
- `model`: the P(late) booster as an MLflow LightGBM model, with signature, input example and the
  FeatureService it was trained on (metadata), so the MLflow UI and `mlflow models` tools work.
- `bundle/`: the whole Bundle folder (boosters as text, calibrator and spec as JSON; no pickle).
  This is what scoring loads (`registry.loader`), because it alone holds the calibrator, the
  quantile models and the category levels.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import mlflow
import mlflow.lightgbm
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import infer_signature

from registry.store import MODEL_NAME, client
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

    `input_example` is rows of a training or scoring frame (categoricals as strings), encoded
    with `spec.matrix` because the logged booster sees the model matrix; the signature is
    inferred from all of its rows, the stored example keeps the first few."""
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("log_bundle must be called inside `with mlflow.start_run():`")
    spec = bundle.spec
    X = spec.matrix(input_example)
    p = bundle.classifier.predict(X)
    info = mlflow.lightgbm.log_model(
        bundle.classifier,
        name=MODEL_PATH,
        signature=infer_signature(X, p),
        input_example=X.head(EXAMPLE_ROWS),
        metadata={"feature_service": spec.service, "features": list(spec.features)},
        # The booster needs only lightgbm; naming it skips MLflow's requirement inference,
        # which imports the model in a subprocess (seconds per model on a small machine).
        pip_requirements=mlflow.lightgbm.get_default_pip_requirements(),
    )
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.log_artifacts(str(bundle.save(Path(tmp))), artifact_path=BUNDLE_PATH)
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


def register(settings: Settings, run_id_or_model_uri: str) -> str:
    """Register a logged bundle as a new version of MODEL_NAME, tag it with its FeatureService and
    run, point the "challenger" alias at it, and return the version number as a string."""
    c = client(settings)
    model_uri, run_id = _resolve(c, run_id_or_model_uri)
    spec = bundle_spec(c, run_id)
    tags = {"feature_service": spec["service"], "run_id": run_id}
    version = str(mlflow.register_model(model_uri, MODEL_NAME, tags=tags).version)
    c.set_registered_model_alias(MODEL_NAME, CHALLENGER, version)
    return version


def record_compiled_hash(settings: Settings, version: str, key: str, sha256: str) -> None:
    """Record the SHA-256 of a compiled object of model version `version` (`key`: booster and
    machine key), so that a loader can verify the file before it loads it: the cache folder's
    files can be replaced by whoever can write there, the registry's tags cannot."""
    client(settings).set_model_version_tag(MODEL_NAME, str(version), COMPILED_TAG_PREFIX + key,
                                           sha256)
