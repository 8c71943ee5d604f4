"""Statistics and weather at any recent instant, from the offline store: the stream scorer's
point-in-time read.

The stream scores each shipment as of its own latest ingestion, and one micro-batch spans many
instants (seconds in real time, days when a backlog is replayed), while the online store holds
one row per entity: the newest. `StatsAt.lookup(view, keys, instants)` therefore answers from
the offline rows themselves, with the rule of the offline join (`features.instant`): per key
and instant, the row with the newest timestamp at or before the instant, missing when it is
older than the view's TTL. Rows are read by day folder, kept in memory and read again when a
folder's parts change (a roll appended one), so a micro-batch costs an as-of merge in memory.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from features import instant
from features.offline import view_days
from features.repo.views import TTL
from features.schema import ENTITY_KEYS, TIMESTAMP, VIEW_ENTITY, VIEWS
from shipdelay.parquet_io import dataset

_DAY_US = 86_400 * 10**6
MAX_DAYS = 400  # day folders kept in memory per view; older ones are read again when asked


class StatsAt:
    """Point-in-time rows of entity-keyed views (statistics, weather) from the offline store."""

    def __init__(self, offline: Path):
        self.offline = offline
        self._days: dict[tuple[str, str], tuple[tuple, pd.DataFrame]] = {}

    def _day(self, view: str, folder: Path) -> pd.DataFrame:
        """One day folder's rows (key, stamp in microseconds, the view's columns), re-read when
        its parts changed."""
        with os.scandir(folder) as entries:
            parts = tuple(sorted((e.name, e.stat().st_mtime_ns) for e in entries
                                 if e.name.startswith("part-") and e.name.endswith(".parquet")))
        held = self._days.get((view, folder.name))
        if held is not None and held[0] == parts:
            return held[1]
        key = ENTITY_KEYS[VIEW_ENTITY[view]]
        if parts:
            files = [str(folder / name) for name, _ in parts]
            frame = dataset(files).to_table(columns=[key, TIMESTAMP, *VIEWS[view]]).to_pandas()
        else:
            frame = pd.DataFrame(columns=[key, TIMESTAMP, *VIEWS[view]])
        stamps = pd.DatetimeIndex(pd.to_datetime(frame[TIMESTAMP], utc=True)).as_unit("us")
        frame = frame[[key, *VIEWS[view]]].assign(_at=stamps.asi8.astype(np.int64))
        frame[key] = frame[key].astype(object)
        if len(self._days) > MAX_DAYS * len(VIEWS):
            self._days.clear()
        self._days[(view, folder.name)] = (parts, frame)
        return frame

    def rows(self, view: str, lo_us: float, hi_us: float) -> pd.DataFrame:
        """The view's rows stamped in [lo, hi], sorted by stamp."""
        first = pd.Timestamp(int(lo_us // _DAY_US) * _DAY_US, unit="us").date()
        last = pd.Timestamp(int(hi_us // _DAY_US) * _DAY_US, unit="us").date()
        frames = [self._day(view, folder) for day, folder in view_days(self.offline, view)
                  if first <= day <= last]
        key = ENTITY_KEYS[VIEW_ENTITY[view]]
        if not frames:
            return pd.DataFrame({key: pd.Series(dtype=object), "_at": pd.Series(dtype=np.int64),
                                 **{c: pd.Series(dtype=object) for c in VIEWS[view]}})
        out = pd.concat(frames, ignore_index=True)
        out = out[(out["_at"] >= lo_us) & (out["_at"] <= hi_us)]
        return out.sort_values("_at", kind="stable", ignore_index=True)

    def lookup(self, view: str, keys: np.ndarray, now_us: np.ndarray,
               columns: list[str]) -> dict[str, np.ndarray]:
        """For each (key, instant): `columns` of the key's newest row at or before the instant
        and no older than the view's TTL; missing (NaN/None) otherwise or for a missing key."""
        n = len(keys)
        now_us = np.asarray(now_us, dtype=float)
        key = ENTITY_KEYS[VIEW_ENTITY[view]]
        out = {c: np.full(n, np.nan) for c in columns}
        if n == 0:
            return out
        ttl = TTL[view].total_seconds() * 1e6
        rows = self.rows(view, float(now_us.min()) - ttl, float(now_us.max()))
        asked = pd.DataFrame({key: pd.Series(keys, dtype=object), "_now": now_us.astype(np.int64),
                              "_i": np.arange(n)})
        asked = asked[asked[key].notna()].sort_values("_now", kind="stable")
        if rows.empty or asked.empty:
            return {c: _typed(out[c], VIEWS[view][c]) for c in columns}
        joined = pd.merge_asof(asked, rows[[key, "_at", *columns]], left_on="_now",
                               right_on="_at", by=key, direction="backward",
                               allow_exact_matches=True)
        fresh = instant.fresh(view, joined["_at"].to_numpy(float), joined["_now"].to_numpy(float))
        at = joined["_i"].to_numpy()
        result = {}
        for c in columns:
            kind = VIEWS[view][c]
            values = np.full(n, None, dtype=object) if kind == "str" else np.full(n, np.nan)
            got = joined[c].to_numpy(dtype=object if kind == "str" else float)
            values[at[fresh]] = got[fresh]
            result[c] = values
        return result


def _typed(values: np.ndarray, kind: str) -> np.ndarray:
    return np.full(len(values), None, dtype=object) if kind == "str" else values
