"""`features build` loads the online store itself (`features.online_direct`) instead of calling
Feast's `materialize`: the records it leaves must be exactly the ones Feast's materialize of the
same windows leaves, byte for byte, on SQLite (a whole build) and on Redis (its load step). The
reference is Feast's own materialization over the same offline store, written into a second,
empty online store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd
import pandas.testing as pdt
import pytest

from features import roll
from features.build import BuildReport, build_features, load_online
from features.repo.definitions import definitions
from features.repo.views import TTL
from features.schema import VIEWS
from features.store import PROJECT, get_store, offline_dir, redis_client, repo_config
from shipdelay.settings import Settings
from tests.integration.test_feature_store import _settings, redis_settings


def _feast_materialize(settings: Settings, report: BuildReport) -> None:
    """Feast's materialize of each view's window, [as_of - TTL, the build's end]."""
    store = get_store(settings)
    store.apply(definitions(offline_dir(settings)))
    for view in VIEWS:
        store.materialize(start_date=(report.as_of - TTL[view]).to_pydatetime(),
                          end_date=report.online_to, feature_views=[view])


def _twin(root: Path, lake, built: Settings) -> Settings:
    """A data folder reading the same lake and offline store, with an online store of its own."""
    twin = _settings(root, lake)
    (root / "feast").mkdir()
    (root / "feast" / "offline").symlink_to(offline_dir(built))
    return twin


def _sqlite_rows(settings: Settings) -> dict[str, set]:
    conn = sqlite3.connect(repo_config(settings).online_store.path)
    try:
        return {view: set(conn.execute(
            "SELECT entity_key, feature_name, value, value_text, event_ts, created_ts "
            f'FROM "{PROJECT}_{view}"').fetchall()) for view in VIEWS}
    finally:
        conn.close()


def _redis_hashes(settings: Settings) -> dict[bytes, dict]:
    client = redis_client(repo_config(settings).online_store)
    try:
        return {key: client.hgetall(key) for key in client.scan_iter(count=1000)
                if client.type(key) == b"hash"}  # the roll mark is a plain key
    finally:
        client.close()


@pytest.fixture(scope="module")
def built(small_world, tmp_path_factory) -> tuple[Settings, BuildReport]:
    lake, _ = small_world
    settings = _settings(tmp_path_factory.mktemp("online-load") / "data", lake)
    return settings, build_features(settings)


def test_the_build_leaves_sqlite_exactly_as_feasts_materialize(built, small_world, tmp_path):
    mine, report = built
    feast = _twin(tmp_path / "feast", small_world[0], mine)
    _feast_materialize(feast, report)
    got, want = _sqlite_rows(mine), _sqlite_rows(feast)
    for view in VIEWS:
        assert got[view] == want[view], (view, sorted(got[view] ^ want[view])[:3])
    # every kind of value is covered: texts, numbers, the plan's lists, and missing values
    profile = {name: value for _, name, value, *_ in want["shipment_profile"]}
    assert profile["plan_times_s"] and profile["lane_id"]
    assert len({k for k, *_ in want["shipment_progress"]}) == report.online_rows[
        "shipment_progress"] > 50
    assert any(value == b"" for rows in want.values() for _, _, value, *_ in rows)


def test_the_load_leaves_redis_exactly_as_feasts_materialize(built, small_world, tmp_path,
                                                            monkeypatch):
    """Each view's newest rows found by DuckDB here (a large store's way: the SQLite build
    above read this small store's windows whole)."""
    monkeypatch.setattr(roll, "WHOLE_WINDOW_BYTES", 0)
    sqlite, report = built
    settings = redis_settings(tmp_path / "data", small_world[0])
    (tmp_path / "data" / "feast").mkdir()
    (tmp_path / "data" / "feast" / "offline").symlink_to(offline_dir(sqlite))
    get_store(settings).apply(definitions(offline_dir(settings)))
    load_online(settings, report.as_of, report.online_to)
    mine = _redis_hashes(settings)
    client = redis_client(repo_config(settings).online_store)
    try:
        client.flushdb()
    finally:
        client.close()
    _feast_materialize(settings, report)
    feast = _redis_hashes(settings)
    assert len(feast) > 100 and set(mine) == set(feast)
    for key, fields in feast.items():
        assert mine[key] == fields, key


@pytest.mark.parametrize("view", VIEWS)
def test_newest_rows_by_duckdb_equal_the_window_read_whole(built, monkeypatch, view):
    """After an odd instant and up to another, bounds excluded and included, both ways."""
    settings, report = built
    offline = offline_dir(settings)
    until = report.as_of - pd.Timedelta(hours=30, minutes=17, seconds=3.25)
    since = until - TTL[view]
    whole = (roll.newest_rows(offline, view, since, until),
             roll.newest_between(offline, view, since, until))
    monkeypatch.setattr(roll, "WHOLE_WINDOW_BYTES", 0)
    duck = (roll.newest_rows(offline, view, since, until),
            roll.newest_between(offline, view, since, until))
    for got, want in zip(duck, whole):
        if view == "hub_weather" and want.empty:  # a world without weather
            assert got.empty
            continue
        key = list(want.columns[:1])
        assert len(want) > 5
        pdt.assert_frame_equal(got.sort_values(key, ignore_index=True),
                               want.sort_values(key, ignore_index=True))
