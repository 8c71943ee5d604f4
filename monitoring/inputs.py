"""The inputs before any label: how much arrives per source and day, how fresh each feature view
is at the cut-off, and how often each view's features were missing in what the doors served.

A tracking feed that stops shows as a day far below the source's usual volume; a feature view
that stops being rolled shows as an old newest row; a join that silently fails shows as a
missing rate that jumps.
"""

from __future__ import annotations

from datetime import date

import duckdb
import numpy as np
import pandas as pd

from features.schema import MODEL_FEATURES
from shipdelay.lake import Lake
from shipdelay.parquet_io import sql_source

# each lake source and the time that says when its rows arrived
SOURCES = {"tracking_events": "ingested_at", "shipments": "booked_at",
           "outcomes": "delivered_at", "hub_weather": "ingested_at"}


def source_volume(lake: Lake, start: date, as_of: pd.Timestamp) -> pd.DataFrame:
    """Rows per lake source per UTC day from `start` to the cut-off: [source, day, rows]."""
    out = []
    with duckdb.connect() as con:
        for table, column in SOURCES.items():
            files = lake.files(table, since=start - pd.Timedelta(days=1))
            if not files:
                continue
            rows = con.execute(
                f"SELECT CAST(timezone('UTC', {column}) AS DATE) AS day, count(*) AS rows "
                f"FROM {sql_source(con, files)} WHERE {column} >= $s AND {column} <= $t "
                f"GROUP BY 1", {"s": pd.Timestamp(start, tz="UTC").to_pydatetime(),
                                "t": as_of.to_pydatetime()}).df()
            out.append(rows.assign(source=table))
    if not out:
        return pd.DataFrame(columns=["source", "day", "rows"])
    frame = pd.concat(out, ignore_index=True)
    frame["day"] = pd.to_datetime(frame["day"]).dt.date
    return frame[["source", "day", "rows"]]


def complete_days(volume: pd.DataFrame, start: date, as_of: pd.Timestamp) -> pd.DataFrame:
    """Every (source, day) of the window, 0 where nothing arrived; the cut-off's own day is left
    out unless the cut-off is its end (a day still under way is not a drop)."""
    last = as_of.date() if as_of == as_of.normalize() + pd.Timedelta(days=1) else \
        (as_of - pd.Timedelta(days=1)).date()
    days = pd.date_range(start, last, freq="D").date
    sources = sorted(set(volume["source"])) if len(volume) else []
    full = pd.MultiIndex.from_product([sources, days], names=["source", "day"])
    counts = volume.groupby(["source", "day"])["rows"].sum()
    return counts.reindex(full, fill_value=0).reset_index()


VOLUME_CHANCE = 0.001  # a day this low must be rarer than this for a steady feed
SAME_WEEKDAY_DAYS = 3  # days of one weekday in the window before it sets that weekday's usual


def volume_drops(daily: pd.DataFrame, share: float) -> pd.DataFrame:
    """The (source, day) rows below `share` of the source's usual day and lower than a steady
    feed of that usual volume would give by chance (Poisson, `VOLUME_CHANCE`): 3 rows where 7
    is usual happens, 0 where 7 is usual does not. A day's usual volume is the median of the
    same weekday in the window when it holds `SAME_WEEKDAY_DAYS` of them (Sundays book less
    than Tuesdays: a quiet Sunday is no incident), else the median of every day. Sources whose
    usual is 0 never alarm: they are not daily feeds."""
    from scipy.stats import poisson

    if daily.empty:
        return daily.assign(median=[])
    weekday = pd.to_datetime(daily["day"]).dt.weekday.to_numpy()
    everyday = daily.groupby("source")["rows"].transform("median")
    same = daily.groupby([daily["source"], weekday])["rows"]
    usual = everyday.where(same.transform("size") < SAME_WEEKDAY_DAYS, same.transform("median"))
    rare = poisson.cdf(daily["rows"].to_numpy(float), usual.to_numpy(float)) < VOLUME_CHANCE
    return daily.assign(median=usual)[(usual > 0) & (daily["rows"] < share * usual) & rare]


def view_missing(frame: pd.DataFrame) -> dict[str, float]:
    """Per feature view: the share of its model features missing in the rows served."""
    out = {}
    for view, features in MODEL_FEATURES.items():
        present = [f for f in features if f in frame]
        if present and len(frame):
            out[view] = float(frame[present].isna().to_numpy().mean())
    return out


def view_freshness(settings, as_of: pd.Timestamp) -> dict[str, float]:
    """Hours between each feature view's newest row at or before the cut-off and the cut-off
    (NaN: no row at all)."""
    from features.store import offline_dir
    from serving.batch import feature_watermarks

    marks = feature_watermarks(offline_dir(settings), as_of)
    return {view: (float((as_of - t).total_seconds() / 3600) if t is not None else np.nan)
            for view, t in marks.items()}
