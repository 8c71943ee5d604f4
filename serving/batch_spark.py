"""The nightly batch on Apache Spark (`shipdelay score-batch --engine spark`), for when the
in-flight volume outgrows one machine: `local[2]` in tests, a cluster URL in production.

The same job as the local engine, step for step, on the same files:
- in flight: shipments booked at or before the cut-off, minus those with a delivered scan
  ingested or an outcome delivered at or before it (an anti join);
- point in time: Spark has no ASOF join, so each feature view is joined on its key with
  `ts <= as_of` and the newest row per (key, as_of) is kept with `max_by` -- Feast's rule, as
  `training.dataset.point_in_time` applies it with DuckDB. Entity statistics (lane, carrier,
  customer, hub) are joined on the distinct (key, as_of) pairs, then back to the shipments, so
  the join never multiplies shipments by history. A value older than its view's TTL is blanked;
  the hub is the current hub, else the origin, taken before TTL blanking (as there);
- scoring: `mapInPandas` runs `serving.batch_scores.score_batches`, i.e. the one `Scorer`, on
  each Arrow batch, after the request-time features from the same `request_features` function.
  The bundle's files are broadcast, so executors on other machines need no access to the
  registry (and their Python workers import neither Feast nor MLflow).

Times are compared as epoch microseconds (`unix_micros`), the lake's resolution, so no session
time zone can move a boundary. The scores are written by Spark into the folder
`serving.partitions.publish` hands out (on a shared filesystem when the cluster has several
machines), and published by the same atomic swap as the local engine's.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from features.repo.views import TTL
from features.schema import (
    ENTITY_KEYS,
    MODEL_FEATURES,
    SHIPMENT_PROFILE,
    SHIPMENT_PROGRESS,
    TIMESTAMP,
    VIEW_ENTITY,
    VIEWS,
)
from features.store import offline_dir
from serving.batch import lake_files
from serving.batch_scores import SCORES_SCHEMA, ReasonsRule, score_batches, with_request_features
from serving.scorer import Scorer
from shipdelay.lake import Lake
from shipdelay.parquet_io import refuse_foreign_reader
from shipdelay.settings import Settings

PLAN_LISTS = ("plan_times_s", "plan_hubs", "plan_modes", "plan_feeds",
              "plan_steps")  # not features; never read
PROFILE = [c for c in SHIPMENT_PROFILE if c not in PLAN_LISTS]
PROGRESS = list(SHIPMENT_PROGRESS)
STATS = {v: ENTITY_KEYS[VIEW_ENTITY[v]] for v in VIEWS if VIEW_ENTITY[v] != "shipment"}
_SPARK_TYPES = {"string": "string", "double": "double", "timestamp[us, tz=UTC]": "timestamp",
                "list<item: string>": "array<string>"}


def spark_session(master: str = "local[2]", shuffle_partitions: int | None = None):
    """A SparkSession for the job: UTC, Arrow transfers, microsecond Parquet timestamps.

    Executors run this interpreter unless PYSPARK_PYTHON says otherwise (on a cluster, set it
    to the executors' Python with shipdelay installed)."""
    from pyspark.sql import SparkSession

    refuse_foreign_reader("the Spark engine")  # no Java KMS client for shipdelay's keys
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (SparkSession.builder.master(master).appName("shipdelay-score-batch")
               .config("spark.ui.enabled", "false")
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true")
               .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
               # day-partitioned tables are many small files: list them on the driver rather
               # than with a Spark job per read
               .config("spark.sql.sources.parallelPartitionDiscovery.threshold", "100000"))
    if shuffle_partitions:
        builder = builder.config("spark.sql.shuffle.partitions", str(shuffle_partitions))
    return builder.getOrCreate()


def spark_schema() -> str:
    """The scores table's schema as Spark DDL (mapInPandas output)."""
    return ", ".join(f"{f.name} {_SPARK_TYPES[str(f.type)]}" for f in SCORES_SCHEMA)


def _us(name: str):
    from pyspark.sql import functions as F

    return F.unix_micros(F.col(name))


def _lake_table(spark, lake: Lake, table: str, columns: list[str], t_us: int):
    files = lake_files(lake, table, pd.Timestamp(t_us, unit="us", tz="UTC"))
    if not files:
        return None
    return spark.read.parquet(*files).select(*columns)


def in_flight(spark, lake: Lake, t_us: int):
    """(shipment_id, as_of_us) of every shipment in flight at the cut-off."""
    from pyspark.sql import functions as F

    shipments = _lake_table(spark, lake, "shipments", ["shipment_id", "booked_at"], t_us)
    booked = shipments.where(_us("booked_at") <= t_us).select("shipment_id")
    known = []
    events = _lake_table(spark, lake, "tracking_events",
                         ["shipment_id", "event_type", "ingested_at"], t_us)
    if events is not None:
        known.append(events.where((F.col("event_type") == "delivered")
                                  & (_us("ingested_at") <= t_us)).select("shipment_id"))
    outcomes = _lake_table(spark, lake, "outcomes", ["shipment_id", "delivered_at"], t_us)
    if outcomes is not None:
        known.append(outcomes.where(_us("delivered_at") <= t_us).select("shipment_id"))
    for frame in known:
        booked = booked.join(frame, "shipment_id", "left_anti")
    return booked.distinct().withColumn("as_of_us", F.lit(t_us))


def _view(spark, offline: Path, view: str, columns: list[str], key: str):
    """The view's rows (key, ts_us, columns); None when the view has no parts."""
    if not any((offline / view).rglob("part-*.parquet")):
        return None
    frame = (spark.read.option("recursiveFileLookup", "true")
             .option("pathGlobFilter", "part-*.parquet").parquet(str(offline / view)))
    return frame.select(key, _us(TIMESTAMP).alias("ts_us"), *columns)


def latest(keys_df, view_df, key: str, columns: list[str], ts_name: str):
    """Per (key, as_of_us) of `keys_df`: the view's newest row with ts_us <= as_of_us."""
    from pyspark.sql import functions as F

    v = view_df.withColumnRenamed(key, "_k")
    joined = keys_df.join(v, (keys_df[key] == v["_k"]) & (v["ts_us"] <= keys_df["as_of_us"]))
    newest = joined.groupBy(key, "as_of_us").agg(
        F.max_by(F.struct(*columns, "ts_us"), "ts_us").alias("_v"))
    return newest.select(key, "as_of_us", *[F.col(f"_v.{c}").alias(c) for c in columns],
                         F.col("_v.ts_us").alias(ts_name))


def point_in_time(spark, offline: Path, snapshots):
    """Features of each (shipment_id, as_of_us) as known then, Feast's rules (see module)."""
    from pyspark.sql import functions as F

    frame = snapshots
    for view, columns in (("shipment_profile", PROFILE), ("shipment_progress", PROGRESS)):
        rows = _view(spark, offline, view, columns, "shipment_id")
        if rows is None:
            raise FileNotFoundError(f"feature view {view} has no data under {offline}")
        frame = frame.join(latest(snapshots, rows, "shipment_id", columns, f"{view}__ts"),
                           ["shipment_id", "as_of_us"], "left")
    frame = frame.withColumn("hub_id", F.coalesce("current_hub", "origin_hub"))
    for view, key in STATS.items():
        columns = MODEL_FEATURES[view]
        rows = _view(spark, offline, view, columns, key)
        if rows is None:  # an optional view without data: blank, as the DuckDB join gives
            frame = frame.select("*", *[F.lit(None).cast("double").alias(c) for c in columns],
                                 F.lit(None).cast("long").alias(f"{view}__ts"))
            continue
        pairs = frame.where(F.col(key).isNotNull()).select(key, "as_of_us").distinct()
        frame = frame.join(latest(pairs, rows, key, columns, f"{view}__ts"),
                           [key, "as_of_us"], "left")
    views = {"shipment_profile": PROFILE, "shipment_progress": PROGRESS,
             **{v: MODEL_FEATURES[v] for v in STATS}}
    blank = {}
    for view, columns in views.items():
        ts = F.col(f"{view}__ts")
        fresh = ts.isNotNull() & (ts >= F.col("as_of_us") - int(TTL[view].total_seconds() * 1e6))
        blank |= {c: F.when(fresh, F.col(c)) for c in columns}
    return frame.withColumns(blank).drop(*[f"{v}__ts" for v in views])


def _bundle_files(scorer: Scorer) -> tuple[dict[str, bytes], str]:
    with tempfile.TemporaryDirectory(prefix="shipdelay-bundle-") as tmp:
        folder = scorer.bundle.save(Path(tmp) / "bundle")
        files = {p.name: p.read_bytes() for p in sorted(folder.iterdir())}
    digest = hashlib.sha256(b"".join(files[n] for n in files)).hexdigest()[:16]
    return files, digest


def score_spark(spark, settings: Settings, scorer: Scorer, as_of: pd.Timestamp,
                folder: Path, rule: ReasonsRule | None = None) -> tuple[int, list[str]]:
    """Score every shipment in flight at `as_of` into `folder`, with the reasons of the
    shipments `rule` picks (explained on the driver: they are few); returns (scored, missing
    ids)."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    t_us = int(as_of.value // 1000)
    snapshots = in_flight(spark, Lake(settings.lake_dir), t_us)
    vectors = point_in_time(spark, offline_dir(settings), snapshots).persist(
        StorageLevel.MEMORY_AND_DISK)
    try:
        known = F.col("booked_at_s").isNotNull()
        missing = sorted(r.shipment_id for r in
                         vectors.where(~known).select("shipment_id").collect())
        files, digest = _bundle_files(scorer)
        broadcast = spark.sparkContext.broadcast(files)
        scored = vectors.where(known).mapInPandas(
            score_batches(broadcast, scorer.version, digest, scorer.thresholds),
            spark_schema()).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            explained = _explain(spark, vectors, scored, scorer, rule or ReasonsRule())
            (scored.drop("reasons").join(F.broadcast(explained), "shipment_id", "left")
             .withColumn("reasons", F.coalesce("reasons", F.array().cast("array<string>")))
             .select(*SCORES_SCHEMA.names).write.mode("overwrite").parquet(str(folder)))
        finally:
            scored.unpersist()
        broadcast.unpersist()
    finally:
        vectors.unpersist()
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in Path(folder).glob("*.parquet"))
    return rows, missing


def _explain(spark, vectors, scored, scorer: Scorer, rule: ReasonsRule):
    """(shipment_id, reasons) of the shipments `rule` picks, as `ReasonsRule.pick` orders them."""
    from pyspark.sql import functions as F

    top = (scored.where(F.col("p_late") >= rule.from_p)
           .orderBy(F.desc("p_late"), F.asc("shipment_id")).limit(rule.most)
           .select("shipment_id").collect())
    ids = [r.shipment_id for r in top]
    frame = vectors.where(F.col("shipment_id").isin(ids)).toPandas() if ids else None
    rows = pd.DataFrame({"shipment_id": pd.Series([], dtype=object), "reasons": []})
    if frame is not None and len(frame):
        frame["as_of"] = pd.to_datetime(frame.pop("as_of_us"), unit="us", utc=True)
        frame = with_request_features(frame)
        rows = pd.DataFrame({"shipment_id": frame["shipment_id"].astype(str),
                             "reasons": scorer.reasons_for(frame)})
    return spark.createDataFrame(rows, "shipment_id string, reasons array<string>")
