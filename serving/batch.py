"""`shipdelay score-batch`: every shipment in flight at a cut-off, scored with the champion.

The nightly job operations plan the next day from, and analysts look back over:

1. the cut-off `as_of` (default: the lake's "now", its newest tracking-event ingestion);
2. the champion from the registry (`registry.loader.load_by_alias`), refused unless it was
   trained on the FeatureService the offline path reads;
3. a freshness check: the feature store's newest values at or before the cut-off must be younger
   than `max_feature_age_hours`, or the scores would describe an older world;
4. the shipments in flight at the cut-off: booked at or before it and not known delivered at it
   (no delivered scan ingested at or before it, no outcome delivered at or before it -- the
   outcome counts too, so a shipment whose delivered scans were lost does not stay in flight);
5. their point-in-time features at the cut-off (`training.dataset.point_in_time`, the join
   proven equal to Feast's `get_historical_features` through the FeatureService), so nothing
   ingested after the cut-off is used;
6. `serving.scorer.Scorer.score`, the one scoring path, chunk by chunk, on the champion's
   trees compiled as the service compiles them (`serving.compiled_trees.compiled_for`;
   LightGBM's own when compiling is off or fails);
7. the scores table `<data_dir>/scores/run_date=YYYY-MM-DD/` (Parquet), swapped in whole by
   `serving.partitions.publish`: a rerun replaces the day, a crash keeps the previous one;
8. the reasons computed for the table kept in the online store, where /predict serves them
   while they explain the shipment's state (`serving.reasons_store`; local engine);
9. the summary report and its MLflow run (`serving.batch_report`).

Shipments in flight that the feature store does not know (booked after its last build) are not
scored; they are counted and listed in the report. `engine="spark"` runs steps 4-7 on Apache
Spark (`serving.batch_spark`) with the same scorer.
"""

from __future__ import annotations

import logging
import time as clock
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from features.offline import view_days
from features.online import FeatureServiceMismatch
from features.schema import TIMESTAMP
from features.store import offline_dir
from registry.loader import load_by_alias
from serving import compiled_trees, partitions
from serving.batch_scores import (
    SCORE_COLUMNS,
    SCORES_SCHEMA,
    ReasonsRule,
    scores_frame,
    to_table,
)
from serving.model_holder import check_servable
from serving.scorer import Scorer
from shipdelay.lake import Lake
from shipdelay.parquet_io import duckdb_dataset, read_frame, sql_source
from shipdelay.settings import Settings, get_settings
from training.dataset import point_in_time

log = logging.getLogger(__name__)
DEFAULT_MAX_FEATURE_AGE_H = 24.0
ENGINES = ("local", "spark")
ROWS_PER_FILE = 250_000
# Views whose newest value must be fresh, with the cadence of their rows: a window statistic is
# due at each window end, so it lags only when the last window end before the cut-off is
# missing. (The profile is stamped at booking, and a quiet hour is no staleness: shipments the
# store lacks are reported instead.)
FRESHNESS_VIEWS = {"shipment_progress": None, "lane_stats": "1D", "carrier_stats": "1D",
                   "customer_stats": "1D", "hub_stats": "1h"}
_TS = pa.timestamp("us", tz="UTC")

Step = Callable[[str, int, int], None]
__all__ = [
    "SCORES_SCHEMA",
    "SCORE_COLUMNS",
    "BatchError",
    "BatchResult",
    "Job",
    "StaleFeaturesError",
    "backfill_days",
    "in_flight",
    "in_flight_at",
    "lake_now",
    "read_scores",
    "score_batch",
    "score_days",
    "select_in_flight",
    "select_in_flight_at",
    "utc",
]


class BatchError(RuntimeError):
    """The job cannot run (no lake, no feature store, stale features): nothing was written."""


class StaleFeaturesError(BatchError):
    """The feature store's newest values at the cut-off are older than the allowed age."""


@dataclass
class BatchResult:
    run_date: date
    as_of: pd.Timestamp
    engine: str
    model_version: str
    scored: int
    missing: list[str]  # in flight at the cut-off, unknown to the feature store
    partition: Path
    feature_age_h: dict[str, float]
    seconds: dict[str, float] = field(default_factory=dict)
    bands: dict[str, int] = field(default_factory=dict)
    report_dir: Path | None = None
    run_id: str | None = None
    top: pd.DataFrame | None = None
    reasons: ReasonsRule = field(default_factory=ReasonsRule)  # who got their reasons


def utc(value) -> pd.Timestamp:
    """A UTC timestamp at microseconds (the lake's resolution); naive values are taken as UTC."""
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.floor("us")


def _day_of(path: Path) -> date | None:
    name = path.parent.name
    return date.fromisoformat(name[4:]) if name.startswith("day=") else None


def lake_files(lake: Lake, table: str, until: pd.Timestamp | None = None) -> list[str]:
    """The table's files, without day partitions after `until` (they hold nothing before it)."""
    files = lake.files(table)
    if until is not None:
        files = [f for f in files if (_day_of(f) or date.min) <= until.date()]
    return [str(f) for f in files]


def lake_now(lake: Lake) -> pd.Timestamp:
    """The lake's "now": its newest tracking-event ingestion (the newest day partition holds it)."""
    files = lake.files("tracking_events")
    if not files:
        raise BatchError(f"the lake at {lake.root} has no tracking events: pass --as-of")
    newest = max(_day_of(f) or date.min for f in files)
    last = [str(f) for f in files if (_day_of(f) or date.min) == newest]
    with duckdb.connect() as con:
        value = con.execute(f"select max(ingested_at) from {sql_source(con, last)}").fetchone()[0]
    return utc(value)


def select_in_flight(shipments, events, outcomes, as_of) -> pd.DataFrame:
    """(shipment_id, as_of) of the shipments in flight at `as_of`, sorted by id.

    Inputs are frames or Arrow datasets with the contract's columns (shipments: shipment_id,
    booked_at; events: shipment_id, event_type, ingested_at; outcomes: shipment_id,
    delivered_at). In flight = booked at or before the cut-off and not known delivered at it."""
    return select_in_flight_at(shipments, events, outcomes, [as_of])


def select_in_flight_at(shipments, events, outcomes, cutoffs) -> pd.DataFrame:
    """`select_in_flight` at each of `cutoffs` in one pass over the inputs: (shipment_id, as_of)
    sorted by cut-off, then id. A shipment's first booking and the first moment it is known
    delivered (a delivered scan ingested, an outcome delivered) decide every cut-off at once."""
    times = sorted({utc(t) for t in cutoffs})
    con = duckdb.connect()
    try:
        con.register("s", shipments)
        con.register("e", events)
        con.register("o", outcomes)
        con.register("c", pa.table({"t": pa.array([t.value // 1000 for t in times],
                                                  pa.int64()).cast(_TS)}))
        rows = con.sql("""
            with known as (
                select shipment_id, min(seen) as known_at from (
                    select shipment_id, ingested_at as seen from e where event_type = 'delivered'
                    union all
                    select shipment_id, delivered_at from o) group by shipment_id),
            booked as (select shipment_id, min(booked_at) as booked_at from s
                       where booked_at is not null group by shipment_id)
            select b.shipment_id, c.t from booked b join c on b.booked_at <= c.t
            left join known k using (shipment_id)
            where k.known_at is null or k.known_at > c.t
            order by c.t, b.shipment_id""").to_arrow_table()
    finally:
        con.close()
    out = pd.DataFrame({"shipment_id": rows.column(0).to_pandas().astype(object)})
    out["as_of"] = pd.Series(rows.column(1).to_pandas(), index=out.index).astype(
        "datetime64[ns, UTC]")
    return out


def _empty(columns: dict[str, pa.DataType]) -> pa.Table:
    return pa.table({c: pa.array([], type=t) for c, t in columns.items()})


def in_flight(lake: Lake, as_of) -> pd.DataFrame:
    """The shipments in flight at `as_of`, read from the lake (day partitions after it skipped)."""
    return in_flight_at(lake, [as_of])


def in_flight_at(lake: Lake, cutoffs) -> pd.DataFrame:
    """The shipments in flight at each of `cutoffs` (`select_in_flight_at`), read from the lake
    once (day partitions after the last cut-off skipped)."""
    last = max(utc(t) for t in cutoffs)

    def scan(table: str, columns: dict[str, pa.DataType]):
        files = lake_files(lake, table, last)
        return duckdb_dataset(files) if files else _empty(columns)  # DuckDB scans it

    return select_in_flight_at(
        scan("shipments", {"shipment_id": pa.string(), "booked_at": _TS}),
        scan("tracking_events", {"shipment_id": pa.string(), "event_type": pa.string(),
                                 "ingested_at": _TS}),
        scan("outcomes", {"shipment_id": pa.string(), "delivered_at": _TS}), cutoffs)


def feature_watermarks(offline: Path, as_of) -> dict[str, pd.Timestamp | None]:
    """Each view's newest value at or before `as_of` (None when it has none).

    A view's rows sit in one folder per UTC day of their timestamp, so the newest day folders
    up to the cut-off's are read, newest first, until one has a value."""
    t = utc(as_of)
    out: dict[str, pd.Timestamp | None] = {}
    with duckdb.connect() as con:
        for view in FRESHNESS_VIEWS:
            out[view] = None
            for _, day in reversed([d for d in view_days(offline, view) if d[0] <= t.date()]):
                files = [str(f) for f in day.glob("part-*.parquet")]
                if not files:
                    continue
                value = con.execute(f"select max({TIMESTAMP}) from {sql_source(con, files)} "
                                    f"where {TIMESTAMP} <= $t",
                                    {"t": t.to_pydatetime()}).fetchall()[0][0]
                if value is not None:
                    out[view] = utc(value)
                    break
    return out


def check_freshness(offline: Path, as_of, max_age_h: float) -> dict[str, float]:
    """Hours each view lags behind the cut-off (a window statistic: behind the last window end
    before it); raises StaleFeaturesError when any lags more than `max_age_h`."""
    t = utc(as_of)
    marks = feature_watermarks(offline, t)
    ages = {}
    for view, mark in marks.items():
        if mark is None and FRESHNESS_VIEWS[view] is not None and not view_days(offline, view):
            continue  # statistics of no entity at all (a lake without customers or carriers)
        due = t if FRESHNESS_VIEWS[view] is None else t.floor(FRESHNESS_VIEWS[view])
        ages[view] = np.inf if mark is None else max(0.0, (due - mark).total_seconds() / 3600)
    stale = {v: a for v, a in ages.items() if a > max_age_h}
    if stale:
        said = ", ".join(f"{v} {'has nothing' if np.isinf(a) else f'lags {a:,.1f} h'}"
                         for v, a in stale.items())
        raise StaleFeaturesError(
            f"features at the cut-off {t:%Y-%m-%d %H:%M:%S} UTC are older than "
            f"{max_age_h:g} h: {said}. Run `shipdelay features build` (and keep the stream "
            "scorer running), or raise --max-feature-age-hours.")
    return ages


def score_local(offline: Path, snapshots: pd.DataFrame, scorer: Scorer, folder: Path,
                step: Step, rows_per_file: int = ROWS_PER_FILE,
                rule: ReasonsRule | None = None,
                log_to: Path | None = None, kept: list | None = None) -> tuple[int, list[str]]:
    """Point-in-time features, scores, then the reasons of the shipments `rule` picks; written
    `rows_per_file` shipments at a time. With `log_to`, each chunk's predictions and feature
    vectors also go to the prediction log there (`monitoring.prediction_log`; a failed write
    is logged, the scores are written all the same). `kept` receives the reasons with what
    they explain (`serving.reasons_store` records), for the online store."""
    step("joining point-in-time features", 0, 1)
    vectors = point_in_time(offline, snapshots)
    known = vectors["booked_at_s"].notna().to_numpy()
    missing = sorted(vectors.loc[~known, "shipment_id"].astype(str))
    if not known.all():  # a copy of a million rows costs seconds: only when some are unknown
        vectors = vectors[known].reset_index(drop=True)
    if not vectors["shipment_id"].is_monotonic_increasing:  # the join's order at one cut-off
        vectors = vectors.sort_values("shipment_id", ignore_index=True)
    chunks = max(1, -(-len(vectors) // rows_per_file))
    parts = []
    with ThreadPoolExecutor(1, thread_name_prefix="prediction-log") as logger:
        for i in range(chunks):
            step("scoring", i, chunks)
            part = vectors.iloc[i * rows_per_file:(i + 1) * rows_per_file]
            parts.append(scores_frame(scorer, part, reasons=False))
            if log_to is not None:  # written while the next chunk scores (Parquet's encoder
                # leaves the interpreter); the job ends after the log is complete
                from monitoring.prediction_log import log_now

                logger.submit(log_now, log_to, "batch", parts[-1], part, part["as_of"],
                              notes=scorer.with_notes)
        scores = pd.concat(parts, ignore_index=True)  # chunks >= 1: an empty frame scores empty
        step("explaining the riskiest", 0, 1)
        explain = (rule or ReasonsRule()).pick(scores["p_late"].to_numpy(),
                                               scores["shipment_id"].to_numpy())
        reasons = scores["reasons"].tolist()
        records = scorer.explain(vectors, explain)
        for at, record in zip(explain.tolist(), records):
            reasons[at] = list(record.words)
        scores["reasons"] = reasons
        if kept is not None:
            kept.extend(records)
        for i in range(chunks):
            step("writing", i, chunks)
            partitions.write_part(
                to_table(scores.iloc[i * rows_per_file:(i + 1) * rows_per_file]), folder, i)
        step("writing", chunks, chunks)
    return len(vectors), missing


@dataclass
class Job:
    """What every day of a run shares: settings, the champion, the engine."""

    settings: Settings
    scorer: Scorer
    engine: str = "local"
    max_feature_age_h: float = DEFAULT_MAX_FEATURE_AGE_H
    top: int = 20
    spark: object | None = None  # a SparkSession for engine "spark"
    log_run: bool = True
    rows_per_file: int = ROWS_PER_FILE
    # reasons for the shipments with P(late) at least this (None: the high-risk band), the
    # riskiest `reasons_most` of them (see batch_scores.ReasonsRule)
    reasons_from: float | None = None
    reasons_most: int = ReasonsRule.most
    step: Step = lambda name, done, total: None

    @classmethod
    def open(cls, settings: Settings | None = None, **options) -> Job:
        """Check the lake and the feature store exist, load the champion (NoChampionError)."""
        settings = settings or get_settings()
        if not Lake(settings.lake_dir).exists("shipments"):
            raise BatchError(f"no lake at {settings.lake_dir}: run `shipdelay simulate` or "
                             "`shipdelay ingest` first")
        if not (offline_dir(settings) / "shipment_progress").exists():
            raise BatchError(f"no feature store at {offline_dir(settings)}: run "
                             "`shipdelay features build` first")
        bundle = load_by_alias(settings)
        try:  # trained on the FeatureService the offline path reads?
            check_servable(bundle, None)
        except FeatureServiceMismatch as err:
            raise BatchError(f"the champion cannot be scored: {err}") from err
        if options.get("engine", "local") == "local":  # Spark's executors load the files
            bundle = compiled_trees.compiled_for(settings, bundle)
        return cls(settings, Scorer(bundle), **options)

    @property
    def reasons(self) -> ReasonsRule:
        """Which shipments get their reasons."""
        return ReasonsRule(self.scorer.thresholds.high if self.reasons_from is None
                           else self.reasons_from, self.reasons_most)

    def run(self, as_of=None) -> BatchResult:
        """Score one cut-off (default: the lake's now) into its run-date partition."""
        from serving import batch_report

        lake, offline = Lake(self.settings.lake_dir), offline_dir(self.settings)
        t = utc(as_of) if as_of is not None else lake_now(lake)
        seconds: dict[str, float] = {}
        started = clock.perf_counter()
        self.step("checking feature freshness", 0, 1)
        ages = check_freshness(offline, t, self.max_feature_age_h)
        self.step("selecting shipments in flight", 0, 1)
        snapshots = in_flight(lake, t) if self.engine == "local" else None
        seconds["select"] = clock.perf_counter() - started
        kept: list = []
        with partitions.publish(self.settings.scores_dir, t.date()) as folder:
            if self.engine == "local":
                scored, missing = score_local(offline, snapshots, self.scorer, folder, self.step,
                                              self.rows_per_file, self.reasons,
                                              self.settings.predictions_dir
                                              if self.settings.prediction_log else None, kept)
            else:
                from serving.batch_spark import score_spark

                self.step("scoring on Spark", 0, 1)
                scored, missing = score_spark(self.spark, self.settings, self.scorer, t, folder,
                                              self.reasons)
        seconds["score"] = clock.perf_counter() - started - seconds["select"]
        if kept:
            self.step("keeping the reasons online", 0, 1)
            keep_online(self.settings, kept)
        result = BatchResult(t.date(), t, self.engine, self.scorer.version, scored, missing,
                             partitions.partition_path(self.settings.scores_dir, t.date()),
                             ages, seconds, reasons=self.reasons)
        self.step("writing the report", 0, 1)
        batch_report.finish(self.settings, result, self.top, self.scorer.thresholds,
                            log_run_to_mlflow=self.log_run)
        result.seconds["total"] = clock.perf_counter() - started
        return result


def keep_online(settings: Settings, records: list) -> int:
    """Keep the batch's reasons in the online store, where /predict serves them while they
    explain the shipment's state (`serving.reasons_store`; a shipment's record for a later
    instant, the stream's, stays). A store that cannot be written is logged, never fatal: the
    service computes what it does not find. Returns how many were written."""
    from features.online_direct import open_direct
    from features.store import feast_dir
    from serving.reasons_store import OnlineReasons

    if settings.online_store == "sqlite" and not (feast_dir(settings) / "online.db").exists():
        return 0  # no online store to keep them in (never materialized here)
    try:
        online = open_direct(settings)
        try:
            return OnlineReasons.of_direct(online).write(records)
        finally:
            online.close()
    except Exception as err:  # noqa: BLE001 - the scores are written; reasons are a speed-up
        log.warning("the batch's reasons were not kept in the online store: %s", err)
        return 0


def backfill_days(start: date, end: date, at: time = time(0, 0)) -> list[pd.Timestamp]:
    """The cut-offs of a backfill: `at` (UTC) on each day from start to end inclusive."""
    if end < start:
        raise ValueError(f"--to {end} is before --from {start}")
    return [utc(datetime.combine(start + timedelta(days=i), at))
            for i in range((end - start).days + 1)]


def score_batch(settings: Settings | None = None, as_of=None, **options) -> BatchResult:
    """One nightly run: see the module docstring. Options are `Job` fields."""
    return Job.open(settings, **options).run(as_of)


def score_days(settings: Settings, cutoffs: list, *, engine: str = "local",
               spark_master: str | None = None, **options) -> list[BatchResult]:
    """Score each cut-off (None = the lake's now) into its own partition, in order.

    The champion is loaded once (NoChampionError before any work); with engine "spark" one
    SparkSession on `spark_master` (default `settings.spark_master`) serves every day."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    job = Job.open(settings, engine=engine, **options)
    if engine == "spark" and job.spark is None:
        from serving.batch_spark import spark_session

        job.step("starting Spark", 0, 1)
        job.spark = spark_session(spark_master or settings.spark_master)
        try:
            return [job.run(t) for t in cutoffs]
        finally:
            job.spark.stop()
    return [job.run(t) for t in cutoffs]


def read_scores(settings: Settings, day: date | None = None) -> pd.DataFrame:
    """The scores table (one run date, or all), with its run_date partition column."""
    root = settings.scores_dir
    path = partitions.partition_path(root, day) if day is not None else root
    frame = read_frame(path)
    if day is not None:
        frame["run_date"] = day.isoformat()
    return frame
