"""A shipment's plan as a graph of milestones, and what of it remains once some are seen.

The plan has three parts, in travel order: the start (picked_up, then received), every leg
(checked_in, handed_over, departed, arrived) and the end (out_for_delivery, collected,
delivered). A leg's cargo continues on the leg it feeds (`plan_feeds`); legs feeding one leg
are parallel inbound branches of a consolidation, and the merged leg starts once all of them
have arrived. Customs holds, releases and exceptions are side events, never planned.

A planned milestone is *done* once it, or any milestone after it on its own branch, has been
seen: a missing scan does not hold progress back, and one branch's scans say nothing about a
parallel branch. From the done milestones of a state (its `milestone_mask`):
- `next_planned_s`: the earliest planned time among the planned milestones not done, of any
  kind (handling steps included); NaN once all are done;
- the critical path: among the milestones *ready* (not done, every milestone just before
  them done), the one whose predecessor was planned earliest is on the branch that is most
  behind the plan; `position_s`, its predecessor's planned time (the latest of them at a
  merge), is where the shipment stands on the plan, and `legs_ahead` counts the legs of that
  branch not yet departed;
- `passed_unseen`: planned milestones done without a scan of their own.

Everything is a bit-mask operation over whole columns: one loop over the plan's milestone bits
(a fixed set of at most 61), never over shipments or events. Progress is tracked for the
first 8 legs of a plan (the milestone bits clamp legs to 0..7).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

BITS = 61
MAX_LEGS = 8
START = (0, 43)  # picked_up, received
END = (41, 60, 42)  # out_for_delivery, collected, delivered
DEPARTED, ARRIVED, CHECKED_IN, HANDED_OVER = 1, 9, 44, 52


def leg_stages(i: int) -> tuple[int, int, int, int]:
    """The milestone bits of leg i in travel order."""
    return (CHECKED_IN + i, HANDED_OVER + i, DEPARTED + i, ARRIVED + i)


def _bit(b: int) -> np.int64:
    return np.int64(1) << np.int64(b)


def _lists(column: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A list column as (flat float values, start offset of each row, length of each row)."""
    arr = pa.array(column.array if isinstance(column.dtype, pd.ArrowDtype) else column,
                   from_pandas=True)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not pa.types.is_list(arr.type) and not pa.types.is_large_list(arr.type):
        n = len(arr)  # every value missing (an online store's empty list): no entries
        return np.zeros(0), np.zeros(n, np.int64), np.zeros(n, np.int64)
    lengths = pc.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False)
    flat = pc.list_flatten(arr).to_numpy(zero_copy_only=False).astype(np.float64)
    return flat, np.cumsum(lengths) - lengths, lengths.astype(np.int64)


@dataclass
class PlanGraph:
    """Per shipment (rows of the plans given) and per milestone bit: the planned time `P`
    (NaN: not planned), the bits whose scan makes it done `implied` (itself and everything
    after it on its branch), its immediate planned predecessors `preds` and their latest
    planned time `p_prev` (its own when it has none), and the legs of its branch from it on
    `branch_legs` (bit i: leg i). Columns (one per bit) are kept for the bits planned for at
    least one shipment only."""

    P: dict[int, np.ndarray]
    implied: dict[int, np.ndarray]
    preds: dict[int, np.ndarray]
    p_prev: dict[int, np.ndarray]
    branch_legs: dict[int, np.ndarray]
    planned: np.ndarray  # per shipment: mask of planned bits
    active: list[int]  # the bits planned for at least one shipment (the only ones kept)

    @classmethod
    def of(cls, plan: pd.DataFrame) -> PlanGraph:
        """From the profile's plan columns: n_legs, plan_times_s (by ord), plan_feeds and
        plan_steps ((bit, planned time) pairs); the last two may be absent (a chain of legs,
        no planned handling steps)."""
        s = len(plan)
        rows = np.arange(s)
        n = plan["n_legs"].to_numpy(np.int64)
        legs = np.minimum(n, MAX_LEGS)
        P = np.full((s, BITS), np.nan)
        times, start, length = _lists(plan["plan_times_s"])

        def by_ord(o: np.ndarray) -> np.ndarray:
            ok = (o >= 0) & (o < length)
            return np.where(ok, times[np.where(ok, start + o, 0)] if len(times) else np.nan,
                            np.nan)

        P[:, 0] = by_ord(np.zeros(s, np.int64))
        for i in range(MAX_LEGS):
            has = i < legs
            P[:, DEPARTED + i] = np.where(has, by_ord(np.full(s, 1 + 2 * i)), np.nan)
            P[:, ARRIVED + i] = np.where(has, by_ord(np.full(s, 2 + 2 * i)), np.nan)
        P[:, 41], P[:, 42] = by_ord(2 * n + 1), by_ord(2 * n + 2)
        if "plan_steps" in plan:
            flat, start, length = _lists(plan["plan_steps"])
            owner = np.repeat(rows, length // 2)
            pairs = flat[: 2 * len(owner)].reshape(-1, 2) if len(owner) else np.zeros((0, 2))
            bits = pairs[:, 0].astype(np.int64)
            ok = (bits >= 0) & (bits < BITS)
            P[owner[ok], bits[ok]] = pairs[ok, 1]

        feeds = np.full((s, MAX_LEGS), -1, np.int64)
        default = np.arange(MAX_LEGS)[None, :] + 1
        feeds[:] = np.where(default < legs[:, None], default, -1)
        if "plan_feeds" in plan:
            flat, start, length = _lists(plan["plan_feeds"])
            for i in range(MAX_LEGS):
                ok = i < np.minimum(length, legs)
                given = np.where(ok, flat[np.where(ok, start + i, 0)] if len(flat) else -1, -1)
                feeds[:, i] = np.where(ok, np.where(given < legs, given, -1), feeds[:, i])
        feeds = np.where(np.arange(MAX_LEGS)[None, :] < legs[:, None], feeds, -2)

        # the legs downstream of each leg, and the bits of a set of legs
        down = np.zeros((s, MAX_LEGS), np.int64)
        for i in reversed(range(MAX_LEGS)):
            f = feeds[:, i]
            fc = np.clip(f, 0, MAX_LEGS - 1)
            down[:, i] = np.where(f >= 0, (np.int64(1) << fc) | down[rows, fc], 0)

        def leg_bits(leg_mask: np.ndarray) -> np.ndarray:
            out = np.zeros(s, np.int64)
            for i in range(MAX_LEGS):
                on = ((leg_mask >> i) & 1).astype(bool)
                out |= np.where(on, sum(_bit(b) for b in leg_stages(i)), 0)
            return out

        planned_legs = (np.int64(1) << legs) - 1
        every_leg = leg_bits(planned_legs)
        end_from = [sum(_bit(b) for b in END[k:]) for k in range(len(END))]
        active = [int(b) for b in np.flatnonzero(~np.isnan(P).all(axis=0))]
        P = {b: P[:, b] for b in range(BITS)}
        implied, branch_legs = {}, {b: np.zeros(s, np.int64) for b in active}
        for k, b in enumerate(START):
            implied[b] = np.broadcast_to(sum(_bit(x) for x in START[k:]) | every_leg
                                         | end_from[0], (s,))
        for i in range(MAX_LEGS):
            stages = leg_stages(i)
            if not set(stages) & set(active):
                continue
            after = leg_bits(down[:, i]) | end_from[0]
            for k, b in enumerate(stages):
                implied[b] = sum(_bit(x) for x in stages[k:]) | after
                branch_legs[b] = (np.int64(1) << i) | down[:, i]
        for k, b in enumerate(END):
            implied[b] = np.full(s, end_from[k], np.int64)
        implied = {b: implied[b] for b in active}
        # before any leg: the source leg with the most legs after it
        sources = planned_legs.copy()
        for i in range(MAX_LEGS):
            sources &= ~down[:, i]
        longest = np.zeros(s, np.int64)
        for i in range(MAX_LEGS):
            path = np.where(((sources >> i) & 1).astype(bool), (np.int64(1) << i) | down[:, i], 0)
            longer = np.bitwise_count(path) > np.bitwise_count(longest)
            longest = np.where(longer, path, longest)
        for b in set(START) & set(active):
            branch_legs[b] = longest

        # immediate planned predecessors, walking the plan in travel order
        preds, p_prev = {}, {}

        def walk(bits: tuple[int, ...], prev: np.ndarray, prev_t: np.ndarray):
            for b in bits:
                on = ~np.isnan(P[b])
                if b in implied:
                    preds[b] = np.where(on, prev, 0)
                    p_prev[b] = np.where(on, np.where(prev != 0, prev_t, P[b]), np.nan)
                prev = np.where(on, _bit(b), prev)
                prev_t = np.where(on, P[b], prev_t)
            return prev, prev_t

        start_out, start_t = walk(START, np.zeros(s, np.int64), np.full(s, -np.inf))
        outs, out_ts = [], []
        for j in range(MAX_LEGS):
            inbound, inbound_t = np.zeros(s, np.int64), np.full(s, -np.inf)
            for i in range(j):
                into = feeds[:, i] == j
                inbound |= np.where(into, outs[i], 0)
                inbound_t = np.where(into, np.fmax(inbound_t, out_ts[i]), inbound_t)
            source = ((sources >> j) & 1).astype(bool)
            inbound = np.where(source, start_out, inbound)
            inbound_t = np.where(source, start_t, inbound_t)
            out, out_t = walk(leg_stages(j), inbound, inbound_t)
            outs.append(np.where(j < legs, out, 0))
            out_ts.append(out_t)
        final, final_t = start_out, start_t
        for i in range(MAX_LEGS):
            last = feeds[:, i] == -1
            final, final_t = np.where(last, outs[i], final), np.where(last, out_ts[i], final_t)
        walk(END, final, final_t)

        planned = np.zeros(s, np.int64)
        for b in active:
            planned |= np.where(np.isnan(P[b]), 0, _bit(b))
        P = {b: P[b] for b in active}
        return cls(P, implied, preds, p_prev, branch_legs, planned, active)

    def planned_at(self, shipment: np.ndarray, bit: np.ndarray) -> np.ndarray:
        """The planned time of each (shipment row, milestone bit); NaN when not planned."""
        out = np.full(len(shipment), np.nan)
        for b in self.active:
            on = bit == b
            out[on] = self.P[b][shipment[on]]
        return out

    def latest_seen(self, shipment: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The latest planned time among the milestones of `mask` (NaN: none planned)."""
        best = np.full(len(shipment), -np.inf)
        for b in self.active:
            seen = ((mask >> b) & 1).astype(bool)
            best = np.where(seen, np.fmax(best, self.P[b][shipment]), best)
        return np.where(np.isinf(best), np.nan, best)

    def remaining(self, shipment: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        """For states (their shipment rows and milestone masks): next_planned_s, position_s
        (NaN when nothing is ready), legs_ahead and passed_unseen."""
        k = len(shipment)
        done = np.zeros(k, np.int64)
        for b in self.active:
            done |= np.where((mask & self.implied[b][shipment]) != 0, _bit(b), 0)
        nxt, position = np.full(k, np.inf), np.full(k, np.inf)
        legs = np.zeros(k, np.int64)
        for b in self.active:
            p, p_prev = self.P[b][shipment], self.p_prev[b][shipment]
            open_ = ~np.isnan(p) & (((done >> b) & 1) == 0)
            nxt = np.where(open_, np.fmin(nxt, p), nxt)
            ready = open_ & ((self.preds[b][shipment] & ~done) == 0)
            behind = ready & (p_prev < position)
            position = np.where(behind, p_prev, position)
            legs = np.where(behind, self.branch_legs[b][shipment], legs)
        departed = (done >> DEPARTED) & ((np.int64(1) << MAX_LEGS) - 1)
        return {"next_planned_s": np.where(np.isinf(nxt), np.nan, nxt),
                "position_s": np.where(np.isinf(position), np.nan, position),
                "legs_ahead": np.bitwise_count(legs & ~departed).astype(np.int64),
                "passed_unseen": np.bitwise_count(done & ~mask & self.planned[shipment])
                .astype(np.int64)}
