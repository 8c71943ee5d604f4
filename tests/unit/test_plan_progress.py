"""Progress along a plan of milestones that branches: handling steps are milestones with planned
times, a consolidation's inbound legs are tracked apart and the critical path decides what
remains, a scan whose leg the plan does not know moves nothing, and the fold stays the one
the stream and the backfill share (any split into micro-batches gives the same states)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from features.plan_graph import PlanGraph
from features.transforms import advance_progress, latest, milestone_bit
from tests.unit.test_transforms import S0, H, fold_stream, make_events, plans_of

# legs 0 (A->C) and 1 (B->C) both feed leg 2 (C->D). By ord: picked_up, departed/arrived of
# legs 0, 1, 2, out_for_delivery, delivered (the promise)
HOURS = [0, 1, 6, 2, 12, 20, 30, 30, 40]
STEPS = {"received": (None, 0.5), "checked_in": (2, 18.0), "handed_over": (2, 19.0)}


def consolidation(sid: str = "S1") -> dict:
    steps = []
    for kind, (leg, hour) in STEPS.items():
        steps += [float(milestone_bit([kind], pd.array([leg], dtype="Int64"))[0]),
                  S0 + hour * H]
    return {"shipment_id": sid, "n_legs": 3, "booked_at_s": S0 - H,
            "plan_times_s": [S0 + h * H for h in HOURS],
            "plan_hubs": ["A", "A", "C", "B", "C", "C", "D", "D", "D"],
            "plan_modes": ["truck", "truck", "truck", "truck", "truck", "air", "air", "truck",
                           "truck"],
            "plan_feeds": [2.0, 2.0, -1.0], "plan_steps": steps}


# (event_id, shipment, type, leg, event hour, ingestion hour)
JOURNEY = [("e1", "S1", "picked_up", None, 0.2, 0.3),
           ("e2", "S1", "received", None, 0.7, 0.8),       # 0.2 h behind its plan
           ("e3", "S1", "departed", None, 2.5, 2.6),       # a leg the plan does not know
           ("e4", "S1", "departed", 1, 2.5, 2.7),          # the second inbound leg leaves first
           ("e5", "S1", "arrived", 1, 13.0, 13.1),         # ... and arrives 1 h late
           ("e6", "S1", "departed", 0, 1.5, 13.5),         # the first inbound, uploaded late
           ("e7", "S1", "arrived", 0, 7.0, 14.0),
           ("e8", "S1", "checked_in", 2, 19.5, 19.6),      # 1.5 h late for the merged leg
           ("e9", "S1", "customs_hold", None, 19.7, 19.8)]  # unknown leg: no hold counted


def states() -> pd.DataFrame:
    return advance_progress(None, make_events(JOURNEY), plans_of(consolidation()))


def at(frame: pd.DataFrame, hour: float) -> pd.Series:
    t = pd.Timestamp(S0 + hour * H, unit="s", tz="UTC")
    return frame[frame["event_timestamp"] == t].iloc[0]


def test_a_scan_of_an_unknown_leg_moves_no_milestone():
    out = states()
    before, after = at(out, 0.8), at(out, 2.6)
    assert after["milestone_mask"] == before["milestone_mask"]
    assert after["next_planned_s"] == before["next_planned_s"] == S0 + 1 * H  # leg 0 departs
    assert after["event_count"] == before["event_count"] + 1
    final = at(out, 19.8)
    assert final["customs_holds"] == 0 and final["customs_open"] == 0


def test_the_critical_path_decides_what_remains():
    out = states()
    # leg 1 has arrived, leg 0 has not even left: leg 0's branch is the one behind the plan
    s = at(out, 13.1)
    assert s["next_planned_s"] == S0 + 1 * H  # leg 0's departure, of any kind the earliest
    assert s["planned_h_ahead"] == pytest.approx(40 - 0.5)  # from received, leg 0's start
    assert s["legs_ahead"] == 2  # legs 0 and 2 on that branch
    assert s["missing_milestones"] == 0  # leg 0 is not missing: it is a parallel branch
    assert s["last_slip_h"] == pytest.approx(1.0)  # leg 1's arrival, planned latest
    # both inbound legs in: the merged leg starts from the later of their arrivals (12 h)
    s = at(out, 14.0)
    assert s["next_planned_s"] == S0 + 18 * H  # check-in for the merged leg
    assert s["planned_h_ahead"] == pytest.approx(40 - 12)
    assert s["legs_ahead"] == 1
    assert s["last_slip_h"] == pytest.approx(1.0)
    # a handling step is a milestone with its own slip
    s = at(out, 19.6)
    assert s["next_planned_s"] == S0 + 19 * H  # hand-over to the carrier, not yet seen
    assert s["last_slip_h"] == pytest.approx(1.5)
    assert s["last_milestone_s"] == pytest.approx(S0 + 19.5 * H)
    assert s["legs_ahead"] == 1 and s["planned_h_ahead"] == pytest.approx(40 - 18)


def test_a_chain_without_handling_keeps_its_plan_by_ord():
    """Without plan_feeds and plan_steps a plan is the chain of its legs: what remains is
    what the next ord gives."""
    chain = consolidation() | {"plan_feeds": [1.0, 2.0, -1.0], "plan_steps": []}
    plain = {k: v for k, v in chain.items() if k not in ("plan_feeds", "plan_steps")}
    chain["plan_times_s"] = plain["plan_times_s"] = [S0 + h * H for h in
                                                     (0, 1, 6, 7, 12, 20, 30, 30, 40)]
    events = make_events([r for r in JOURNEY if r[2] not in ("received", "checked_in")])
    a = advance_progress(None, events, plans_of(chain))
    b = advance_progress(None, events, plans_of(plain))
    assert_frame_equal(a, b)
    s = at(a, 13.1)  # departed 1 and arrived 1 seen, leg 0 missed: all before are passed
    assert s["next_planned_s"] == S0 + 20 * H and s["legs_ahead"] == 1
    assert s["missing_milestones"] == 2 and s["planned_h_ahead"] == pytest.approx(40 - 12)


def _random_world(seed: int, shipments: int = 40):
    """Consolidations and chains with handling steps, scans in random order, duplicated,
    missing, some of legs the plan does not know."""
    rng = np.random.default_rng(seed)
    plans, rows, k = [], [], 0
    for s in range(shipments):
        sid = f"S{s:03d}"
        plan = consolidation(sid)
        if rng.random() < 0.5:
            plan["plan_feeds"] = [1.0, 2.0, -1.0]
        plan["plan_times_s"] = list(np.asarray(plan["plan_times_s"])
                                    + rng.normal(0, 0.5, len(HOURS)) * H)
        plans.append(plan)
        kinds = [("picked_up", None), ("received", None)] + [
            (t, i) for i in range(3) for t in ("checked_in", "handed_over", "departed",
                                               "arrived")] + [
            ("customs_hold", 2), ("exception", None), ("departed", None),
            ("out_for_delivery", None), ("collected", None), ("delivered", None)]
        for kind, leg in kinds[: int(rng.integers(1, len(kinds) + 1))]:
            for _ in range(int(rng.integers(0, 3))):
                t = rng.uniform(0, 40)
                ing = np.ceil((t + rng.choice([0.1, 3.0], p=[0.8, 0.2])) * 4) / 4
                rows.append((f"E{k:05d}", sid, kind, leg, t, ing))
                k += 1
    return make_events(rows), plans_of(*plans)


@pytest.mark.parametrize("seed", range(3))
def test_any_split_and_order_give_the_backfill(seed):
    events, plans = _random_world(seed)
    backfill = advance_progress(None, events, plans)
    shuffled = advance_progress(None, events.sample(frac=1, random_state=seed), plans)
    assert_frame_equal(backfill, shuffled)
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(0.25, 44, 0.25), 7, replace=False))
    stream = fold_stream(events, plans, cuts)
    cols = [c for c in backfill.columns if c != "event_count"]
    assert_frame_equal(latest(stream)[cols], latest(backfill)[cols], check_exact=True)
    assert_frame_equal(stream[cols], backfill[cols], check_exact=True)


def test_plan_graph_of_a_merge():
    graph = PlanGraph.of(plans_of(consolidation()))
    row = np.zeros(1, np.int64)
    # nothing seen: the first milestone (picked_up, planned at 0 h) is the next; both branches
    # are two legs long
    out = graph.remaining(row, np.zeros(1, np.int64))
    assert out["next_planned_s"][0] == S0 + 0 * H and out["legs_ahead"][0] == 2
    # delivered: nothing remains, whatever was not scanned
    out = graph.remaining(row, np.array([1 << 42]))
    assert np.isnan(out["next_planned_s"][0]) and np.isnan(out["position_s"][0])
    assert out["legs_ahead"][0] == 0
    assert out["passed_unseen"][0] == int(np.bitwise_count(graph.planned[0])) - 1
