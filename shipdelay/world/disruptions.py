"""Hidden world processes that cause delay: congestion, weather, seasons, customs regimes.

- Hub congestion is a daily AR(1) per hub (it builds and clears over days), raised by the weekly
  cycle, the Q4 peak and, in Asia, the weeks around Lunar New Year; ports also get rare backlogs.
- Regional weather disruptions arrive as events lasting days (typhoons in East Asia in late
  summer, winter storms in Europe and North America), with a severity.
- Customs inspection rates depend on the (origin country, destination country) pair.

`World` holds the realised series. `World.conditional(as_of)` gives the view used for the
ceiling: the true state up to `as_of`, and freshly drawn futures after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

# Lunar New Year dates (factory closures ripple through Asian hubs for about two weeks).
LUNAR_NEW_YEAR = pd.to_datetime(
    ["2024-02-10", "2025-01-29", "2026-02-17", "2027-02-06", "2028-01-26", "2029-02-13"]
)
RHO = 0.88  # daily persistence of congestion
SIGMA = 0.28  # daily innovation of congestion
SHOCK_SIZE = (1.0, 2.5)  # jump of a port or hub backlog
WEATHER_RATE = {  # weather events per region and day, by month (1..12)
    "east_asia": [0.02] * 6 + [0.06, 0.08, 0.08, 0.05, 0.02, 0.02],
    "southeast_asia": [0.02] * 5 + [0.05, 0.06, 0.06, 0.05, 0.04, 0.03, 0.02],
    "europe": [0.06, 0.05, 0.03, 0.02, 0.02, 0.02, 0.02, 0.02, 0.02, 0.03, 0.05, 0.06],
    "north_america": [0.07, 0.06, 0.04, 0.03, 0.03, 0.03, 0.03, 0.05, 0.05, 0.03, 0.05, 0.07],
}
DEFAULT_WEATHER_RATE = [0.02] * 12
WEATHER_MEAN_DAYS = 2.5


def seasonal_congestion(days: pd.DatetimeIndex, regions: np.ndarray, kinds: np.ndarray) -> np.ndarray:
    """Deterministic congestion pressure (days x hubs) from the week, Q4 and Lunar New Year."""
    doy = days.dayofyear.to_numpy()[:, None]
    weekday = days.dayofweek.to_numpy()[:, None]
    q4 = np.clip((doy - 290) / 40, 0, 1) * (doy < 358)  # ramps from mid-October to Christmas
    to_lny = np.min(np.abs((days.to_numpy()[:, None] - LUNAR_NEW_YEAR.to_numpy()[None, :])
                           / np.timedelta64(1, "D")), axis=1)[:, None]
    asian = np.isin(regions, ["east_asia", "southeast_asia"])[None, :]
    lny = np.where(asian, np.clip(1 - np.abs(to_lny - 4) / 10, 0, 1), 0.0)
    monday = (weekday == 0) & (kinds == "depot")[None, :]
    weekend = (weekday >= 5) & np.isin(kinds, ["depot", "rail"])[None, :]
    port = (kinds == "seaport")[None, :]
    return 0.9 * q4 * (1 + 0.5 * port) + 1.3 * lny + 0.35 * monday + 0.25 * weekend


@dataclass
class World:
    """Realised hidden state; times are hours since `start`."""

    start: pd.Timestamp
    days: int
    congestion_level: np.ndarray  # days x hubs, latent AR(1) + shocks
    season: np.ndarray  # days x hubs, deterministic pressure
    weather_events: pd.DataFrame  # region, start_h, end_h, severity
    weather_daily: np.ndarray  # days x regions, summed severity
    regions: list[str]
    hub_region: np.ndarray  # region index per hub
    customs_rate: np.ndarray  # countries x countries, P(hold)
    countries: list[str]
    shock_rate: np.ndarray  # per hub and day, P(a backlog starts)
    regime: object = None  # shipdelay.world.regimes.Scales: multipliers from regime changes

    def regime_scale(self, name: str, t_hours, index) -> np.ndarray | float:
        """Regime multiplier `name` (congestion, carrier, hold_rate, hold_hours) at the given
        times of hubs or carriers `index`: 1 where no regime changed the world."""
        if self.regime is None:
            return 1.0
        return getattr(self.regime, name)[self._day(t_hours), index]

    def _day(self, t_hours: np.ndarray) -> np.ndarray:
        days = np.nan_to_num(np.asarray(t_hours, dtype=float) // 24, nan=0.0)  # NaN = no such leg
        return np.clip(days.astype(np.int64), 0, self.days - 1)

    def congestion(self, hub: np.ndarray, t_hours: np.ndarray) -> np.ndarray:
        """Congestion index (>= 0; 0 = fluid, 1 = a bad day, 3 = gridlock) at hubs and times."""
        d = self._day(t_hours)
        return np.logaddexp(0, self.congestion_level[d, hub] + self.season[d, hub] - 1.0) * \
            self.regime_scale("congestion", t_hours, hub)

    def weather(self, hub: np.ndarray, t_hours: np.ndarray) -> np.ndarray:
        """Weather severity in the hub's region at the given times (0 = clear)."""
        return self.weather_daily[self._day(t_hours), self.hub_region[hub]]

    @cached_property
    def weather_index(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, int]]:
        """Per region: its events' start and end as the daily series counts them (whole days),
        sorted by start, their severities, and how many of the latest events begun by any
        moment can still be active then (1 + the most events that begin during one event)."""
        ev = self.weather_events
        out = []
        for r in range(len(self.regions)):
            mine = ev[ev["region"].to_numpy() == r]
            starts = np.floor(mine["start_h"].to_numpy() / 24) * 24
            order = np.argsort(starts, kind="stable")
            starts = starts[order]
            ends = (np.ceil(mine["end_h"].to_numpy() / 24) * 24)[order]
            during = np.searchsorted(starts, ends, side="left") - np.arange(len(starts)) - 1
            depth = int(during.max()) + 1 if len(starts) else 0
            out.append((starts, ends, mine["severity"].to_numpy()[order], depth))
        return out

    @cached_property
    def weather_rate(self) -> np.ndarray:
        """New weather events per day, regions x months (0..11)."""
        return np.array([WEATHER_RATE.get(r, DEFAULT_WEATHER_RATE) for r in self.regions])

    @cached_property
    def day_month(self) -> np.ndarray:
        """Month (0..11) of each day of the world."""
        return (self.start + pd.to_timedelta(np.arange(self.days), unit="D")).month.to_numpy() - 1

    def conditional(self, as_of: np.ndarray, rng: np.random.Generator) -> ConditionalWorld:
        return ConditionalWorld(self, np.asarray(as_of, dtype=float), rng)

    def take(self, rows: np.ndarray) -> World:
        """The world seen by some rows of a batch: the same for all of them."""
        return self


class ConditionalWorld:
    """The world as known at `as_of` (per row): the truth up to then, a fresh draw after.

    Congestion after `as_of` follows the AR(1) forward from its value at `as_of`; weather keeps
    the events active at `as_of` (their severity and end are part of the hidden state) and draws
    new ones at the regional base rate.
    """

    def __init__(self, world: World, as_of: np.ndarray, rng: np.random.Generator):
        self.w, self.as_of, self.rng = world, as_of, rng

    def take(self, rows: np.ndarray) -> ConditionalWorld:
        """The view of some rows of the batch (each row has its own `as_of`)."""
        return ConditionalWorld(self.w, self.as_of[rows], self.rng)

    def regime_scale(self, name: str, t_hours, index) -> np.ndarray | float:
        return self.w.regime_scale(name, t_hours, index)  # regimes are part of the known state

    def congestion(self, hub: np.ndarray, t_hours: np.ndarray) -> np.ndarray:
        w, t = self.w, np.asarray(t_hours, dtype=float)
        d_now, d = w._day(self.as_of), w._day(t)
        lag = np.maximum(d - d_now, 0)
        now_level = w.congestion_level[d_now, hub]
        decay = RHO ** lag
        spread = SIGMA * np.sqrt((1 - decay**2) / (1 - RHO**2))
        # backlogs that may hit between now and then (rare jumps that decay like the rest)
        shocks = self.rng.poisson(w.shock_rate[hub] * np.minimum(lag, 1 / (1 - RHO)))
        jump = shocks * self.rng.uniform(*SHOCK_SIZE, len(t)) * RHO ** self.rng.uniform(0, np.minimum(lag, 8))
        level = np.where(lag > 0, decay * now_level + spread * self.rng.standard_normal(len(t)) + jump,
                         w.congestion_level[d, hub])
        return np.logaddexp(0, level + w.season[d, hub] - 1.0) * w.regime_scale("congestion", t, hub)

    def weather(self, hub: np.ndarray, t_hours: np.ndarray) -> np.ndarray:
        w, t = self.w, np.asarray(t_hours, dtype=float)
        future = t > self.as_of
        known = w.weather(hub, np.where(future, self.as_of, t))
        region = w.hub_region[hub]
        still = np.zeros(len(t))
        idx = np.flatnonzero(future)
        for r, (starts, ends, sev, depth) in enumerate(w.weather_index if len(idx) else ()):
            rows = idx[region[idx] == r]
            if not len(rows) or not depth:
                continue
            # events active at as_of that will still be active at t (> as_of): among the
            # region's events begun by as_of, only the `depth` latest can still be active
            last = np.searchsorted(starts, self.as_of[rows], side="right") - 1
            for back in range(depth):
                k = last - back
                hit = (k >= 0) & (ends[np.maximum(k, 0)] > t[rows])
                still[rows] += np.where(hit, sev[np.maximum(k, 0)], 0.0)
        rate = w.weather_rate[region, w.day_month[w._day(t)]]
        horizon = np.minimum((t - self.as_of) / 24, WEATHER_MEAN_DAYS + 1)
        new = self.rng.random(len(t)) < 1 - np.exp(-rate * np.maximum(horizon, 0))
        fresh = np.where(new, self.rng.uniform(0.4, 1.6, len(t)), 0.0)
        return np.where(future, still + fresh, known)


def build_world(hubs: pd.DataFrame, start: pd.Timestamp, days: int, seed: int) -> World:
    """Draw the hidden world for `days` days from `start` (extra days cover late deliveries)."""
    rng = np.random.default_rng([seed, 2])
    n_days = days + 120  # journeys booked near the end run past it
    n_hubs = len(hubs)
    dates = pd.date_range(start.tz_localize(None).normalize(), periods=n_days, freq="D")
    kinds = hubs["kind"].to_numpy()
    regions = sorted(hubs["region"].unique())
    hub_region = hubs["region"].map({r: i for i, r in enumerate(regions)}).to_numpy()

    level = np.zeros((n_days, n_hubs))
    shock_rate = np.where(kinds == "seaport", 0.004, 0.0015)
    shocks = (rng.random((n_days, n_hubs)) < shock_rate) * rng.uniform(*SHOCK_SIZE, (n_days, n_hubs))
    noise = SIGMA * rng.standard_normal((n_days, n_hubs))
    level[0] = noise[0]
    for d in range(1, n_days):  # days, not events: a short loop over time
        level[d] = RHO * level[d - 1] + noise[d] + shocks[d]
    season = seasonal_congestion(dates, hubs["region"].to_numpy(), kinds)

    rows = []
    months = dates.month.to_numpy() - 1
    for r_i, region in enumerate(regions):
        rate = np.array(WEATHER_RATE.get(region, DEFAULT_WEATHER_RATE))[months]
        begins = np.flatnonzero(rng.random(n_days) < rate)
        for b in begins:
            duration = rng.gamma(2.0, WEATHER_MEAN_DAYS / 2) * 24
            start_h = b * 24 + rng.uniform(0, 24)
            rows.append((r_i, start_h, start_h + duration, rng.uniform(0.4, 1.6)))
    weather_events = pd.DataFrame(rows, columns=["region", "start_h", "end_h", "severity"])
    weather_daily = np.zeros((n_days, len(regions)))
    for ev in weather_events.itertuples():
        d0, d1 = int(ev.start_h // 24), int(min(np.ceil(ev.end_h / 24), n_days))
        weather_daily[d0:d1, ev.region] += ev.severity

    countries = sorted(hubs["country"].unique())
    n_c = len(countries)
    customs = rng.beta(1.2, 14, (n_c, n_c))  # mostly a few percent, some pairs much stricter
    strict = rng.random((n_c, n_c)) < 0.12
    customs = np.where(strict, customs + rng.uniform(0.15, 0.35, (n_c, n_c)), customs)
    np.fill_diagonal(customs, 0.0)
    return World(start, n_days, level, season, weather_events, weather_daily, regions,
                 hub_region, customs, countries, shock_rate)
