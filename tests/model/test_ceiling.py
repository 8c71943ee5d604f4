"""The ceiling is P(late | everything that had happened by the snapshot): re-simulated journeys
keep that history, and the estimate is calibrated on every slice of it.

If the re-simulation kept the whole history and drew the rest from the true processes, then for
snapshots taken at moments that depend only on the past (a fixed time after an event), the mean
ceiling of any slice defined by that past equals the slice's realised late rate. Each slice below
is a piece of history a re-draw could forget: a failed delivery attempt, a customs hold under
way, an equipment failure met on the leg, a missed scheduled service, a dwell under way.
"""

from __future__ import annotations

import numpy as np
import pytest

from shipdelay.world.ceiling import estimate_ceiling
from shipdelay.world.journeys import ATTEMPT_HOURS, simulate_journeys
from shipdelay.world.network import SERVICE_INTERVAL_HOURS
from shipdelay.world.plans import sample_plans
from shipdelay.world.simulate import SimConfig, _setup

WORLD = SimConfig(shipments=40_000, start="2025-03-01", days=240, seed=3)
DRAWS = 40
PER_SLICE = 4_000


@pytest.fixture(scope="module")
def world():
    st = _setup(WORLD)
    rng = np.random.default_rng(1)
    n = WORLD.shipments
    plan, book = sample_plans(st.net, st.table, st.booked, np.arange(n), st.world.customs_rate,
                              rng)
    truth = simulate_journeys(plan, st.world, st.net.carriers, rng)
    return st, plan, book, truth


def _first(times: np.ndarray) -> np.ndarray:
    """Earliest time per row (inf when none)."""
    return np.where(np.isnan(times), np.inf, times).min(axis=1)


def _snapshots(plan, truth, rng) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """slice -> (rows, as_of, in slice): snapshots a fixed time after an event (a moment that
    depends on the past only), among shipments not delivered by then."""
    n = len(plan.booked)
    out = {}
    sched = plan.planned_dep
    scheduled = SERVICE_INTERVAL_HOURS[np.where(plan.mode >= 0, plan.mode, 0)] > 0
    legs = np.arange(plan.mode.shape[1])[None, :] < plan.n_legs[:, None]
    missed = truth.missed & scheduled & legs
    candidates = {
        # out for delivery, then just after a failed attempt would have been reported
        "delivery attempt failed": (truth.ofd + ATTEMPT_HOURS + 0.5, truth.delivery_failed),
        "customs hold under way": (truth.hold_start + 6.0, truth.hold),
        # the first failure only: "the last one" would depend on what comes after
        "equipment failure met": (_first(truth.failure_at) + 2.0, truth.failure.any(axis=1)),
        # an hour after the first scheduled departure the shipment was not ready for
        "missed service, waiting": (_first(np.where(missed, sched, np.nan)) + 1.0,
                                    missed.any(axis=1)),
        # two hours after arriving at a hub it leaves again from (handling under way or done)
        "at a hub between legs": (truth.arr[:, 0] + 2.0, plan.n_legs > 1),
    }
    for name, (as_of, member) in candidates.items():
        ok = np.flatnonzero(member & np.isfinite(as_of) & (as_of < truth.delivered))[:PER_SLICE]
        out[name] = ok, as_of[ok]
    # and snapshots at random moments set at booking (every stage, mostly nothing special)
    as_of = plan.booked + rng.exponential(96.0, n)
    ok = np.flatnonzero(as_of < truth.delivered)[:PER_SLICE]
    out["any moment"] = ok, as_of[ok]
    return out


def test_resimulation_keeps_what_had_happened(world):
    st, plan, _book, truth = world
    rng = np.random.default_rng(2)
    rows = rng.choice(len(plan.booked), 6_000, replace=False)
    as_of = plan.booked[rows] + rng.uniform(0, 1, len(rows)) * \
        (truth.delivered[rows] - plan.booked[rows])
    rep, rep_as_of = np.repeat(rows, 10), np.repeat(as_of, 10)
    given = truth.take(rep)
    sim = simulate_journeys(plan.take(rep), st.world.conditional(rep_as_of, rng), st.net.carriers,
                            rng, given=given, as_of=rep_as_of)
    for name in ("pickup", "ready", "dep", "arr", "failure_at", "customs_at", "hold_start",
                 "hold_end", "ofd"):
        true, drawn = getattr(given, name), getattr(sim, name)
        cut = np.broadcast_to(rep_as_of[:, None], true.shape) if true.ndim == 2 else rep_as_of
        past = true <= cut
        assert past.any(), name
        assert np.array_equal(drawn[past], true[past]), name  # what had happened, exactly
        assert not (drawn[~past] <= cut[~past]).any(), name  # nothing new happened before
    sched_passed = plan.planned_dep[rep] <= rep_as_of[:, None]
    assert (sim.missed[given.missed & sched_passed]).all()
    assert (sim.failure[given.failure & (given.failure_at <= rep_as_of[:, None])]).all()
    assert (sim.hold[given.hold & (given.hold_start <= rep_as_of)]).all()
    reported = given.delivery_failed & (given.ofd + ATTEMPT_HOURS <= rep_as_of)
    assert reported.sum() > 0 and sim.delivery_failed[reported].all()
    assert (sim.delivered > rep_as_of).all()
    # rows whose redraws never agreed with their history took the truth: a tiny share
    assert sum(sim.kept_true.values()) < 0.01 * len(rep)


@pytest.mark.slow
def test_ceiling_is_calibrated_on_every_slice_of_history(world):
    st, plan, book, truth = world
    rng = np.random.default_rng(3)
    late = truth.delivered > book.promised
    report = {}
    for name, (rows, as_of) in _snapshots(plan, truth, rng).items():
        assert len(rows) >= 300, (name, len(rows))
        p = estimate_ceiling(plan, truth, book.promised, rows, as_of, st.world,
                             st.net.carriers, DRAWS, rng)
        y = late[rows]
        # the spread of the late rate around the mean ceiling if the ceiling is right: outcome
        # noise plus the noise of DRAWS re-simulations per row
        se = np.sqrt(np.sum(p * (1 - p)) * (1 + 1 / DRAWS)) / len(rows)
        report[name] = (len(rows), round(float(y.mean()), 3), round(float(p.mean()), 3),
                        round(float((y.mean() - p.mean()) / max(se, 1e-9)), 1))
    off = {k: v for k, v in report.items() if abs(v[3]) > 4}
    assert not off, f"slice: (rows, late rate, mean ceiling, z) {report}"
