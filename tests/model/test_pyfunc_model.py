"""The registered MLflow model is the product's scorer: `mlflow.pyfunc.load_model` on the
champion answers raw feature rows (categories as text) exactly as the service's
`/predict_features` answers them over HTTP, and its signature and input example are raw values.

Runs on a copy of the `trained` world whose version is made champion (the session fixture's
aliases stay as they are); the service runs in process (starlette's TestClient) on LightGBM's
own boosters, with its clock frozen at the world's "now".
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from features.schema import CATEGORICAL, model_feature_names
from registry.loader import CHAMPION
from registry.store import MODEL_NAME, activate, client
from shipdelay.settings import Settings, get_settings
from tests.conftest import TRAINING

pytest.importorskip("bentoml")

AS_OF = pd.Timestamp(TRAINING.start, tz="UTC") + pd.Timedelta(days=TRAINING.days)
ROWS = 12


@pytest.fixture(scope="module")
def world(trained, tmp_path_factory) -> tuple[Settings, pd.DataFrame, str]:
    """A copy of the trained world's registry and stores with its version as champion, and
    test rows: JSON-like dicts of raw feature values, a few edited into what-ifs."""
    source, split, report = trained
    root = tmp_path_factory.mktemp("pyfunc") / "data"
    (root / "feast").mkdir(parents=True)
    shutil.copy2(source.data_dir / "mlflow.db", root / "mlflow.db")
    for name in ("online.db", "registry.db"):
        shutil.copy2(source.data_dir / "feast" / name, root / "feast" / name)
    (root / "feast" / "offline").symlink_to((source.data_dir / "feast" / "offline").resolve())
    (root / "lake").symlink_to(source.lake_dir.resolve())
    settings = Settings(data_dir=root)
    client(settings).set_registered_model_alias(MODEL_NAME, CHAMPION, report.version)
    test = split.test
    rows = test.iloc[np.linspace(0, len(test) - 1, ROWS).astype(int)]
    rows = rows[["shipment_id", *model_feature_names()]].reset_index(drop=True)
    rows.loc[0, "service_level"] = "express"  # text, as a person writes it
    rows.loc[1, "main_mode"] = "hovercraft"  # a level the model never saw
    rows.loc[2, [c for c in CATEGORICAL if c in rows]] = None  # nothing known
    rows.loc[3, "slip_h"] = 48.0
    return settings, rows, report.version


def _jsonable(rows: pd.DataFrame) -> list[dict]:
    return [{k: (None if v is None or (isinstance(v, float) and math.isnan(v)) else
                 v.item() if isinstance(v, np.generic) else v) for k, v in r.items()}
            for r in rows.astype(object).to_dict("records")]


@pytest.fixture(scope="module")
def served(world) -> list[dict]:
    """The service's answers to the rows, over HTTP."""
    from starlette.testclient import TestClient

    settings, rows, _ = world
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SHIPDELAY_DATA_DIR", str(settings.data_dir))
        mp.delenv("SHIPDELAY_API_KEY", raising=False)
        mp.setenv("SHIPDELAY_SERVE_AS_OF", AS_OF.isoformat())
        mp.setenv("SHIPDELAY_MODEL_REFRESH_SECONDS", "3600")
        mp.setenv("SHIPDELAY_COMPILED_TREES", "0")  # the boosters the pyfunc model predicts with
        get_settings.cache_clear()
        from serving.service import ShipDelay

        try:
            with TestClient(ShipDelay.to_asgi()) as http:
                answer = http.post("/predict_features", json={"rows": _jsonable(rows)})
        finally:
            get_settings.cache_clear()
    assert answer.status_code == 200, answer.text
    return answer.json()


def _records(frame: pd.DataFrame) -> list[dict]:
    """A pyfunc answer as JSON values (a float column holds NaN where the JSON says null)."""
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in frame.astype(object).to_dict("records")]


def test_the_champion_pyfunc_answers_as_the_service(world, served):
    settings, rows, version = world
    activate(settings)  # the copy's registry for models:/ URIs
    model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@{CHAMPION}")
    # the training frame's own rows and types, categories as text; the service's frozen clock
    asked = rows.assign(request_time_s=AS_OF.timestamp())
    answers = _records(model.predict(asked))
    assert [a["shipment_id"] for a in served] == rows["shipment_id"].tolist()
    assert all(a["ok"] and a["reasons"] for a in served)
    run_id = client(settings).get_model_version(MODEL_NAME, version).tags["run_id"]
    assert {a["model_version"] for a in answers} == {f"run {run_id}"}
    assert {a["model_version"] for a in served} == {version}
    drop = lambda items: [{k: v for k, v in a.items() if k != "model_version"} for a in items]
    assert drop(answers) == drop(served)
    # with the version given by whoever loads it, every field is the service's
    named = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@{CHAMPION}",
                                     model_config={"model_version": version})
    assert _records(named.predict(asked)) == served
    # P(late) is calibrated: not the raw classifier's number
    from training.bundle import Bundle

    bundle_dir = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="bundle", tracking_uri=settings.tracking_uri)
    bundle = Bundle.load(Path(bundle_dir))
    raw = bundle.classifier.predict(bundle.spec.matrix(rows))
    assert not np.allclose([a["p_late"] for a in served], raw, atol=1e-6)


def test_signature_and_example_are_raw_feature_values(world):
    settings, _, version = world
    activate(settings)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}/{version}")
    schema = {c.name: c for c in model.metadata.get_input_schema().inputs}
    assert schema["service_level"].type.name == "string"
    assert schema["slip_h"].type.name == "double"  # nulls allowed
    assert schema["n_legs"].type.name == "long"  # as training frames hold it
    assert not schema["shipment_id"].required and not schema["request_time_s"].required
    outputs = model.metadata.get_output_schema().input_names()
    assert {"p_late", "risk_band", "delay_p50_h", "delay_p90_h", "eta", "eta_p10", "eta_p90",
            "reasons"} <= set(outputs)
    example = model.input_example
    # categories are text in the example, never codes nor all missing (encoded twice)
    for column in ("service_level", "main_mode", "origin_region"):
        assert example[column].map(lambda v: isinstance(v, str)).all(), column
    assert (model.predict(example)["p_late"].between(0, 1)).all()
