"""Vectorized journeys: planned itineraries in, actual milestone times and their causes out.

One function moves every shipment of a batch leg by leg (a loop over the at most four leg
positions, never over shipments). The same function re-simulates the rest of a journey for the
ceiling: pass `known` times (NaN where not yet happened at `as_of`) and a conditional world.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from shipdelay.world.network import AIR, OCEAN, RAIL, SERVICE_INTERVAL_HOURS, TRUCK

WX_DEPARTURE_HOURS = np.array([4.0, 6.0, 10.0, 22.0])  # per unit of weather severity, by mode
WX_ARRIVAL_HOURS = np.array([3.0, 4.0, 6.0, 16.0])
FAILURE_HOURS = np.array([8.0, 16.0, 12.0, 48.0])  # mean repair delay by mode
HANDLING_HOURS = np.array([3.0, 8.0, 5.0, 24.0])  # minimum handling before a departure, by mode
CUSTOMS_CLEARANCE_HOURS = (3.0, 10.0)
HOLD_MEAN_HOURS = 40.0
FINAL_MILE_HOURS = 6.0
DELIVERY_FAIL_RATE = 0.03
MAX_LEGS = 4

TIMES = ("pickup", "dep", "arr", "hold_start", "hold_end", "ofd", "delivered")


@dataclass
class Plan:
    """Planned journeys of n shipments, legs padded to MAX_LEGS (mode -1 = no leg)."""

    booked: np.ndarray  # hours since world start
    n_legs: np.ndarray
    mode: np.ndarray  # n x L
    carrier: np.ndarray  # n x L, index into the carriers table
    from_hub: np.ndarray  # n x L
    to_hub: np.ndarray  # n x L
    planned_dep: np.ndarray  # n x L
    planned_arr: np.ndarray  # n x L
    customs_leg: np.ndarray  # leg after whose arrival customs is cleared, -1 = none
    hold_rate: np.ndarray  # P(customs hold) for the shipment's country pair

    def take(self, rows: np.ndarray) -> Plan:
        return Plan(**{k: v[rows] for k, v in self.__dict__.items()})


@dataclass
class Journey:
    """Actual times (hours since world start; NaN = no such milestone) and hidden causes."""

    pickup: np.ndarray
    dep: np.ndarray  # n x L
    arr: np.ndarray  # n x L
    hold: np.ndarray  # bool
    hold_start: np.ndarray
    hold_end: np.ndarray
    ofd: np.ndarray
    delivered: np.ndarray
    failure: np.ndarray  # n x L bool: equipment failure during the leg
    failure_at: np.ndarray  # n x L
    weather_hit: np.ndarray  # n x L: weather severity met on the leg
    congestion: np.ndarray  # n x L: congestion at the departure hub
    missed: np.ndarray  # n x L bool: missed the scheduled service
    delivery_failed: np.ndarray  # bool
    causes: dict = field(default_factory=dict)


def _pick(sim: np.ndarray, known: dict | None, name: str, as_of, col: int | None = None):
    """Use the known time where there is one; else the draw, not earlier than `as_of`."""
    if known is None:
        return sim
    k = known[name] if col is None else known[name][:, col]
    return np.where(np.isnan(k), np.maximum(sim, as_of), k)


def simulate_journeys(plan: Plan, world, carriers, rng: np.random.Generator,
                      known: dict | None = None, as_of: np.ndarray | None = None) -> Journey:
    """Move every shipment of `plan` through `world`; see the module docstring."""
    n, L = plan.mode.shape
    nan = np.full((n, L), np.nan)
    dep, arr, fail_at, wx, cong = nan.copy(), nan.copy(), nan.copy(), np.zeros((n, L)), np.zeros((n, L))
    failure, missed = np.zeros((n, L), bool), np.zeros((n, L), bool)
    slip_h = carriers["slip_hours"].to_numpy()
    speed = carriers["speed_factor"].to_numpy()
    fail_rate = carriers["failure_rate"].to_numpy()

    pickup = plan.planned_dep[:, 0] - rng.uniform(1.0, 4.0, n)
    pickup = np.maximum(pickup, plan.booked + 0.25)
    pickup = _pick(pickup, known, "pickup", as_of)
    hold = np.zeros(n, bool)
    hold_start, hold_end = np.full(n, np.nan), np.full(n, np.nan)
    ready = pickup.copy()
    for i in range(L):
        has = i < plan.n_legs
        mode = np.where(has, plan.mode[:, i], TRUCK)
        car = np.where(has, plan.carrier[:, i], 0)
        frm = np.where(has, plan.from_hub[:, i], 0)
        to = np.where(has, plan.to_hub[:, i], 0)
        if i > 0:
            c_prev = world.congestion(frm, ready)
            handling = HANDLING_HOURS[mode] * (1 + 1.6 * c_prev) * rng.lognormal(0, 0.25, n)
            ready = np.where(has, ready + handling, ready)
        sched = plan.planned_dep[:, i]
        interval = SERVICE_INTERVAL_HOURS[mode]
        late_by = ready - sched
        slots = np.where((interval > 0) & (late_by > 0), np.ceil(late_by / np.maximum(interval, 1)), 0)
        missed[:, i] = has & (slots > 0)
        base = np.where(interval > 0, sched + slots * interval, np.maximum(sched, ready))
        cong[:, i] = world.congestion(frm, base)
        w_dep = world.weather(frm, base)
        slip = rng.exponential(1.0, n) * slip_h[car] * (1 + 0.6 * cong[:, i])
        d = base + slip + w_dep * WX_DEPARTURE_HOURS[mode] * rng.uniform(0.3, 1.7, n)
        d = _pick(d, known, "dep", as_of, i)
        duration = (plan.planned_arr[:, i] - plan.planned_dep[:, i]) * speed[car] * rng.lognormal(0, 0.06, n)
        w_arr = world.weather(to, d + duration)
        fails = rng.random(n) < fail_rate[car] * (1 + w_dep + w_arr)
        fix = rng.gamma(2.0, FAILURE_HOURS[mode] / 2, n)
        a = d + duration + w_arr * WX_ARRIVAL_HOURS[mode] * rng.uniform(0.3, 1.7, n) + fails * fix
        a = _pick(a, known, "arr", as_of, i)
        dep[:, i] = np.where(has, d, np.nan)
        arr[:, i] = np.where(has, a, np.nan)
        failure[:, i] = has & fails
        fail_at[:, i] = np.where(failure[:, i], d + rng.uniform(0.2, 0.8, n) * duration, np.nan)
        wx[:, i] = np.where(has, np.maximum(w_dep, w_arr), 0.0)
        ready = np.where(has, a, ready)
        # customs at the entry hub, after the arrival of the leg that crosses the border
        at_customs = has & (plan.customs_leg == i)
        clearance = rng.uniform(*CUSTOMS_CLEARANCE_HOURS, n)
        drawn_hold = at_customs & (rng.random(n) < plan.hold_rate)
        h_start = _pick(ready + clearance, known, "hold_start", as_of)
        if known is not None:  # a hold already seen stays a hold
            drawn_hold = at_customs & (~np.isnan(known["hold_start"]) | drawn_hold)
        h_end = _pick(h_start + rng.gamma(2.0, HOLD_MEAN_HOURS / 2, n), known, "hold_end", as_of)
        hold |= drawn_hold
        hold_start = np.where(drawn_hold, h_start, hold_start)
        hold_end = np.where(drawn_hold, h_end, hold_end)
        ready = np.where(drawn_hold, h_end, np.where(at_customs, ready + clearance, ready))

    last_hub = plan.to_hub[np.arange(n), plan.n_legs - 1]
    c_last = world.congestion(last_hub, ready)
    ofd = ready + FINAL_MILE_HOURS * (0.5 + c_last) * rng.lognormal(0, 0.3, n)
    ofd = _pick(ofd, known, "ofd", as_of)
    delivery_failed = rng.random(n) < DELIVERY_FAIL_RATE
    delivered = ofd + rng.uniform(0.5, 6.0, n) + delivery_failed * 24.0
    delivered = _pick(delivered, known, "delivered", as_of)
    return Journey(pickup, dep, arr, hold, hold_start, hold_end, ofd, delivered, failure,
                   fail_at, wx, cong, missed, delivery_failed)


def known_at(journey: Journey, as_of: np.ndarray) -> dict[str, np.ndarray]:
    """Times of `journey` that had happened by `as_of` (per row); NaN for the rest."""
    out = {}
    for name in TIMES:
        values = getattr(journey, name)
        cut = as_of[:, None] if values.ndim == 2 else as_of
        out[name] = np.where(values <= cut, values, np.nan)
    return out


__all__ = ["AIR", "MAX_LEGS", "OCEAN", "RAIL", "Journey", "Plan", "known_at", "simulate_journeys"]
