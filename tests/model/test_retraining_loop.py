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
in the stable world on 05-26). A carrier statistic that counts departures overdue, not only
those made, is what would show it within days. The mark goes when this test passes."""