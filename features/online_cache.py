"""Online rows that only a feature build changes, kept in memory for a short while.

The stream scorer writes `shipment_progress` as tracking events arrive; every other view the
model reads (the shipment's profile, the lane, carrier, customer and hub statistics) changes
only when `shipdelay features build` materializes it, hours or a day apart. Reading those rows
again for every request costs most of an online read (SQLite keeps one row per feature, so a
shipment's profile alone is 26 B-tree lookups), so `CachedTables` keeps them for `seconds`
(then forgets them all at once, `shipdelay.recent`) and reads only what it does not hold.
Progress is always read from the store. A shipment the store does not hold is not remembered,
so one booked after the last read is found as soon as it is materialized; a lane, carrier,
customer or hub without statistics is remembered as such (a hub without weather observations
would otherwise be asked for on every request).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

import numpy as np

from shipdelay.recent import Recent

MAX_ROWS = 500_000  # entities kept per view; beyond it the view starts again empty


class CachedTables:
    """`tables.read` with the rows of `views` remembered for `seconds` (0: nothing is)."""

    def __init__(self, tables, seconds: float, views: Collection[str],
                 absent_too: Collection[str] = (), clock: Callable[[], float] = time.monotonic):
        """`absent_too`: views whose entities the store does not hold are remembered as such
        (a hub without weather observations), unlike shipments, which may be booked any time."""
        self.tables = tables
        self.views = frozenset(views) if seconds > 0 else frozenset()
        self.absent_too = frozenset(absent_too) & self.views
        self._rows = {view: Recent(seconds, MAX_ROWS, clock) for view in self.views}
        self._fresh_rows = lambda: {view: Recent(seconds, MAX_ROWS, clock) for view in self.views}

    def renew(self, mark) -> None:
        """Forget every remembered row when `mark` (the store's online roll mark,
        `features.marks`) differs from the one they were read under: a roll changed them."""
        if mark != getattr(self, "_mark", mark):
            self._rows = self._fresh_rows()
        self._mark = mark

    def held(self, view: str) -> dict[str, tuple]:
        """The rows of `view` remembered now (entity value -> one value per feature)."""
        return self._rows[view].current()

    def read(self, wanted: list) -> list[list[np.ndarray]]:
        """As `tables.read(wanted)`: for each (view read, entity values), one array per feature."""
        fetch, caches = [], []
        for read, values in wanted:
            rows = self.held(read.view) if read.view in self.views else None
            caches.append(rows)
            fetch.append((read, values if rows is None else
                          [v for v in dict.fromkeys(values) if v not in rows]))
        fetched = self.tables.read(fetch)
        out = []
        for (read, values), rows, (_, asked), arrays in zip(wanted, caches, fetch, fetched):
            if rows is None:
                out.append(arrays)
                continue
            if asked:
                present = np.zeros(len(asked), bool)
                for a in arrays:
                    present |= np.not_equal(a, None) if a.dtype == object else ~np.isnan(a)
                if read.view in self.absent_too:
                    present[:] = True
                for i, row in enumerate(zip(*(a.tolist() for a in arrays))):
                    if present[i]:
                        rows[asked[i]] = row
            out.append(_columns(read, values, rows))
        return out


def _columns(read, values: list[str], rows: dict[str, tuple]) -> list[np.ndarray]:
    """The remembered rows of `values` as one array per feature (missing where not held)."""
    blank = tuple(None if k == "str" else np.nan for k in read.kinds)
    cells = list(zip(*(rows.get(v, blank) for v in values))) or [()] * len(read.kinds)
    return [_array(c, k) for c, k in zip(cells, read.kinds)]


def _array(cells: tuple, kind: str) -> np.ndarray:
    """Numbers as float64 (None: NaN), text and any odd value Feast gave as objects."""
    if kind != "str":
        try:
            return np.array(cells, dtype=float)
        except (TypeError, ValueError):
            pass
    return np.fromiter(cells, dtype=object, count=len(cells))
