"""A delivery in which every optional attribute is missing goes the whole way: `shipdelay ingest`
(hubs known by id alone; shipments without customer, service level, weight, volume; legs
without carrier) -> `features build` -> `train` -> `promote` -> the nightly batch, both online
readers and the stream's micro-batch.
The features built from the missing attributes are missing (NaN, null categories), never 0 or a
stand-in value, and a missing customer or carrier is no entity with statistics of its own."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features import offline as off
from features.online import online_vectors
from features.online_fast import OnlineReader
from features.store import get_store, offline_dir
from features.tables import lake_now
from serving.batch import in_flight
from shipdelay.cli import app
from shipdelay.lake import Lake
from shipdelay.settings import get_settings
from tests.integration.hand_made import delivery
from training.dataset import point_in_time

warnings.filterwarnings("ignore", category=DeprecationWarning)

runner = CliRunner()
ORDER = ("hubs", "shipments", "legs", "events", "outcomes")
# built from attributes the delivery lacks: missing in every row
MISSING_NUMBERS = ["distance_km", "international", "weight_kg", "volume_m3",
                   *(f"customer_{s}_{d}d" for s in ("volume", "late_rate", "mean_delay",
                                                     "p90_delay") for d in (7, 28)),
                   *(f"carrier_{s}_{d}d" for s in ("volume", "late_rate", "mean_delay",
                                                    "p90_delay") for d in (7, 28)),
                   "carrier_dep_slip_7d"]
MISSING_CATEGORIES = ["origin_region", "destination_region", "service_level"]


def _cli(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result.output


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("optional")
    files = delivery(root / "files")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SHIPDELAY_DATA_DIR", str(root / "data"))
        from training import model

        mp.setitem(model.CLASSIFIER_PARAMS, "num_threads", 1)
        mp.setitem(model.QUANTILE_PARAMS, "num_threads", 1)
        get_settings.cache_clear()
        out = {kind: _cli("ingest", str(files[kind]), "--kind", kind) for kind in ORDER}
        out["features"] = _cli("features", "build")
        out["train"] = _cli("train")
        out["promote"] = _cli("promote")
        settings = get_settings()
        from training.train import current_split

        yield {"settings": settings, "out": out, "split": current_split(settings),
               "lake": Lake(settings.lake_dir)}
    get_settings.cache_clear()


def test_every_row_imports_with_its_optional_attributes_missing(pipeline):
    for kind in ORDER:
        assert " 0 rejected" in pipeline["out"][kind].replace("\n", " "), pipeline["out"][kind]
    lake = pipeline["lake"]
    hubs = lake.read("hubs")
    assert hubs.drop(columns="hub_id").isna().all().all()
    shipments = lake.read("shipments")
    assert shipments[["customer_id", "service_level", "weight_kg", "volume_m3"]].isna().all().all()
    assert lake.read("legs")["carrier_id"].isna().all()


def test_features_of_missing_attributes_are_missing_never_invented(pipeline):
    offline = offline_dir(pipeline["settings"])
    profile = off.read_view(offline, "shipment_profile")
    for col in ("distance_km", "international", "weight_kg", "volume_m3"):
        assert profile[col].isna().all(), col
    for col in ("customer_id", "carrier_id", *MISSING_CATEGORIES):
        assert profile[col].isna().all(), col
    # what the lake does give is there: the plan, the lane, the calendar (UTC: no time zone)
    assert profile["n_legs"].isin([1, 2]).all() and profile["lane_id"].notna().all()
    assert profile["planned_transit_h"].gt(0).all()
    booked = pd.to_datetime(profile["booked_at_s"], unit="s", utc=True)
    assert (profile["booked_hour"].to_numpy() == booked.dt.hour.to_numpy()).all()
    # a missing customer or carrier is not one giant entity with statistics
    assert off.read_view(offline, "customer_stats").empty
    assert off.read_view(offline, "carrier_stats").empty
    assert len(off.read_view(offline, "lane_stats")) > 0


def test_training_set_holds_them_as_missing(pipeline):
    split = pipeline["split"]
    frame = pd.concat([split.train, split.valid, split.test])
    assert len(split.train) > 300 and split.test["is_late"].nunique() == 2
    for col in MISSING_NUMBERS:
        assert frame[col].isna().all(), col
    for col in MISSING_CATEGORIES:
        assert frame[col].isna().all(), col
    assert frame["lane_late_rate_28d"].notna().any()  # the lane still has a history


def test_the_model_trains_and_scores_with_them_missing(pipeline):
    assert "registered as version 1" in pipeline["out"]["train"]
    assert "champion" in pipeline["out"]["promote"]
    from registry.loader import load_by_alias
    from training.evaluate import classification_metrics

    bundle = load_by_alias(pipeline["settings"])
    for col in MISSING_CATEGORIES:
        assert bundle.spec.categories[col] == []  # no level was invented for them
    test = pipeline["split"].test
    X = bundle.spec.matrix(test)
    assert np.isnan(X[MISSING_NUMBERS + MISSING_CATEGORIES].to_numpy()).all()
    p = bundle.p_late(X)
    assert np.isfinite(p).all() and 0 < p.min() < p.max() < 1
    # the scans carry the signal: departed late -> late, and the model learned it
    assert classification_metrics(test["is_late"].to_numpy(float), p)["roc_auc"] > 0.7


def test_the_batch_and_both_online_readers_serve_them_missing(pipeline):
    settings = pipeline["settings"]
    lake = Lake(settings.lake_dir)
    now = lake_now(lake)
    snaps = in_flight(lake, now)
    assert len(snaps) >= 3
    ids = snaps["shipment_id"].tolist()
    joined = point_in_time(offline_dir(settings), snaps).set_index("shipment_id").loc[ids]
    store = get_store(settings)
    for online in (online_vectors(store, ids, now), OnlineReader(store).vectors(ids, now)):
        online = online.set_index("shipment_id").loc[ids]
        assert online["known"].all()
        for col in MISSING_NUMBERS:
            assert online[col].isna().all(), col
        for col in MISSING_CATEGORIES:
            assert online[col].isna().all(), col
        for col in ("slip_h", "lane_volume_28d", "booked_hour", "n_legs"):
            assert np.allclose(online[col].astype(float), joined[col].astype(float),
                               equal_nan=True), col
    _cli("score-batch", "--as-of", now.isoformat())
    from serving.batch import read_scores

    scores = read_scores(settings)
    assert set(ids) <= set(scores["shipment_id"])
    assert scores["p_late"].between(0, 1).all()


def test_the_stream_scores_them_with_their_statistics_missing(pipeline):
    """A scan of each in-flight shipment through the stream's micro-batch: folded, scored with
    the statistics at its instant (none for the missing customer and carrier), no dead letter."""
    from features.online_direct import open_direct
    from features.stats_at import StatsAt
    from registry.loader import load_by_alias
    from serving.scorer import Scorer
    from serving.stream_batch import process
    from serving.stream_store import StreamStore

    settings = pipeline["settings"]
    lake = Lake(settings.lake_dir)
    now = lake_now(lake)
    ids = in_flight(lake, now)["shipment_id"].tolist()
    legs = lake.read("legs")
    first = legs[legs["shipment_id"].isin(ids) & (legs["leg_index"] == 0)]
    events = pd.DataFrame({
        "event_id": "STREAM-" + first["shipment_id"].astype(str), "shipment_id": first[
            "shipment_id"].astype(str), "event_type": "exception", "leg_index": 0,
        "event_time": now + pd.Timedelta(minutes=10), "ingested_at": now + pd.Timedelta(
            minutes=15), "hub_id": first["from_hub"].astype(str), "note": None,
        "partition": 0, "offset": np.arange(len(first)),
        "produced_ms": (now + pd.Timedelta(minutes=15)).timestamp() * 1000})
    store = StreamStore(open_direct(settings), lake_dir=settings.lake_dir)
    store.stats = StatsAt(offline_dir(settings))
    result = process(store, Scorer(load_by_alias(settings)), events)
    assert result.dead.empty, result.dead
    assert sorted(result.risk["shipment_id"]) == sorted(ids)
    assert result.risk["p_late"].between(0, 1).all()
    assert (result.latest["exceptions"] == 1).all()
    for col in ("carrier_volume_7d", "customer_late_rate_28d", "distance_km"):
        assert result.vectors[col].isna().all(), col
