"""Handling steps at the hubs: planned times and the draws that move freight through them.

A world with handling steps plans and scans what happens to freight between transport legs, as
an air-cargo process log would show it:

- `received`: freight received from the shipper at the origin hub, after its pickup;
- per leg, at the leg's departure hub: `checked_in` (accepted for the leg) and then
  `handed_over` (handed to the leg's carrier, loaded); the leg can leave once handed over, so a
  slow check-in often means a missed scheduled service;
- `collected`: collected by the consignee's agent at the destination hub, for shipments with
  an air leg and economy ones, before out for delivery.

The handling before a leg is the simulator's usual handling time split in two parts, each with
its own noise (together the same mean as without steps). Planned times follow the plan's legs
with typical handling; the first leg's handling is squeezed to fit between booking and the
planned first departure (express bookings leave a few hours after booking). The lake's
`milestone_plans` also plan the pickup, out for delivery and the delivery (plan_tables.py).
"""

from __future__ import annotations

import numpy as np

from shipdelay.world.network import AIR

CHECK_IN_SHARE = 0.4  # share of the handling before a leg spent until check-in
HANDLING_SIGMA = 0.35  # log-normal noise of each handling part
TYPICAL_CONGESTION = 0.4  # the world's mean congestion index, for planned handling
RECEIVE_HOURS = 1.0  # pickup to freight received at the origin hub
PICKUP_LEAD_HOURS = (1.0, 4.0)  # handed over to the first leg this long before its departure
COLLECT_SHARE = 0.5  # share of the final-mile time spent until collection


def congestion_factor(c: np.ndarray) -> np.ndarray:
    """How congestion stretches handling (the simulator's usual rule)."""
    return 1 + 1.6 * c


def first_leg_factor(booked: np.ndarray, planned_dep0: np.ndarray,
                     handling_hours: np.ndarray) -> np.ndarray:
    """The speed-up of the first leg's handling that fits it between booking and the planned
    first departure (1 when there is time; at least 0.2)."""
    room = planned_dep0 - booked - 0.25 - RECEIVE_HOURS - np.mean(PICKUP_LEAD_HOURS)
    typical = handling_hours * congestion_factor(TYPICAL_CONGESTION)
    return np.clip(room / typical, 0.2, 1.0)


def planned_steps(plan, handling_hours: np.ndarray, final_mile_hours: float,
                  customs_hours: float) -> dict[str, np.ndarray]:
    """Planned times of the handling steps of `plan` (rows without steps: NaN).

    `handling_hours[mode]` is the typical handling before a leg of that mode."""
    n, L = plan.mode.shape
    rows = np.arange(n)
    has = plan.mode >= 0
    steps = plan.steps
    typical = handling_hours[np.where(has, plan.mode, 0)] * congestion_factor(TYPICAL_CONGESTION)
    first = plan.first_handling
    received = plan.planned_dep[:, 0] - np.mean(PICKUP_LEAD_HOURS) - first * typical[:, 0]
    release = plan.planned_arr + customs_hours * (plan.customs_leg[:, None] == np.arange(L))
    checked_in, handed_over = np.full((n, L), np.nan), np.full((n, L), np.nan)
    for i in range(L):
        fed = (plan.feeds[:, :i] == i)
        start = np.where(fed, release[:, :i], -np.inf).max(axis=1, initial=-np.inf)
        root = ~fed.any(axis=1)
        start = np.where(root, received + plan.planned_dep[:, i] - plan.planned_dep[:, 0], start)
        scale = np.where(root, first, 1.0) * typical[:, i]
        latest = plan.planned_dep[:, i] - 0.25
        ho = np.minimum(start + scale, latest)
        ci = np.minimum(start + CHECK_IN_SHARE * scale, ho - 0.25)
        ok = has[:, i] & steps
        checked_in[:, i], handed_over[:, i] = np.where(ok, ci, np.nan), np.where(ok, ho, np.nan)
    last = release[rows, plan.n_legs - 1]
    collected = last + COLLECT_SHARE * final_mile_hours * (0.5 + TYPICAL_CONGESTION)
    return {"received": np.where(steps, received, np.nan),
            "checked_in": checked_in, "handed_over": handed_over,
            "collected": np.where(steps & plan.collects, collected, np.nan)}


def collects(mode: np.ndarray, economy: np.ndarray) -> np.ndarray:
    """Shipments collected at the destination hub: those with an air leg, and economy ones."""
    return (mode == AIR).any(axis=1) | economy


class HandlingDraws:
    """The handling stages' draws for rows `r` (mixed into the journeys' batch)."""

    def received(self, pickup: np.ndarray, r):
        return (pickup[r] + RECEIVE_HOURS * self.rng.lognormal(0, 0.4, len(r)),)

    def _handling(self, leg, root: np.ndarray, since: np.ndarray, share: float, r):
        c = self.world.take(r).congestion(leg.frm[r], since[r])
        scale = np.where(root[r], self.plan.first_handling[r], 1.0)
        hours = self.handling_hours[leg.mode[r]] * congestion_factor(c) * scale * share * \
            self.rng.lognormal(-HANDLING_SIGMA ** 2 / 2, HANDLING_SIGMA, len(r))
        return (np.where(leg.has[r], since[r] + hours, np.nan),)

    def checked_in(self, leg, root, start, r):
        """Accepted for the leg: a share of the handling after the freight reached the hub."""
        return self._handling(leg, root, start, CHECK_IN_SHARE, r)

    def handed_over(self, leg, root, checked_in, r):
        """Handed to the carrier: the rest of the handling after check-in."""
        return self._handling(leg, root, checked_in, 1 - CHECK_IN_SHARE, r)

    def collected(self, last_release: np.ndarray, r):
        c = self.world.take(r).congestion(self.last_hub[r], last_release[r])
        return (last_release[r] + COLLECT_SHARE * self.final_mile_hours * (0.5 + c) *
                self.rng.lognormal(0, 0.3, len(r)),)

    def after_collection(self, collected: np.ndarray, r):
        """Out for delivery after the consignee's agent collected the freight."""
        return (collected[r] + (1 - COLLECT_SHARE) * self.final_mile_hours *
                (0.5 + TYPICAL_CONGESTION) * self.rng.lognormal(0, 0.3, len(r)),)
