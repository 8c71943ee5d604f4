"""The stream's statistics and weather at any instant, kept assembled across micro-batches.

`features.stats_at.StatsAt` keeps each day folder's rows in memory, but reads a day it does
not hold with one Arrow call of its own (tens of milliseconds each, mostly fixed cost, paid for
every day a replayed backlog reaches), and assembles the days a lookup spans (concatenated, cut,
sorted by stamp) on every call: five views per micro-batch, for rows that change only when the
store rolls. `WarmStats`:
- reads all the days of a span it does not hold (or whose parts changed) in ONE Arrow call per
  view, and keeps them per day as `StatsAt` does;
- keeps, per view, the assembled and sorted rows of the days last spanned, and answers a lookup
  by cutting them with two binary searches.
Rows are read again, and assembled again, when a day folder of the span gained, lost or rewrote
a part (a roll appends one to the newest day; a rebuild rewrites them): each folder's parts
(names, modification times) are listed on every lookup, a directory listing per day and view,
so a roll is seen by the very next batch. Answers are those of `StatsAt` (tests compare the two).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.offline import view_days
from features.schema import ENTITY_KEYS, TIMESTAMP, VIEW_ENTITY, VIEWS
from features.stats_at import MAX_DAYS, StatsAt
from shipdelay.parquet_io import dataset

_DAY_US = 86_400 * 10**6


def _parts(folder: Path) -> tuple:
    """A day folder's parts and their modification times: changes when a part is added,
    replaced or removed."""
    try:
        with os.scandir(folder) as entries:
            return tuple(sorted((e.name, e.stat().st_mtime_ns) for e in entries
                                if e.name.startswith("part-") and e.name.endswith(".parquet")))
    except FileNotFoundError:  # removed meanwhile (a rebuild): seen as changed
        return ()


class WarmStats(StatsAt):
    """`StatsAt` whose assembled rows per view outlive the micro-batch (module docstring)."""

    def __init__(self, offline: Path):
        super().__init__(offline)
        # view -> (the span's day folders and their parts, rows sorted by stamp, the stamps)
        self._spans: dict[str, tuple[tuple, pd.DataFrame, np.ndarray]] = {}
        self.assembled = 0  # how often a span was assembled (tests, diagnostics)

    def rows(self, view: str, lo_us: float, hi_us: float) -> pd.DataFrame:
        """The view's rows stamped in [lo, hi], sorted by stamp (as `StatsAt.rows`)."""
        first = pd.Timestamp(int(lo_us // _DAY_US) * _DAY_US, unit="us").date()
        last = pd.Timestamp(int(hi_us // _DAY_US) * _DAY_US, unit="us").date()
        folders = [folder for day, folder in view_days(self.offline, view)
                   if first <= day <= last]
        signature = tuple((folder.name, _parts(folder)) for folder in folders)
        held = self._spans.get(view)
        if held is None or held[0] != signature:
            key = ENTITY_KEYS[VIEW_ENTITY[view]]
            self._read_days(view, [(folder, parts) for folder, (_, parts)
                                   in zip(folders, signature)])
            frames = [self._days[(view, folder.name)][1] for folder in folders]
            if frames:
                rows = pd.concat(frames, ignore_index=True).sort_values(
                    "_at", kind="stable", ignore_index=True)
            else:
                rows = pd.DataFrame({key: pd.Series(dtype=object),
                                     "_at": pd.Series(dtype=np.int64),
                                     **{c: pd.Series(dtype=object) for c in VIEWS[view]}})
            held = (signature, rows, rows["_at"].to_numpy(np.int64))
            self._spans[view] = held
            self.assembled += 1
        _, rows, stamps = held
        lo = np.searchsorted(stamps, lo_us, side="left")
        hi = np.searchsorted(stamps, hi_us, side="right")
        return rows.iloc[lo:hi].reset_index(drop=True)

    def _read_days(self, view: str, folders: list[tuple[Path, tuple]]) -> None:
        """Read, in one Arrow call, the day folders whose parts are not the ones held, and
        hold each day's rows as `StatsAt._day` makes them (key as objects, the view's columns,
        `_at`: the stamp in epoch microseconds), rows in the order of its parts."""
        cold = [(folder, parts) for folder, parts in folders
                if self._days.get((view, folder.name), (None,))[0] != parts]
        if not cold:
            return
        key = ENTITY_KEYS[VIEW_ENTITY[view]]
        files = [str(folder / name) for folder, parts in cold for name, _ in parts]
        if files:
            table = dataset(files).to_table(columns=[key, TIMESTAMP, *VIEWS[view], "__filename"])
            # each row's part, by its position in `files` (Arrow names it as it was given)
            source = pc.index_in(table.column("__filename"), pa.array(files)).to_numpy(
                zero_copy_only=False)
            if np.isnan(source.astype(float)).any():
                raise RuntimeError(f"rows of {view} came from a part not asked for")
            source = source.astype(np.int64)
            at = pc.cast(pc.cast(table.column(TIMESTAMP), pa.timestamp("us", tz="UTC"),
                                 safe=False), pa.int64()).to_numpy()
            frame = table.select([key, *VIEWS[view]]).to_pandas()
            frame["_at"] = at.astype(np.int64)
            frame[key] = frame[key].astype(object)
            order_rows = np.argsort(source, kind="stable")  # the parts' order, as one by one
            frame, source = frame.iloc[order_rows].reset_index(drop=True), source[order_rows]
            ends = np.cumsum([len(parts) for _, parts in cold])
        if len(self._days) > MAX_DAYS * len(VIEWS):
            self._days.clear()
        for i, (folder, parts) in enumerate(cold):
            if parts:
                first, last = (ends[i - 1] if i else 0), ends[i]
                rows = (source >= first) & (source < last)
                day = frame[rows].reset_index(drop=True)
            else:
                day = pd.DataFrame({key: pd.Series(dtype=object),
                                    **{c: pd.Series(dtype=object) for c in VIEWS[view]},
                                    "_at": pd.Series(dtype=np.int64)})
            self._days[(view, folder.name)] = (parts, day)
