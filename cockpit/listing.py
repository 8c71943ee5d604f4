"""The Now list on the server: every shipment in flight formatted once per nightly run, then
filtered (`cockpit.query`), sorted and cut into pages here, so the browser receives one page of
rows (25) however many shipments are in flight. Counts by band and the money at stake are
taken over the whole filtered set, not over the page.

Sorting follows what the columns mean, not their text: P(late), exposure and the expected delay
by their numbers, "12 h left"/"295 h overdue" by the hours left, the ETA and its window by time,
the band by severity (low, medium, high); names and codes alphabetically. Missing values come
last either way, and ties keep the default order (the most money at stake first).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cockpit import data, query

BAND_RANK = {"low": 0, "medium": 1, "high": 2}
# a column of the list -> the column of `Listing.frame` it sorts by
SORT_KEYS = {"shipment_id": "id", "p_late_pct": "p_late", "delay": "delay_p50_h",
             "promise": "hours_left_raw", "eta": "eta_ts", "eta_window": "eta_p10_ts",
             "exposure": "exposure_raw", "band": "band_rank"}
CACHED_FILTERS = 32


@dataclass(frozen=True)
class Selection:
    """The rows a filter keeps (positions in the listing), or why the filter was not applied."""

    positions: np.ndarray
    problem: str | None = None


@dataclass
class Listing:
    """The list's frame (display texts and sort keys, one row per shipment in flight, ranked by
    money at stake) and the selections of the filters asked lately."""

    frame: pd.DataFrame
    _selections: OrderedDict = field(default_factory=OrderedDict)
    _sort_keys: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def build(cls, shipments: pd.DataFrame, hubs: pd.DataFrame, now: pd.Timestamp) -> Listing:
        """The listing of `shipments` (already ranked: row i of the listing is row i of them)."""
        frame = data.now_rows(shipments, hubs, now).reset_index(drop=True)
        frame = frame.rename(columns={"shipment_id": "id"})
        frame["shipment_id"] = frame["id"]  # what a filter on the shipment column reads
        frame["p_late"] = shipments["p_late"].to_numpy(dtype=float)
        frame["delay_p50_h"] = shipments["delay_p50_h"].to_numpy(dtype=float)
        frame["hours_left_raw"] = (data.utc(shipments["promised_at"])
                                   - now).dt.total_seconds().to_numpy() / 3600
        for col in ("eta", "eta_p10"):
            times = data.utc(shipments[col])
            frame[f"{col}_ts"] = np.where(times.isna(), np.nan,
                                          times.array.asi8.astype(float))
        exposure = shipments["exposure"] if "exposure" in shipments else shipments["p_late"]
        frame["exposure_raw"] = exposure.to_numpy(dtype=float)
        frame["band_rank"] = frame["band"].map(BAND_RANK).astype(float)
        return cls(frame)

    def __len__(self) -> int:
        return len(self.frame)

    def select(self, filter_query: str | None) -> Selection:
        """The positions `filter_query` keeps, in the default order (kept for the last few
        filters: paging through one filter reads no column again)."""
        key = (filter_query or "").strip()
        with self._lock:
            if key in self._selections:
                self._selections.move_to_end(key)
                return self._selections[key]
        try:
            keep = query.evaluate(query.parse(key), self.frame)
            chosen = Selection(np.flatnonzero(keep))
        except query.FilterError as err:
            chosen = Selection(np.arange(len(self.frame)),
                               f"{err}: the filter is not applied, all shipments are listed.")
        with self._lock:
            self._selections[key] = chosen
            while len(self._selections) > CACHED_FILTERS:
                self._selections.popitem(last=False)
        return chosen

    def _key(self, column: str) -> np.ndarray:
        """Ascending ranks of a column over the whole listing (NaN where missing)."""
        with self._lock:
            if column not in self._sort_keys:
                values = self.frame[SORT_KEYS.get(column, column)]
                if pd.api.types.is_numeric_dtype(values):
                    ranks = values.to_numpy(dtype=float)
                else:
                    text = values.astype(object).where(values.notna() & (values != ""), None)
                    codes, _ = pd.factorize(text, sort=True)
                    ranks = np.where(codes < 0, np.nan, codes).astype(float)
                self._sort_keys[column] = ranks
            return self._sort_keys[column]

    def order(self, positions: np.ndarray, sort_by: list[dict] | None) -> np.ndarray:
        """`positions` sorted by `sort_by` (Dash's [{"column_id", "direction"}], the first the
        main key); ties and an empty `sort_by` keep the default order."""
        keys = []
        for spec in reversed(sort_by or []):
            column = spec.get("column_id")
            if column not in self.frame and column not in SORT_KEYS:
                continue
            ranks = self._key(column)[positions]
            ranks = -ranks if spec.get("direction") == "desc" else ranks
            keys += [np.nan_to_num(ranks, nan=0.0), np.isnan(ranks)]  # missing last
        if not keys:
            return positions
        return positions[np.lexsort([positions, *keys])]

    def page(self, positions: np.ndarray, page: int, size: int) -> tuple[np.ndarray, int, int]:
        """One page of `positions`: (its positions, the page shown, the number of pages). A page
        beyond the last shows the last."""
        count = max(1, -(-len(positions) // size))
        page = min(max(int(page or 0), 0), count - 1)
        return positions[page * size:(page + 1) * size], page, count


def summary(shipments: pd.DataFrame, positions: np.ndarray) -> tuple[dict[str, int], float]:
    """Counts by band and the expected penalties of the selected shipments (all of them)."""
    chosen = shipments.iloc[positions]
    total = float(chosen["exposure"].sum()) if "exposure" in chosen else 0.0
    return data.band_counts(chosen), total
