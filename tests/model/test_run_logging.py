"""What a training run records in MLflow: every booster's LightGBM parameters (as the saved
boosters themselves state them), the data window, the feature list, the code's git commit, a
description, metrics grouped by path (the same numbers as the run's report), and an experiment
that MLflow opens on its runs."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from registry.loader import bundle_folder
from registry.store import KIND, KIND_TAG, MODEL_NAME, client
from training.run_logging import PROJECT_ROOT, git_commit

BOOSTERS = {"classifier": "classifier.txt", "p10": "delay_q10.txt", "p50": "delay_q50.txt",
            "p90": "delay_q90.txt"}


def _saved_parameters(path: Path) -> dict[str, str]:
    """The `[name: value]` lines LightGBM writes at the end of a text model."""
    return dict(re.findall(r"^\[([a-z_0-9]+): (.*)\]$", path.read_text(), flags=re.MULTILINE))


@pytest.fixture(scope="module")
def run(trained):
    settings, _, report = trained
    return client(settings).get_run(report.run_id)


def test_every_boosters_parameters_are_on_the_run(trained, run):
    settings, _, report = trained
    c = client(settings)
    folder = bundle_folder(settings, c, c.get_model_version(MODEL_NAME, report.version))
    params = run.data.params
    for name, file in BOOSTERS.items():
        saved = _saved_parameters(folder / file)
        for key in ("learning_rate", "num_leaves", "min_data_in_leaf", "feature_fraction",
                    "bagging_fraction", "bagging_freq", "seed", "objective"):
            logged = params[f"{name}.{key}"]
            if key == "objective":
                assert saved[key].startswith(logged), (name, key)
            else:
                assert float(logged) == float(saved[key]), (name, key, logged, saved[key])
        trees = (folder / file).read_text().count("\nTree=")
        assert int(params[f"{name}.num_trees"]) == trees
    assert params["p10.alpha"] == "0.1" and params["p90.alpha"] == "0.9"
    # LightGBM's full resolved list, defaults included
    full = c.download_artifacts(run.info.run_id, "lightgbm_parameters.json", str(folder.parent))
    assert "max_bin" in pd.read_json(full)["classifier"].dropna().index


def test_data_window_features_commit_and_description(trained, run):
    _, split, report = trained
    params, tags = run.data.params, run.data.tags
    booked = pd.to_datetime(split.test["booked_at_s"], unit="s", utc=True)
    assert params["data.test.booked_from"] == f"{booked.min():%Y-%m-%d %H:%M}"
    assert params["data.train.booked_to"] < params["data.valid.booked_from"]
    assert params["data.valid.booked_to"] < params["data.test.booked_from"]
    settings = trained[0]
    c = client(settings)
    folder = bundle_folder(settings, c, c.get_model_version(MODEL_NAME, report.version))
    spec = json.loads((folder / "spec.json").read_text())
    assert params["features"].split(",") == spec["features"]
    assert set(params["categorical_features"].split(",")) == set(spec["categories"])
    commit = tags["mlflow.source.git.commit"]
    head = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"],
                          capture_output=True, text=True, check=False)
    if head.returncode == 0:  # the commit the run was trained at is in the checkout's history
        assert re.fullmatch(r"[0-9a-f]{40}", commit)
        assert subprocess.run(["git", "-C", str(PROJECT_ROOT), "merge-base", "--is-ancestor",
                               commit, "HEAD"], check=False).returncode == 0
    else:
        assert commit == "unknown"
    note = tags["mlflow.note.content"]
    assert f"version {report.version}" in note and "`challenger`" in note and commit in note


def test_outside_a_git_checkout_the_commit_is_unknown(tmp_path):
    assert git_commit(tmp_path) == ("unknown", "unknown")


def test_metrics_are_grouped_and_match_the_report(trained, run):
    settings, _, report = trained
    logged = run.data.metrics
    assert all("/" in k for k in logged), [k for k in logged if "/" not in k][:5]
    table = report.metrics
    overall = table[(table["slice"] == "overall")].set_index(["model", "metric"])["value"]
    assert logged["test/roc_auc"] == pytest.approx(overall["model", "roc_auc"])
    assert logged["baseline/logistic/log_loss"] == pytest.approx(overall["logistic", "log_loss"])
    air = table[(table["model"] == "model") & (table["slice"] == "main_mode")
                & (table["metric"] == "roc_auc")].set_index("group")["value"]
    for mode, value in air.dropna().items():
        assert logged[f"test/by_main_mode/{mode}/roc_auc"] == pytest.approx(value)
    assert logged["fit/seconds"] > 0
    experiment = client(settings).get_experiment(run.info.experiment_id)
    assert experiment.tags[KIND_TAG] == KIND  # MLflow opens it on its runs, not its traces
