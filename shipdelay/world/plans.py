"""Sampling shipments: bookings, customers, lanes, service levels and planned itineraries."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from shipdelay.contract import SERVICE_LEVELS
from shipdelay.world.consolidation import consolidate
from shipdelay.world.handling import collects, first_leg_factor
from shipdelay.world.journeys import HANDLING_HOURS, MAX_LEGS, Plan
from shipdelay.world.network import (
    DWELL_HOURS,
    FIXED_HOURS,
    SERVICE_INTERVAL_HOURS,
    SPEED_KMH,
    Network,
    great_circle_km,
)

LEAD_HOURS = np.array([24.0, 12.0, 4.0])  # booking to first departure, by service level
CUSTOMS_PLANNED_HOURS = 12.0
FINAL_MILE_PLANNED_HOURS = 8.0
SLACK_BASE_HOURS = np.array([22.0, 12.0, 8.0])  # promised slack by service level
SLACK_SHARE = np.array([0.07, 0.06, 0.04])  # plus this share of planned transit


@dataclass
class Bookings:
    """Shipment-level attributes of a batch (arrays aligned with the Plan's rows)."""

    number: np.ndarray
    customer: np.ndarray
    level: np.ndarray  # index into SERVICE_LEVELS
    weight_kg: np.ndarray
    volume_m3: np.ndarray
    parcels: np.ndarray
    promised: np.ndarray
    origin_hub: np.ndarray
    destination_hub: np.ndarray


def booking_times(n: int, days: int, start: pd.Timestamp, rng: np.random.Generator) -> np.ndarray:
    """Sorted booking times (hours since start) with a weekly cycle and a Q4 peak."""
    dates = pd.date_range(start.tz_localize(None).normalize(), periods=days, freq="D")
    weight = np.where(dates.dayofweek < 5, 1.0, 0.45)
    weight *= 1 + 0.5 * np.clip((dates.dayofyear - 280) / 50, 0, 1) * (dates.dayofyear < 358)
    day = rng.choice(days, n, p=weight / weight.sum())
    hour = np.clip(rng.normal(13, 3.5, n), 0, 23.99)
    return np.sort(day * 24.0 + hour)


class ItineraryTable:
    """All itineraries of the network as flat arrays, indexed by (origin, destination, level)."""

    def __init__(self, net: Network):
        keys, first, count, hubs, modes, customs = [], [], [], [], [], []
        for key, options in net.itineraries.items():
            keys.append(key)
            first.append(len(hubs))
            count.append(len(options))
            for it in options:
                hubs.append(list(it.hubs) + [-1] * (MAX_LEGS + 1 - len(it.hubs)))
                modes.append(list(it.modes) + [-1] * (MAX_LEGS - len(it.modes)))
                customs.append(it.customs_at - 1 if it.customs_at >= 0 else -1)
        # (origin city, destination city, service level) -> key, as an array for vector lookups
        self.cities = pd.Index(sorted({k[0] for k in keys} | {k[1] for k in keys}))
        self.key_array = np.full((len(self.cities), len(self.cities), 3), -1, dtype=np.int64)
        for i, (o, d, lv) in enumerate(keys):
            self.key_array[self.cities.get_loc(o), self.cities.get_loc(d),
                           SERVICE_LEVELS.index(lv)] = i
        self.first, self.count = np.array(first), np.array(count)
        self.hubs, self.modes, self.customs = np.array(hubs), np.array(modes), np.array(customs)

    def choose(self, origin: np.ndarray, dest: np.ndarray, level: np.ndarray,
               rng: np.random.Generator) -> np.ndarray:
        """One itinerary per shipment, uniformly among its lane's options (a service level
        without options falls back to the next level's)."""
        o, d = self.cities.get_indexer(origin), self.cities.get_indexer(dest)
        idx = np.full(len(origin), -1, dtype=np.int64)
        for shift in range(3):
            keys = self.key_array[o, d, (level + shift) % 3]
            n_opt = np.where(keys >= 0, self.count[keys], 0)
            pick = self.first[keys] + np.floor(rng.random(len(keys)) * np.maximum(n_opt, 1)).astype(int)
            idx = np.where((idx < 0) & (n_opt > 0), pick, idx)
            if (idx >= 0).all():
                break
        return idx


def _next_slot(earliest: np.ndarray, hub: np.ndarray, mode: np.ndarray) -> np.ndarray:
    """Scheduled modes leave on a timetable: the first slot at or after `earliest`."""
    interval = SERVICE_INTERVAL_HOURS[mode]
    phase = (hub * 37 % 167).astype(float) % np.maximum(interval, 1)
    k = np.ceil((earliest - phase) / np.maximum(interval, 1))
    return np.where(interval > 0, phase + k * interval, earliest)


def sample_plans(net: Network, table: ItineraryTable, booked: np.ndarray, numbers: np.ndarray,
                 customs_rate: np.ndarray, rng: np.random.Generator, *,
                 consolidation_share: float = 0.0,
                 handling_steps: bool = False) -> tuple[Plan, Bookings]:
    """Who ships what where, and the plan they are promised.

    `customs_rate[o, d]` is P(customs hold) by origin and destination country (sorted codes).
    `consolidation_share` of the shipments get parallel inbound legs (consolidation.py);
    `handling_steps` plans handling steps for every shipment (handling.py).
    """
    n = len(booked)
    cust = rng.choice(len(net.customers), n, p=net.customers["weight"].to_numpy())
    shares = net.customers[["economy_share", "standard_share", "express_share"]].to_numpy()[cust]
    level = (rng.random(n)[:, None] > np.cumsum(shares, axis=1)).sum(axis=1).clip(0, 2)

    lanes = net.lanes
    home = net.customers["home_city"].to_numpy()[cust]
    origin = np.where(rng.random(n) < 0.7, home, "")
    free = origin == ""
    origin[free] = rng.choice(lanes["origin_city"].to_numpy(), free.sum(), p=lanes["weight"].to_numpy())
    dest = np.empty(n, dtype=object)
    for city, grp in lanes.groupby("origin_city"):  # one draw per origin city, not per shipment
        rows = np.flatnonzero(origin == city)
        if len(rows):
            p = grp["weight"].to_numpy() / grp["weight"].sum()
            dest[rows] = rng.choice(grp["destination_city"].to_numpy(), len(rows), p=p)
    itin = table.choose(origin.astype(object), dest, level, rng)

    hubs, modes = table.hubs[itin], table.modes[itin]
    n_legs = (modes >= 0).sum(axis=1)
    lat, lon = net.hubs["latitude"].to_numpy(), net.hubs["longitude"].to_numpy()
    kind = net.hubs["kind"].to_numpy()
    from_hub, to_hub = hubs[:, :MAX_LEGS], hubs[:, 1:]
    customs_leg = table.customs[itin]
    o_hub, d_hub = hubs[:, 0], hubs[np.arange(n), n_legs]
    feeds = None
    if consolidation_share > 0:
        from_hub, to_hub, modes, feeds, customs_leg, n_legs = consolidate(
            net.hubs, np.where(from_hub >= 0, from_hub, -1), to_hub, modes, customs_leg, n_legs,
            consolidation_share, rng)
    L = modes.shape[1]
    safe_from, safe_to = np.where(from_hub >= 0, from_hub, 0), np.where(to_hub >= 0, to_hub, 0)
    km = great_circle_km(lat[safe_from], lon[safe_from], lat[safe_to], lon[safe_to])
    safe_mode = np.where(modes >= 0, modes, 0)
    duration = km / SPEED_KMH[safe_mode] + FIXED_HOURS[safe_mode]
    dwell = np.vectorize(DWELL_HOURS.get)(kind)

    planned_dep, planned_arr = np.full((n, L), np.nan), np.full((n, L), np.nan)
    ready = np.full((n, L), np.nan)  # when each leg's cargo could go on, planned
    first = booked + LEAD_HOURS[level]
    chain = np.arange(1, L + 1)[None, :]
    feeds_or_chain = np.where(chain < n_legs[:, None], chain, -1) if feeds is None else feeds
    for i in range(L):
        has = i < n_legs
        # a leg fed by others leaves after the last of them (the critical path)
        fed = feeds_or_chain[:, :i] == i
        earliest = np.where(fed.any(axis=1),
                            np.where(fed, ready[:, :i], -np.inf).max(axis=1, initial=-np.inf),
                            first)
        dep = _next_slot(earliest, safe_from[:, i], safe_mode[:, i])
        planned_dep[:, i] = np.where(has, dep, np.nan)
        planned_arr[:, i] = np.where(has, dep + duration[:, i], np.nan)
        ready[:, i] = planned_arr[:, i] + dwell[safe_to[:, i]] + \
            CUSTOMS_PLANNED_HOURS * (customs_leg == i)
    last = planned_arr[np.arange(n), n_legs - 1] + CUSTOMS_PLANNED_HOURS * (customs_leg == n_legs - 1)
    transit = last - booked
    promised = last + FINAL_MILE_PLANNED_HOURS + SLACK_BASE_HOURS[level] + SLACK_SHARE[level] * transit

    carriers = net.carriers
    carrier = np.zeros((n, L), dtype=np.int64)
    for m in range(4):
        ids = np.flatnonzero(carriers["mode"].to_numpy() == m)
        mask = safe_mode == m
        carrier[mask] = ids[rng.integers(0, len(ids), mask.sum())]

    country = net.hubs["country"].to_numpy()
    c_index = {c: i for i, c in enumerate(net.hubs["country"].drop_duplicates().sort_values())}
    c_idx = np.vectorize(c_index.get)(country)
    hold_rate = np.where(customs_leg >= 0, customs_rate[c_idx[o_hub], c_idx[d_hub]], 0.0)

    parcels = 1 + rng.poisson(1.2, n)
    weight = rng.lognormal(np.array([5.5, 4.0, 2.5])[level], 1.0, n).round(2) + 0.1
    plan = Plan(booked, n_legs, modes, carrier, np.where(from_hub >= 0, from_hub, -1), to_hub,
                planned_dep, planned_arr, customs_leg, hold_rate, feeds)
    if handling_steps:
        plan.steps = np.ones(n, bool)
        plan.collects = collects(modes, level == SERVICE_LEVELS.index("economy"))
        plan.first_handling = first_leg_factor(
            booked, planned_dep[:, 0], HANDLING_HOURS[safe_mode[:, 0]])
    book = Bookings(numbers, cust, level, weight, (weight / rng.uniform(150, 350, n)).round(4),
                    parcels, promised, o_hub, d_hub)
    return plan, book
