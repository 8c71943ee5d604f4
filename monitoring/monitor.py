"""`shipdelay monitor`: judge the logged predictions and watch the inputs; alarms out.

The interface is fixed first (the retraining loop builds on it); the computation follows.
"""

from __future__ import annotations

import pandas as pd

from monitoring.summary import Alarm, MonitorSummary
from shipdelay.settings import Settings

__all__ = ["Alarm", "MonitorSummary", "run_monitor"]


def run_monitor(settings: Settings, as_of=None, days: int | None = None) -> MonitorSummary:
    """Monitor the `days` (default `settings.monitor_days`) up to `as_of` (default now)."""
    t = pd.Timestamp(as_of if as_of is not None else pd.Timestamp.now("UTC"))
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return MonitorSummary(as_of=t.isoformat(), days=int(days or settings.monitor_days))
