"""The ceiling: P(late) given the full hidden world state at a snapshot, by re-simulation.

For a snapshot (shipment, as_of) the oracle knows everything that has physically happened to the
shipment by `as_of`, scanned and ingested or not: every milestone, whether it was ready in time
for its scheduled service (a missed service is kept), an equipment failure met on the way, a
customs hold begun, a failed delivery attempt; and the shipment's plan, its carriers' true
reliability, its customs regime, and the world's state at `as_of`: current congestion and the
weather events in progress. It re-simulates the rest of the journey `draws` times with fresh
futures conditioned on that history (`simulate_journeys` with `given`) and counts how often
delivery lands after the promise. No model that sees only the lake can do better.

The simulator estimates it at the training sets' snapshots (`shipdelay.snapshots.snapshot_times`
with its default tick rule): booking, each milestone's first ingestion and the clock ticks in
between, so the model and the ceiling are compared on the same rows, silent moments included.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shipdelay.world.journeys import Journey, Plan, simulate_journeys

BATCH_ROWS = 200_000  # re-simulated journeys held in memory at once


def estimate_ceiling(plan: Plan, truth: Journey, promised: np.ndarray, rows: np.ndarray,
                     as_of: np.ndarray, world, carriers: pd.DataFrame, draws: int,
                     rng: np.random.Generator) -> np.ndarray:
    """P(late) for each (rows[k], as_of[k]) snapshot, from `draws` re-simulations each."""
    out = np.zeros(len(rows))
    step = max(1, BATCH_ROWS // draws)  # bounded memory whatever the sample size
    for lo in range(0, len(rows), step):
        out[lo:lo + step] = _estimate(plan, truth, promised, rows[lo:lo + step],
                                      as_of[lo:lo + step], world, carriers, draws, rng)
    return out


def _estimate(plan, truth, promised, rows, as_of, world, carriers, draws, rng) -> np.ndarray:
    rep_rows = np.repeat(rows, draws)
    rep_as_of = np.repeat(as_of, draws)
    sim = simulate_journeys(plan.take(rep_rows), world.conditional(rep_as_of, rng), carriers, rng,
                            given=truth.take(rep_rows), as_of=rep_as_of)
    late = sim.delivered > promised[rep_rows]
    return late.reshape(len(rows), draws).mean(axis=1)
