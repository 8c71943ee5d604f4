"""The feature store end to end: Feast definitions applied, materialized, read point in time and
online, on SQLite and on the local Redis server."""

from __future__ import annotations

import itertools
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

from features import offline as off
from features.build import EVENT_COLUMNS, LakeEvents, build_features, progress_chunks, progress_of
from features.online import (
    FeatureServiceMismatch,
    apply_events,
    online_vectors,
    read_progress,
    require_features,
)
from features.online_fast import OnlineReader
from features.repo.definitions import definitions
from features.schema import FEATURE_SERVICE, SHIPMENT_PROGRESS, TIMESTAMP, model_feature_names
from features.store import get_store, offline_dir
from features.tables import lake_now
from features.transforms import latest
from serving.batch import in_flight
from shipdelay.lake import Lake
from shipdelay.settings import Settings
from tests.conftest import services_required
from training.dataset import build_training_set, feast_features, point_in_time

warnings.filterwarnings("ignore", category=DeprecationWarning)


def _settings(root: Path, lake: Lake, **kw) -> Settings:
    root.mkdir(parents=True, exist_ok=True)
    (root / "lake").symlink_to(lake.root.resolve())
    return Settings(data_dir=root, **kw)


def _redis_db() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return 3 + int(worker[2:] or 0)


def redis_settings(root: Path, lake: Lake) -> Settings:
    import redis

    db = _redis_db()
    try:
        redis.Redis(host="127.0.0.1", port=6379, db=db, socket_timeout=2).flushdb()
    except redis.exceptions.ConnectionError:
        if services_required():
            pytest.fail("Redis at 127.0.0.1:6379 is required in CI and is not reachable")
        pytest.skip("no Redis at 127.0.0.1:6379")
    return _settings(root, lake, online_store="redis", redis_url=f"redis://127.0.0.1:6379/{db}")


@pytest.fixture(scope="module")
def built(small_world, tmp_path_factory):
    lake, _ = small_world
    settings = _settings(tmp_path_factory.mktemp("fs") / "data", lake)
    build_features(settings)
    return lake, settings, build_training_set(lake, offline_dir(settings))


def _same(a: pd.Series, b: pd.Series) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(a) and pd.api.types.is_numeric_dtype(b):
        return np.isclose(a.astype(float), b.astype(float), rtol=1e-9, atol=1e-9, equal_nan=True)
    na, nb = a.isna().to_numpy(), b.isna().to_numpy()
    return (na & nb) | (~na & ~nb & (a.astype(str).to_numpy() == b.astype(str).to_numpy()))


def test_training_set_is_labelled_and_covers_every_milestone(built):
    _lake, _, ts = built
    assert set(model_feature_names()) <= set(ts.columns)
    assert ts["is_late"].isin([True, False]).all()
    per_shipment = ts.groupby("shipment_id").size()
    assert per_shipment.median() >= 6  # booking plus milestones
    # at booking nothing has been scanned yet; later snapshots know more
    first = ts.sort_values("as_of").groupby("shipment_id").head(1)
    assert first["milestones_done"].isna().all()
    assert ts["milestones_done"].max() >= 8
    # request-time features are in hours and shares of the journey, not in epoch units
    assert ts["hours_to_promised"].between(-2_000, 3_000).all()
    assert ts["transit_elapsed_frac"].between(0, 5).mean() > 0.95
    assert first["transit_elapsed_frac"].abs().max() < 1e-9  # at booking: nothing elapsed


def test_fast_path_equals_feast_get_historical_features(built):
    _, settings, ts = built
    sample = ts.sample(250, random_state=3)
    ref = feast_features(get_store(settings), sample).rename(columns={"event_timestamp": "as_of"})
    joined = sample.merge(ref, on=["shipment_id", "as_of"], suffixes=("", "__feast"))
    assert len(joined) == len(sample)
    for col in model_feature_names():
        same = _same(joined[col], joined[f"{col}__feast"])
        assert same.all(), (col, joined.loc[~same, [col, f"{col}__feast"]].head())


def test_online_equals_latest_offline_after_materialize(built):
    _, settings, _ = built
    _assert_online_parity(settings)


def test_online_equals_latest_offline_on_redis(small_world, tmp_path):
    lake, _ = small_world
    settings = redis_settings(tmp_path / "data", lake)
    build_features(settings)
    _assert_online_parity(settings)


def _assert_online_parity(settings: Settings) -> None:
    """At the build's instant (the lake's now), both online reads give each in-flight shipment
    what the offline point-in-time join gives, feature by feature; progress is the latest
    offline row; a lane's statistic is its offline row of that midnight, not a later one."""
    store, offline = get_store(settings), offline_dir(settings)
    lake = Lake(settings.lake_dir)
    now = lake_now(lake)
    snaps = in_flight(lake, now)
    assert len(snaps) > 50
    joined = point_in_time(offline, snaps).set_index("shipment_id")
    ids = snaps["shipment_id"].tolist()
    for online in (online_vectors(store, ids, now), OnlineReader(store).vectors(ids, now)):
        online = online.set_index("shipment_id").loc[ids]
        assert online["known"].all()
        for col in model_feature_names():
            assert _same(online[col], joined.loc[ids, col]).all(), col
    progress = latest(off.read_view(offline, "shipment_progress")).set_index("shipment_id")
    some = progress.sort_values(TIMESTAMP).index[-60:].tolist()
    got = read_progress(store, some).set_index("shipment_id").loc[some]
    for col in SHIPMENT_PROGRESS:
        assert _same(got[col], progress.loc[some, col]).all(), col
    lanes = off.read_view(offline, "lane_stats")
    assert lanes[TIMESTAMP].max() == now.floor("D")  # no row of a day still open
    last = lanes[lanes[TIMESTAMP] == now.floor("D")].set_index("lane_id")
    keys = last.index[:20].tolist()
    got = store.get_online_features(features=["lane_stats:lane_late_rate_28d"],
                                    entity_rows=[{"lane_id": k} for k in keys]).to_df()
    assert _same(got["lane_late_rate_28d"],
                 last.loc[keys, "lane_late_rate_28d"].reset_index(drop=True)).all()
    vectors = online_vectors(store, ids[:5] + ["SH-UNKNOWN"], now)
    assert vectors["known"].tolist() == [True] * 5 + [False]


def test_missing_feature_in_service_fails_loudly(built):
    _, settings, _ = built
    store = get_store(settings)
    require_features(store, model_feature_names())
    with pytest.raises(FeatureServiceMismatch, match="slip_next_week"):
        require_features(store, model_feature_names() + ["slip_next_week"])


@pytest.mark.parametrize("online", ["sqlite", "redis"])
def test_stream_updates_equal_the_backfill(built, tmp_path, online):
    """Micro-batches through the real online store end where the backfill ends, row for row."""
    lake, settings, _ = built
    fresh = (redis_settings(tmp_path / "data", lake) if online == "redis"
             else _settings(tmp_path / "data", lake))
    store, offline = get_store(fresh), offline_dir(fresh)
    store.apply(definitions(offline))
    profile = off.read_view(offline_dir(settings), "shipment_profile")
    events = lake.read("tracking_events")
    ids = events["shipment_id"].drop_duplicates().sample(40, random_state=5)
    events = events[events["shipment_id"].isin(ids)].sort_values(["ingested_at", "event_id"])
    store.write_to_online_store("shipment_profile", profile[profile["shipment_id"].isin(ids)])
    bounds = np.linspace(0, len(events), 13).astype(int)
    for lo, hi in itertools.pairwise(bounds):  # micro-batches in ingestion order
        batch = events.iloc[lo:hi]
        apply_events(store, offline, batch)
    backfill = off.read_view(offline_dir(settings), "shipment_progress")
    backfill = backfill[backfill["shipment_id"].isin(ids)]
    key = ["shipment_id", TIMESTAMP]
    streamed = off.read_view(offline, "shipment_progress").sort_values(key, ignore_index=True)
    expected = backfill.sort_values(key, ignore_index=True)
    pdt.assert_frame_equal(streamed[expected.columns], expected, check_dtype=False)
    online_now = read_progress(store, ids.tolist()).set_index("shipment_id")
    final = latest(backfill).set_index("shipment_id").loc[online_now.index]
    for col in SHIPMENT_PROGRESS:
        assert _same(online_now[col], final[col]).all(), col


def test_leakage_events_and_outcomes_after_a_snapshot_change_nothing(built, tmp_path):
    lake, settings, ts = built
    cut = ts["as_of"].sort_values().iloc[int(len(ts) * 0.6)]
    altered = tmp_path / "data"
    altered.mkdir()
    with Lake.rewrite(altered / "lake") as new:
        for table in ("hubs", "shipments", "legs", "ceiling"):
            new.append(table, lake.read(table))
        events = lake.read("tracking_events")
        later = events["ingested_at"] > cut
        changed = events[later].sample(frac=0.5, random_state=1)
        changed["event_time"] = changed["event_time"] - pd.Timedelta(hours=30)
        changed["event_time"] = changed[["event_time", "ingested_at"]].min(axis=1)
        changed["note"] = "customs exam, typhoon, engine failure"
        new.append("tracking_events", pd.concat([events[~later], changed]))
        outcomes = lake.read("outcomes")
        new.append("outcomes", outcomes[outcomes["delivered_at"] <= cut])
    build_features(Settings(data_dir=altered))
    snaps = ts.loc[ts["as_of"] <= cut, ["shipment_id", "as_of"]].sample(400, random_state=2)
    before = point_in_time(offline_dir(settings), snaps).sort_values(["shipment_id", "as_of"])
    after = point_in_time(offline_dir(Settings(data_dir=altered)), snaps).sort_values(
        ["shipment_id", "as_of"])
    for col in model_feature_names():
        assert _same(before[col].reset_index(drop=True), after[col].reset_index(drop=True)).all(), col


def test_build_without_online_writes_the_same_offline_store_and_loads_nothing_online(
        built, tmp_path):
    lake, settings, _ = built
    offline_only = _settings(tmp_path / "data", lake)
    report = build_features(offline_only, online=False)
    assert report.online_from is None and "online load" not in report.seconds
    for view in ("shipment_profile", "shipment_progress", "lane_stats"):
        a = off.read_view(offline_dir(settings), view)
        b = off.read_view(offline_dir(offline_only), view)
        key = [c for c in ("shipment_id", "lane_id") if c in a] + [TIMESTAMP]
        pd.testing.assert_frame_equal(a.sort_values(key, ignore_index=True),
                                      b.sort_values(key, ignore_index=True))
    store = get_store(offline_only)
    assert store.get_feature_service(FEATURE_SERVICE).name == FEATURE_SERVICE  # applied
    progress = off.read_view(offline_dir(settings), "shipment_progress")
    some = progress.sort_values(TIMESTAMP)["shipment_id"].drop_duplicates().tail(5).tolist()
    assert read_progress(get_store(settings), some)["event_count"].notna().all()
    assert read_progress(store, some)["event_count"].isna().all()


def test_incremental_build_since_a_day_reproduces_the_full_build(built):
    _lake, settings, _ = built
    views = ("shipment_progress", "lane_stats", "hub_stats", "shipment_profile")
    key = ["event_timestamp"]
    before = {v: off.read_view(offline_dir(settings), v) for v in views}
    since = (before["shipment_progress"]["event_timestamp"].max() - pd.Timedelta(days=5)).date()
    build_features(settings, since=since)
    for view in views:
        after = off.read_view(offline_dir(settings), view)
        cols = list(before[view].columns)
        order = [cols[0], *key]
        pdt.assert_frame_equal(after[cols].sort_values(order, ignore_index=True),
                               before[view].sort_values(order, ignore_index=True),
                               check_dtype=False, obj=view)


@pytest.mark.parametrize("touched_only", [False, True])
def test_progress_from_the_lake_in_chunks_equals_the_whole_frame(built, touched_only):
    """The build's progress backfill reads the events through DuckDB a range of shipments at a
    time (`LakeEvents`); the same rows come out of the events read whole into pandas, at an odd
    instant, and for an incremental build's touched shipments."""
    lake, settings, _ = built
    profile = off.read_view(offline_dir(settings), "shipment_profile")
    as_of = lake_now(lake) - pd.Timedelta(days=3, hours=5, minutes=17, microseconds=3)
    since = as_of - pd.Timedelta(days=2, minutes=41) if touched_only else None
    events = lake.read("tracking_events", columns=EVENT_COLUMNS)
    events = events[events["ingested_at"] <= as_of]
    if since is not None:
        touched = events.loc[events["ingested_at"] >= since, "shipment_id"].unique()
        events = events[events["shipment_id"].isin(touched)]
    want = pd.concat(list(progress_chunks(events, profile, since)), ignore_index=True)
    chunks = LakeEvents(lake, as_of, since, per_chunk=37)
    try:
        assert chunks.newest == events["ingested_at"].max()
        got = pd.concat(list(progress_of(chunks, profile, since)), ignore_index=True)
    finally:
        chunks.close()
    alone = LakeEvents(lake, as_of, since, per_chunk=37)
    try:  # chunks worked on by threads come back in the order one thread gives
        pdt.assert_frame_equal(got, pd.concat(list(progress_of(alone, profile, since, threads=1)),
                                              ignore_index=True))
    finally:
        alone.close()
    assert len(want) > 100 and want["shipment_id"].nunique() > 37 * 3  # several chunks
    order = ["shipment_id", TIMESTAMP]
    pdt.assert_frame_equal(got.sort_values(order, ignore_index=True),
                           want.sort_values(order, ignore_index=True))


def test_point_in_time_in_chunks_equals_one_pass(built, monkeypatch):
    from training import dataset

    _, settings, ts = built
    snaps = ts[["shipment_id", "as_of"]].sample(4000, random_state=4)
    key = ["shipment_id", "as_of"]
    whole = point_in_time(offline_dir(settings), snaps).sort_values(key, ignore_index=True)
    monkeypatch.setattr(dataset, "SNAPSHOTS_PER_CHUNK", 700)
    chunked = point_in_time(offline_dir(settings), snaps).sort_values(key, ignore_index=True)
    pdt.assert_frame_equal(chunked, whole)


def test_point_in_time_at_one_cut_off_equals_the_as_of_join(built):
    """All snapshots at one cut-off take each key's latest row before the join; the same rows
    as the general as-of join (made to run by one extra snapshot at another time)."""
    _, settings, ts = built
    cut = ts["as_of"].sort_values().iloc[int(len(ts) * 0.6)]
    snaps = pd.DataFrame({"shipment_id": ts["shipment_id"].drop_duplicates().sample(
        1500, random_state=5).to_numpy(), "as_of": cut})
    fast = point_in_time(offline_dir(settings), snaps)
    extra = pd.DataFrame({"shipment_id": [snaps["shipment_id"].iloc[0]],
                          "as_of": [cut - pd.Timedelta(hours=1)]})
    general = point_in_time(offline_dir(settings), pd.concat([snaps, extra], ignore_index=True))
    general = general[general["as_of"] == cut]
    key = ["shipment_id"]
    assert fast["booked_at_s"].notna().sum() > 500 and fast["slip_h"].notna().sum() > 100
    pdt.assert_frame_equal(fast.sort_values(key, ignore_index=True),
                           general.sort_values(key, ignore_index=True))
