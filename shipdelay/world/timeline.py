"""A simulated world's lake as it stood at an earlier instant: time passing, for the loop.

A simulation writes the whole history up to the world's "now" at once. The retraining loop
must be shown day after day, each night seeing only what had arrived by then; `lake_until`
writes that lake: shipments booked, scans ingested, outcomes delivered, weather ingested,
rejects and ceiling snapshots made by `until`, and the plans (legs, milestone plans) of the
shipments kept. Hubs are the static network.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from shipdelay import contract
from shipdelay.lake import Lake

# when a row of each table could first be known; None: kept with its shipment, or static
KNOWN_FROM = {"shipments": "booked_at", "tracking_events": "ingested_at",
              "outcomes": "delivered_at", "hub_weather": "ingested_at", "ceiling": "as_of",
              "rejects": "rejected_at", "legs": None, "milestone_plans": None, "hubs": None}


def lake_until(source: Lake, link: Path | str, until) -> dict[str, int]:
    """Write at `link` (swapped in atomically) the part of `source` known at `until`; returns
    the rows written per table."""
    until = pd.Timestamp(until)
    until = until.tz_localize("UTC") if until.tzinfo is None else until.tz_convert("UTC")
    rows: dict[str, int] = {}
    kept: pd.Series | None = None
    with Lake.rewrite(link) as lake:
        for table in contract.SCHEMAS:
            if table not in KNOWN_FROM or not source.exists(table):
                continue
            frame = source.read(table)
            column = KNOWN_FROM[table]
            if column is not None and column in frame.columns:
                frame = frame[frame[column] <= until]
            elif "shipment_id" in frame.columns and kept is not None:
                frame = frame[frame["shipment_id"].isin(kept)]
            if table == "shipments":
                kept = frame["shipment_id"]
            if len(frame):
                rows[table] = lake.append(table, frame.reset_index(drop=True), validated=True)
    return rows
