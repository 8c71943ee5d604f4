"""The memory budget: a training set joined in ranges of shipments, because the budget is below
what one pass needs, is the one-pass training set (same rows, same order, same values and
dtypes); every DuckDB connection of the offline jobs carries the budget's limit and spills
under the data folder."""

from __future__ import annotations

import pandas as pd
import pytest

from features import tables
from features.store import offline_dir
from shipdelay import memory
from shipdelay.lake import Lake
from training import dataset

SHIPMENTS = 600  # of the trained world's, enough for ticks, milestones and every view


@pytest.fixture(scope="module")
def world(trained):
    """The trained world's lake and offline store, and the snapshots of some of its shipments."""
    settings, _, _ = trained
    lake = Lake(settings.lake_dir)
    snapshots = dataset.training_snapshots(lake)
    some = snapshots["shipment_id"].drop_duplicates().sample(SHIPMENTS, random_state=3)
    return settings, lake, snapshots[snapshots["shipment_id"].isin(some)]


@pytest.fixture(scope="module")
def one_pass(world):
    settings, lake, snapshots = world
    assert dataset.chunk_count(len(snapshots), 1_000.0) == 1
    return dataset.build_training_set(lake, offline_dir(settings), snapshots, budget_gb=1_000.0)


def _budget_for(snapshots: int, chunks: int) -> float:
    """A budget under which the join of `snapshots` rows is cut into `chunks` chunks."""
    return dataset.one_pass_gb(snapshots) / (1 - memory.DUCKDB_SHARE) / chunks * 1.0001


def test_a_budget_below_one_pass_gives_the_one_pass_training_set(world, one_pass):
    settings, lake, snapshots = world
    budget = _budget_for(len(snapshots), 2)
    assert dataset.chunk_count(len(snapshots), budget) == 2
    chunked = dataset.build_training_set(lake, offline_dir(settings), snapshots, budget_gb=budget)
    assert len(one_pass) == len(snapshots) > 2_000
    assert one_pass["is_late"].any() and (one_pass["milestone"] == "tick").any()
    pd.testing.assert_frame_equal(chunked, one_pass)


def test_a_tiny_budget_still_completes_in_many_chunks(world, one_pass, monkeypatch):
    settings, lake, snapshots = world
    budget = _budget_for(len(snapshots), 6)
    assert dataset.chunk_count(len(snapshots), budget) == 6
    seen = []
    real = dataset.offline_connection

    def watched(*args, **kwargs):
        con = real(*args, **kwargs)
        seen.append(con.sql("select current_setting('memory_limit'), "
                            "current_setting('temp_directory')").fetchall()[0])
        return con

    monkeypatch.setattr(dataset, "offline_connection", watched)
    chunked = dataset.build_training_set(lake, offline_dir(settings), snapshots, budget_gb=budget)
    pd.testing.assert_frame_equal(chunked, one_pass)
    assert len(seen) == 1  # the offline store read once, for every chunk
    spill = str(memory.spill_dir(settings.data_dir.resolve()))
    # the budget is below DuckDB's floor (128 MB, shown in MiB): each join still gets the floor
    assert memory.duckdb_limit_mb(budget) == memory.DUCKDB_FLOOR_MB
    assert set(seen) == {("122.0 MiB", spill)}


def test_the_feature_tables_connections_carry_the_settings_budget(data_dir, monkeypatch):
    from shipdelay.settings import get_settings

    monkeypatch.setenv("SHIPDELAY_MEMORY_BUDGET_GB", "2")
    get_settings.cache_clear()
    with tables._connect() as con:
        limit, spill = con.sql("select current_setting('memory_limit'), "
                               "current_setting('temp_directory')").fetchall()[0]
    assert memory.duckdb_limit_mb(2) == 1024
    assert limit == "976.5 MiB"  # DuckDB shows 1024 MB (10^6 bytes) in MiB
    assert spill == str(data_dir.absolute() / "tmp" / "duckdb")


def test_hub_statistics_too_big_for_their_share_run_again_within_the_usual_one(
        world, monkeypatch):
    """A quarter of the budget holds a 1M-shipment year's hourly hub statistics; a lake that
    needs more gets the usual share and the same table, not an out-of-memory failure."""
    _, lake, _ = world
    events, legs = tables._scan(lake, "tracking_events"), tables._scan(lake, "legs")
    start = pd.Timestamp(tables._scan(lake, "shipments").to_table(columns=["booked_at"])
                         .column(0).to_pandas().min()).floor("D")
    end = start + pd.Timedelta(days=20)
    usual = tables.hub_stats(events, legs, start, end)
    assert len(usual) > 1_000
    shares = []
    real = tables.offline_connection

    def tiny(*args, share, **kwargs):
        shares.append(share)
        con = real(*args, share=share, **kwargs)
        if share == tables.HUB_STATS_SHARE:  # far below what these hubs' marks need
            con.execute("SET memory_limit = '2MB'")
        return con

    monkeypatch.setattr(tables, "offline_connection", tiny)
    again = tables.hub_stats(events, legs, start, end)
    assert shares == [tables.HUB_STATS_SHARE, memory.DUCKDB_SHARE]
    pd.testing.assert_frame_equal(again, usual)
