"""The Spark engine gives the local engine's scores on the same input: same shipments in flight
(also at a delivery boundary), p_late within 1e-9, same bands, reasons and delivery times; and
the published table reads back in Spark with its run_date partition column.

One SparkSession for the module: local[2], 4 shuffle partitions, no UI.
"""

from __future__ import annotations

import pandas as pd
import pytest

from serving.batch import in_flight, read_scores, score_batch
from shipdelay.lake import Lake
from shipdelay.settings import Settings, get_settings
from tests.integration.batch_world import CUTOFF, copy_world

pytest.importorskip("pyspark")

US = pd.Timedelta(microseconds=1)


@pytest.fixture(scope="module")
def spark(worlds):
    from serving.batch_spark import spark_session

    session = spark_session("local[2]", shuffle_partitions=4)
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def worlds(trained, tmp_path_factory) -> tuple[Settings, Settings]:
    """Two copies of the same world: one scored locally, one on Spark. Spark reads Parquet
    with its own reader, which cannot decrypt (shipdelay refuses it with encryption on): the
    copies are decrypted (once: the Spark copy links the local copy's plaintext lake and
    offline tables) and this module runs with encryption off."""
    root = tmp_path_factory.mktemp("batch-spark")
    local = copy_world(trained[0], root / "local", plaintext=True)
    copies = (local, copy_world(local, root / "spark"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SHIPDELAY_ENCRYPTION", "false")
        get_settings.cache_clear()
        yield copies
    get_settings.cache_clear()


def test_spark_scores_equal_local_scores(worlds, spark):
    local_world, spark_world = worlds
    # reasons for the 40 riskiest from P 0.2: the cap binds, so both engines must pick alike
    rule = {"reasons_from": 0.2, "reasons_most": 40}
    local = score_batch(local_world, CUTOFF, log_run=False, **rule)
    remote = score_batch(spark_world, CUTOFF, engine="spark", spark=spark, log_run=False,
                         **rule)
    a = read_scores(local_world, CUTOFF.date()).sort_values("shipment_id", ignore_index=True)
    b = read_scores(spark_world, CUTOFF.date()).sort_values("shipment_id", ignore_index=True)
    assert len(a) == local.scored == remote.scored > 100
    assert remote.missing == local.missing
    assert a["shipment_id"].tolist() == b["shipment_id"].tolist()
    assert (a["p_late"] - b["p_late"]).abs().max() <= 1e-9
    assert a["risk_band"].tolist() == b["risk_band"].tolist()
    assert a["reasons"].map(list).tolist() == b["reasons"].map(list).tolist()
    # only the 40 riskiest from 0.2 have reasons (one near the base rate may have none to give)
    ranked = a[a["p_late"] >= 0.2].sort_values(["p_late", "shipment_id"], ascending=[False, True])
    picked = set(ranked["shipment_id"].iloc[:40])
    explained = set(a.loc[a["reasons"].map(len).gt(0), "shipment_id"])
    assert explained <= picked and len(explained) >= len(picked) // 2 > 0
    for col in ("delay_p50_h", "delay_p90_h"):
        assert (a[col] - b[col]).abs().max() <= 1e-9
    for col in ("as_of", "eta", "eta_p10", "eta_p90", "mode", "lane", "customer", "carrier",
                "model_version"):
        assert a[col].tolist() == b[col].tolist(), col
    assert remote.bands == local.bands and remote.engine == "spark"


def test_spark_selects_the_same_shipments_at_a_delivery_boundary(worlds, spark):
    from serving.batch_spark import in_flight as spark_in_flight

    world = worlds[1]
    lake = Lake(world.lake_dir)
    outcomes = lake.read("outcomes", columns=["shipment_id", "delivered_at"])
    d = outcomes.sort_values("delivered_at").iloc[len(outcomes) // 3]
    for t in (d["delivered_at"], d["delivered_at"] - US):
        t_us = int(t.value // 1000)
        got = sorted(r.shipment_id for r in spark_in_flight(spark, lake, t_us).collect())
        assert got == in_flight(lake, t)["shipment_id"].tolist()
        assert (d["shipment_id"] in got) == (t < d["delivered_at"])


def test_spark_reads_the_published_table(worlds, spark):
    world = worlds[1]
    table = spark.read.parquet(str(world.scores_dir))
    assert "run_date" in table.columns
    days = {str(r.run_date) for r in table.select("run_date").distinct().collect()}
    assert days == {CUTOFF.date().isoformat()}
    assert table.count() == len(read_scores(world, CUTOFF.date()))
