"""One shipment, as the cockpit's shipment page shows it: its itinerary (planned vs actual
milestones per leg), its risk over time (the prediction log: every forecast the service, the
stream and the batch gave), its raw events and notes."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds

from shipdelay.parquet_io import dataset

HISTORY_COLUMNS = ["instant", "path", "p_late", "delay_p10_h", "delay_p50_h", "delay_p90_h",
                   "eta", "eta_p10", "eta_p90", "model_version"]


def itinerary(legs: pd.DataFrame, events: pd.DataFrame, names: dict[str, str]) -> pd.DataFrame:
    """One row per leg of `legs` (one shipment's): hubs (names), mode, carrier, planned and
    actual departure and arrival (the first departed/arrived scan of the leg among `events`,
    those ingested by now) and the arrival's slip in hours (actual minus planned; missing until
    it arrived)."""
    first = (events[events["event_type"].isin(["departed", "arrived"])]
             .groupby(["leg_index", "event_type"], observed=True)["event_time"].min()
             .unstack("event_type"))
    legs = legs.sort_values("leg_index").reset_index(drop=True)
    actual = first.reindex(legs["leg_index"].astype("int64").to_numpy())
    out = pd.DataFrame({
        "leg": legs["leg_index"].astype("int64") + 1,
        "from": legs["from_hub"].map(names).fillna(legs["from_hub"]).astype(object),
        "to": legs["to_hub"].map(names).fillna(legs["to_hub"]).astype(object),
        "mode": legs["mode"].astype(object),
        "carrier": legs["carrier_id"].astype(object),
        "planned_departure": legs["planned_departure"],
        "actual_departure": (actual["departed"] if "departed" in actual
                             else pd.Series(pd.NaT, index=actual.index)).to_numpy(),
        "planned_arrival": legs["planned_arrival"],
        "actual_arrival": (actual["arrived"] if "arrived" in actual
                           else pd.Series(pd.NaT, index=actual.index)).to_numpy(),
    })
    for col in ("actual_departure", "actual_arrival"):
        out[col] = pd.to_datetime(out[col], utc=True)
    out["arrival_slip_h"] = ((out["actual_arrival"] - out["planned_arrival"])
                             .dt.total_seconds() / 3600).round(0)
    return out


def events(frame: pd.DataFrame, names: dict[str, str]) -> pd.DataFrame:
    """Tracking events (`scans`), oldest first, with hub names and notes."""
    frame = frame.sort_values(["event_time", "parcel_id"])
    frame["hub"] = frame["hub_id"].map(names).fillna(frame["hub_id"])
    return frame.reset_index(drop=True)


def risk_history(predictions_dir: Path, shipment_id: str,
                 since: date | None = None) -> pd.DataFrame:
    """Every logged forecast of the shipment (all doors), oldest first, one per instant and
    door (a replayed write logs the same forecast twice). `since` (its booking day) leaves the
    log's older days unread: nothing was forecast for it before it was booked."""
    days = sorted(predictions_dir.glob("day=*"))
    if since is not None:
        days = [d for d in days if d.name[4:] >= since.isoformat()]
    files = [f for d in days for f in sorted(d.glob("path=*/part-*.parquet"))]
    if not files:
        return pd.DataFrame(columns=HISTORY_COLUMNS)
    table = dataset(files, partitioning="hive").to_table(
        columns=[c for c in HISTORY_COLUMNS if c != "path"] + ["path"],
        filter=ds.field("shipment_id") == shipment_id)
    frame = table.to_pandas()
    frame["path"] = frame["path"].astype(str)
    return (frame.drop_duplicates(["instant", "path", "model_version"])
            .sort_values("instant").reset_index(drop=True)[HISTORY_COLUMNS])
