"""Statistics and weather rolled forward as their windows close, without a full build.

A statistic stamped `t` uses only what was ingested before `t`, so its row can be computed once
`t` has passed and not before: a feature build writes the rows of the windows closed at its
as-of time (`features.tables.build_tables`), and `roll(settings, until)` adds, incrementally:

1. offline: the rows of every window closing in (offline mark, until] -- daily lane, carrier
   and customer statistics, hourly hub statistics -- and the weather observations ingested in
   it, computed by the very functions of the build on the part of the lake that can change
   them (`lake_slice`), appended as parts `part-roll-<mark>.parquet`;
2. online: for every entity with a row in (online mark, until], its newest row, written in
   Feast's layout (`features.online_direct`); then the online mark moves to `until`.

A window that closes without any new event still gets its row (the hub's counts fall as scans
leave its last 24 hours), so the online store and the offline point-in-time join keep giving
the same value as time passes (`features.instant`). The stream scorer rolls before every
micro-batch whose events pass a window end (`serving.stream`); otherwise run
`shipdelay features roll` on a schedule (e.g. every minute). Rolling is idempotent: rolls
serialize on a lock file, a crashed roll's parts are replaced by the next one, and a roll to an
instant the store has passed changes nothing.
"""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from features import marks
from features import offline as off
from features.online_direct import open_direct
from features.repo.views import TTL
from features.schema import ENTITY_KEYS, TIMESTAMP, VIEW_ENTITY, VIEWS, WINDOW_DAYS
from features.store import PROJECT, offline_dir
from features.tables import (
    DAY_US,
    HOUR_US,
    HUB_WINDOW_H,
    SLIP_WINDOW_D,
    hub_stats,
    hub_weather,
    rolling_stats,
    shipment_profile,
)
from shipdelay import contract
from shipdelay.lake import Lake
from shipdelay.memory import offline_connection
from shipdelay.parquet_io import dataset, sql_source
from shipdelay.settings import Settings

ROLLED_VIEWS = ("lane_stats", "carrier_stats", "customer_stats", "hub_stats", "hub_weather")
_DAILY = {"lane_stats": "lane", "carrier_stats": "carrier", "customer_stats": "customer"}
ROLL_PART = "part-roll-"


@dataclass
class RollReport:
    until: pd.Timestamp
    offline_from: pd.Timestamp | None = None  # None: the offline store was already there
    online_from: pd.Timestamp | None = None
    offline_rows: dict[str, int] = field(default_factory=dict)
    online_rows: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _us(t) -> int:
    ts = pd.Timestamp(t)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.value // 1000)


def _utc(us: int) -> pd.Timestamp:
    return pd.Timestamp(us, unit="us", tz="UTC")


def _read(lake: Lake, table: str, since_us: int | None = None,
          filter: ds.Expression | None = None) -> pd.DataFrame:
    """A lake table (day partitions from `since_us`'s day), or an empty frame of its columns."""
    since = None if since_us is None else _utc(since_us).date()
    if not lake.files(table, since):
        return contract.validate(table, pd.DataFrame({c: [] for c in contract.columns(table)}))
    return lake.read(table, since=since, filter=filter)


# ------------------------------------------------------------------ 1. what changes the windows
def lake_slice(lake: Lake, since_us: int, until_us: int) -> dict[str, pd.DataFrame]:
    """The part of the lake that decides the windows closing in (since, until].

    Scans count in a window from their ingestion, and a milestone's value is its earliest scan
    so far, so a shipment is taken whole (every scan it ever had) when any of its scans was
    ingested late enough to touch a new window: 25 hours before the first new hour end (a
    hub's 24-hour window and its first hour), 8 days before the first new midnight (the 7-day
    departure slip). Shipments left out have all their contributions cancelled before the
    first new window, as in the full build (`features.tables`)."""
    d0, h0 = since_us // DAY_US + 1, since_us // HOUR_US + 1
    lo = min((d0 - SLIP_WINDOW_D - 1) * DAY_US, (h0 - HUB_WINDOW_H - 1) * HOUR_US)
    recent = _read(lake, "tracking_events", lo, ds.field("ingested_at") >= _utc(lo))
    ids = recent["shipment_id"].astype(str).unique().tolist()
    events = recent.iloc[:0]
    if ids:
        events = _read(lake, "tracking_events", filter=ds.field("shipment_id").isin(ids)
                       & (ds.field("ingested_at") < _utc(until_us)))
    legs = _read(lake, "legs", filter=ds.field("shipment_id").isin(ids)) if ids else \
        _read(lake, "legs").iloc[:0]
    outcomes = _read(lake, "outcomes", (d0 - max(WINDOW_DAYS) - 1) * DAY_US)
    scans = _read(lake, "tracking_events") if not lake.exists("tracking_events") else \
        lake.read("tracking_events", columns=["hub_id", "ingested_at"])
    known = (scans.dropna(subset=["hub_id"]).groupby("hub_id", observed=True)["ingested_at"]
             .min().rename("first_seen").reset_index())  # each hub's first scan, whole lake
    return {"events": events, "legs": legs, "outcomes": outcomes, "hubs_known": known}


def _weather(lake: Lake, since_us: int, until_us: int) -> pd.DataFrame:
    """Weather rows that became "the latest" at a moment in (since, until]: the observations
    ingested then, with the older ones that could have been newer than them."""
    if not lake.exists("hub_weather"):
        return pd.DataFrame()
    new = _read(lake, "hub_weather", filter=(ds.field("ingested_at") > _utc(since_us))
                & (ds.field("ingested_at") <= _utc(until_us)))
    if new.empty:
        return pd.DataFrame()
    oldest = new["observed_at"].min()
    rows = _read(lake, "hub_weather", _us(oldest), (ds.field("observed_at") >= oldest)
                 & (ds.field("ingested_at") <= _utc(until_us)))
    out = hub_weather(rows)
    stamp = out[TIMESTAMP]
    return out[(stamp > _utc(since_us)) & (stamp <= _utc(until_us))].reset_index(drop=True)


def compute_rows(lake: Lake, since, until) -> dict[str, pd.DataFrame]:
    """The offline rows of every statistics window closing in (since, until] and of the weather
    ingested in it, equal to what a feature build at `until` gives for those windows."""
    s_us, u_us = _us(since), _us(until)
    d0, d1 = s_us // DAY_US + 1, u_us // DAY_US
    h0, h1 = s_us // HOUR_US + 1, u_us // HOUR_US
    out: dict[str, pd.DataFrame] = {}
    if h0 <= h1 or d0 <= d1:
        part = lake_slice(lake, s_us, u_us)
        if d0 <= d1:
            profile = shipment_profile(_read(lake, "shipments"), _read(lake, "legs"),
                                       _read(lake, "hubs"))
            for view, entity in _DAILY.items():
                out[view] = rolling_stats(entity, part["outcomes"], profile, _utc(d0 * DAY_US),
                                          _utc(d1 * DAY_US), events=part["events"],
                                          legs=part["legs"])
        if h0 <= h1:
            out["hub_stats"] = hub_stats(part["events"], part["legs"], _utc(h0 * HOUR_US),
                                         _utc(h1 * HOUR_US), known=part["hubs_known"])
    weather = _weather(lake, s_us, u_us)
    if len(weather):
        out["hub_weather"] = weather
    return out


# ------------------------------------------------------------------ 2. offline, 3. online
@contextmanager
def _locked(offline: Path):
    """One roll at a time per offline store (processes of this machine)."""
    offline.mkdir(parents=True, exist_ok=True)
    with open(offline / ".roll.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def drop_roll_parts(offline: Path, after_us: int) -> int:
    """Remove rolled parts starting at or after `after_us` (a crashed roll's, or a rebuilt
    range's): their windows are written again by the next roll."""
    removed = 0
    day = _utc(after_us).date()
    for view in ROLLED_VIEWS:
        for folder_day, folder in off.view_days(offline, view):
            if folder_day < day:
                continue
            for part in folder.glob(f"{ROLL_PART}*.parquet"):
                if int(part.stem[len(ROLL_PART):]) >= after_us:
                    part.unlink()
                    removed += 1
    return removed


def newest_rows(offline: Path, view: str, since, until) -> pd.DataFrame:
    """Each entity's newest row of `view` stamped in (since, until] (since None: until minus the
    view's TTL), read from the offline store (with Arrow: its reader decrypts on its own
    threads, see `shipdelay.parquet_io`)."""
    lo = _utc(_us(until)) - TTL[view] if since is None else _utc(_us(since))
    return _newest(offline, view, lo, _utc(_us(until)), inclusive=False)


def newest_between(offline: Path, view: str, start, end) -> pd.DataFrame:
    """Each entity's newest row of `view` stamped in [start, end]: the rows Feast's
    `materialize(start, end)` loads online."""
    lo = _utc(_us(start))
    return _newest(offline, view, lo, _utc(_us(end)), inclusive=True)


# a window of at most this much Parquet is read whole (DuckDB's two passes cost ~60 ms a call
# on a small store); larger ones go through DuckDB, whose memory the budget bounds
WHOLE_WINDOW_BYTES = 64 * 2**20


def _newest(offline: Path, view: str, lo: pd.Timestamp, hi: pd.Timestamp,
            inclusive: bool) -> pd.DataFrame:
    """Each entity's newest row stamped after `lo` (from `lo` on when `inclusive`) up to `hi`."""
    files = off.view_files(offline, view, lo.date(), hi.date())
    if not files:
        return pd.DataFrame()
    key = ENTITY_KEYS[VIEW_ENTITY[view]]
    columns = [key, TIMESTAMP, *VIEWS[view]]
    frame = (_newest_in_duckdb(offline, files, key, columns, lo, hi, inclusive)
             if sum(os.path.getsize(f) for f in files) > WHOLE_WINDOW_BYTES else None)
    if frame is None:  # a small window, or two rows at an entity's newest stamp (the later
        # one, in file order): the window's rows read whole
        after = ds.field(TIMESTAMP) >= lo if inclusive else ds.field(TIMESTAMP) > lo
        frame = dataset(files).to_table(columns=columns,
                                        filter=after & (ds.field(TIMESTAMP) <= hi)
                                        ).to_pandas(ignore_metadata=True)  # lists as arrays
        frame = frame.sort_values(TIMESTAMP, kind="stable").drop_duplicates(key, keep="last")
    frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)
    return frame.reset_index(drop=True)


def _newest_in_duckdb(offline: Path, files: list[str], key: str, columns: list[str],
                      lo: pd.Timestamp, hi: pd.Timestamp, inclusive: bool) -> pd.DataFrame | None:
    """Each key's newest row in the window, found by DuckDB in two passes (the keys' newest
    stamps, then those rows only) within the memory budget: the window's every row in pandas
    was gigabytes at a million shipments. None when a key has two rows at its newest stamp."""
    con = offline_connection(data_dir=offline.parent.parent)
    try:
        source = sql_source(con, files)
        low = f"{TIMESTAMP} {'>=' if inclusive else '>'} '{lo.isoformat()}'::timestamptz"
        con.sql(f"create temp table newest as select {key}, max({TIMESTAMP}) as newest_at "
                f"from {source} where {low} and {TIMESTAMP} <= '{hi.isoformat()}'::timestamptz "
                f"group by {key}")
        # the hash table on the newest stamps, not on the files' rows (an Arrow scan's size
        # is unknown to DuckDB's planner)
        con.sql("set disabled_optimizers = 'build_side_probe_side'")
        cols = ", ".join(f'v."{c}"' for c in columns)
        table = con.sql(f"select {cols} from {source} v semi join newest n on v.{key} = n.{key} "
                        f"and v.{TIMESTAMP} = n.newest_at where v.{low} "
                        f"order by v.{TIMESTAMP}, v.{key}").to_arrow_table()
    finally:
        con.close()
    if len(pc.unique(table.column(key))) != table.num_rows:
        return None
    schema = dataset(files).schema
    return table.cast(pa.schema([schema.field(c) for c in columns])).to_pandas(
        ignore_metadata=True)  # the files' own types, lists as arrays


def write_online(direct, view: str, frame: pd.DataFrame, chunk: int = 50_000) -> None:
    """Write a view's rows online a chunk at a time (each chunk one transaction)."""
    for lo in range(0, len(frame), chunk):
        direct.write(view, frame.iloc[lo:lo + chunk])


def advance_online(direct, offline: Path, since, until) -> dict[str, int]:
    """Write online each entity's newest row stamped in (since, until], then the online mark."""
    rows = {}
    for view in ROLLED_VIEWS:
        frame = newest_rows(offline, view, since, until)
        rows[view] = len(frame)
        write_online(direct, view, frame)
    marks.set_online_mark(direct, until)
    return rows


def reset_online(direct, offline: Path, at) -> dict[str, int]:
    """Put the online rows of the rolled views back to instant `at` (a store rewound to the
    past, `serving.stream_setup`): every entity's row is removed, then each entity's newest
    row at or before `at`, no older than the view's TTL, written; the online mark is `at`."""
    from features.online_direct import RedisOnline, entity_keys

    for view in ROLLED_VIEWS:
        if direct.kind == "sqlite":
            direct.conn.execute(f'DELETE FROM "{PROJECT}_{view}"')
            continue
        from feast.infra.online_stores.helpers import _mmh3

        key = ENTITY_KEYS[VIEW_ENTITY[view]]
        ids = off.read_view(offline, view)[key].astype(str).unique().tolist()
        fields = [_mmh3(f"{view}:{c}") for c in VIEWS[view]] + [f"_ts:{view}".encode()]
        pipe = direct.client.pipeline(transaction=False)
        for k in entity_keys(key, ids):
            pipe.hdel(RedisOnline.redis_key(k), *fields)
        pipe.execute()
    return advance_online(direct, offline, None, at)


def roll(settings: Settings, until=None, *, online: bool = True) -> RollReport:
    """Roll the offline store, then the online store, to `until` (default: now)."""
    until = _utc(_us(until if until is not None else pd.Timestamp.now(tz="UTC")))
    offline, lake = offline_dir(settings), Lake(settings.lake_dir)
    report = RollReport(until)
    if marks.offline_mark(offline) is None:
        raise RuntimeError(f"the feature store at {offline} was never built: run "
                           "`shipdelay features build` first")
    with _locked(offline):
        started = time.perf_counter()
        mark = marks.offline_mark(offline)
        if until > mark:
            report.offline_from = mark
            drop_roll_parts(offline, _us(mark))
            for view, frame in compute_rows(lake, mark, until).items():
                if len(frame):
                    off.write_parts(offline, view, frame, f"roll-{_us(mark)}")
                report.offline_rows[view] = len(frame)
            marks.set_offline_mark(offline, until)
        report.seconds["offline"] = time.perf_counter() - started
        if online:
            started = time.perf_counter()
            direct = open_direct(settings)
            try:
                at = marks.online_mark(direct)
                if at is None or until > at:
                    report.online_from = at
                    report.online_rows = advance_online(direct, offline, at, until)
            finally:
                direct.close()
            report.seconds["online"] = time.perf_counter() - started
    return report


__all__ = ["ROLLED_VIEWS", "RollReport", "advance_online", "compute_rows", "drop_roll_parts",
           "lake_slice", "newest_between", "newest_rows", "roll", "write_online"]
