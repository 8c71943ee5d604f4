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

from shipdelay.lake import Lake
from shipdelay.parquet_io import read_frame

BANDS = ("high", "medium", "low")


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
    overdue), plus the raw numbers for sorting. Vectorized: the whole run (50,000 rows) is
    formatted once per nightly run in a fraction of a second; the texts are those of
    `delay_text`, `time_left_text` and a "%a %d %b %H:%M" time."""
    names = dict(zip(hubs["hub_id"], hubs["label"]))
    origin = named(frame["origin_hub"], names)
    dest = named(frame["destination_hub"], names)
    hours_left = (utc(frame["promised_at"]) - now).dt.total_seconds() / 3600
    delay = frame["delay_p50_h"].astype(float)
    out = pd.DataFrame({
        "shipment_id": frame["shipment_id"].astype(str),
        "customer": frame["customer"].astype(object),
        "lane": frame["lane"].astype(object),
        "route": (origin.astype(str) + " → " + dest.astype(str)).to_numpy(),
        "mode": frame["mode"].astype(object),
        "carrier": frame["carrier"].astype(object),
        "hub_id": frame["current_hub"].astype(object),
        "hub": named(frame["current_hub"], names),
        "band": frame["risk_band"].astype(object),
        "p_late_pct": (frame["p_late"].astype(float) * 100).round(0),
        "delay_p50_h": delay.round(0),
        "delay": delay_texts(delay.to_numpy()),
        "hours_left": hours_left.round(0),
        "promise": time_left_texts(hours_left.to_numpy(dtype=float)),
        "eta": day_hour_texts(frame["eta"]),
        "eta_window": day_hour_texts(frame["eta_p10"]) + " – " + day_hour_texts(frame["eta_p90"]),
        "source": frame.get("source", pd.Series("nightly", index=frame.index)).to_numpy(),
    }, index=frame.index)
    if "exposure" in frame:
        out["exposure"] = frame["exposure"].astype(float).round(0)
    if "hubs_ahead" in frame:
        out["hubs_ahead"] = frame["hubs_ahead"].astype(object).fillna("").to_numpy()
    return out


def utc(times: pd.Series) -> pd.Series:
    """`times` as UTC times (a column already in a time zone is only converted: pandas'
    to_datetime would first look at every value)."""
    if isinstance(times.dtype, pd.DatetimeTZDtype):
        return times.dt.tz_convert("UTC")
    return pd.Series(pd.to_datetime(times, utc=True), index=times.index)


def named(codes: pd.Series, names: dict[str, str]) -> pd.Series:
    """Hub codes as their names (the code where the name is unknown), as plain text."""
    codes = codes.astype(object)
    label = codes.map(names)
    return label.where(label.notna(), codes).astype(object)


def _by_value(keys: np.ndarray, say) -> np.ndarray:
    """`say(key)` for every key of an integer array, computed once per distinct key."""
    distinct, at = np.unique(keys, return_inverse=True)
    return np.array([say(int(k)) for k in distinct] or [""], dtype=object)[at.ravel()]


def _hours(h: int) -> str:
    return f"{h // 24} d {h % 24} h" if h >= 48 else f"{h} h"


def _rounded(hours: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(finite?, the value with 0 where not, its rounded absolute hours)."""
    hours = np.asarray(hours, dtype=float)
    ok = np.isfinite(hours)
    safe = np.where(ok, hours, 0.0)
    return ok, safe, np.round(np.abs(safe)).astype(np.int64)


def hours_texts(hours: np.ndarray) -> np.ndarray:
    """`hours_text` of a whole array ("-" where missing)."""
    ok, _, h = _rounded(hours)
    return _by_value(np.where(ok, h, -1), lambda k: "-" if k < 0 else _hours(k))


def time_left_texts(hours_left: np.ndarray) -> np.ndarray:
    """`time_left_text` of a whole array: key 2h + 1 when overdue, 2h when left, -1 missing."""
    ok, safe, h = _rounded(hours_left)
    late = np.round(safe) < 0
    return _by_value(np.where(ok, 2 * h + late, -1), lambda k: "-" if k < 0 else (
        f"{_hours(k // 2)} overdue" if k % 2 else f"{_hours(k // 2)} left"))


def delay_texts(hours: np.ndarray) -> np.ndarray:
    """`delay_text` of a whole array: key 2h + 1 when late, 2h when early, -1 missing,
    -2 on time."""
    ok, safe, h = _rounded(hours)
    keys = np.where(np.round(safe) == 0, -2, 2 * h + (safe > 0))
    return _by_value(np.where(ok, keys, -1), lambda k: "-" if k == -1 else "on time" if k == -2
                     else f"{_hours(k // 2)} late" if k % 2 else f"{_hours(k // 2)} early")


_DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
_WEEKDAY_DAY = np.array([f"{w} {d:02d} " for w in _DAYS for d in range(32)], dtype=object)
_MONTH_HOUR = np.array([f"{m} {h:02d}:" for m in _MONTHS for h in range(24)], dtype=object)
_MINUTE = np.array([f"{i:02d}" for i in range(60)], dtype=object)


def day_hour_texts(times: pd.Series) -> pd.Series:
    """Times as "Sat 01 Nov 10:00" (UTC), "-" where missing: strftime's "%a %d %b %H:%M",
    assembled from tables of its parts with integer arithmetic (strftime of 50,000 times costs
    a third of a second)."""
    t = utc(times)
    ok = t.notna().to_numpy()
    out = np.full(len(t), "-", dtype=object)
    if ok.any():
        minutes = t.array.asi8[ok] // 60_000_000_000
        hours, minute = np.divmod(minutes, 60)
        days, hour = np.divmod(hours, 24)
        day = days.astype("datetime64[D]")
        month_start = day.astype("datetime64[M]")
        month = month_start.astype(np.int64) % 12
        mday = (day - month_start.astype("datetime64[D]")).astype(np.int64) + 1
        out[ok] = (_WEEKDAY_DAY[((days + 3) % 7) * 32 + mday] + _MONTH_HOUR[month * 24 + hour]
                   + _MINUTE[minute])
    return pd.Series(out, index=times.index)


def riskiest(frame: pd.DataFrame, limit: int | None = None) -> pd.DataFrame:
    """The rows ranked riskiest first (by exposure when known, else by P(late)), the first
    `limit` of them when given."""
    key = "exposure" if "exposure" in frame else "p_late"
    ranked = frame.sort_values(key, ascending=False, kind="stable")
    return ranked if limit is None else ranked.head(limit)
