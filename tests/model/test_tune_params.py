"""Tuning reaches training: `shipdelay tune` studies every booster (the classifier and the three
delay quantiles) under one MLflow parent run of the project's experiment, and `shipdelay train
--params best|RUN_ID|FILE` trains each booster with its own study's best parameters.

What the trained boosters used is read back from the model files LightGBM wrote (their
`[parameters]` section) and compared with what Optuna's own storage calls the best trial: two
paths that share no code with the one that hands the parameters over."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

import lightgbm as lgb
import mlflow
import optuna
import pytest
from typer.testing import CliRunner

from registry.store import EXPERIMENT, client
from shipdelay.cli import app
from shipdelay.settings import Settings, get_settings
from training.params import BOOSTERS, ParamsError, read_file, resolve
from training.tune import make_storage, tune

ROUNDS = 40  # a cap that keeps trials quick: only the parameters' route matters here
FIXED = {"num_threads": 1}
SEARCHED = ("learning_rate", "num_leaves", "min_data_in_leaf", "feature_fraction",
            "bagging_fraction", "lambda_l2", "min_gain_to_split")
MODEL_FILES = {"classifier": "classifier.txt", "p10": "delay_q10.txt", "p50": "delay_q50.txt",
               "p90": "delay_q90.txt"}
runner = CliRunner()


@pytest.fixture(scope="module")
def world(trained, tmp_path_factory):
    """The trained world's lake and offline tables (linked read-only) and Feast registry, with
    an MLflow database of its own, empty: its artifacts go under this data folder."""
    source = trained[0]
    root = tmp_path_factory.mktemp("tune_params") / "data"
    (root / "feast").mkdir(parents=True)
    (root / "feast" / "offline").symlink_to((source.data_dir / "feast" / "offline").resolve())
    (root / "lake").symlink_to(source.lake_dir.resolve())
    shutil.copy2(source.data_dir / "feast" / "registry.db", root / "feast" / "registry.db")
    return Settings(data_dir=root), trained[1]


@pytest.fixture(scope="module")
def tuned(world):
    """A 2-trial study of every booster on the trained world's split."""
    settings, split = world
    journal = f"journal:{settings.data_dir / 'optuna' / 'journal.log'}"
    result = tune(split, 2, study_name="t-params", storage=journal, max_rounds=ROUNDS,
                  fixed_params=FIXED, settings=settings)
    return settings, journal, result


@pytest.fixture
def cli_env(world, monkeypatch):
    monkeypatch.setenv("SHIPDELAY_DATA_DIR", str(world[0].data_dir))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
    mlflow.set_tracking_uri(None)


def _optuna_best(journal: str, booster: str) -> dict:
    return optuna.load_study(study_name=f"t-params.{booster}",
                             storage=make_storage(journal)).best_params


def _trained_params(settings, run_id: str) -> dict[str, dict]:
    """Each booster's parameters as its LightGBM model file records them."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(client(settings).download_artifacts(run_id, "", tmp))
        out = {}
        for booster, name in MODEL_FILES.items():
            found = sorted(folder.rglob(name))
            assert found, f"run {run_id} holds no {name}"
            out[booster] = lgb.Booster(model_file=str(found[0])).params
        return out


def test_tuning_covers_every_booster_under_one_parent_run(tuned):
    settings, journal, result = tuned
    c = client(settings)
    experiment = c.get_experiment_by_name(EXPERIMENT)
    parent = c.get_run(result.run_id)
    assert parent.info.experiment_id == experiment.experiment_id
    assert parent.info.artifact_uri.startswith(settings.data_dir.resolve().as_uri())
    kids = c.search_runs([experiment.experiment_id],
                         f"tags.mlflow.parentRunId = '{result.run_id}'", max_results=100)
    by_booster = {b: [r for r in kids if r.data.tags.get("booster") == b] for b in BOOSTERS}
    assert {b: len(r) for b, r in by_booster.items()} == dict.fromkeys(BOOSTERS, 2)
    for booster in ("p10", "p50", "p90"):
        for r in by_booster[booster]:
            assert r.data.params["metric"] == "quantile" and r.data.params["booster"] == booster
    # the stored best, read through MLflow, is what Optuna's storage calls the best
    stored = json.loads(Path(c.download_artifacts(result.run_id, "best_params.json",
                                                  str(settings.data_dir))).read_text())
    assert set(stored) == set(BOOSTERS)
    for booster in BOOSTERS:
        study = optuna.load_study(study_name=f"t-params.{booster}", storage=make_storage(journal))
        assert {t.state for t in study.trials} <= {optuna.trial.TrialState.COMPLETE,
                                                  optuna.trial.TrialState.PRUNED}
        assert {k: stored[booster][k] for k in SEARCHED} == pytest.approx(study.best_params)
        assert study.user_attrs["best_params"] == stored[booster]
        assert "num_threads" not in stored[booster]  # how it ran, not what it learned
    # a quantile's loss is a pinball loss in hours, not the classifier's log loss
    assert result.best_value("p50") != pytest.approx(result.best_value("classifier"))


@pytest.mark.slow
def test_train_with_best_uses_each_boosters_own_study(tuned, cli_env):
    settings, journal, result = tuned
    done = runner.invoke(app, ["train", "--params", "best", "--no-register"])
    assert done.exit_code == 0, done.output
    assert f"parameters from tuning run {result.run_id}" in re.sub(r"\s+", " ", done.output)
    run_id = re.search(r"MLflow run ([0-9a-f]{32})", done.output).group(1)
    trained = _trained_params(settings, run_id)
    bests = {b: _optuna_best(journal, b) for b in BOOSTERS}
    for booster in BOOSTERS:
        used = {k: trained[booster][k] for k in SEARCHED}
        # a model file keeps 6 significant digits
        assert used == pytest.approx(bests[booster], rel=1e-5), booster
    # the studies found different things, so a mix-up between boosters would show
    assert bests["classifier"] != pytest.approx(bests["p90"])
    assert trained["p90"]["alpha"] == pytest.approx(0.9)
    assert client(settings).get_run(run_id).data.tags["params_source"] == (
        f"tuning run {result.run_id}")


def test_run_id_and_file_give_the_same_parameters_as_best(tuned, tmp_path):
    settings, _, result = tuned
    best = resolve(settings, "best")
    assert resolve(settings, result.run_id).by_booster == best.by_booster
    file = tmp_path / "params.yaml"
    file.write_text("quantile:\n  num_leaves: 11\np90:\n  num_leaves: 13\n"
                    "classifier:\n  learning_rate: 0.07\n")
    written = read_file(file)
    assert written.quantiles == {0.1: {"num_leaves": 11}, 0.5: {"num_leaves": 11},
                                 0.9: {"num_leaves": 13}}
    assert written.classifier == {"learning_rate": 0.07}


def test_a_files_parameters_reach_each_booster(world, tmp_path):
    from training.model import fit_bundle

    _, split = world
    file = tmp_path / "params.json"
    file.write_text(json.dumps({"classifier": {"num_leaves": 5, "learning_rate": 0.15},
                                "quantile": {"num_leaves": 6}, "p90": {"num_leaves": 7}}))
    given = read_file(file)
    bundle = fit_bundle(split, {**given.classifier, **FIXED}, max_rounds=3,
                        quantile_params=given.quantiles)
    recorded = {b: lgb.Booster(model_str=booster.model_to_string()).params for b, booster in
                [("classifier", bundle.classifier),
                 *((f"p{round(q * 100)}", bundle.quantiles[q]) for q in bundle.quantiles)]}
    assert recorded["classifier"]["num_leaves"] == 5
    assert recorded["classifier"]["learning_rate"] == pytest.approx(0.15)
    assert [recorded[b]["num_leaves"] for b in ("p10", "p50", "p90")] == [6, 6, 7]
    assert [recorded[b]["alpha"] for b in ("p10", "p50", "p90")] == pytest.approx([.1, .5, .9])


@pytest.mark.parametrize(("value", "named"), [
    ("0123456789abcdef0123456789abcdef", "no MLflow run 0123456789abcdef0123456789abcdef"),
    ("missing.yaml", "parameters file missing.yaml does not exist"),
    ("nonsense", "neither `best`, a tuning run id"),
])
def test_bad_params_are_one_sentence(data_dir, value, named):
    done = runner.invoke(app, ["train", "--params", value])
    assert done.exit_code == 2
    text = re.sub(r"[\s│╭╮╰╯─]+", " ", done.output)
    assert named in text and "Traceback" not in done.output


def test_unknown_parameter_names_are_refused_with_a_suggestion(data_dir, tmp_path):
    file = tmp_path / "p.yaml"
    file.write_text("classifier:\n  num_leafs: 3\n")
    done = runner.invoke(app, ["train", "--params", str(file)])
    assert done.exit_code == 2
    text = re.sub(r"[\s│╭╮╰╯─]+", " ", done.output)
    assert "unknown LightGBM parameter 'num_leafs'" in text and "'num_leaves'" in text
    for bad, words in [({"clasifier": {}}, "unknown booster 'clasifier'"),
                       ({"p50": {"alpha": 0.3}}, "set by shipdelay itself"),
                       ({"p50": {"objective": "l2"}}, "set by shipdelay itself")]:
        file.write_text(json.dumps(bad))
        with pytest.raises(ParamsError, match=re.escape(words)):
            read_file(file)


def test_a_run_that_is_not_a_tuning_run_is_refused(data_dir):
    from registry.store import ensure_experiment

    settings = get_settings()
    ensure_experiment(settings)
    with mlflow.start_run() as run:
        mlflow.log_param("x", 1)
    with pytest.raises(ParamsError, match="is not a tuning run"):
        resolve(settings, run.info.run_id)
    mlflow.set_tracking_uri(None)
