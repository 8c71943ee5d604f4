"""`shipdelay features build`: lake -> feature tables -> Feast apply -> materialize online.

Full builds replace every offline view; `since` recomputes only the days from `since` on (the
windows still look back before it) and replaces those day folders, for nightly runs. Shipment
progress is backfilled with the very function the streaming updater calls
(`features.transforms.advance_progress`, no prior state, all events).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd

from features import offline as off
from features.schema import TIMESTAMP, VIEWS
from features.store import get_store, offline_dir
from features.tables import build_tables
from features.transforms import advance_progress
from shipdelay.lake import Lake
from shipdelay.settings import Settings, get_settings

PLAN_COLUMNS = ["shipment_id", "n_legs", "booked_at_s", "plan_times_s", "plan_hubs", "plan_modes"]
EVENT_COLUMNS = ["event_id", "shipment_id", "event_type", "leg_index", "event_time",
                 "ingested_at", "hub_id", "note"]
SHIPMENTS_PER_CHUNK = 100_000
ONLINE_WINDOW = timedelta(days=120)  # values older than this are not loaded online


@dataclass
class BuildReport:
    rows: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    online_from: datetime | None = None
    online_to: datetime | None = None


def plans_of(profile: pd.DataFrame) -> pd.DataFrame:
    return profile[PLAN_COLUMNS]


def backfill_progress(events: pd.DataFrame, profile: pd.DataFrame,
                      on_chunk: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """Progress state after every ingestion moment of every shipment (prior = nothing)."""
    if events.empty:
        return advance_progress(None, events, plans_of(profile))
    codes, ids = pd.factorize(events["shipment_id"], sort=True)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(0, len(ids), SHIPMENTS_PER_CHUNK)[1:])
    parts = np.split(order, bounds)
    plans = plans_of(profile)
    plan_codes = pd.Index(ids).get_indexer(plans["shipment_id"])
    out = []
    for k, rows in enumerate(parts, 1):
        batch = events.iloc[rows]
        lo, hi = codes[rows[0]], codes[rows[-1]]
        out.append(advance_progress(None, batch, plans[(plan_codes >= lo) & (plan_codes <= hi)]))
        if on_chunk:
            on_chunk(k, len(parts))
    return pd.concat(out, ignore_index=True)


def build_features(settings: Settings | None = None, since: date | None = None,
                   on_step: Callable[[str, int, int], None] | None = None) -> BuildReport:
    """Build, write, register and materialize every feature view from the lake."""
    settings = settings or get_settings()
    report, lake, target = BuildReport(), Lake(settings.lake_dir), offline_dir(settings)
    step = on_step or (lambda name, done, total: None)
    steps = 4

    t = time.perf_counter()
    step("aggregating the lake", 0, steps)
    tables = build_tables(lake, since=since)
    tables["shipment_profile"] = tables.pop("profile")
    report.seconds["tables"] = time.perf_counter() - t

    t = time.perf_counter()
    step("backfilling shipment progress", 1, steps)
    events = lake.read("tracking_events", columns=EVENT_COLUMNS)
    if since is not None:
        cutoff = pd.Timestamp(since, tz="UTC")
        touched = events.loc[events["ingested_at"] >= cutoff, "shipment_id"].unique()
        events = events[events["shipment_id"].isin(touched)]
    progress = backfill_progress(events, tables["shipment_profile"])
    if since is not None:
        progress = progress[progress[TIMESTAMP] >= cutoff]
        tables["shipment_profile"] = tables["shipment_profile"][
            tables["shipment_profile"][TIMESTAMP] >= cutoff]
    tables["shipment_progress"] = progress
    report.seconds["progress"] = time.perf_counter() - t

    t = time.perf_counter()
    step("writing the offline store", 2, steps)
    for view in VIEWS:
        frame = tables[view]
        report.rows[view] = len(frame)
        (off.replace_days if since is not None else off.replace_view)(target, view, frame)
    report.seconds["write"] = time.perf_counter() - t

    t = time.perf_counter()
    step("applying and materializing", 3, steps)
    from features.repo.definitions import definitions

    store = get_store(settings)
    store.apply(definitions(target))
    end = max(tables[v][TIMESTAMP].max() for v in VIEWS if len(tables[v]))
    end = end.to_pydatetime() + timedelta(seconds=1)
    start = end - ONLINE_WINDOW
    store.materialize(start_date=start, end_date=end)
    report.online_from, report.online_to = start, end
    report.seconds["materialize"] = time.perf_counter() - t
    step("done", steps, steps)
    return report

