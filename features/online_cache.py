"""Online rows that only a feature build changes, kept in memory for a short while.

The stream scorer writes `shipment_progress` as tracking events arrive; every other view the
model reads (the shipment's profile, the lane, carrier, customer and hub statistics) changes
only when `shipdelay features build` materializes it, hours or a day apart. Reading those rows
again for every request costs most of an online read (SQLite keeps one row per feature, so a
shipment's profile alone is 26 B-tree lookups), so `CachedTables` keeps them for `seconds`
(then forgets them all at once) and reads only what it does not hold.
Progress is always read from the store. A shipment the store does not hold is not remembered,
so one booked after the last read is found as soon as it is materialized; a lane, carrier,
customer or hub without statistics is remembered as such (a hub without weather observations
would otherwise be asked for on every request).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection

import numpy as np

MAX_ROWS = 500_000  # entities kept per view; beyond it the view starts again empty


class CachedTables:
    """`tables.read` with the rows of `views` remembered for `seconds` (0: nothing is)."""

    def __init__(self, tables, seconds: float, views: Collection[str],
                 absent_too: Collection[str] = (), clock: Callable[[], float] = time.monotonic):
        """`absent_too`: views whose entities the store does not hold are remembered as such
        (a hub without weather observations), unlike shipments, which may be booked any time."""
        self.tables = tables
        self.seconds = float(seconds)
        self.views = frozenset(views) if seconds > 0 else frozenset()
        self.absent_too = frozenset(absent_too) & self.views
        self.clock = clock
        self._rows: dict[str, HeldRows] = {}
        self._until = 0.0
        self._lock = threading.Lock()  # requests of one worker may read from several threads

    def renew(self, mark) -> None:
        """Forget every remembered row when `mark` (the store's online roll mark,
        `features.marks`) differs from the one they were read under: a roll changed them."""
        if mark != getattr(self, "_mark", mark):
            with self._lock:
                self._rows = {}
        self._mark = mark

    def held(self, view: str) -> HeldRows:
        """The rows of `view` remembered now (`entity in held(view)`)."""
        with self._lock:
            return self._held(view)

    def _held(self, view: str) -> HeldRows:
        now = self.clock()
        if now >= self._until:  # the period is over: everything is read again
            self._rows, self._until = {}, now + self.seconds
        rows = self._rows.get(view)
        if rows is None or len(rows) > MAX_ROWS:
            rows = self._rows[view] = HeldRows()
        return rows

    def read(self, wanted: list) -> list[list[np.ndarray]]:
        """As `tables.read(wanted)`: for each (view read, entity values), one array per feature."""
        fetch, caches = [], []
        with self._lock:
            for read, values in wanted:
                rows = self._held(read.view) if read.view in self.views else None
                caches.append(rows)
                fetch.append((read, values if rows is None else
                              [v for v in dict.fromkeys(values) if v not in rows.row_of]))
        if any(values for _, values in fetch):
            fetched = self.tables.read(fetch)
        else:  # everything held (the usual second step): no store call at all
            fetched = [[np.empty(0, object if k == "str" else float) for k in read.kinds]
                       for read, _ in fetch]
        out = []
        with self._lock:
            for (read, values), rows, (_, asked), arrays in zip(wanted, caches, fetch, fetched):
                if rows is None:
                    out.append(arrays)
                    continue
                if asked:
                    present = np.zeros(len(asked), bool)
                    if read.view in self.absent_too:
                        present[:] = True
                    else:
                        for a in arrays:
                            present |= np.not_equal(a, None) if a.dtype == object else \
                                ~np.isnan(a)
                    rows.keep([a for a, p in zip(asked, present.tolist()) if p],
                              [a[present] for a in arrays])
                out.append(rows.take(values, read.kinds))
        return out


class HeldRows:
    """One view's remembered rows, column by column: entity -> row number, and one array per
    feature grown by doubling. A request's rows are then one dictionary lookup per entity and
    one `take` per feature (a tuple per entity, transposed per request, cost ~0.8 ms of a
    100-shipment request)."""

    def __init__(self):
        self.row_of: dict[str, int] = {}
        self.columns: list[np.ndarray] | None = None

    def __contains__(self, entity) -> bool:
        return entity in self.row_of

    def __len__(self) -> int:
        return len(self.row_of)

    def keep(self, entities: list[str], arrays: list[np.ndarray]) -> None:
        """Remember `entities` (new ones, each once) with their values, one array per feature."""
        if not entities:
            return
        start, need = len(self.row_of), len(self.row_of) + len(entities)
        if self.columns is None:
            self.columns = [np.empty(0, a.dtype) for a in arrays]
        for j, a in enumerate(arrays):
            column = self.columns[j]
            if a.dtype == object and column.dtype != object:  # an odd value Feast gave
                column = column.astype(object)
            if need > len(column):
                grown = np.empty(max(need, 2 * len(column), 64), column.dtype)
                grown[:start] = column[:start]
                column = grown
            column[start:need] = a
            self.columns[j] = column
        self.row_of.update(zip(entities, range(start, need)))

    def take(self, values: list[str], kinds) -> list[np.ndarray]:
        """The remembered rows of `values` as one array per feature: numbers as float64 (odd
        values Feast gave as objects), text as objects; missing (None / NaN) where not held."""
        row_of = self.row_of
        at = np.fromiter((row_of.get(v, -1) for v in values), np.int64, len(values))
        missing = at < 0
        blanks = bool(missing.any())
        out = []
        for j, kind in enumerate(kinds):
            if not self.row_of:  # nothing held yet (nor any column to take from)
                column = np.full(len(values), None if kind == "str" else np.nan,
                                 object if kind == "str" else float)
            else:
                column = self.columns[j][at]
                if blanks:
                    column[missing] = None if kind == "str" else np.nan
            out.append(column)
        return out
