"""Vectorized journeys: planned itineraries in, actual milestone times and their causes out.

One function moves every shipment of a batch stage by stage (a loop over the at most four leg
positions, never over shipments): pickup; per leg, readiness to leave (handling and dwell after
the previous leg, which decides whether a scheduled service is missed), departure, the leg under
way (with any equipment failure), customs after the border-crossing leg; out for delivery; the
delivery attempt.

The same function re-simulates the rest of a journey for the ceiling: pass the true journeys
(`given`), the snapshot moment of each row (`as_of`) and the conditional world. Everything that
had physically happened by `as_of` is then kept and only the rest is drawn, from the same
processes conditioned on that history:

- a stage that had ended by `as_of` keeps its true outcome (a missed service, a failed delivery
  attempt, a customs decision included);
- a stage under way at `as_of` keeps what had happened in it (an equipment failure met and when,
  a customs hold begun and when, the outcome of a delivery attempt), and the rest of it is drawn
  again until its unknown end falls after `as_of`: rejection sampling, the exact conditional law
  (a dwell, a delay or a hold that has lasted long already is likely to last longer), never a
  clip to `as_of`;
- later stages are drawn afresh.

A row whose draws keep contradicting its history after REDRAWS tries takes the true outcome of
that stage (consistent by construction; `Journey.kept_true` counts them, a tiny share).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from shipdelay.world.network import AIR, OCEAN, RAIL, SERVICE_INTERVAL_HOURS, TRUCK

WX_DEPARTURE_HOURS = np.array([4.0, 6.0, 10.0, 22.0])  # per unit of weather severity, by mode
WX_ARRIVAL_HOURS = np.array([3.0, 4.0, 6.0, 16.0])
FAILURE_HOURS = np.array([8.0, 16.0, 12.0, 48.0])  # mean repair delay by mode
FAILURE_SHARE = (0.2, 0.8)  # where along the leg a failure strikes, as a share of its duration
HANDLING_HOURS = np.array([3.0, 8.0, 5.0, 24.0])  # minimum handling before a departure, by mode
CUSTOMS_CLEARANCE_HOURS = (3.0, 10.0)
HOLD_MEAN_HOURS = 40.0
FINAL_MILE_HOURS = 6.0
DELIVERY_FAIL_RATE = 0.03
ATTEMPT_HOURS = 3.0  # a failed delivery attempt is reported this long after out for delivery
MAX_LEGS = 4
REDRAWS = 60  # conditional redraws of a stage before a row takes its true outcome
# Weather severity met at arrival above which the chance of an equipment failure is taken as at
# its highest, for the rejection step that conditions a failure already met (summed regional
# events rarely pass 3)
_WX_CAP = 3.0

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
    weather_hit: np.ndarray  # n x L: worst weather severity met on the leg (departure, arrival)
    congestion: np.ndarray  # n x L: congestion at the departure hub
    missed: np.ndarray  # n x L bool: missed the scheduled service
    delivery_failed: np.ndarray  # bool
    ready: np.ndarray  # n x L: ready to leave on the leg (picked up, or handled after the last)
    weather_dep: np.ndarray  # n x L: weather severity at the departure hub when the leg left
    customs_at: np.ndarray  # customs decided (cleared, or a hold begun); NaN without customs
    kept_true: dict = field(default_factory=dict)  # stage -> rows that took the true outcome

    def take(self, rows: np.ndarray) -> Journey:
        return Journey(**{k: (v[rows] if isinstance(v, np.ndarray) else v)
                          for k, v in self.__dict__.items()})


def _later(t: np.ndarray, as_of: np.ndarray) -> np.ndarray:
    """True where `t` is after `as_of` or missing (no such milestone)."""
    return ~(t <= as_of)


def _stage(name: str, n: int, draw: Callable, given: Callable | None, keep: np.ndarray,
           agrees: Callable, kept_true: dict) -> list[np.ndarray]:
    """One stage's outcomes for n rows; `draw(rows)` returns a tuple of arrays for those rows.

    Without a history (`given` None) that is one draw. With one, rows whose stage had ended take
    the true outcomes `given()`, and the others are drawn again until `agrees(rows, values)`, i.e.
    until nothing drawn contradicts what had happened by the snapshot."""
    rows = np.arange(n)
    out = [np.array(v) for v in draw(rows)]
    if given is None:
        return out
    truth = given()
    todo = ~keep & ~agrees(rows, out)
    for o, t in zip(out, truth):
        o[keep] = t[keep]
    for _ in range(REDRAWS):
        idx = np.flatnonzero(todo)
        if not len(idx):
            break
        values = draw(idx)
        fine = agrees(idx, values)
        for o, v in zip(out, values):
            o[idx[fine]] = v[fine]
        todo[idx[fine]] = False
    for o, t in zip(out, truth):
        o[todo] = t[todo]
    kept_true[name] = kept_true.get(name, 0) + int(todo.sum())
    return out


def simulate_journeys(plan: Plan, world, carriers, rng: np.random.Generator,
                      given: Journey | None = None, as_of: np.ndarray | None = None) -> Journey:
    """Move every shipment of `plan` through `world`; with `given` and `as_of`, the rest of each
    true journey from its snapshot on (see the module docstring)."""
    n, L = plan.mode.shape
    g = given
    now = np.asarray(as_of, dtype=float) if g is not None else np.full(n, -np.inf)
    kept: dict[str, int] = {}

    def happened(truth: Callable[[], np.ndarray]) -> np.ndarray:
        """Rows where the true time `truth()` had come by the snapshot (none without history)."""
        return np.zeros(n, bool) if g is None else truth() <= now

    def stage(name, draw, keep, truth, agrees):
        return _stage(name, n, draw, None if g is None else truth, keep, agrees, kept)

    slip_h = carriers["slip_hours"].to_numpy()
    speed = carriers["speed_factor"].to_numpy()
    fail_rate = carriers["failure_rate"].to_numpy()
    nan = np.full((n, L), np.nan)
    dep, arr, fail_at, ready_at = nan.copy(), nan.copy(), nan.copy(), nan.copy()
    wx, wx_dep, cong = np.zeros((n, L)), np.zeros((n, L)), np.zeros((n, L))
    failure, missed = np.zeros((n, L), bool), np.zeros((n, L), bool)

    def draw_pickup(r):
        p = plan.planned_dep[r, 0] - rng.uniform(1.0, 4.0, len(r))
        return (np.maximum(p, plan.booked[r] + 0.25),)

    (pickup,) = stage("pickup", draw_pickup, happened(lambda: g.pickup), lambda: (g.pickup,),
                      lambda r, v: _later(v[0], now[r]))
    hold = np.zeros(n, bool)
    hold_start, hold_end, customs_at = (np.full(n, np.nan) for _ in range(3))
    ready = pickup.copy()
    for i in range(L):
        has = i < plan.n_legs
        mode = np.where(has, plan.mode[:, i], TRUCK)
        car = np.where(has, plan.carrier[:, i], 0)
        frm = np.where(has, plan.from_hub[:, i], 0)
        to = np.where(has, plan.to_hub[:, i], 0)
        if i > 0:  # handling and dwell at the hub before this leg can leave
            prev = ready

            def draw_ready(r):
                c_prev = world.take(r).congestion(frm[r], prev[r])
                handling = HANDLING_HOURS[mode[r]] * (1 + 1.6 * c_prev) * \
                    rng.lognormal(0, 0.25, len(r))
                return (np.where(has[r], prev[r] + handling, prev[r]),)

            (ready,) = stage("ready", draw_ready, has & happened(lambda: g.ready[:, i]),
                             lambda: (np.where(has, g.ready[:, i], prev),),
                             lambda r, v: ~has[r] | _later(v[0], now[r]))
        ready_at[:, i] = np.where(has, ready, np.nan)

        sched = plan.planned_dep[:, i]
        interval = SERVICE_INTERVAL_HOURS[mode]

        def draw_departure(r):
            w, iv = world.take(r), interval[r]
            late_by = ready[r] - sched[r]
            slots = np.where((iv > 0) & (late_by > 0), np.ceil(late_by / np.maximum(iv, 1)), 0)
            base = np.where(iv > 0, sched[r] + slots * iv, np.maximum(sched[r], ready[r]))
            c, w_dep = w.congestion(frm[r], base), w.weather(frm[r], base)
            slip = rng.exponential(1.0, len(r)) * slip_h[car[r]] * (1 + 0.6 * c)
            d = base + slip + w_dep * WX_DEPARTURE_HOURS[mode[r]] * rng.uniform(0.3, 1.7, len(r))
            return d, c, w_dep, has[r] & (slots > 0)

        d, c, w_dep, miss = stage(
            "departure", draw_departure, has & happened(lambda: g.dep[:, i]),
            lambda: (g.dep[:, i], g.congestion[:, i], g.weather_dep[:, i], g.missed[:, i]),
            lambda r, v: _later(v[0], now[r]))
        d = np.where(has, d, np.nan)

        # a failure already met on the leg stays, where and when it struck
        met = np.full(n, np.nan) if g is None else \
            np.where(has & g.failure[:, i] & (g.failure_at[:, i] <= now), g.failure_at[:, i], np.nan)
        planned = plan.planned_arr[:, i] - plan.planned_dep[:, i]

        def draw_leg(r):
            k, w = len(r), world.take(r)
            duration = planned[r] * speed[car[r]] * rng.lognormal(0, 0.06, k)
            w_arr = w.weather(to[r], d[r] + duration)
            seen = ~np.isnan(met[r])
            fails = has[r] & ((rng.random(k) < fail_rate[car[r]] * (1 + w_dep[r] + w_arr)) | seen)
            fix = rng.gamma(2.0, FAILURE_HOURS[mode[r]] / 2, k)
            a = d[r] + duration + w_arr * WX_ARRIVAL_HOURS[mode[r]] * rng.uniform(0.3, 1.7, k) \
                + fails * fix
            at = np.where(seen, met[r], d[r] + rng.uniform(*FAILURE_SHARE, k) * duration)
            fits = np.ones(k, bool)
            if seen.any():
                # a failure met x hours after departure: each draw is kept with its likelihood,
                # P(failure | weather at arrival) times the density of striking at x / duration
                x, (lo, hi) = met[r] - d[r], FAILURE_SHARE
                weight = (x / hi / duration) * (1 + w_dep[r] + np.minimum(w_arr, _WX_CAP)) / \
                    (1 + w_dep[r] + _WX_CAP)
                fits = ~seen | ((x >= lo * duration) & (x <= hi * duration)
                                & (rng.random(k) < weight))
            return (np.where(has[r], a, np.nan), fails, np.where(fails, at, np.nan),
                    np.where(has[r], np.maximum(w_dep[r], w_arr), 0.0), fits)

        # a drawn leg agrees when it arrives after the snapshot and meets no failure before it
        # but the one met, if any
        a, fails, at, hit, _fits = stage(
            "leg", draw_leg, has & happened(lambda: g.arr[:, i]),
            lambda: (g.arr[:, i], g.failure[:, i], g.failure_at[:, i], g.weather_hit[:, i],
                     np.ones(n, bool)),
            lambda r, v: v[4] & _later(v[0], now[r]) & (~np.isnan(met[r]) | _later(v[2], now[r])))
        dep[:, i], arr[:, i], failure[:, i], fail_at[:, i] = d, a, fails, at
        cong[:, i], wx[:, i], wx_dep[:, i] = np.where(has, c, 0.0), hit, np.where(has, w_dep, 0.0)
        missed[:, i] = miss
        ready = np.where(has, a, ready)

        # customs at the entry hub, after the arrival of the leg that crosses the border
        at_customs = has & (plan.customs_leg == i)
        begun = np.full(n, np.nan) if g is None else \
            np.where(at_customs & g.hold & (g.hold_start <= now), g.hold_start, np.nan)
        arrived = ready

        def draw_customs(r):
            k = len(r)
            started = ~np.isnan(begun[r])
            t_c = np.where(started, begun[r],
                           arrived[r] + rng.uniform(*CUSTOMS_CLEARANCE_HOURS, k))
            held = at_customs[r] & (started | (rng.random(k) < plan.hold_rate[r]))
            end = np.where(held, t_c + rng.gamma(2.0, HOLD_MEAN_HOURS / 2, k), np.nan)
            leave = np.where(held, end, np.where(at_customs[r], t_c, arrived[r]))
            return np.where(at_customs[r], t_c, np.nan), held, end, leave

        def true_customs():
            done = np.where(g.hold, g.hold_end, g.customs_at)
            return g.customs_at, g.hold & at_customs, g.hold_end, np.where(at_customs, done, arrived)

        t_c, held, end, ready = stage(
            "customs", draw_customs,
            at_customs & happened(lambda: np.where(g.hold, g.hold_end, g.customs_at)),
            true_customs,
            lambda r, v: ~at_customs[r] | _later(np.where(~np.isnan(begun[r]), v[3], v[0]), now[r]))
        hold |= held
        hold_start = np.where(held, t_c, hold_start)
        hold_end = np.where(held, end, hold_end)
        customs_at = np.where(at_customs, t_c, customs_at)

    last_hub = plan.to_hub[np.arange(n), plan.n_legs - 1]

    def draw_ofd(r):
        c_last = world.take(r).congestion(last_hub[r], ready[r])
        return (ready[r] + FINAL_MILE_HOURS * (0.5 + c_last) * rng.lognormal(0, 0.3, len(r)),)

    (ofd,) = stage("out_for_delivery", draw_ofd, happened(lambda: g.ofd), lambda: (g.ofd,),
                   lambda r, v: _later(v[0], now[r]))
    # the outcome of a delivery attempt is known from its report on
    tried = happened(lambda: g.ofd + ATTEMPT_HOURS)
    failed_before = np.zeros(n, bool) if g is None else tried & g.delivery_failed

    def draw_attempt(r):
        k = len(r)
        failed = np.where(tried[r], failed_before[r], rng.random(k) < DELIVERY_FAIL_RATE)
        return failed, ofd[r] + rng.uniform(0.5, 6.0, k) + failed * 24.0

    delivery_failed, delivered = stage(
        "delivery", draw_attempt, happened(lambda: g.delivered),
        lambda: (g.delivery_failed, g.delivered), lambda r, v: _later(v[1], now[r]))
    return Journey(pickup, dep, arr, hold, hold_start, hold_end, ofd, delivered, failure,
                   fail_at, wx, cong, missed, delivery_failed, ready_at, wx_dep, customs_at, kept)


__all__ = ["AIR", "ATTEMPT_HOURS", "MAX_LEGS", "OCEAN", "RAIL", "Journey", "Plan",
           "simulate_journeys"]
