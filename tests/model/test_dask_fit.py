"""The delay models fitted across a Dask cluster (two worker processes on loopback) are as good
as the single-machine fit on the same split, and come out as an ordinary Bundle.

Two independent paths: the registered model of the session's trained world (`fit_bundle` on one
machine, default parameters, seed 7) and `training.dask_fit` on the same split and seed, saved
and loaded again as every scoring path loads a bundle. Data-parallel trees differ from the local
ones in their details, so the comparison is of quality: on the test window, a paired bootstrap
that resamples shipments whole (one shipment's snapshots move together) gives a 95% interval of
(Dask minus local) for AUC and for log loss; neither fit may be better beyond that noise (the
interval holds zero), and the point differences stay within 0.01 AUC and 0.01 log loss: about
the half-width of those intervals on this test window (about 13,000 snapshots: +-0.014
AUC, +-0.01 log loss), so a fit that passes is as good as the other within what this
window can tell apart.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from features.feature_sets import FeatureSet
from registry.loader import MODEL_NAME, bundle_folder
from registry.loader import client as mlflow_client
from training import run_logging
from training.bundle import Bundle
from training.dask_fit import DaskClusterError, check_scheduler, fit_bundle_on_cluster
from training.evaluate import interval_metrics, paired_bootstrap
from training.train import DEFAULT_SEED, score_frame

LEVEL = 0.95
MARGIN = {"roc_auc": 0.01, "log_loss": 0.01}
# parameters of the fit's machinery, not of the model: they differ on purpose
MACHINERY = {"num_machines", "tree_learner", "num_threads", "machines", "local_listen_port",
             "time_out"}


@pytest.fixture(scope="module")
def fits(trained, tmp_path_factory):
    """(local bundle, Dask bundle, seconds the Dask fit took with its local cluster's start and
    stop): the Dask one fitted by the call `shipdelay train --engine dask` makes, saved and
    loaded again as the registry stores and loads a bundle."""
    settings, split, report = trained
    c = mlflow_client(settings)
    mv = c.get_model_version(MODEL_NAME, str(report.version))
    local = Bundle.load(bundle_folder(settings, c, mv), version=str(mv.version))
    started = time.perf_counter()
    dask = fit_bundle_on_cluster(split, {}, scheduler=None, feature_set=FeatureSet(),
                                 seed=DEFAULT_SEED, quantile_params=None)
    seconds = time.perf_counter() - started
    logged = run_logging.booster_params(dask)  # what the run records of each booster
    assert logged["classifier.monotone_constraints_method"] == "basic"
    assert logged["classifier.num_machines"] == "2" and "classifier.machines" not in logged
    return local, Bundle.load(dask.save(tmp_path_factory.mktemp("dask-bundle"))), seconds


def test_the_dask_fit_is_as_good_as_the_local_fit(trained, fits):
    _, split, _ = trained
    local, dask, seconds = fits
    test = split.test
    p_local, _ = score_frame(local, test)
    p_dask, q_dask = score_frame(dask, test)
    assert all(np.isfinite(v).all() for v in (p_dask, *q_dask.values()))
    result = paired_bootstrap(test["is_late"].to_numpy(float), p_dask, p_local,
                              test["shipment_id"].to_numpy(), level=LEVEL)
    for metric, margin in MARGIN.items():
        r = result[metric]
        print(f"{metric}: dask {r['a']:.4f}, local {r['b']:.4f}, diff {r['diff']:+.4f} "
              f"[{r['lo']:+.4f}, {r['hi']:+.4f}] ({seconds:.1f} s with the cluster)")
        assert r["lo"] <= 0 <= r["hi"], f"{metric}: one fit is better beyond noise: {r}"
        assert abs(r["diff"]) <= margin, f"{metric}: the fits differ by more than {margin}"
    # the two fits are not one path twice: data-parallel trees are not the local trees
    assert not np.array_equal(p_dask, p_local)


def test_the_dask_delay_interval_is_as_good_as_the_local_one(trained, fits):
    """The delay quantiles on the test window: P50's pinball loss within 5% of the local
    fit's, and P10-P90 coverage within 0.05 of it (LightGBM renews quantile leaves from each
    worker's rows and averages them across workers, an approximation of the local fit's)."""
    _, split, _ = trained
    local, dask, _ = fits
    hours = split.test["delay_hours"].to_numpy(float)
    mine, theirs = ({k: v for k, v in zip(("p10", "p50", "p90"),
                                          score_frame(b, split.test)[1].values(), strict=True)}
                    for b in (dask, local))
    m = interval_metrics(hours, mine["p10"], mine["p50"], mine["p90"])
    t = interval_metrics(hours, theirs["p10"], theirs["p50"], theirs["p90"])
    print({k: (round(m[k], 4), round(t[k], 4)) for k in m})
    assert m["pinball_p50"] <= 1.05 * t["pinball_p50"]
    assert abs(m["coverage_p10_p90"] - t["coverage_p10_p90"]) <= 0.05


def test_the_dask_fit_uses_the_local_fits_parameters_and_early_stopping(fits):
    """Every parameter LightGBM resolved for each booster (its text model's `parameters:`
    section) is the local fit's, the fit's machinery aside; and each booster stopped early on
    the validation window, before its round limit."""
    local, dask, _ = fits
    mine, theirs = run_logging.lightgbm_parameters(dask), run_logging.lightgbm_parameters(local)
    for name in theirs:
        differ = {k: (mine[name].get(k), v) for k, v in theirs[name].items()
                  if mine[name].get(k) != v and k not in MACHINERY}
        if name == "classifier":  # data-parallel LightGBM knows only the strictest method
            assert differ.pop("monotone_constraints_method") == ("basic", "intermediate")
        assert not differ, f"{name}: {differ}"
        assert mine[name]["tree_learner"] == "data" and mine[name]["num_machines"] == "2"
    for booster in (dask.classifier, *dask.quantiles.values()):
        assert 0 < booster.num_trees() < 2000


def test_an_unreachable_scheduler_is_one_sentence():
    started = time.perf_counter()
    with pytest.raises(DaskClusterError, match=r"cannot reach the Dask scheduler at "
                       r"tcp://127\.0\.0\.1:9 within 1 s") as err:
        check_scheduler("tcp://127.0.0.1:9", timeout_s=1)
    assert "\n" not in str(err.value) and time.perf_counter() - started < 10
    with pytest.raises(DaskClusterError, match="not a Dask scheduler address"):
        check_scheduler("localhost")


def test_the_command_line_says_what_is_wrong_with_a_scheduler(data_dir):
    from typer.testing import CliRunner

    from shipdelay.cli import app

    runner = CliRunner()
    done = runner.invoke(app, ["train", "--engine", "dask", "--scheduler", "localhost"])
    assert done.exit_code == 1 and "Traceback" not in done.output
    assert " ".join(done.output.split()) == ("train: 'localhost' is not a Dask scheduler "
                                             "address: give one like tcp://host:8786")
    done = runner.invoke(app, ["train", "--scheduler", "tcp://127.0.0.1:8786"])
    assert done.exit_code == 2 and "only with --engine dask" in done.output
