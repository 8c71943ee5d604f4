"""The same lake, settings and seed give the same model bit for bit; a run can leave feature
groups out, and the model it trains is served through its own FeatureService.

Each comparison is between two independent paths: the training set built in one piece and in
many chunks; boosters fitted with one thread and with two.
"""

from __future__ import annotations

import functools
import re

import mlflow
import numpy as np
import pandas as pd
import pytest

from features.feature_sets import choose
from features.online import FeatureServiceMismatch
from features.online_fast import OnlineReader
from features.repo.services import apply_feature_set
from features.schema import HUB_WEATHER, feature_groups
from features.store import get_store, offline_dir
from serving.model_holder import check_servable
from serving.scorer import Scorer
from shipdelay.lake import Lake
from training import dataset
from training import model as model_module
from training import train as train_module
from training.split import time_split
from training.train import SplitOptions

ROUNDS = 40  # enough trees for bagging and feature sampling to matter, few enough to be quick


@pytest.fixture(scope="module")
def rebuilt(trained):
    """The fixture world's training set built again, in chunks of 20,000 snapshots (the
    fixture built it in one piece), and split as the fixture's was."""
    settings, _, _ = trained
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dataset, "SNAPSHOTS_PER_CHUNK", 20_000)
        frame = dataset.build_training_set(Lake(settings.lake_dir), offline_dir(settings))
    return frame, time_split(frame)


def _fit(split, threads: int, **kwargs):
    return model_module.fit_bundle(split, {"num_threads": threads}, max_rounds=ROUNDS, **kwargs)


def _strings(bundle) -> list[str]:
    """Every booster as LightGBM's text, the thread count it ran with aside (the text records
    the parameters, and this is the one that differs on purpose)."""
    return [re.sub(r"\[num_threads: \d+\]\n", "", b.model_to_string())
            for b in (bundle.classifier, *bundle.quantiles.values())]


def test_the_training_set_comes_out_the_same_from_every_build(trained, rebuilt):
    _, split, _ = trained
    frame, again = rebuilt
    assert len(frame) > 10_000
    # in shipment and instant order, whatever the chunks
    keys = frame[["shipment_id", "as_of"]]
    assert keys.equals(keys.sort_values(["shipment_id", "as_of"], kind="stable",
                                        ignore_index=True))
    for part in ("train", "valid", "test"):
        pd.testing.assert_frame_equal(getattr(again, part), getattr(split, part))


def test_two_trainings_of_one_lake_give_the_same_model_bit_for_bit(trained, rebuilt):
    _, split, _ = trained
    _, again = rebuilt
    one = _fit(split, threads=1)
    two = _fit(again, threads=2)
    assert _strings(one) == _strings(two)
    np.testing.assert_array_equal(one.calibrator.x, two.calibrator.x)
    np.testing.assert_array_equal(one.calibrator.y, two.calibrator.y)
    assert one.interval_adjust_h == two.interval_adjust_h
    X = one.spec.matrix(split.test)
    np.testing.assert_array_equal(one.p_late(X), two.p_late(X))
    # the seed is what decides: another seed, another model
    other = _fit(split, threads=1, seed=8)
    assert other.classifier.model_to_string() != one.classifier.model_to_string()


def test_a_model_without_calendar_and_weather_is_served_through_its_feature_set(trained):
    settings, split, _ = trained
    chosen = choose("calendar,weather")
    bundle = _fit(split, threads=1, feature_set=chosen)
    dropped = set(feature_groups()["calendar"]) | set(HUB_WEATHER)
    assert bundle.spec.service == "delay_model_v1__no_calendar_weather"
    assert not dropped & set(bundle.spec.features)
    assert bundle.classifier.feature_name() == bundle.spec.features
    assert set(bundle.spec.inputs) == set(chosen.features)
    # before its FeatureService is applied, serving refuses the model
    with pytest.raises(FeatureServiceMismatch, match="does not hold"):
        check_servable(bundle, get_store(settings))
    apply_feature_set(get_store(settings), offline_dir(settings), chosen)
    store = get_store(settings)
    check_servable(bundle, store)
    # scored from what the service's reader reads, and from the training join's rows: the same
    lake = Lake(settings.lake_dir)
    now = lake.read("tracking_events", columns=["ingested_at"])["ingested_at"].max() \
        + pd.Timedelta("1h")
    ids = split.test["shipment_id"].drop_duplicates().tail(50).tolist()
    online = OnlineReader(store).vectors(ids, now)
    assert len(online) == len(ids)
    scored = Scorer(bundle).score(online)
    assert scored["p_late"].between(0, 1).all()
    joined = dataset.point_in_time(offline_dir(settings),
                                   pd.DataFrame({"shipment_id": ids, "as_of": now}))
    joined = joined.set_index("shipment_id").loc[online["shipment_id"]].reset_index()
    np.testing.assert_allclose(Scorer(bundle).score(joined)["p_late"].to_numpy(),
                               scored["p_late"].to_numpy(), rtol=1e-9, atol=1e-12)
    # a model claiming that feature set while it reads a dropped feature is refused
    bundle.spec.features = [*bundle.spec.features, "booked_hour"]
    with pytest.raises(FeatureServiceMismatch, match="booked_hour"):
        check_servable(bundle, store)


def test_a_run_records_its_split_and_feature_set(trained, monkeypatch):
    settings, _, _ = trained
    monkeypatch.setattr(train_module, "fit_bundle",
                        functools.partial(model_module.fit_bundle, max_rounds=ROUNDS))
    test_from = "2025-11-20"
    report = train_module.train(
        settings, params={"num_threads": 1}, register_model=False,
        split_options=SplitOptions(test_from=test_from, gap_days=3),
        feature_set=choose("weather"), seed=11)
    assert report.bounds["test_start"] == pd.Timestamp(test_from, tz="UTC")
    assert report.bounds["valid_start"] - report.bounds["train_end"] == pd.Timedelta(days=3)
    assert report.feature_service == "delay_model_v1__no_weather" and report.seed == 11
    assert test_from in report.split_text()
    params = mlflow.MlflowClient(settings.tracking_uri).get_run(report.run_id).data.params
    assert params["split.test_from"] == test_from and params["split.gap_days"] == "3"
    assert params["feature_service"] == "delay_model_v1__no_weather"
    assert params["dropped_feature_groups"] == "weather" and params["seed"] == "11"
    assert params["test_start"] == str(report.bounds["test_start"])
