"""The lake's rows of the shipments in flight, read once per nightly run: their booking facts,
legs and tracking events (ingested by the lake's now). The Now list takes each shipment's
context from them (current hub, hubs ahead) and a shipment page its facts, itinerary and events,
without reading the lake again; a shipment not in flight (delivered, or booked after the run)
is read from the lake when its page is asked for."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import pyarrow.dataset as ds

from shipdelay.lake import Lake

FACTS = ["shipment_id", "customer_id", "service_level", "origin_hub", "destination_hub",
         "booked_at", "promised_at", "weight_kg", "parcel_count"]
LEGS = ["shipment_id", "leg_index", "mode", "carrier_id", "from_hub", "to_hub",
        "planned_departure", "planned_arrival"]
EVENTS = ["shipment_id", "event_time", "ingested_at", "event_type", "hub_id", "leg_index",
          "parcel_id", "note"]


def _read(lake: Lake, table: str, columns: list[str], wanted) -> pd.DataFrame:
    if not lake.exists(table):
        return pd.DataFrame(columns=columns)
    frame = lake.read(table, columns=columns, filter=wanted)
    return frame.astype({"shipment_id": object})


def _index(frame: pd.DataFrame) -> dict:
    return frame.groupby("shipment_id", sort=False).indices if len(frame) else {}


@dataclass
class InFlight:
    """Facts (one row per shipment), legs and events of a set of shipments, with row lookups."""

    facts: pd.DataFrame
    legs: pd.DataFrame
    events: pd.DataFrame
    _at: dict = field(default_factory=dict)

    def __post_init__(self):
        self._at = {"facts": _index(self.facts), "legs": _index(self.legs),
                    "events": _index(self.events)}

    def __contains__(self, shipment_id: str) -> bool:
        return shipment_id in self._at["facts"]

    def rows(self, part: str, shipment_id: str) -> pd.DataFrame:
        """The rows of one shipment in `part` ("facts", "legs" or "events")."""
        frame = getattr(self, part)
        at = self._at[part].get(shipment_id)
        return frame.iloc[at] if at is not None else frame.iloc[0:0]

    def context(self) -> pd.DataFrame:
        """Per shipment: customer, origin, destination, service level, promised time and the hub
        of its newest scan (its current or last known hub; the origin before any scan)."""
        scans = self.events[self.events["hub_id"].notna()]
        last = (scans.sort_values(["shipment_id", "event_time"])
                .drop_duplicates("shipment_id", keep="last")[["shipment_id", "hub_id"]]
                .rename(columns={"hub_id": "current_hub"}))
        out = self.facts[["shipment_id", "customer_id", "origin_hub", "destination_hub",
                          "service_level", "promised_at"]].merge(last, on="shipment_id",
                                                                 how="left")
        out["current_hub"] = out["current_hub"].astype(object).fillna(
            out["origin_hub"].astype(object))
        return out


def _read_all(lake: Lake, wanted: ds.Expression, now: pd.Timestamp) -> InFlight:
    facts = _read(lake, "shipments", FACTS, wanted).drop_duplicates("shipment_id")
    legs = _read(lake, "legs", LEGS, wanted).astype({"to_hub": object})
    events = _read(lake, "tracking_events", EVENTS, wanted)
    if len(events):
        events = events[events["ingested_at"] <= now]
    return InFlight(facts.reset_index(drop=True), legs.reset_index(drop=True),
                    events.reset_index(drop=True))


def read(lake: Lake, ids: list[str], now: pd.Timestamp) -> InFlight:
    """The facts, legs and events (ingested by `now`) of `ids`: one pass over each table."""
    return _read_all(lake, ds.field("shipment_id").isin(list(ids)), now)


def read_one(lake: Lake, shipment_id: str, now: pd.Timestamp) -> InFlight:
    """The same for one shipment (the page of a shipment that is not in flight)."""
    return _read_all(lake, ds.field("shipment_id") == shipment_id, now)
