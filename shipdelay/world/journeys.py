"""Vectorized journeys: planned itineraries in, actual milestone times and their causes out.

One function moves every shipment of a batch stage by stage (a loop over the leg positions,
never over shipments): pickup; per leg, readiness to leave (handling and dwell after the legs
that feed it, which decides whether a scheduled service is missed), departure, the leg under
way (with any equipment failure), customs after the border-crossing leg; out for delivery; the
delivery attempt. A leg fed by several legs (a consolidation, `Plan.feeds`) starts once the last
of them released its cargo: the critical path. With handling steps (`Plan.steps`, handling.py)
the freight is received after pickup, the handling before each leg is two stages, checked in
then handed over (the leg is ready once handed over), and some shipments are collected at the
destination before out for delivery; each step is a stage like the others, so the ceiling's
re-simulation keeps those that had happened.

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
from functools import partial

import numpy as np

from shipdelay.world.handling import (
    PICKUP_LEAD_HOURS,
    RECEIVE_HOURS,
    TYPICAL_CONGESTION,
    HandlingDraws,
    congestion_factor,
)
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
    # n x L: the leg each leg's cargo continues on (-1: the final leg, or no leg). Two or more
    # legs feeding one leg are a consolidation; None means one chain (leg i feeds leg i + 1)
    feeds: np.ndarray | None = None
    steps: np.ndarray | None = None  # bool: handling steps planned and scanned (handling.py)
    collects: np.ndarray | None = None  # bool: collected at the destination hub (with steps)
    first_handling: np.ndarray | None = None  # speed-up of the first legs' handling (steps)

    def __post_init__(self):
        n, L = self.mode.shape
        if self.feeds is None:
            nxt = np.arange(1, L + 1)[None, :]
            self.feeds = np.where(nxt < self.n_legs[:, None], nxt, -1)
        for name, value in (("steps", False), ("collects", False), ("first_handling", 1.0)):
            if getattr(self, name) is None:
                setattr(self, name, np.full(n, value))

    def take(self, rows: np.ndarray) -> Plan:
        return Plan(**{k: v[rows] for k, v in self.__dict__.items()})

    def roots(self, i: int) -> np.ndarray:
        """Rows whose leg `i` is fed by no leg: it starts from the pickup."""
        return ~(self.feeds[:, :i] == i).any(axis=1)


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
    # handling steps (NaN where the plan has none): see handling.py
    received: np.ndarray | None = None
    checked_in: np.ndarray | None = None  # n x L
    collected: np.ndarray | None = None

    def __post_init__(self):
        n, L = self.dep.shape
        for name, shape in (("received", n), ("checked_in", (n, L)), ("collected", n)):
            if getattr(self, name) is None:
                setattr(self, name, np.full(shape, np.nan))

    @property
    def handed_over(self) -> np.ndarray:
        """Handed over to each leg's carrier: the leg is ready to leave (NaN without steps)."""
        return np.where(np.isnan(self.checked_in), np.nan, self.ready)

    def take(self, rows: np.ndarray) -> Journey:
        return Journey(**{k: (v[rows] if isinstance(v, np.ndarray) else v)
                          for k, v in self.__dict__.items()})

    @property
    def left_customs(self) -> np.ndarray:
        """When customs let the shipment go: cleared, or released from a hold."""
        return np.where(self.hold, self.hold_end, self.customs_at)

    @property
    def attempt_reported(self) -> np.ndarray:
        """From when the outcome of the delivery attempt is known (failed or not)."""
        return self.ofd + ATTEMPT_HOURS


def _later(t: np.ndarray, as_of: np.ndarray) -> np.ndarray:
    """True where `t` is after `as_of` or missing (no such milestone)."""
    return ~(t <= as_of)


def _stage(name: str, n: int, draw: Callable, truth: tuple | None, keep: np.ndarray,
           agrees: Callable, kept_true: dict) -> list[np.ndarray]:
    """One stage's outcomes for n rows; `draw(rows)` returns a tuple of arrays for those rows.

    Without a history (`truth` None) that is one draw. With one, rows whose stage had ended take
    the true outcomes, and the others are drawn again until `agrees(rows, values)`, i.e. until
    nothing drawn contradicts what had happened by the snapshot."""
    rows = np.arange(n)
    out = [np.array(v) for v in draw(rows)]
    if truth is None:
        return out
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


@dataclass
class _Leg:
    """Leg position `i` of every shipment of a batch; rows without that leg have `has` False
    and harmless stand-ins elsewhere."""

    i: int
    has: np.ndarray
    mode: np.ndarray
    car: np.ndarray
    frm: np.ndarray
    to: np.ndarray

    @classmethod
    def of(cls, plan: Plan, i: int) -> _Leg:
        has = i < plan.n_legs
        return cls(i, has, np.where(has, plan.mode[:, i], TRUCK),
                   np.where(has, plan.carrier[:, i], 0), np.where(has, plan.from_hub[:, i], 0),
                   np.where(has, plan.to_hub[:, i], 0))


class _Batch(HandlingDraws):
    """One run of `simulate_journeys`: the batch, its world, and for a re-simulation the true
    journeys and each row's snapshot moment. Each stage's draw takes the rows to draw for, so
    that rows contradicting their history can be drawn again alone."""

    def __init__(self, plan: Plan, world, carriers, rng: np.random.Generator,
                 given: Journey | None, as_of: np.ndarray | None):
        self.plan, self.world, self.rng, self.given = plan, world, rng, given
        self.n = len(plan.booked)
        self.now = np.asarray(as_of, dtype=float) if given is not None else \
            np.full(self.n, -np.inf)
        self.kept: dict[str, int] = {}
        self.slip_h = carriers["slip_hours"].to_numpy()
        self.speed = carriers["speed_factor"].to_numpy()
        self.fail_rate = carriers["failure_rate"].to_numpy()
        self.handling_hours, self.final_mile_hours = HANDLING_HOURS, FINAL_MILE_HOURS
        self.last_hub = plan.to_hub[np.arange(self.n), plan.n_legs - 1]

    # --- the history ---------------------------------------------------------------------

    def true(self, *names: str, leg: int | None = None) -> tuple | None:
        """The true journeys' arrays (column `leg` of per-leg ones); None without history."""
        if self.given is None:
            return None
        return tuple(getattr(self.given, k) if leg is None or getattr(self.given, k).ndim == 1
                     else getattr(self.given, k)[:, leg] for k in names)

    def happened(self, name: str, leg: int | None = None) -> np.ndarray:
        """Rows where the true time `name` had come by the snapshot (none without history)."""
        truth = self.true(name, leg=leg)
        return np.zeros(self.n, bool) if truth is None else truth[0] <= self.now

    def before_now(self, name: str, leg: int | None, where: np.ndarray) -> np.ndarray:
        """The true time `name` where `where` holds and it had come by the snapshot, else NaN."""
        truth = self.true(name, leg=leg)
        if truth is None:
            return np.full(self.n, np.nan)
        return np.where(where & (truth[0] <= self.now), truth[0], np.nan)

    def stage(self, name: str, draw: Callable, keep: np.ndarray, truth: tuple | None,
              agrees: Callable) -> list[np.ndarray]:
        return _stage(name, self.n, draw, truth, keep, agrees, self.kept)

    def after(self, k: int, r: np.ndarray, values) -> np.ndarray:
        """A draw agrees when its k-th value, a time, is after the snapshot (or missing)."""
        return _later(values[k], self.now[r])

    def where_after(self, on: np.ndarray, r: np.ndarray, values) -> np.ndarray:
        """A draw agrees where `on` is False, or its time is after the snapshot."""
        return ~on[r] | _later(values[0], self.now[r])

    # --- the stages' draws, for rows r ----------------------------------------------------

    def pickup(self, r):
        plan = self.plan
        p = plan.planned_dep[r, 0] - self.rng.uniform(*PICKUP_LEAD_HOURS, len(r))
        # with handling steps the freight is received and handled before the first leg leaves
        first = HANDLING_HOURS[np.maximum(plan.mode[r, 0], 0)] * \
            congestion_factor(TYPICAL_CONGESTION) * plan.first_handling[r]
        p = p - np.where(plan.steps[r], RECEIVE_HOURS + first, 0.0)
        return (np.maximum(p, plan.booked[r] + 0.25),)

    def ready(self, leg: _Leg, root: np.ndarray, prev: np.ndarray, r):
        """Handling and dwell at the hub before the leg can leave (none for a first leg)."""
        c_prev = self.world.take(r).congestion(leg.frm[r], prev[r])
        handling = HANDLING_HOURS[leg.mode[r]] * (1 + 1.6 * c_prev) * \
            self.rng.lognormal(0, 0.25, len(r))
        return (np.where(leg.has[r] & ~root[r], prev[r] + handling, prev[r]),)

    def ready_agrees(self, leg: _Leg, r, values):
        return ~leg.has[r] | _later(values[0], self.now[r])

    def departure(self, leg: _Leg, ready: np.ndarray, r):
        """The first scheduled service the shipment is ready for, its slip and weather delay."""
        w, sched = self.world.take(r), self.plan.planned_dep[r, leg.i]
        iv = SERVICE_INTERVAL_HOURS[leg.mode[r]]
        late_by = ready[r] - sched
        slots = np.where((iv > 0) & (late_by > 0), np.ceil(late_by / np.maximum(iv, 1)), 0)
        base = np.where(iv > 0, sched + slots * iv, np.maximum(sched, ready[r]))
        c, w_dep = w.congestion(leg.frm[r], base), w.weather(leg.frm[r], base)
        slip = self.rng.exponential(1.0, len(r)) * self.slip_h[leg.car[r]] * (1 + 0.6 * c) * \
            w.regime_scale("carrier", base, leg.car[r])  # a carrier degraded from a date
        d = base + slip + w_dep * WX_DEPARTURE_HOURS[leg.mode[r]] * \
            self.rng.uniform(0.3, 1.7, len(r))
        return d, c, w_dep, leg.has[r] & (slots > 0)

    def travel(self, leg: _Leg, d: np.ndarray, w_dep: np.ndarray, met: np.ndarray, r):
        """The leg under way: duration, weather at arrival, an equipment failure and its repair.
        `met` is the time of a failure already met (NaN if none): it stays, where it struck."""
        k, w, rng, car, mode = len(r), self.world.take(r), self.rng, leg.car[r], leg.mode[r]
        d, w_dep = d[r], w_dep[r]
        duration = (self.plan.planned_arr[r, leg.i] - self.plan.planned_dep[r, leg.i]) * \
            self.speed[car] * rng.lognormal(0, 0.06, k)
        w_arr = w.weather(leg.to[r], d + duration)
        seen = ~np.isnan(met[r])
        fail_rate = self.fail_rate[car] * w.regime_scale("carrier", d, car)
        fails = leg.has[r] & ((rng.random(k) < fail_rate * (1 + w_dep + w_arr)) | seen)
        fix = rng.gamma(2.0, FAILURE_HOURS[mode] / 2, k)
        a = d + duration + w_arr * WX_ARRIVAL_HOURS[mode] * rng.uniform(0.3, 1.7, k) + fails * fix
        at = np.where(seen, met[r], d + rng.uniform(*FAILURE_SHARE, k) * duration)
        fits = np.ones(k, bool)
        if seen.any():
            # a failure met x hours after departure: each draw is kept with its likelihood,
            # P(failure | weather at arrival) times the density of striking at x / duration
            x, (lo, hi) = met[r] - d, FAILURE_SHARE
            weight = (x / hi / duration) * (1 + w_dep + np.minimum(w_arr, _WX_CAP)) / \
                (1 + w_dep + _WX_CAP)
            fits = ~seen | ((x >= lo * duration) & (x <= hi * duration)
                            & (rng.random(k) < weight))
        return (np.where(leg.has[r], a, np.nan), fails, np.where(fails, at, np.nan),
                np.where(leg.has[r], np.maximum(w_dep, w_arr), 0.0), fits)

    def travel_agrees(self, met: np.ndarray, r, values):
        """Arrives after the snapshot, meets no failure before it but the one met, if any."""
        a, _fails, at, _hit, fits = values
        now = self.now[r]
        return fits & _later(a, now) & (~np.isnan(met[r]) | _later(at, now))

    def customs(self, at_customs: np.ndarray, arrived: np.ndarray, begun: np.ndarray, r):
        """Clearance at the entry hub, or a hold (`begun`: the start of a hold already under
        way, NaN if none). Returns the decision time, hold, its end, and when it can leave."""
        k, rng, here = len(r), self.rng, at_customs[r]
        started = ~np.isnan(begun[r])
        t_c = np.where(started, begun[r], arrived[r] + rng.uniform(*CUSTOMS_CLEARANCE_HOURS, k))
        entry = self.plan.to_hub[r, np.maximum(self.plan.customs_leg[r], 0)]  # regimes' hub
        w = self.world.take(r)
        held = here & (started | (rng.random(k) < self.plan.hold_rate[r]
                                  * w.regime_scale("hold_rate", arrived[r], entry)))
        end = np.where(held, t_c + rng.gamma(2.0, HOLD_MEAN_HOURS / 2, k)
                       * w.regime_scale("hold_hours", arrived[r], entry), np.nan)
        leave = np.where(held, end, np.where(here, t_c, arrived[r]))
        return np.where(here, t_c, np.nan), held, end, leave

    def customs_agrees(self, at_customs: np.ndarray, begun: np.ndarray, r, values):
        """No decision before the snapshot unless a hold had begun; then no release before it."""
        t_c, _held, _end, leave = values
        return ~at_customs[r] | _later(np.where(np.isnan(begun[r]), t_c, leave), self.now[r])

    def out_for_delivery(self, last_hub: np.ndarray, ready: np.ndarray, r):
        c_last = self.world.take(r).congestion(last_hub[r], ready[r])
        return (ready[r] + FINAL_MILE_HOURS * (0.5 + c_last) *
                self.rng.lognormal(0, 0.3, len(r)),)

    def attempt(self, ofd: np.ndarray, tried: np.ndarray, failed_before: np.ndarray, r):
        """The delivery attempt; where its outcome had been reported, that outcome."""
        k = len(r)
        failed = np.where(tried[r], failed_before[r], self.rng.random(k) < DELIVERY_FAIL_RATE)
        return failed, ofd[r] + self.rng.uniform(0.5, 6.0, k) + failed * 24.0


def simulate_journeys(plan: Plan, world, carriers, rng: np.random.Generator,
                      given: Journey | None = None, as_of: np.ndarray | None = None) -> Journey:
    """Move every shipment of `plan` through `world`; with `given` and `as_of`, the rest of each
    true journey from its snapshot on (see the module docstring)."""
    b = _Batch(plan, world, carriers, rng, given, as_of)
    n, L = plan.mode.shape
    nan = np.full((n, L), np.nan)
    dep, arr, fail_at, ready_at = nan.copy(), nan.copy(), nan.copy(), nan.copy()
    wx, wx_dep, cong = np.zeros((n, L)), np.zeros((n, L)), np.zeros((n, L))
    failure, missed = np.zeros((n, L), bool), np.zeros((n, L), bool)
    hold = np.zeros(n, bool)
    hold_start, hold_end, customs_at = (np.full(n, np.nan) for _ in range(3))

    (pickup,) = b.stage("pickup", b.pickup, b.happened("pickup"), b.true("pickup"),
                        partial(b.after, 0))
    steps, collects = plan.steps, plan.steps & plan.collects
    received, checked_in = np.full(n, np.nan), nan.copy()
    if steps.any():
        (received,) = b.stage("received", partial(b.received, pickup),
                              steps & b.happened("received"), b.true("received"),
                              partial(b.where_after, steps))
        received = np.where(steps, received, np.nan)
    origin = np.where(steps, received, pickup)
    release = nan.copy()  # when each leg's cargo could go on: its arrival, or out of customs
    carry = pickup.copy()  # the latest release of a row's chain (legs it lacks keep it)
    for i in range(L):
        leg = _Leg.of(plan, i)
        has = leg.has
        root = plan.roots(i)
        # a leg starts once every leg feeding it has released its cargo (the critical path);
        # a first leg starts from the pickup, or from the receipt with handling steps
        fed = np.where(plan.feeds[:, :i] == i, release[:, :i], -np.inf).max(axis=1, initial=-np.inf)
        prev = np.where(has & ~root, fed, carry)
        prev = np.where(has & root & (i > 0),
                        origin + plan.planned_dep[:, i] - plan.planned_dep[:, 0], prev)
        ready = prev
        if i > 0 and (~steps).any():
            (ready,) = b.stage("ready", partial(b.ready, leg, root, prev),
                               has & (b.happened("ready", i) | steps), b.true("ready", leg=i),
                               partial(b.ready_agrees, leg))
        if steps.any():
            on = has & steps
            start = np.where(steps & (i == 0), received, prev)
            (ci,) = b.stage("checked_in", partial(b.checked_in, leg, root, start),
                            on & b.happened("checked_in", i), b.true("checked_in", leg=i),
                            partial(b.where_after, on))
            (ho,) = b.stage("handed_over", partial(b.handed_over, leg, root, ci),
                            on & b.happened("ready", i), b.true("ready", leg=i),
                            partial(b.where_after, on))
            checked_in[:, i] = np.where(on, ci, np.nan)
            ready = np.where(steps, ho, ready)
        ready_at[:, i] = np.where(has, ready, np.nan)

        d, c, w_dep, miss = b.stage(
            "departure", partial(b.departure, leg, ready), has & b.happened("dep", i),
            b.true("dep", "congestion", "weather_dep", "missed", leg=i), partial(b.after, 0))
        d = np.where(has, d, np.nan)

        met = b.before_now("failure_at", i, has & (given is not None and given.failure[:, i]))
        a, fails, at, hit, _fits = b.stage(
            "leg", partial(b.travel, leg, d, w_dep, met), has & b.happened("arr", i),
            None if given is None else (*b.true("arr", "failure", "failure_at", "weather_hit",
                                                leg=i), np.ones(n, bool)),
            partial(b.travel_agrees, met))
        dep[:, i], arr[:, i], failure[:, i], fail_at[:, i] = d, a, fails, at
        cong[:, i], wx[:, i], wx_dep[:, i] = np.where(has, c, 0.0), hit, np.where(has, w_dep, 0.0)
        missed[:, i] = miss
        carry = np.where(has, a, carry)

        # customs at the entry hub, after the arrival of the leg that crosses the border
        at_customs = has & (plan.customs_leg == i)
        begun = b.before_now("hold_start", None, at_customs & (given is not None and given.hold))
        t_c, held, end, carry = b.stage(
            "customs", partial(b.customs, at_customs, carry, begun),
            at_customs & b.happened("left_customs"),
            b.true("customs_at", "hold", "hold_end", "left_customs"),
            partial(b.customs_agrees, at_customs, begun))
        release[:, i] = np.where(has, carry, np.nan)
        hold |= held
        hold_start = np.where(held, t_c, hold_start)
        hold_end = np.where(held, end, hold_end)
        customs_at = np.where(at_customs, t_c, customs_at)

    # the final leg is the highest: every other one feeds a later leg
    last = release[np.arange(n), plan.n_legs - 1]
    collected = np.full(n, np.nan)
    ofd = np.full(n, np.nan)
    if (~collects).any():
        (ofd,) = b.stage("out_for_delivery", partial(b.out_for_delivery, b.last_hub, last),
                         b.happened("ofd") | collects, b.true("ofd"), partial(b.after, 0))
    if collects.any():
        (collected,) = b.stage("collected", partial(b.collected, last),
                               collects & b.happened("collected"), b.true("collected"),
                               partial(b.where_after, collects))
        collected = np.where(collects, collected, np.nan)
        (after,) = b.stage("out_for_delivery", partial(b.after_collection, collected),
                           b.happened("ofd") | ~collects, b.true("ofd"), partial(b.after, 0))
        ofd = np.where(collects, after, ofd)
    # the outcome of a delivery attempt is known from its report on
    tried = b.happened("attempt_reported")
    failed_before = tried & (given is not None and given.delivery_failed)
    delivery_failed, delivered = b.stage(
        "delivery", partial(b.attempt, ofd, tried, failed_before), b.happened("delivered"),
        b.true("delivery_failed", "delivered"), partial(b.after, 1))
    return Journey(pickup, dep, arr, hold, hold_start, hold_end, ofd, delivered, failure,
                   fail_at, wx, cong, missed, delivery_failed, ready_at, wx_dep, customs_at,
                   b.kept, received, checked_in, collected)


__all__ = ["AIR", "ATTEMPT_HOURS", "MAX_LEGS", "OCEAN", "RAIL", "Journey", "Plan",
           "simulate_journeys"]
