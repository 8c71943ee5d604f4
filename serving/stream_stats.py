"""The stream's statistics and weather at any instant, kept assembled across micro-batches.

`features.stats_at.StatsAt` keeps each day folder's rows in memory, but reads a day it does
not hold with one Arrow call of its own (tens of milliseconds each, mostly fixed cost, paid for
every day a replayed backlog reaches), and assembles the days a lookup spans (concatenated, cut,
sorted by stamp) on every call: five views per micro-batch, for rows that change only when the
store rolls. `WarmStats`:
- reads all the days of a span it does not hold (or whose parts changed) in ONE Arrow call per
  view, and keeps them per day as `StatsAt` does;
- keeps, per view, the assembled and sorted rows of the days last spanned, and an index of them
  by (key, stamp) (`_SpanIndex`), so that a micro-batch's lookups are binary searches: cutting
  the span and merging it with the batch (`merge_asof`) cost ~12 ms a view and batch, whatever
  the batch's size, ~60 ms a micro-batch.
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

from features.instant import TTL_US
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
        self._indexes: dict[str, _SpanIndex] = {}  # view -> the index of its held span

    def rows(self, view: str, lo_us: float, hi_us: float) -> pd.DataFrame:
        """The view's rows stamped in [lo, hi], sorted by stamp (as `StatsAt.rows`)."""
        _, rows, stamps = self._span(view, lo_us, hi_us)
        lo = np.searchsorted(stamps, lo_us, side="left")
        hi = np.searchsorted(stamps, hi_us, side="right")
        return rows.iloc[lo:hi].reset_index(drop=True)

    def lookup(self, view: str, keys: np.ndarray, now_us: np.ndarray,
               columns: list[str]) -> dict[str, np.ndarray]:
        """`StatsAt.lookup` on the held span's index (`_SpanIndex`): binary searches, no
        copy of the span's rows and no merge per micro-batch."""
        n = len(keys)
        now_us = np.asarray(now_us, dtype=float)
        if n == 0:
            return {c: np.full(0, np.nan) for c in columns}
        ttl = TTL_US[view]
        held = self._span(view, float(now_us.min()) - ttl, float(now_us.max()))
        index = self._indexes.get(view)
        if index is None or index.held is not held:
            index = self._indexes[view] = _SpanIndex(view, held)
        return index.lookup(keys, now_us, columns)

    def _span(self, view: str, lo_us: float, hi_us: float) -> tuple:
        """(signature, rows sorted by stamp, stamps) of the day folders [lo, hi] touches."""
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
        return held

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


class _SpanIndex:
    """A held span's rows ordered by (key, stamp, position), for point-in-time lookups by
    binary search: the row a key had at an instant is the last one of the key stamped at or
    before it (among rows of the same stamp, the last in the span's order, as `merge_asof`
    takes it), and it counts while no older than the view's TTL (`StatsAt.lookup`)."""

    def __init__(self, view: str, held: tuple):
        self.view, self.held = view, held
        _, rows, stamps = held
        key = ENTITY_KEYS[VIEW_ENTITY[view]]
        codes, distinct = pd.factorize(rows[key].to_numpy(dtype=object), use_na_sentinel=True)
        self.keys = pd.Index(distinct, dtype=object)
        self.stamps, ranks = np.unique(stamps, return_inverse=True)
        self.width = len(self.stamps) + 1
        order = np.lexsort((np.arange(len(codes)), ranks, codes))
        self.order = order[codes[order] >= 0]  # rows without a key answer nothing
        self.combined = codes[self.order].astype(np.int64) * self.width + ranks[self.order]
        self.codes = codes[self.order]
        self.at = stamps[self.order]
        self.rows = rows
        self._columns: dict[str, np.ndarray] = {}

    def _column(self, c: str) -> np.ndarray:
        got = self._columns.get(c)
        if got is None:
            str_kind = VIEWS[self.view][c] == "str"
            got = self.rows[c].to_numpy(dtype=object if str_kind else float)[self.order]
            self._columns[c] = got
        return got

    def lookup(self, keys: np.ndarray, now_us: np.ndarray, columns: list[str]
               ) -> dict[str, np.ndarray]:
        n = len(keys)
        asked = pd.Series(keys, dtype=object)
        code = np.where(asked.notna().to_numpy(),
                        self.keys.get_indexer(asked.where(asked.notna(), None)), -1)
        # the last distinct stamp at or before each instant (-1: none)
        rank = np.searchsorted(self.stamps, now_us, side="right") - 1
        j = np.searchsorted(self.combined, code.astype(np.int64) * self.width + rank,
                            side="right") - 1
        hit = (code >= 0) & (rank >= 0) & (j >= 0)
        j = np.where(hit, j, 0)
        hit &= self.codes[j] == code if len(self.codes) else False
        hit &= self.at[j] >= now_us - TTL_US[self.view] if len(self.at) else False
        out = {}
        for c in columns:
            str_kind = VIEWS[self.view][c] == "str"
            values = np.full(n, None, dtype=object) if str_kind else np.full(n, np.nan)
            if hit.any():
                values[hit] = self._column(c)[j[hit]]
            out[c] = values
        return out
