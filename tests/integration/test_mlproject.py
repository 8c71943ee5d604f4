"""The MLproject's entry points through `mlflow run . --env-manager local`: simulate, features and
train on a small world, each a run in the tracking database the project's Settings point at."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

ROOT = Path(__file__).resolve().parents[2]
MLFLOW = Path(sys.executable).parent / "mlflow"


def _mlflow_run(entry: str, env: dict, *params: str) -> subprocess.CompletedProcess:
    args = [str(MLFLOW), "run", str(ROOT), "-e", entry, "--env-manager", "local",
            "--experiment-name", "shipdelay"]
    for p in params:
        args += ["-P", p]
    return subprocess.run(args, check=False, env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture
def project_env(tmp_path: Path) -> dict:
    data = tmp_path / "data"
    data.mkdir()
    uri = f"sqlite:///{data / 'mlflow.db'}"
    # what an earlier test or an outer MLflow run left in the environment must not leak in
    inherited = {k: v for k, v in os.environ.items()
                 if not k.startswith(("MLFLOW_", "SHIPDELAY_"))}
    return {**inherited, "SHIPDELAY_DATA_DIR": str(data), "MLFLOW_TRACKING_URI": uri,
            "SHIPDELAY_MLFLOW_TRACKING_URI": uri, "SHIPDELAY_PROFILE": "local",
            "SHIPDELAY_ONLINE_STORE": "sqlite",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def test_simulate_features_train_through_mlflow_run(project_env):
    steps = [("simulate", ["shipments=2500", "start=2025-05-01", "days=200", "seed=5",
                           "ceiling_shipments=100"]),
             ("features", []), ("train", [])]
    for entry, params in steps:
        done = _mlflow_run(entry, project_env, *params)
        assert done.returncode == 0, f"mlflow run -e {entry}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"

    uri = project_env["MLFLOW_TRACKING_URI"]  # the registry too: not whatever an earlier test set
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name("shipdelay")
    runs = client.search_runs([experiment.experiment_id])
    by_entry = {r.data.tags.get("mlflow.project.entryPoint"): r for r in runs}
    assert {"simulate", "features", "train"} <= set(by_entry)
    trained = by_entry["train"]
    assert trained.info.status == "FINISHED"
    # the project run is the training run: its metrics and the registered model are there
    assert "test/roc_auc" in trained.data.metrics
    versions = client.search_model_versions(f"run_id = '{trained.info.run_id}'")
    assert len(versions) == 1
