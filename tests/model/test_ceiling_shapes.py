"""The ceiling stays P(late | everything that had happened) on a real-shaped world: handling
steps and consolidations are history the re-simulation keeps, and its estimate is calibrated on
the slices of history they create.

As in test_ceiling.py, snapshots are taken a fixed time after an event (a moment that depends on
the past only), so the mean ceiling of a slice defined by the past equals the slice's realised
late rate if nothing that had happened is forgotten. A ceiling that forgot a slow check-in, a
truck still missing from a consolidation or a collection already made would be beaten there by
anyone who knows it: its slice would be late more often than the ceiling says.
"""

from __future__ import annotations

import numpy as np
import pytest

from shipdelay.world.ceiling import estimate_ceiling
from shipdelay.world.handling import planned_steps
from shipdelay.world.journeys import FINAL_MILE_HOURS, HANDLING_HOURS, simulate_journeys
from shipdelay.world.network import SERVICE_INTERVAL_HOURS
from shipdelay.world.plans import CUSTOMS_PLANNED_HOURS, sample_plans
from shipdelay.world.simulate import SimConfig, _setup

WORLD = SimConfig(shipments=20_000, start="2025-03-01", days=180, seed=3)
DRAWS = 30
PER_SLICE = 1_500


@pytest.fixture(scope="module")
def world():
    st = _setup(WORLD)
    rng = np.random.default_rng(1)
    plan, book = sample_plans(st.net, st.table, st.booked, np.arange(WORLD.shipments),
                              st.world.customs_rate, rng, consolidation_share=0.3,
                              handling_steps=True)
    truth = simulate_journeys(plan, st.world, st.net.carriers, rng)
    return st, plan, book, truth


def _slices(plan, truth, rng) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """slice -> (rows, as_of): moments a fixed time after an event, before delivery."""
    planned = planned_steps(plan, HANDLING_HOURS, FINAL_MILE_HOURS, CUSTOMS_PLANNED_HOURS)
    # the check-in for the first scheduled service (rail, air, ocean): the one a slow
    # check-in can make the shipment miss
    n, rows = len(plan.booked), np.arange(len(plan.booked))
    scheduled = SERVICE_INTERVAL_HOURS[np.maximum(plan.mode, 0)] > 0
    leg = np.where(scheduled.any(axis=1), scheduled.argmax(axis=1), 0)
    checked_in = np.where(scheduled.any(axis=1), truth.checked_in[rows, leg], np.nan)
    slip = checked_in - planned["checked_in"][rows, leg]
    slow = slip > np.nanquantile(slip, 0.9)
    inbound = (plan.feeds[:, 0] > 1)
    merge_legs = np.where(inbound, plan.feeds[:, 0], 0)
    arr_in = np.where(np.arange(plan.mode.shape[1])[None, :] < merge_legs[:, None], truth.arr,
                      np.nan)
    first_in, last_in = np.nanmin(np.where(inbound[:, None], arr_in, np.inf), axis=1), \
        np.nanmax(np.where(inbound[:, None], arr_in, -np.inf), axis=1)
    candidates = {
        # an hour after that check-in, among the slowest tenth, and among the others
        "slow check-in": (checked_in + 1.0, slow),
        "usual check-in": (checked_in + 1.0, ~slow),
        # an hour after the first inbound truck arrived, the other(s) still on the way
        "consolidation waiting": (first_in + 1.0, inbound & (last_in > first_in + 1.0)),
        "received": (truth.received + 0.5, np.ones(n, bool)),
        "collected": (truth.collected + 0.5, plan.collects),
    }
    out = {}
    for name, (as_of, member) in candidates.items():
        ok = np.flatnonzero(member & np.isfinite(as_of) & (as_of < truth.delivered))[:PER_SLICE]
        out[name] = ok, as_of[ok]
    as_of = plan.booked + rng.exponential(96.0, n)
    ok = np.flatnonzero(as_of < truth.delivered)[:PER_SLICE]
    out["any moment"] = ok, as_of[ok]
    return out


def test_resimulation_keeps_the_handling_steps_and_every_inbound_leg(world):
    st, plan, _book, truth = world
    rng = np.random.default_rng(2)
    rows = rng.choice(len(plan.booked), 4_000, replace=False)
    as_of = plan.booked[rows] + rng.uniform(0, 1, len(rows)) * \
        (truth.delivered[rows] - plan.booked[rows])
    rep, rep_as_of = np.repeat(rows, 5), np.repeat(as_of, 5)
    given = truth.take(rep)
    sim = simulate_journeys(plan.take(rep), st.world.conditional(rep_as_of, rng), st.net.carriers,
                            rng, given=given, as_of=rep_as_of)
    for name in ("pickup", "received", "checked_in", "ready", "dep", "arr", "collected", "ofd"):
        true, drawn = getattr(given, name), getattr(sim, name)
        cut = np.broadcast_to(rep_as_of[:, None], true.shape) if true.ndim == 2 else rep_as_of
        past = true <= cut
        assert past.any(), name
        assert np.array_equal(drawn[past], true[past]), name
        assert not (drawn[~past] <= cut[~past]).any(), name
    # the merged leg waits for every inbound leg in the re-simulated futures too
    L = plan.mode.shape[1]
    feeds = plan.feeds[rep]
    for i in range(1, L):
        fed = feeds[:, :i] == i
        two = fed.sum(axis=1) >= 2
        if two.any():
            last_in = np.where(fed, sim.arr[:, :i], -np.inf).max(axis=1)
            assert (sim.dep[two, i] >= last_in[two]).all()
    assert sum(sim.kept_true.values()) < 0.01 * len(rep)


def test_ceiling_is_calibrated_on_handling_and_consolidation_history(world):
    st, plan, book, truth = world
    rng = np.random.default_rng(3)
    late = truth.delivered > book.promised
    report = {}
    for name, (rows, as_of) in _slices(plan, truth, rng).items():
        assert len(rows) >= 300, (name, len(rows))
        p = estimate_ceiling(plan, truth, book.promised, rows, as_of, st.world,
                             st.net.carriers, DRAWS, rng)
        assert ((p >= 0) & (p <= 1)).all()
        y = late[rows]
        se = np.sqrt(np.sum(p * (1 - p)) * (1 + 1 / DRAWS)) / len(rows)
        report[name] = (len(rows), round(float(y.mean()), 3), round(float(p.mean()), 3),
                        round(float((y.mean() - p.mean()) / max(se, 1e-9)), 1))
    off = {k: v for k, v in report.items() if abs(v[3]) > 4}
    assert not off, f"slice: (rows, late rate, mean ceiling, z) {report}"
    # the slices differ: a slow check-in is later news than a usual one
    assert report["slow check-in"][1] > report["usual check-in"][1]
