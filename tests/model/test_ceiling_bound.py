"""The ceiling is an upper bound: a model trained on the lake beats it on no journey stage beyond
bootstrap noise (the AUC or log loss difference per stage, shipments resampled whole, 90%).

The world is the smallest found on which a ceiling that forgets part of the past is caught: when
the re-simulation drew failed delivery attempts, equipment failures met and missed services
afresh, this test failed on overdue snapshots (model minus ceiling: AUC +0.009, 90% interval
[0.004, 0.015]; log loss -0.037 [-0.060, -0.019]); on 10,000 shipments over 240 days the same
defect went unseen. The ceiling covers every shipment of the test window.
"""

from __future__ import annotations

import numpy as np
import pytest

from features.build import build_features
from features.store import offline_dir
from shipdelay.lake import Lake
from shipdelay.settings import Settings
from shipdelay.world.simulate import SimConfig, simulate
from training import baselines
from training.bundle import Calibrator
from training.dataset import build_training_set
from training.evaluate import beats, compare_paired
from training.features import FeatureSpec
from training.model import fit_classifier
from training.split import time_split

WORLD = SimConfig(shipments=15_000, start="2025-05-01", days=270, seed=7,
                  ceiling_shipments=15_000, ceiling_draws=40)


@pytest.mark.slow
def test_the_model_beats_the_ceiling_on_no_stage(tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    simulate(WORLD, settings.lake_dir)
    build_features(settings, online=False)
    lake = Lake(settings.lake_dir)
    split = time_split(build_training_set(lake, offline_dir(settings)))
    # the model's P(late) as `fit_bundle` makes it (its delay quantiles play no part here)
    spec = FeatureSpec.fit(split.train)
    classifier = fit_classifier(spec, split.train, split.valid)
    calibrator = Calibrator.fit(classifier.predict(spec.matrix(split.valid)),
                                split.valid["is_late"].to_numpy(float))
    p = calibrator(classifier.predict(spec.matrix(split.test)))
    ceiling = baselines.ceiling(split.test, lake.read("ceiling")).to_numpy(float)
    covered = ~np.isnan(ceiling)
    assert covered.mean() > 0.95
    paired = compare_paired(split.test[covered], p[covered], ceiling[covered])
    assert set(paired["group"]) >= {"booked", "early", "mid", "late", "overdue"}
    won = beats(paired)
    assert won.empty, f"the model beats the ceiling:\n{won.round(4).to_string()}"
