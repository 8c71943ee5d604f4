"""The ceiling: P(late) given the full hidden world state at a snapshot, by re-simulation.

For a snapshot (shipment, as_of) the oracle knows every milestone that has physically happened by
`as_of` (scanned and ingested or not), the shipment's plan, its carriers' true reliability, its
customs regime, and the world's state at `as_of`: current congestion and the weather events in
progress. It re-simulates the rest of the journey `draws` times with fresh futures and counts how
often delivery lands after the promise. No model that sees only the lake can do better.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shipdelay.world.journeys import Journey, Plan, known_at, simulate_journeys


def _take(j: Journey, rows: np.ndarray) -> Journey:
    return Journey(**{k: (v[rows] if isinstance(v, np.ndarray) else v) for k, v in j.__dict__.items()})


def estimate_ceiling(plan: Plan, truth: Journey, promised: np.ndarray, rows: np.ndarray,
                     as_of: np.ndarray, world, carriers: pd.DataFrame, draws: int,
                     rng: np.random.Generator) -> np.ndarray:
    """P(late) for each (rows[k], as_of[k]) snapshot, from `draws` re-simulations each."""
    if len(rows) == 0:
        return np.zeros(0)
    rep_rows = np.repeat(rows, draws)
    rep_as_of = np.repeat(as_of, draws)
    known = known_at(_take(truth, rep_rows), rep_as_of)
    sim = simulate_journeys(plan.take(rep_rows), world.conditional(rep_as_of, rng), carriers, rng,
                            known=known, as_of=rep_as_of)
    late = sim.delivered > promised[rep_rows]
    return late.reshape(len(rows), draws).mean(axis=1)
