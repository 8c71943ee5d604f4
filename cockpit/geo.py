"""Where the risk is: at-risk volume per hub (present, or arriving within a horizon) and risk per
lane, for the cockpit's map and for deciding where to send people."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import pandas as pd

AT_RISK = ("high", "medium")
OUTLINES = Path(__file__).parent / "assets" / "outlines.json"


def arrivals(shipments: pd.DataFrame, legs: pd.DataFrame, now: pd.Timestamp,
             horizon_h: float, bands=AT_RISK) -> pd.DataFrame:
    """The at-risk shipments' legs that are planned to arrive at a hub in (now, now + horizon]:
    shipment_id, hub_id (the leg's arrival hub), planned_arrival."""
    risky = shipments.loc[shipments["risk_band"].isin(bands), ["shipment_id"]]
    end = now + pd.Timedelta(hours=horizon_h)
    due = legs[(legs["planned_arrival"] > now) & (legs["planned_arrival"] <= end)]
    out = due.merge(risky, on="shipment_id")[["shipment_id", "to_hub", "planned_arrival"]]
    return out.rename(columns={"to_hub": "hub_id"}).reset_index(drop=True)


def hub_load(shipments: pd.DataFrame, legs: pd.DataFrame, now: pd.Timestamp,
             horizon_h: float, bands=AT_RISK) -> pd.DataFrame:
    """Per hub: at-risk shipments there now (`present`), arriving within the horizon
    (`arriving`, each shipment once per hub) and their union (`volume`, a shipment counted once
    per hub), largest first."""
    risky = shipments[shipments["risk_band"].isin(bands)]
    here = risky[["shipment_id", "current_hub"]].rename(columns={"current_hub": "hub_id"})
    coming = arrivals(shipments, legs, now, horizon_h, bands)[["shipment_id", "hub_id"]]
    coming = coming.drop_duplicates()
    both = pd.concat([here, coming]).dropna().drop_duplicates()
    out = pd.DataFrame({
        "present": here.dropna().groupby("hub_id").size(),
        "arriving": coming.groupby("hub_id").size(),
        "volume": both.groupby("hub_id").size(),
    }).fillna(0).astype(int)
    out.index.name = "hub_id"
    return out.reset_index().sort_values(["volume", "hub_id"], ascending=[False, True],
                                         ignore_index=True)


def lane_risk(shipments: pd.DataFrame) -> pd.DataFrame:
    """Per lane (origin and destination hub): shipments in flight, mean P(late), at-risk count."""
    frame = shipments.dropna(subset=["origin_hub", "destination_hub"])
    frame = frame.assign(risky=frame["risk_band"].isin(AT_RISK).astype(int))
    grouped = frame.groupby(["origin_hub", "destination_hub"], observed=True)
    out = grouped.agg(shipments=("shipment_id", "size"), p_late=("p_late", "mean"),
                      at_risk=("risky", "sum"))
    return out.reset_index().sort_values("p_late", ascending=False, ignore_index=True)


def arriving_by_day(shipments: pd.DataFrame, legs: pd.DataFrame, now: pd.Timestamp,
                    days: int = 7, bands=AT_RISK) -> pd.DataFrame:
    """At-risk shipments arriving per hub per UTC day over the next `days` days: a hub x day
    table of counts (where to deploy people)."""
    due = arrivals(shipments, legs, now, days * 24.0, bands)
    due["day"] = due["planned_arrival"].dt.strftime("%Y-%m-%d")
    table = due.drop_duplicates(["shipment_id", "hub_id", "day"]).pivot_table(
        index="hub_id", columns="day", values="shipment_id", aggfunc="count", fill_value=0)
    table["total"] = table.sum(axis=1)
    return table.sort_values("total", ascending=False).reset_index()


@lru_cache(maxsize=1)
def outlines() -> list[list[tuple[float, float]]]:
    """Coarse continent outlines (lon, lat), drawn by hand to about 5 degrees: a light
    background for the map that needs no tiles and no download."""
    return [[tuple(p) for p in ring] for ring in json.loads(OUTLINES.read_text())["rings"]]
