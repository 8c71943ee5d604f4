"""Training sets: every shipment looked at when booked, after each milestone and at clock ticks
while in flight (`shipdelay.snapshots`: silent moments, as serving is asked), joined point in
time with the features it would have had then, weighted and labelled from its outcome.

The fast path joins the offline feature tables with DuckDB ASOF joins under the exact rules of
Feast's `get_historical_features` (latest value at or before the snapshot, no older than the
view's TTL); `feast_features` runs Feast itself on a sample, and a test proves the two equal.
The nightly batch job uses the same join with one snapshot per in-flight shipment at the cut-off.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from features.offline import view_files, view_glob
from features.repo.views import TTL
from features.request_time import REQUEST_TIME, request_features
from features.schema import (
    FEATURE_SERVICE,
    MODEL_FEATURES,
    SHIPMENT_PROFILE,
    SHIPMENT_PROGRESS,
    TIMESTAMP,
    VIEWS,
    model_feature_names,
)
from shipdelay.lake import Lake, from_arrow
from shipdelay.parquet_io import sql_source
from shipdelay.snapshots import DEFAULT_TICKS, TickRule, snapshot_times

KEYS = ["shipment_id", "lane_id", "carrier_id", "customer_id", "hub_id"]
SNAPSHOT_EXTRAS = ("milestone", "weight")  # what a snapshot row says besides shipment and time
_STATS = {"lane_stats": "lane_id", "carrier_stats": "carrier_id",
          "customer_stats": "customer_id", "hub_stats": "hub_id",
          "hub_weather": "hub_id"}


def training_snapshots(lake: Lake, ticks: TickRule = DEFAULT_TICKS) -> pd.DataFrame:
    """(shipment_id, as_of, milestone, weight) for every delivered shipment, by the shared rule
    (the one the simulator's ceiling uses too, so both are at the same instants)."""
    shipments = lake.read("shipments", columns=["shipment_id", "booked_at"])
    events = lake.read("tracking_events", columns=["shipment_id", "event_type", "leg_index",
                                                   "ingested_at"])
    outcomes = lake.read("outcomes", columns=["shipment_id", "delivered_at"])
    shipments = shipments[shipments["shipment_id"].isin(outcomes["shipment_id"])]
    return snapshot_times(shipments, events, outcomes, ticks)


def _cols(alias: str, names) -> str:
    return ", ".join(f'{alias}."{c}"' for c in names)


SNAPSHOTS_PER_CHUNK = 1_000_000  # joined at a time, so memory stays bounded at any size
DUCKDB_MEMORY = "3GB"  # DuckDB spills to disk beyond this


def point_in_time(offline: Path, snapshots: pd.DataFrame,
                  finish: Callable[[pd.DataFrame], pd.DataFrame] | None = None) -> pd.DataFrame:
    """Features of each (shipment_id, as_of) snapshot as known at as_of, plus the entity keys.

    `finish` runs on each chunk before the chunks are put together (e.g. labels and column
    selection), so the full-width intermediate never exists for the whole set at once.
    """
    finish = finish or (lambda frame: frame)
    if len(snapshots) <= SNAPSHOTS_PER_CHUNK or snapshots["as_of"].nunique() == 1:
        # one cut-off: every chunk would read and reduce the whole store again, and the joined
        # result is as large either way
        return finish(_point_in_time(offline, snapshots))
    # whole shipments per chunk: every join is per shipment or per (key, time)
    codes, _ = pd.factorize(snapshots["shipment_id"], sort=True)
    order = np.argsort(codes, kind="stable")
    per = max(1, int(codes.max() + 1) * SNAPSHOTS_PER_CHUNK // len(snapshots))
    bounds = np.searchsorted(codes[order], np.arange(per, codes.max() + 1, per))
    return pd.concat([finish(_point_in_time(offline, snapshots.iloc[rows]))
                      for rows in np.split(order, bounds) if len(rows)], ignore_index=True)


_PROFILE_READ = [c for c in SHIPMENT_PROFILE if c not in ("plan_times_s", "plan_hubs",
                                                           "plan_modes", "plan_feeds",
                                                           "plan_steps")]
# the columns the join reads from each view, besides its key and timestamp (and blanks when
# stale)
_READ = {"shipment_profile": _PROFILE_READ, "shipment_progress": list(SHIPMENT_PROGRESS),
         **{v: MODEL_FEATURES[v] for v in _STATS}}


def _latest_at(con, offline: Path, view: str, cutoff: pd.Timestamp) -> str:
    """SQL of each key's latest row of `view` at or before one cut-off: what the as-of join takes
    for every snapshot at that cut-off, found in one pass, so plain joins can follow. Only the
    columns the join reads, and only the day folders within the view's TTL before the cut-off
    (an older row would be blanked as stale)."""
    key = _STATS.get(view, "shipment_id")
    files = view_files(offline, view, (cutoff - TTL[view]).date(), cutoff.date())
    source = (sql_source(con, files) if files else  # nothing in the window: no rows
              f"(select * from {sql_source(con, view_glob(offline, view))} where false)")
    return (f"(select {key}, {TIMESTAMP}, {_cols(view, _READ[view])} from {source} as {view} "
            f"where {TIMESTAMP} <= '{cutoff.isoformat()}'::timestamptz qualify "
            f"row_number() over (partition by {key} order by {TIMESTAMP} desc) = 1)")


def _point_in_time(offline: Path, snapshots: pd.DataFrame) -> pd.DataFrame:
    con = duckdb.connect()
    try:
        spill = offline.parent / "tmp"
        spill.mkdir(parents=True, exist_ok=True)
        con.sql(f"set memory_limit = '{DUCKDB_MEMORY}'")
        con.sql(f"set temp_directory = '{spill}'")
        con.sql("set preserve_insertion_order = false")
        carried = [c for c in SNAPSHOT_EXTRAS if c in snapshots]  # kept through the join
        con.register("snaps", snapshots[["shipment_id", "as_of", *carried]])
        cutoffs = snapshots["as_of"].unique()
        one = len(cutoffs) == 1
        for view in VIEWS:
            source = (_latest_at(con, offline, view, pd.Timestamp(cutoffs[0])) if one
                      else sql_source(con, view_glob(offline, view)))
            con.sql(f"create view {view} as select * from {source}")

        def join(view: str, alias: str, on: str, snapshot: str) -> str:
            # at one cut-off each view holds at most one row per key, the one the as-of join
            # would take: a hash join finds it three times faster
            if one:
                return f"left join {view} {alias} on {on}"
            return f"asof left join {view} {alias} on {on} and {alias}.{TIMESTAMP} <= {snapshot}"

        stats_cols = ", ".join(f"{v}.{TIMESTAMP} as {v}__ts, " + _cols(v, _READ[v])
                               for v in _STATS)
        stats_joins = "\n".join(join(v, v, f"{v}.{key} = k.{key}", "k.as_of")
                                for v, key in _STATS.items())
        query = f"""
        with k as (
            select s.shipment_id, s.as_of, {_cols('s', carried) + ',' if carried else ''}
                   {_cols('p', _PROFILE_READ)},
                   p.{TIMESTAMP} as shipment_profile__ts,
                   g.{TIMESTAMP} as shipment_progress__ts,
                   {_cols('g', SHIPMENT_PROGRESS)},
                   coalesce(g.current_hub, p.origin_hub) as hub_id
            from snaps s
            {join("shipment_profile", "p", "p.shipment_id = s.shipment_id", "s.as_of")}
            {join("shipment_progress", "g", "g.shipment_id = s.shipment_id", "s.as_of")}
        )
        select k.*, {stats_cols}
        from k
        {stats_joins}
        """
        frame = from_arrow(con.sql(query).to_arrow_table())  # Arrow-backed strings: compact
    finally:
        con.close()
    frame["as_of"] = pd.to_datetime(frame["as_of"], utc=True)
    _apply_ttl(frame)
    frame[REQUEST_TIME] = frame["as_of"].dt.as_unit("ns").astype("int64") / 1e9
    for name, values in request_features(frame["booked_at_s"], frame["promised_at_s"],
                                         frame["planned_arrival_s"], frame["last_event_s"],
                                         frame["next_planned_s"], frame[REQUEST_TIME]).items():
        frame[name] = values
    return frame


def _apply_ttl(frame: pd.DataFrame) -> None:
    """Blank a view's values that are older than its TTL at the snapshot, as Feast does."""
    for view, cols in _READ.items():
        ts = pd.to_datetime(frame.pop(f"{view}__ts"), utc=True)
        fresh = ts.notna() & (ts >= frame["as_of"] - TTL[view])
        if not fresh.all():  # column by column: `where` on Arrow strings is a vector operation
            for c in cols:
                frame[c] = frame[c].where(fresh)


def build_training_set(lake: Lake, offline: Path, snapshots: pd.DataFrame | None = None,
                       ticks: TickRule = DEFAULT_TICKS) -> pd.DataFrame:
    """Snapshots (by default `training_snapshots` with `ticks`) with their point-in-time
    features, snapshot label and weight, and labels (is_late, delay_hours)."""
    snapshots = training_snapshots(lake, ticks) if snapshots is None else snapshots
    outcomes = lake.read("outcomes", columns=["shipment_id", "is_late", "delay_hours",
                                              "delivered_at"])
    keep = list(dict.fromkeys(
        ["shipment_id", "as_of", *SNAPSHOT_EXTRAS, *KEYS[1:], *model_feature_names(), "is_late",
         "delay_hours",
         "delivered_at", "booked_at_s", "promised_at_s", "last_event_s", "delivered",
         REQUEST_TIME]))

    def label(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.merge(outcomes, on="shipment_id", how="inner")
        return frame[[c for c in keep if c in frame]]

    return in_snapshot_order(point_in_time(offline, snapshots, finish=label))


def in_snapshot_order(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows sorted by shipment, instant and snapshot label and weight: the joins (DuckDB in
    parallel, without insertion order) and the chunks return rows in an order that changes from
    build to build, and LightGBM's bagging picks rows by position, so the same lake would train
    a different model each time. Rows equal in all of these are equal in every column."""
    keys = [c for c in ("shipment_id", "as_of", *SNAPSHOT_EXTRAS) if c in frame]
    return frame.sort_values(keys, kind="stable", ignore_index=True)


def feast_features(store, rows: pd.DataFrame) -> pd.DataFrame:
    """The reference path: Feast's get_historical_features through the FeatureService.

    `rows` carries the entity keys (KEYS), `as_of` and request_time_s, e.g. a fast-path frame.
    """
    entity_df = rows[KEYS + ["as_of"]].rename(columns={"as_of": "event_timestamp"})
    # the request time of each row, computed independently of the fast path
    entity_df[REQUEST_TIME] = [t.timestamp() for t in entity_df["event_timestamp"]]
    service = store.get_feature_service(FEATURE_SERVICE)
    return store.get_historical_features(entity_df=entity_df, features=service).to_df()

