"""Calendar features of a booking in the origin hub's local time.

Operations follow the local clock (a depot's shifts, an airport's evening wave, a weekend), so the
hour, weekday and month of a booking carry signal in the time zone of the hub where the freight
starts, not in UTC. A hub's `timezone` (an IANA name, optional in the contract) gives that clock;
a hub without one is read in UTC. Daylight saving time is honoured: a booking at 06:30 UTC is
08:30 in Berlin in summer and 07:30 in winter.

Vectorized: one `tz_convert` per distinct time zone, never a Python loop over bookings.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

CALENDAR = ("booked_weekday", "booked_month", "booked_hour")


def local_calendar(booked_us: np.ndarray, zones: np.ndarray) -> dict[str, np.ndarray]:
    """Weekday (Monday = 0), month (1-12) and hour (0-23) of each booking instant (epoch
    microseconds, UTC) on the clock of its time zone (an IANA name; None or NaN: UTC)."""
    booked = pd.DatetimeIndex(pd.to_datetime(np.asarray(booked_us, dtype="int64"), unit="us",
                                             utc=True))
    zones = pd.Series(np.asarray(zones, dtype=object)).where(lambda z: z.notna(), "UTC")
    out = {name: np.zeros(len(booked), dtype="int64") for name in CALENDAR}
    for zone, rows in zones.groupby(zones, sort=False).indices.items():
        local = booked[rows].tz_convert(ZoneInfo(zone))
        out["booked_weekday"][rows] = local.weekday
        out["booked_month"][rows] = local.month
        out["booked_hour"][rows] = local.hour
    return out


def zones_of(hubs: np.ndarray, zone_by_hub: pd.Series) -> np.ndarray:
    """Each hub's time zone (None when the hub or its zone is unknown)."""
    zones = pd.Series(np.asarray(hubs, dtype=object)).map(zone_by_hub.dropna().astype(object))
    return zones.where(zones.notna(), None).to_numpy(dtype=object)
