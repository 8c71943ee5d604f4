"""The stream scorer's clock for the feature store: statistics rolled as its events pass window
ends (`features.roll`).

The stream scores each shipment as of its newest ingestion, so its clock is the newest
ingestion time it has consumed (never ahead of the wall clock). Before a micro-batch is scored:
- when its clock passes an hour end the offline store has not reached yet (a hub window, and at
  midnight the daily windows, closed), the store is rolled there, offline then online, so the
  batch is scored with the rows of the windows it spans (`features.stats_at`);
- when the lake holds weather observations ingested since the offline store's mark and up to
  its clock (the lake's ingestion times are kept in memory, read again when its weather files
  change), the store is rolled there too, so each shipment is scored with the observation
  known at its instant;
- otherwise, at most every `every_s` seconds, the store is rolled to its clock anyway: the
  online store, when a replayed backlog runs behind rows the offline store already has.
When the stream stops, the online store is rolled to its clock once more.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from features import marks
from features.roll import roll
from features.store import offline_dir
from shipdelay.lake import Lake
from shipdelay.settings import Settings

log = logging.getLogger("shipdelay.stream")
HOUR = pd.Timedelta(hours=1)


class StreamRoller:
    def __init__(self, settings: Settings, every_s: float = 30.0, clock=time.monotonic):
        self.settings = settings
        self.every_s = every_s
        self.clock = clock
        self.until: pd.Timestamp | None = None  # the stream's clock
        self._last = clock()
        self._offline = marks.offline_mark(offline_dir(settings))
        self.weather = WeatherTimes(Lake(settings.lake_dir))

    def before(self, events: pd.DataFrame) -> None:
        """Roll as the batch of valid `events` needs (see the module docstring)."""
        if events.empty or self._offline is None:
            return
        newest = pd.Timestamp(events["ingested_at"].max())
        newest = newest.tz_localize("UTC") if newest.tzinfo is None else newest.tz_convert("UTC")
        until = min(newest, pd.Timestamp.now(tz="UTC"))
        if self.until is not None and until <= self.until:
            return
        self.until = until
        ahead = until > self._offline
        window = ahead and until.floor(HOUR) > self._offline.floor(HOUR)
        if window or (ahead and self.weather.any_between(self._offline, until)) \
                or self.clock() - self._last >= self.every_s:
            self._roll(until)

    def close(self) -> None:
        """Roll the online store to the stream's clock (it stops here)."""
        if self.until is not None and self._offline is not None:
            self._roll(self.until)

    def _roll(self, until: pd.Timestamp) -> None:
        report = roll(self.settings, until)
        self._last = self.clock()
        self._offline = marks.offline_mark(offline_dir(self.settings)) or until
        if report.offline_from is not None or report.online_from is not None:
            log.info("feature store rolled to %s (offline %s, online %s rows, %.2f s)",
                     until.isoformat(), sum(report.offline_rows.values()),
                     sum(report.online_rows.values()), sum(report.seconds.values()))


class WeatherTimes:
    """The lake's weather ingestion times, sorted, re-read when its weather files change."""

    def __init__(self, lake: Lake):
        self.lake = lake
        self._files: list | None = None
        self._times = np.zeros(0, np.int64)

    def any_between(self, since: pd.Timestamp, until: pd.Timestamp) -> bool:
        """Whether an observation was ingested in (since, until]."""
        files = self.lake.files("hub_weather")
        if files != self._files:
            self._files = files
            times = self.lake.read("hub_weather", columns=["ingested_at"])["ingested_at"] \
                if files else pd.Series([], dtype="datetime64[ns, UTC]")
            self._times = np.sort(pd.DatetimeIndex(times).as_unit("us").asi8)
        lo, hi = (int(t.value // 1000) for t in (since, until))
        return bool(np.searchsorted(self._times, hi, "right") > np.searchsorted(
            self._times, lo, "right"))
