"""The retraining loop, shown on a small simulated world (monitoring/loop_scenario.py; at full
size: benchmarks/retraining_loop.py).

A world where ocean carrier OCE-02 degrades from CHANGE and the same world without the change
run the same nights (every third night, the nightly pipeline: score-batch -> monitor -> retrain
when a drift or performance alarm asks). On the degrading world drift is flagged on the
carrier's slice within a few days of the change, the carrier's realized log loss rises once its
outcomes arrive, the pipeline retrains and promotes, and the new champion's realized log loss
on the weeks after its promotion is below the first champion's; on the stable world no alarm
fires (the false-alarm count is printed and asserted).

The world is small (SHIPMENTS over DAYS days: retrains learn from recent windows, so the first
champion needs a few months, not a year), so the carrier has a few dozen shipments in flight:
its slice is judged for drift from MIN_SLICE_ROWS predictions, and the degradation is stronger
than the benchmark's (x FACTOR instead of x3) so that a few dozen outcomes show it. Trees are
small (PARAMS, as `shipdelay train --params` takes them).

Known to fail today, so it is marked and not run by default (`pytest --runxfail
tests/model/test_retraining_loop.py -s` runs it and prints its numbers; about 6 minutes on 2
cores). Alarms are on what the model answers (P(late) drift, realized log loss beyond chance,
`monitoring.alarms`); input drift is reported, not alarmed. Last run: four of the five checks
pass (the carrier's realized log loss rises; the pipeline retrains on a performance alarm on
ocean shipments and promotes on 06-07; the new champion's realized log loss is below the first's,
0.368 vs 0.458; the stable world raises no alarm on any of its 11 nights). One fails: the first
drift alarm on the carrier's slice comes on 06-10, three weeks after the change. Nothing the
product observes moves within a week there: the carrier's departure slip statistic counts legs
that have departed, so its late departures are missing from it until they leave (it fell on the
first nights after the change); its shipments' mean P(late) stays at 0.04-0.06 until 06-04, as
in the stable world; only the tail of their hours overdue grows (P90 23 h against at most 10 h
in the stable world on 05-26). On the 05-26 night the slice holds 70 predictions and none of
its inputs moves beyond chance (most have no finite chance level at that size). Measured on the
degrading world's lake: the mean hours the carrier's legs planned in the last 7 days waited past
their plan (legs still waiting counted with their wait so far) reads 30.2 h on 05-26 against
24.9 +- 6.2 h a day over the training window: within its spread; the share of those legs not yet
departed reads 0.59 against 0.06-0.26 before the change, the one number found that moves within
the week (legs of one sailing depart together, so its chance level needs sailings, not legs).
A carrier statistic of overdue departures is what could show it within days. The mark goes when
this test passes."""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest

from monitoring.loop_scenario import ScenarioResult, run_scenario
from shipdelay.world.regimes import Regime
from shipdelay.world.simulate import SimConfig

SEED = 5
SHIPMENTS, START, DAYS = 8_000, "2025-01-01", 200
CARRIER, CHANGE, FACTOR = "OCE-02", "2025-05-20", 6.0
TRAIN_UNTIL, FIRST_NIGHT, LAST_NIGHT, EVERY = "2025-05-06", "2025-05-14", "2025-06-13", 3
DETECT_WITHIN_DAYS = 7  # "within a few days": two nightly runs at most
MIN_SLICE_ROWS = 15  # predictions a slice needs in the newest three days to be judged for drift
LOG_LOSS_RISE = 0.15  # the carrier's realized log loss above the stable world's on a night
MAX_FALSE_ALARM_NIGHTS = 0
PARAMS = {"classifier": {"num_iterations": 60, "num_leaves": 15, "learning_rate": 0.1},
          "quantile": {"num_iterations": 25, "num_leaves": 7}}
SLICE = f"carrier={CARRIER}"

pytestmark = pytest.mark.xfail(
    strict=True, run=False,
    reason="the carrier's P(late) drifts three weeks after the change, not within one (see the "
           "module's doc)")


def _world(regimes) -> SimConfig:
    return SimConfig(shipments=SHIPMENTS, start=START, days=DAYS, seed=SEED,
                     ceiling_shipments=0, chunk_size=20_000, regimes=regimes)


@pytest.fixture(scope="module")
def loop(tmp_path_factory) -> dict[str, ScenarioResult]:
    """Both worlds, night by night; the numbers are printed (pytest -s shows them)."""
    work = tmp_path_factory.mktemp("retraining-loop")
    params = work / "params.json"
    params.write_text(json.dumps(PARAMS))
    out = {}
    for name, regimes in (("degrade", (Regime("carrier_degrades", CARRIER, CHANGE, FACTOR),)),
                          ("stable", ())):
        started = time.perf_counter()
        out[name] = run_scenario(
            work / name, _world(regimes), TRAIN_UNTIL, FIRST_NIGHT, LAST_NIGHT,
            every_days=EVERY, settings_overrides={"monitor_psi_min_rows": MIN_SLICE_ROWS},
            params=params, say=lambda s, n=name: print(f"[{n}] {s}", flush=True))
        out[name].seconds["wall"] = time.perf_counter() - started
    for name, result in out.items():
        print(f"[{name}] " + json.dumps(_numbers(result), default=str), flush=True)
    return out


def _numbers(result: ScenarioResult) -> dict:
    return {"first_drift_on_carrier": result.first_alarm("drift", SLICE),
            "first_alarm": next((n.day for n in result.nights if n.alarms), None),
            "nights_with_alarms": result.nights_with_alarms, "nights": len(result.nights),
            "carrier_log_loss": {n.day: round(n.log_loss[SLICE], 4) for n in result.nights
                                 if SLICE in n.log_loss},
            "retrained": [(n.day, n.retrained, n.promoted) for n in result.nights
                          if n.retrained],
            "initial": result.initial, "realized": result.realized,
            "realized_rows": result.realized_rows,
            "seconds": {k: round(v) for k, v in result.seconds.items()}}


def _after(day: str, days: int = 0) -> pd.Timestamp:
    return pd.Timestamp(day) + pd.Timedelta(days=days)


def test_drift_is_flagged_on_the_carrier_within_days_of_the_change(loop):
    first = loop["degrade"].first_alarm("drift", SLICE)
    assert first is not None, f"no drift alarm on {SLICE}"
    assert _after(CHANGE) <= pd.Timestamp(first) <= _after(CHANGE, DETECT_WITHIN_DAYS), (
        f"first drift alarm on {SLICE} on {first}, change on {CHANGE}")


def test_the_carriers_realized_log_loss_rises_once_outcomes_arrive(loop):
    """Against the same carrier on the same night of the world without the change."""
    degraded, stable = loop["degrade"].nights, loop["stable"].nights
    after = {d.day: (d.log_loss[SLICE], s.log_loss[SLICE]) for d, s in zip(degraded, stable)
             if SLICE in d.log_loss and SLICE in s.log_loss
             and pd.Timestamp(d.day) >= _after(CHANGE)}
    assert after, f"{SLICE} was never judged on both worlds after the change"
    assert any(d > s * (1 + LOG_LOSS_RISE) for d, s in after.values()), after


def test_the_pipeline_retrains_and_promotes_after_the_change(loop):
    promoted = [n for n in loop["degrade"].nights if n.promoted]
    assert any(pd.Timestamp(n.day) >= _after(CHANGE) for n in promoted), (
        [(n.day, n.retrained, n.promoted) for n in loop["degrade"].nights])


def test_the_new_champion_beats_the_old_on_the_weeks_after(loop):
    result = loop["degrade"]
    assert len(result.realized) == 2, result.realized  # the first and the last champion
    old = result.realized[result.initial]
    new = next(v for k, v in result.realized.items() if k != result.initial)
    assert result.realized_rows >= 200
    assert new < old, f"realized log loss: first champion {old:.4f}, new {new:.4f}"


def test_the_stable_world_raises_no_alarm(loop):
    result = loop["stable"]
    rate = result.nights_with_alarms / len(result.nights)
    print(f"stable world: {result.nights_with_alarms} of {len(result.nights)} nights with an "
          f"alarm (false-alarm rate {rate:.0%})")
    assert result.nights_with_alarms <= MAX_FALSE_ALARM_NIGHTS, {
        n.day: sorted({f"{k} {s}" for k, s, _ in n.alarms})[:6] for n in result.nights
        if n.alarms}
