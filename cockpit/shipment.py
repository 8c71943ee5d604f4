"""One shipment, as the cockpit's shipment page shows it: its itinerary (planned vs actual
milestones per leg), its risk over time (the prediction log: every forecast the service, the
stream and the batch gave), its raw events and notes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds

from shipdelay.lake import Lake
from shipdelay.parquet_io import dataset

HISTORY_COLUMNS = ["instant", "path", "p_late", "delay_p10_h", "delay_p50_h", "delay_p90_h",
                   "eta", "eta_p10", "eta_p90", "model_version"]


def _one(lake: Lake, table: str, shipment_id: str, columns: list[str]) -> pd.DataFrame:
    if not lake.exists(table):
        return pd.DataFrame(columns=columns)
    return lake.read(table, columns=columns, filter=ds.field("shipment_id") == shipment_id)


def scans(lake: Lake, shipment_id: str, now: pd.Timestamp) -> pd.DataFrame:
    """Its tracking events ingested by `now` (read once for the itinerary and the events)."""
    frame = _one(lake, "tracking_events", shipment_id, ["event_time", "ingested_at",
                                                        "event_type", "hub_id", "leg_index",
                                                        "parcel_id", "note"])
    return frame[frame["ingested_at"] <= now]


def itinerary(lake: Lake, shipment_id: str, events: pd.DataFrame,
              names: dict[str, str]) -> pd.DataFrame:
    """One row per leg: hubs (names), mode, carrier, planned and actual departure and arrival
    (the first departed/arrived scan of the leg among `events`, see `scans`) and the arrival's
    slip in hours (actual minus planned; missing until it arrived)."""
    legs = _one(lake, "legs", shipment_id, ["leg_index", "mode", "carrier_id", "from_hub",
                                           "to_hub", "planned_departure", "planned_arrival"])
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


def risk_history(predictions_dir: Path, shipment_id: str) -> pd.DataFrame:
    """Every logged forecast of the shipment (all doors), oldest first, one per instant and
    door (a replayed write logs the same forecast twice)."""
    files = sorted(predictions_dir.glob("day=*/path=*/part-*.parquet"))
    if not files:
        return pd.DataFrame(columns=HISTORY_COLUMNS)
    table = dataset(files, partitioning="hive").to_table(
        columns=[c for c in HISTORY_COLUMNS if c != "path"] + ["path"],
        filter=ds.field("shipment_id") == shipment_id)
    frame = table.to_pandas()
    frame["path"] = frame["path"].astype(str)
    return (frame.drop_duplicates(["instant", "path", "model_version"])
            .sort_values("instant").reset_index(drop=True)[HISTORY_COLUMNS])


def promised(lake: Lake, shipment_id: str) -> dict:
    """Its booking facts: customer, service level, origin, destination, booked and promised."""
    frame = _one(lake, "shipments", shipment_id, ["customer_id", "service_level", "origin_hub",
                                                  "destination_hub", "booked_at", "promised_at",
                                                  "weight_kg", "parcel_count"])
    return frame.iloc[0].to_dict() if len(frame) else {}
