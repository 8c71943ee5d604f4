"""Regime changes: the world changes from a date, so that monitoring has something to find.

A regime is one change from its start day (UTC) to the end of the world:

| kind | target | factor |
| --- | --- | --- |
| `carrier_degrades` | carrier id (`TRU-02`) | its departure slip and equipment failure rate scale |
| `hub_congestion` | hub id (`P-CNSHA`) | the hub's congestion index scales (2.0: doubles) |
| `new_lane` | `origin city>destination city` (`shanghai>chicago`) | share of bookings on the lane |
| `feed_silent` | hub id or carrier id | none: its tracking scans stop being emitted |
| `customs_tightens` | country code (`US`), imports into it | customs hold rate scales; `factor2`: hold length (default: `factor`) |

Written `kind:target:YYYY-MM-DD[:factor[:factor2]]` on the command line
(`shipdelay simulate --regime carrier_degrades:TRU-02:2026-03-01:3`), or as a JSON file holding a
list of `{"kind", "target", "start", "factor", "factor2"}` objects.

Physical changes (carrier, hub, customs) live in the `World` as day-by-entity multipliers
(`Scales`), read through `World.regime_scale`; the ceiling's re-simulation reads the same world,
so it follows every regime (it knows the world's true state, as it knows each carrier's true
reliability). A new lane is closed before its start (no booking uses it) and takes `factor` of
the bookings from then on. A silent feed is a reporting change only: shipments move as before,
their scans are simply not emitted (the ceiling is unchanged).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

KINDS = ("carrier_degrades", "hub_congestion", "new_lane", "feed_silent", "customs_tightens")
DEFAULT_FACTOR = {"carrier_degrades": 2.0, "hub_congestion": 2.0, "new_lane": 0.05,
                  "feed_silent": 0.0, "customs_tightens": 2.0}


@dataclass(frozen=True)
class Regime:
    """One change of the world from `start` (a UTC day) on."""

    kind: str
    target: str
    start: str
    factor: float | None = None
    factor2: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown regime kind {self.kind!r}: one of {', '.join(KINDS)}")
        try:
            pd.Timestamp(self.start)
        except ValueError:
            raise ValueError(f"regime start {self.start!r} is not a date like 2026-03-01") from None
        if self.factor is None:
            object.__setattr__(self, "factor", DEFAULT_FACTOR[self.kind])
        if self.factor < 0 or (self.factor2 is not None and self.factor2 < 0):
            raise ValueError(f"regime {self.label}: factors must be at least 0")
        if self.kind == "new_lane" and not 0 < self.factor <= 1:
            raise ValueError(f"regime {self.label}: the share of bookings must be in (0, 1]")

    @property
    def label(self) -> str:
        tail = "" if self.kind == "feed_silent" else f" x{self.factor:g}"
        return f"{self.kind} {self.target} from {self.start}{tail}"

    def start_hours(self, world_start: pd.Timestamp) -> float:
        return (pd.Timestamp(self.start, tz="UTC") - world_start).total_seconds() / 3600


def parse_regime(text: str) -> list[Regime]:
    """Regimes from `kind:target:date[:factor[:factor2]]` or from a JSON file's path."""
    if text.lower().endswith(".json") or Path(text).is_file():
        try:
            items = json.loads(Path(text).read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot read regimes from {text}: {err}") from None
        if isinstance(items, dict):
            items = [items]
        try:
            return [Regime(**item) for item in items]
        except TypeError as err:
            raise ValueError(f"{text}: each regime has kind, target, start, and optionally "
                             f"factor and factor2 ({err})") from None
    parts = text.split(":")
    if not 3 <= len(parts) <= 5:
        raise ValueError(f"{text!r} is not kind:target:YYYY-MM-DD[:factor[:factor2]]")
    try:
        numbers = [float(p) for p in parts[3:]]
    except ValueError:
        raise ValueError(f"{text!r}: the factors must be numbers") from None
    return [Regime(parts[0], parts[1], parts[2], *numbers)]


@dataclass
class Scales:
    """Multipliers (1 = unchanged) by day of the world and hub or carrier."""

    congestion: np.ndarray  # days x hubs
    carrier: np.ndarray  # days x carriers: departure slip and equipment failure rate
    hold_rate: np.ndarray  # days x hubs: customs hold probability at the entry hub
    hold_hours: np.ndarray  # days x hubs: customs hold length


def _index(values, target: str, what: str) -> int:
    values = list(values)
    if target not in values:
        raise ValueError(f"unknown {what} {target!r} (known: {', '.join(map(str, values[:12]))}"
                         f"{', ...' if len(values) > 12 else ''})")
    return values.index(target)


def check(regimes, net) -> None:
    """Raise ValueError naming the first regime whose target the world does not have."""
    for r in regimes:
        if r.kind == "carrier_degrades":
            _index(net.carriers["carrier_id"], r.target, "carrier")
        elif r.kind == "hub_congestion":
            _index(net.hubs["hub_id"], r.target, "hub")
        elif r.kind == "feed_silent":
            _index([*net.hubs["hub_id"], *net.carriers["carrier_id"]], r.target, "hub or carrier")
        elif r.kind == "customs_tightens":
            _index(sorted(net.hubs["country"].unique()), r.target, "country")
        else:
            lane_of(r, net)


def scales(regimes, net, world) -> Scales | None:
    """The world's multipliers for the physical regimes (None when there are none)."""
    physical = [r for r in regimes if r.kind in ("carrier_degrades", "hub_congestion",
                                                 "customs_tightens")]
    if not physical:
        return None
    days, hubs = world.days, len(net.hubs)
    out = Scales(np.ones((days, hubs)), np.ones((days, len(net.carriers))), np.ones((days, hubs)),
                 np.ones((days, hubs)))
    for r in physical:
        d0 = int(np.clip(r.start_hours(world.start) // 24, 0, days))
        if r.kind == "carrier_degrades":
            out.carrier[d0:, _index(net.carriers["carrier_id"], r.target, "carrier")] *= r.factor
        elif r.kind == "hub_congestion":
            out.congestion[d0:, _index(net.hubs["hub_id"], r.target, "hub")] *= r.factor
        else:
            entry = (net.hubs["country"] == r.target).to_numpy()
            out.hold_rate[d0:, entry] *= r.factor
            out.hold_hours[d0:, entry] *= r.factor if r.factor2 is None else r.factor2
    return out


def lane_of(regime: Regime, net) -> tuple[str, str]:
    """(origin city, destination city) of a new lane's target `origin>destination`."""
    origin, _, dest = regime.target.partition(">")
    by_hub = dict(zip(net.hubs["hub_id"], net.hubs["city"]))
    origin, dest = by_hub.get(origin, origin), by_hub.get(dest, dest)
    lanes = net.lanes
    if not ((lanes["origin_city"] == origin) & (lanes["destination_city"] == dest)).any():
        raise ValueError(f"new lane {regime.target!r}: not a pair of the world's cities "
                         f"(origin>destination, e.g. {lanes['origin_city'].iloc[0]}>"
                         f"{lanes['destination_city'].iloc[0]})")
    return origin, dest


def close_new_lanes(net, regimes):
    """The network without the new lanes: no booking uses them before they open."""
    new = [lane_of(r, net) for r in regimes if r.kind == "new_lane"]
    if not new:
        return net
    lanes = net.lanes.copy()
    pairs = list(zip(lanes["origin_city"], lanes["destination_city"]))
    closed = np.array([p in new for p in pairs])
    lanes.loc[closed, "weight"] = 0.0
    lanes["weight"] /= lanes["weight"].sum()
    return dataclasses.replace(net, lanes=lanes)


def open_new_lanes(plan, book, net, table, regimes, world, customs_rate, rng, sample_plans):
    """From each new lane's start, `factor` of the bookings are redrawn on that lane (their
    customer, level, itinerary and cargo drawn as for any booking of the lane)."""
    for r in (r for r in regimes if r.kind == "new_lane"):
        origin, dest = lane_of(r, net)
        rows = np.flatnonzero((plan.booked >= r.start_hours(world.start))
                              & (rng.random(len(plan.booked)) < r.factor))
        if not len(rows):
            continue
        lane = net.lanes[(net.lanes["origin_city"] == origin)
                         & (net.lanes["destination_city"] == dest)].assign(weight=1.0)
        only = dataclasses.replace(net, lanes=lane,
                                   customers=net.customers.assign(home_city=origin))
        sub_plan, sub_book = sample_plans(only, table, plan.booked[rows], book.number[rows],
                                          customs_rate, rng)
        for whole, part in ((plan, sub_plan), (book, sub_book)):
            for name, values in vars(part).items():
                if isinstance(values, np.ndarray) and values.shape[:1] == (len(rows),):
                    getattr(whole, name)[rows] = values
    return plan, book


def silence_feeds(scans: pd.DataFrame, plan, net, regimes, world) -> pd.DataFrame:
    """Scans without those a silent feed no longer emits: at a silent hub, or on a leg of a
    silent carrier, from the regime's start (by when the scan would have happened)."""
    silent = [r for r in regimes if r.kind == "feed_silent"]
    if not silent or scans.empty:
        return scans
    hub_ids = net.hubs["hub_id"].to_numpy()
    carrier_ids = net.carriers["carrier_id"].to_numpy()
    rows, legs = scans["row"].to_numpy(), scans["leg"].to_numpy().astype(np.int64)
    hub = hub_ids[scans["hub"].to_numpy()]
    carrier = carrier_ids[plan.carrier[rows, np.clip(legs, 0, plan.carrier.shape[1] - 1)]]
    time = scans["time"].to_numpy()
    drop = np.zeros(len(scans), bool)
    for r in silent:
        drop |= ((hub == r.target) | (carrier == r.target)) & (time >= r.start_hours(world.start))
    return scans[~drop].reset_index(drop=True)
