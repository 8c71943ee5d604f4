"""A memory of recent results that forgets everything at once after a while.

Used where a value is costly to get and stays right for a known time: online rows that only a
feature build changes, a shipment's reasons while its tracking state stands. Forgetting all
entries together (a new dict every `seconds`) needs no per-entry clock, and a reader that still
holds the old dict finishes with it undisturbed, so threads need no lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Recent:
    """`current()` is a dict that lives at most `seconds` and `max_items` entries."""

    def __init__(self, seconds: float, max_items: int = 500_000,
                 clock: Callable[[], float] = time.monotonic):
        self.seconds = float(seconds)
        self.max_items = max_items
        self.clock = clock
        self._items: dict = {}
        self._until = 0.0

    def current(self) -> dict:
        now = self.clock()
        if now >= self._until or len(self._items) > self.max_items:
            self._items, self._until = {}, now + self.seconds
        return self._items
