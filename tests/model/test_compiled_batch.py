"""The nightly batch scores with compiled trees, as the service does: its scores equal the
boosters' own predict, and it falls back to LightGBM when compiling is off or fails."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
from lightgbm import Booster

from features.store import offline_dir
from registry.loader import CHAMPION, MODEL_NAME, client, load_by_alias
from serving import compile_job, compiled_trees
from serving.batch import Job, in_flight, lake_now
from serving.compiled_trees import CompiledBooster
from shipdelay.lake import Lake
from training.dataset import point_in_time


@pytest.fixture(scope="module")
def batch_world(trained):
    settings, _, report = trained
    client(settings).set_registered_model_alias(MODEL_NAME, CHAMPION, str(report.version))
    lake = Lake(settings.lake_dir)
    vectors = point_in_time(offline_dir(settings), in_flight(lake, lake_now(lake)))
    return settings, vectors[vectors["booked_at_s"].notna()].reset_index(drop=True)


def _boosters(bundle):
    return [bundle.classifier, *bundle.quantiles.values()]


def test_the_batch_scores_with_compiled_trees_equal_to_lightgbm(batch_world, monkeypatch):
    settings, vectors = batch_world
    monkeypatch.setenv(compiled_trees.ENV, "1")
    job = Job.open(settings)
    assert all(isinstance(b, CompiledBooster) for b in _boosters(job.scorer.bundle))
    plain = load_by_alias(settings)  # LightGBM's own boosters, loaded apart
    assert all(isinstance(b, Booster) for b in _boosters(plain))
    X = job.scorer.matrix(vectors)
    for fast, own in zip(_boosters(job.scorer.bundle), _boosters(plain)):
        np.testing.assert_allclose(fast.predict(X), own.predict(X), rtol=0, atol=1e-9)
    # many rows: split across the cores, the same sums
    many = np.repeat(X, -(-3 * compiled_trees.PARALLEL_ROWS // len(X)), axis=0)
    monkeypatch.setattr(compiled_trees, "_cores", lambda: 3)
    np.testing.assert_allclose(job.scorer.bundle.classifier.predict(many),
                               plain.classifier.predict(many), rtol=0, atol=1e-12)
    from serving.scorer import Scorer

    a, b = Scorer(plain).score(vectors, reasons=False), job.scorer.score(vectors, reasons=False)
    np.testing.assert_allclose(b["p_late"], a["p_late"], rtol=0, atol=1e-12)
    assert (a["risk_band"] == b["risk_band"]).all()
    assert (b["eta"] - a["eta"]).abs().max() <= pd.Timedelta(microseconds=1)


def test_the_batch_keeps_lightgbm_when_compiling_is_off_or_fails(batch_world, monkeypatch):
    settings, _ = batch_world
    monkeypatch.setenv(compiled_trees.ENV, "0")
    assert all(isinstance(b, Booster) for b in _boosters(Job.open(settings).scorer.bundle))
    monkeypatch.setenv(compiled_trees.ENV, "1")
    monkeypatch.setattr(compiled_trees, "object_path",
                        lambda cache, text: cache / f"missing-{hash(text)}.o")  # nothing cached
    monkeypatch.setattr(compile_job, "worker_command", lambda model_file, object_file: [
        sys.executable, "-c", "raise SystemExit(3)"])
    job = Job.open(settings)
    assert all(isinstance(b, Booster) for b in _boosters(job.scorer.bundle))
