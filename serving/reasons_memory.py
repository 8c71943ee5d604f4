"""Reasons remembered while a shipment's state stands.

A shipment's reasons (LightGBM's TreeSHAP, ~2 ms a shipment on one core) cost more than the rest
of its answer, and operations dashboards ask about the same shipments many times a minute. The
reasons change when the features do: an entry is keyed by the model version, the shipment and
the features that describe its state (every model input but the request-time ones, which move
with the clock), so a new scan, a new plan or new lane statistics mean new reasons. Entries live
`seconds` (default 300): the sentences that quote elapsed hours ("no scan for 40 h") are never
older than that. Each entry keeps the instant its reasons explain, which the answer states.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from shipdelay.recent import Recent

SECONDS = 300.0
MAX_ITEMS = 200_000


class ReasonsMemory:
    """Remembered reasons by (model version, shipment id, state)."""

    def __init__(self, seconds: float = SECONDS, max_items: int = MAX_ITEMS,
                 clock: Callable[[], float] = time.monotonic):
        self._recent = Recent(seconds, max_items, clock)

    @staticmethod
    def keys(version: str, shipment_ids: Sequence, state: np.ndarray) -> list[tuple]:
        """One key per row of `state` (the rows' lasting feature values, exactly)."""
        state = np.ascontiguousarray(state, dtype=float)
        return [(version, str(s), row.tobytes()) for s, row in zip(shipment_ids, state)]

    def recall(self, keys: list[tuple]) -> list[tuple[list[str], float] | None]:
        """(reasons, the instant they explain in epoch seconds) per key; None: not held."""
        held = self._recent.current()
        return [held.get(k) for k in keys]

    def keep(self, keys: list[tuple], reasons: list[tuple[list[str], float]]) -> None:
        held = self._recent.current()
        for k, words in zip(keys, reasons):
            held[k] = words
