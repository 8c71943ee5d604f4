"""The plan as contract tables: legs' `feeds_leg` and the handling steps' `milestone_plans`."""

from __future__ import annotations

import numpy as np
import pandas as pd

from shipdelay.contract import STR
from shipdelay.world.handling import RECEIVE_HOURS, planned_steps
from shipdelay.world.journeys import ATTEMPT_HOURS, FINAL_MILE_HOURS, HANDLING_HOURS, Plan
from shipdelay.world.plans import CUSTOMS_PLANNED_HOURS, FINAL_MILE_PLANNED_HOURS

SHIPMENT_LEVEL = ("picked_up", "received", "collected", "out_for_delivery", "delivered")
PER_LEG = ("checked_in", "handed_over")


def feeds_leg(plan: Plan, rows: np.ndarray, legs: np.ndarray) -> pd.arrays.IntegerArray:
    """`legs.feeds_leg` of the legs (rows[k], legs[k]): the leg their cargo continues on, empty
    where that is simply the next leg (or none, for the final leg)."""
    feeds = plan.feeds[rows, legs]
    out = pd.array(feeds, dtype="Int64")
    out[(feeds < 0) | (feeds == legs + 1)] = pd.NA
    return out


def scan_legs(legs: np.ndarray) -> pd.arrays.IntegerArray:
    """Scans' `leg_index`: empty for shipment-level steps (leg -1)."""
    out = pd.array(legs, dtype="Int64")
    out[legs < 0] = pd.NA
    return out


def milestone_plans(plan: Plan, shipment_ids: pd.Series, clock) -> pd.DataFrame:
    """The planned times of the handling steps of every shipment with steps: pickup, receipt,
    collection, out for delivery and delivery per shipment, check-in and hand-over per leg.

    The planned delivery is the plan's final mile after the last leg (and its customs); the
    promise adds the service level's slack to it."""
    planned = planned_steps(plan, HANDLING_HOURS, FINAL_MILE_HOURS, CUSTOMS_PLANNED_HOURS)
    last = plan.n_legs - 1
    released = plan.planned_arr[np.arange(len(last)), last] + \
        CUSTOMS_PLANNED_HOURS * (plan.customs_leg == last)
    delivered = np.where(plan.steps, released + FINAL_MILE_PLANNED_HOURS, np.nan)
    planned["delivered"], planned["out_for_delivery"] = delivered, delivered - ATTEMPT_HOURS
    planned["picked_up"] = np.maximum(planned["received"] - RECEIVE_HOURS, plan.booked + 0.25)
    rows, legs, kinds, times = [], [], [], []
    for kind in SHIPMENT_LEVEL:
        at = planned[kind]
        r = np.flatnonzero(~np.isnan(at))
        rows.append(r), legs.append(np.full(len(r), -1)), kinds.append(np.full(len(r), kind))
        times.append(at[r])
    for kind in PER_LEG:
        r, leg = np.nonzero(~np.isnan(planned[kind]))
        rows.append(r), legs.append(leg), kinds.append(np.full(len(r), kind))
        times.append(planned[kind][r, leg])
    r, leg = np.concatenate(rows), np.concatenate(legs)
    return pd.DataFrame({
        "shipment_id": shipment_ids.iloc[r].reset_index(drop=True),
        "event_type": pd.Series(pd.array(np.concatenate(kinds), dtype=STR)),
        "leg_index": scan_legs(leg),
        "planned_at": clock.ts(np.concatenate(times))})
