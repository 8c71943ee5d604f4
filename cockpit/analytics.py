"""Analytics for managers: what happened to delivered shipments (late rate, delay, penalties
paid) by customer, lane, carrier and market (origin region to destination region), week by week
with a trend, and carrier scorecards that put the past next to the risk in flight now."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.dataset as ds

from cockpit.money import Penalties
from shipdelay.lake import Lake

DIMENSIONS = {"customer": "Customer", "lane": "Lane", "carrier": "Carrier", "market": "Market"}
TREND_WEEKS = 4


def delivered(lake: Lake, hubs: pd.DataFrame, penalties: Penalties, now: pd.Timestamp,
              weeks: int = 12) -> pd.DataFrame:
    """Shipments delivered in the `weeks` weeks before `now`, one row each: week (its Monday),
    customer, lane and market (hub and region names), carrier (of its longest planned leg),
    late, delay hours and the penalty it cost."""
    start = now - pd.Timedelta(weeks=weeks)
    out = lake.read("outcomes", columns=["shipment_id", "delivered_at", "delay_hours", "is_late"],
                    filter=ds.field("delivered_at") > start.to_pydatetime())
    out = out[out["delivered_at"] <= now]
    wanted = ds.field("shipment_id").isin(out["shipment_id"].astype(str).tolist())
    ships = lake.read("shipments", columns=["shipment_id", "customer_id", "service_level",
                                            "origin_hub", "destination_hub"], filter=wanted)
    legs = lake.read("legs", columns=["shipment_id", "carrier_id", "planned_departure",
                                      "planned_arrival"], filter=wanted)
    legs["span"] = legs["planned_arrival"] - legs["planned_departure"]
    main = legs.sort_values(["shipment_id", "span"]).drop_duplicates("shipment_id", keep="last")
    frame = (out.merge(ships, on="shipment_id", how="left")
             .merge(main[["shipment_id", "carrier_id"]], on="shipment_id", how="left"))
    names = dict(zip(hubs["hub_id"], hubs["label"]))
    regions = dict(zip(hubs["hub_id"], hubs["region"]))
    origin, dest = frame["origin_hub"].astype(object), frame["destination_hub"].astype(object)
    late = frame["is_late"].astype(bool).to_numpy()
    hours = np.clip(frame["delay_hours"].to_numpy(dtype=float), 0, None)
    per_late, per_hour = penalties.terms(frame["customer_id"].astype(object),
                                         frame["service_level"].astype(object))
    day = frame["delivered_at"].dt.tz_convert("UTC").dt.tz_localize(None).dt.normalize()
    return pd.DataFrame({
        "shipment_id": frame["shipment_id"].astype(str),
        "week": (day - pd.to_timedelta(day.dt.weekday, unit="D")).dt.strftime("%Y-%m-%d"),
        "customer": frame["customer_id"].astype(object),
        "lane": origin.map(names).fillna(origin) + " → " + dest.map(names).fillna(dest),
        "carrier": frame["carrier_id"].astype(object),
        "market": (origin.map(regions).fillna("?") + " → " + dest.map(regions).fillna("?")),
        "late": late,
        "delay_h": frame["delay_hours"].to_numpy(dtype=float),
        "penalty": np.where(late, per_late + hours * per_hour, 0.0),
    })


def weekly(frame: pd.DataFrame, by: str) -> pd.DataFrame:
    """Per value of `by` and week: shipments, late rate, mean delay hours, penalties."""
    grouped = frame.groupby([by, "week"], observed=True)
    out = grouped.agg(shipments=("shipment_id", "size"), late_rate=("late", "mean"),
                      mean_delay_h=("delay_h", "mean"), penalties=("penalty", "sum"))
    return out.reset_index()


def summary(frame: pd.DataFrame, by: str, trend_weeks: int = TREND_WEEKS) -> pd.DataFrame:
    """Per value of `by` over the whole window, with the trend: the late rate of the last
    `trend_weeks` weeks minus that of the `trend_weeks` weeks before (in points; positive is
    worse), most penalties first."""
    weeks = sorted(frame["week"].unique())
    recent, before = set(weeks[-trend_weeks:]), set(weeks[-2 * trend_weeks:-trend_weeks])
    out = frame.groupby(by, observed=True).agg(
        shipments=("shipment_id", "size"), late_rate=("late", "mean"),
        mean_delay_h=("delay_h", "mean"), penalties=("penalty", "sum"))
    rate_recent = frame[frame["week"].isin(recent)].groupby(by, observed=True)["late"].mean()
    rate_before = frame[frame["week"].isin(before)].groupby(by, observed=True)["late"].mean()
    out["trend_points"] = (rate_recent - rate_before).reindex(out.index) * 100
    return out.reset_index().sort_values("penalties", ascending=False, ignore_index=True)


def carrier_scorecard(frame: pd.DataFrame, in_flight: pd.DataFrame) -> pd.DataFrame:
    """Per carrier: delivered, late rate, mean and P90 delay, penalties paid, trend; shipments
    in flight now, how many at risk and their expected penalties."""
    past = summary(frame, "carrier")
    p90 = frame.groupby("carrier", observed=True)["delay_h"].quantile(0.9).rename("p90_delay_h")
    flying = in_flight.assign(risky=in_flight["risk_band"].isin(["high", "medium"]).astype(int))
    now = flying.groupby("carrier", observed=True).agg(
        in_flight=("shipment_id", "size"), at_risk=("risky", "sum"),
        exposure=("exposure", "sum"))
    card = past.set_index("carrier").join(p90).join(now, how="outer")
    card[["in_flight", "at_risk"]] = card[["in_flight", "at_risk"]].fillna(0).astype(int)
    card["exposure"] = card["exposure"].fillna(0.0)
    card.index.name = "carrier"
    return card.reset_index().sort_values("penalties", ascending=False, ignore_index=True)


def for_people(frame: pd.DataFrame) -> pd.DataFrame:
    """Rates as percent and hours and money rounded, for tables and CSV files."""
    out = frame.copy()
    if "late_rate" in out:
        out["late_rate"] = (out["late_rate"] * 100).round(1)
        out = out.rename(columns={"late_rate": "late_%"})
    for col in ("mean_delay_h", "p90_delay_h", "trend_points"):
        if col in out:
            out[col] = out[col].astype(float).round(1)
    for col in ("penalties", "exposure"):
        if col in out:
            out[col] = out[col].astype(float).round(0)
    return out
