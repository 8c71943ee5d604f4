"""Calendar features of a booking in the origin hub's local time.

Operations follow the local clock (a depot's shifts, an airport's evening wave, a weekend), so the
hour, weekday and month of a booking carry signal in the time zone of the hub where the freight
starts, not in UTC. A hub's `timezone` (an IANA name, optional in the contract) gives that clock;
a hub without one is read in UTC. Daylight saving time is honoured: a booking at 06:30 UTC is
08:30 in Berlin in summer and 07:30 in winter.

Vectorized: one `tz_convert` per distinct time zone, never a Python loop over bookings. The zone
is handed to pandas by name (its transition tables convert a million instants in ~0.5 s; a
`ZoneInfo` object is converted instant by instant, ten times slower); a name pandas cannot
resolve falls back to `ZoneInfo`, the database the contract checks names against.
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
    wall = np.empty(len(booked), dtype="int64")  # the local clock's reading, as naive ns
    for zone, rows in zones.groupby(zones, sort=False).indices.items():
        wall[rows] = _convert(booked[rows], zone).tz_localize(None).asi8
    local = pd.DatetimeIndex(wall.view("datetime64[ns]"))
    return {"booked_weekday": local.weekday.to_numpy("int64"),
            "booked_month": local.month.to_numpy("int64"),
            "booked_hour": local.hour.to_numpy("int64")}


def _convert(instants: pd.DatetimeIndex, zone: str) -> pd.DatetimeIndex:
    try:
        return instants.tz_convert(zone)
    except (KeyError, ValueError):  # a name newer than pandas' own time zone database
        return instants.tz_convert(ZoneInfo(zone))


def zones_of(hubs: np.ndarray, zone_by_hub: pd.Series) -> np.ndarray:
    """Each hub's time zone (None when the hub or its zone is unknown)."""
    zones = pd.Series(np.asarray(hubs, dtype=object)).map(zone_by_hub.dropna().astype(object))
    return zones.where(zones.notna(), None).to_numpy(dtype=object)
