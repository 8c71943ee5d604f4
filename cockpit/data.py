"""What the cockpit shows, as pure functions of the product's tables: the newest nightly scores,
the lake's shipments and hubs, the service's answers. The Dash layer only formats and renders.

Nothing here imports training: the cockpit reads the scores table and the lake directly and
asks the prediction service over HTTP for fresh answers.
"""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds

from shipdelay.lake import Lake
from shipdelay.parquet_io import read_frame

BANDS = ("high", "medium", "low")
MAX_ROWS = 2_000  # rows sent to the browser: the riskiest first (exposure, then P(late))


def scores_days(scores_dir: Path) -> list[date]:
    """The run dates of the nightly scores table, oldest first."""
    if not scores_dir.exists():
        return []
    days = []
    for part in scores_dir.glob("run_date=*"):
        try:
            days.append(date.fromisoformat(part.name.split("=", 1)[1]))
        except ValueError:
            continue
    return sorted(days)


def latest_scores(scores_dir: Path) -> pd.DataFrame:
    """The newest nightly run's scores (one row per in-flight shipment), with its `run_date`;
    an empty frame when the batch has not run yet."""
    days = scores_days(scores_dir)
    if not days:
        return pd.DataFrame(columns=["shipment_id", "as_of", "mode", "lane", "customer",
                                     "carrier", "p_late", "risk_band", "delay_p50_h",
                                     "delay_p90_h", "eta", "eta_p10", "eta_p90", "reasons",
                                     "model_version", "run_date"])
    frame = read_frame(scores_dir / f"run_date={days[-1].isoformat()}")
    frame["run_date"] = days[-1].isoformat()
    return frame


def hub_names(lake: Lake) -> pd.DataFrame:
    """Hubs with their display name ("Rotterdam (NL)"), region and coordinates."""
    hubs = lake.read("hubs", columns=["hub_id", "name", "city", "country", "region",
                                      "latitude", "longitude"])
    hubs = hubs.astype({"hub_id": object, "name": object, "city": object, "country": object,
                        "region": object})
    hubs["label"] = hubs["name"].fillna(hubs["hub_id"])
    return hubs.drop_duplicates("hub_id").reset_index(drop=True)


def shipment_context(lake: Lake, ids: list[str], now: pd.Timestamp) -> pd.DataFrame:
    """Per shipment: origin, destination, service level, promised time and the hub of its newest
    scan at or before `now` (its current or last known hub)."""
    wanted = ds.field("shipment_id").isin(list(ids))
    ships = lake.read("shipments", columns=["shipment_id", "customer_id", "origin_hub",
                                            "destination_hub", "service_level", "promised_at"],
                      filter=wanted)
    events = lake.read("tracking_events", columns=["shipment_id", "event_time", "ingested_at",
                                                   "hub_id"], filter=wanted)
    events = events[(events["ingested_at"] <= now) & events["hub_id"].notna()]
    last = (events.sort_values(["shipment_id", "event_time"])
            .drop_duplicates("shipment_id", keep="last")[["shipment_id", "hub_id"]]
            .rename(columns={"hub_id": "current_hub"}))
    out = ships.astype({"shipment_id": object}).merge(
        last.astype({"shipment_id": object}), on="shipment_id", how="left")
    out["current_hub"] = out["current_hub"].astype(object).fillna(out["origin_hub"].astype(object))
    return out


def legs_of(lake: Lake, ids: list[str]) -> pd.DataFrame:
    """The legs of `ids`: shipment_id, leg_index, to_hub, planned_arrival."""
    legs = lake.read("legs", columns=["shipment_id", "leg_index", "to_hub", "planned_arrival"],
                     filter=ds.field("shipment_id").isin(list(ids)))
    return legs.astype({"shipment_id": object, "to_hub": object})


def hubs_ahead(legs: pd.DataFrame, hubs: pd.DataFrame, now: pd.Timestamp) -> pd.DataFrame:
    """Per shipment, the names of the hubs its legs still plan to reach after `now`, in order
    ("Port of Rotterdam · Chicago Rail Terminal"): what a hub filter matches."""
    names = dict(zip(hubs["hub_id"], hubs["label"]))
    ahead = legs[legs["planned_arrival"] > now].sort_values(["shipment_id", "leg_index"])
    label = ahead["to_hub"].map(names).fillna(ahead["to_hub"]).astype(str)
    joined = label.groupby(ahead["shipment_id"]).agg(" · ".join)
    return joined.rename("hubs_ahead").rename_axis("shipment_id").reset_index()


def hours_text(hours: float | None) -> str:
    """Hours for people: whole hours, days beyond two days ("3 d 4 h")."""
    if hours is None or not math.isfinite(hours):
        return "-"
    h = round(abs(float(hours)))
    return f"{h // 24} d {h % 24} h" if h >= 48 else f"{h} h"


def time_left_text(hours_left: float | None) -> str:
    """Time to the promised delivery: "12 h left", or "295 h overdue" once it has passed."""
    if hours_left is None or not math.isfinite(hours_left):
        return "-"
    if round(hours_left) < 0:
        return f"{hours_text(-hours_left)} overdue"
    return f"{hours_text(hours_left)} left"


def delay_text(hours: float | None) -> str:
    """A predicted delay: "+5 h late", "2 h early", "on time"."""
    if hours is None or not math.isfinite(hours):
        return "-"
    if round(hours) == 0:
        return "on time"
    return f"{hours_text(hours)} late" if hours > 0 else f"{hours_text(hours)} early"


def apply_answers(frame: pd.DataFrame, answers: list[dict]) -> pd.DataFrame:
    """The scores refreshed with the service's answers (ok ones only); `source` says which
    rows are live ("service") and which come from the nightly run ("nightly")."""
    out = frame.copy()
    out["source"] = "nightly"
    good = [a for a in answers if a.get("ok")]
    if not good:
        return out
    live = pd.DataFrame(good).drop_duplicates("shipment_id").set_index("shipment_id")
    rows = out["shipment_id"].isin(live.index)
    ids = out.loc[rows, "shipment_id"]
    for col in ("p_late", "risk_band", "delay_p50_h", "delay_p90_h"):
        if col in live:
            out.loc[rows, col] = live.loc[ids, col].to_numpy()
    for col in ("eta", "eta_p10", "eta_p90"):
        if col in live:
            out.loc[rows, col] = pd.to_datetime(live.loc[ids, col], utc=True).to_numpy()
    if "reasons" in live:
        fresh = live.loc[ids, "reasons"].tolist()
        old = out.loc[rows, "reasons"].tolist()
        out.loc[rows, "reasons"] = pd.Series([f if len(f) else o for f, o in zip(fresh, old)],
                                             index=out.index[rows], dtype=object)
    out.loc[rows, "source"] = "service"
    return out


def band_counts(frame: pd.DataFrame) -> dict[str, int]:
    """How many shipments in each risk band (every band present, zero if none)."""
    counts = frame["risk_band"].value_counts()
    return {band: int(counts.get(band, 0)) for band in BANDS}


def now_rows(frame: pd.DataFrame, hubs: pd.DataFrame, now: pd.Timestamp) -> pd.DataFrame:
    """The "Now" list from the scores joined to their context (`shipment_context`): one row per
    shipment with the columns people read (names, not only codes; hours rounded; time left or
    overdue), plus the raw numbers for sorting."""
    names = dict(zip(hubs["hub_id"], hubs["label"]))
    origin = frame["origin_hub"].map(names).fillna(frame["origin_hub"])
    dest = frame["destination_hub"].map(names).fillna(frame["destination_hub"])
    hours_left = (pd.to_datetime(frame["promised_at"], utc=True) - now).dt.total_seconds() / 3600
    out = pd.DataFrame({
        "shipment_id": frame["shipment_id"].astype(str),
        "customer": frame["customer"].astype(object),
        "lane": frame["lane"].astype(object),
        "route": (origin.astype(str) + " → " + dest.astype(str)).to_numpy(),
        "mode": frame["mode"].astype(object),
        "carrier": frame["carrier"].astype(object),
        "hub_id": frame["current_hub"].astype(object),
        "hub": frame["current_hub"].map(names).fillna(frame["current_hub"]).astype(object),
        "band": frame["risk_band"].astype(object),
        "p_late_pct": (frame["p_late"].astype(float) * 100).round(0),
        "delay_p50_h": frame["delay_p50_h"].astype(float).round(0),
        "delay": [delay_text(h) for h in frame["delay_p50_h"].astype(float)],
        "hours_left": hours_left.round(0),
        "promise": [time_left_text(h) for h in hours_left],
        "eta": _day_hour(frame["eta"]),
        "eta_window": _day_hour(frame["eta_p10"]) + " – " + _day_hour(frame["eta_p90"]),
        "source": frame.get("source", pd.Series("nightly", index=frame.index)).to_numpy(),
    })
    if "exposure" in frame:
        out["exposure"] = frame["exposure"].astype(float).round(0)
    if "hubs_ahead" in frame:
        out["hubs_ahead"] = frame["hubs_ahead"].astype(object).fillna("").to_numpy()
    return out


def _day_hour(times: pd.Series) -> pd.Series:
    t = pd.to_datetime(times, utc=True)
    return pd.Series(np.where(t.isna(), "-", t.dt.strftime("%a %d %b %H:%M")), index=times.index)


def riskiest(frame: pd.DataFrame, limit: int = MAX_ROWS) -> pd.DataFrame:
    """The `limit` riskiest rows: by exposure when known, else by P(late)."""
    key = "exposure" if "exposure" in frame else "p_late"
    return frame.sort_values(key, ascending=False, kind="stable").head(limit)
