"""The trained model behaves as operations need it to, the split never leaks, and the registry
only lets a better model through."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from registry.loader import alias_version, load_by_alias
from registry.promote import promote, rollback
from registry.store import MODEL_NAME, client
from shipdelay.lake import Lake
from training import baselines
from training.evaluate import PROB_CLIP, STAGES
from training.split import label_horizon, time_split
from training.train import holdout_evaluator, holdout_rows, train


@pytest.fixture(scope="module")
def bundle(trained):
    settings, _, _report = trained
    return load_by_alias(settings, "challenger")


def _p(bundle, frame):
    return bundle.p_late(bundle.spec.matrix(frame))


def test_training_run_is_complete(trained):
    _, split, report = trained
    head = report.headline()
    on_rows = [f"{m}, {report.ceiling_rows:,} ceiling rows" for m in ("model", "ceiling")]
    assert list(head.index) == ["model", "behind_schedule", "lane_history", "logistic", *on_rows]
    assert head.loc["model", "roc_auc"] > head.loc["behind_schedule", "roc_auc"]
    assert head.loc[on_rows[1], "roc_auc"] > head.loc[on_rows[0], "roc_auc"] - 0.1
    assert report.version is not None and len(split.test) > 500


def test_model_and_ceiling_are_compared_on_the_same_rows(trained):
    settings, split, report = trained
    # the rows the lake's ceiling covers, found here from the lake itself
    ceiling = Lake(settings.lake_dir).read("ceiling")
    p_ceiling = baselines.ceiling(split.test, ceiling).to_numpy(float)
    covered = ~np.isnan(p_ceiling)
    assert 0 < covered.sum() < len(split.test)
    assert report.ceiling_rows == covered.sum()
    # every scorer on those rows, clipped alike: the ceiling's AUC and log loss recomputed
    y = split.test["is_late"].to_numpy(float)[covered]
    m = report.ceiling_metrics
    overall = m[(m["slice"] == "overall")].pivot_table(index="model", columns="metric",
                                                       values="value")
    assert (overall["n"] == covered.sum()).all()
    clipped = np.clip(p_ceiling[covered], PROB_CLIP, 1 - PROB_CLIP)
    assert overall.loc["ceiling", "log_loss"] == pytest.approx(log_loss(y, clipped))
    assert overall.loc["ceiling", "roc_auc"] == pytest.approx(roc_auc_score(y, clipped))
    # the paired differences per stage, with their intervals, in the report and in MLflow
    versus = report.versus_ceiling
    model_auc = overall.loc["model", "roc_auc"]
    first = versus[(versus["slice"] == "overall") & (versus["metric"] == "roc_auc")].iloc[0]
    assert first["model"] == pytest.approx(model_auc) and first["n"] == covered.sum()
    stages = versus[versus["slice"] == "stage"]
    assert set(stages["group"]) <= set(STAGES) and len(set(stages["group"])) >= 4
    assert np.allclose(versus["diff"], versus["model"] - versus["ceiling"])
    assert ((versus["lo"] <= versus["diff"]) & (versus["diff"] <= versus["hi"])).all()
    logged = client(settings).get_run(report.run_id).data.metrics
    for r in stages.itertuples():
        key = f"ceiling/model_minus_ceiling/by_stage/{r.group}/{r.metric}"
        assert logged[f"{key}/lo"] == pytest.approx(r.lo)
        assert logged[f"{key}/hi"] == pytest.approx(r.hi)
    assert logged["ceiling/ceiling/roc_auc"] == pytest.approx(overall.loc["ceiling", "roc_auc"])
    # never next to the model's all-rows figures
    assert not [k for k in logged if k.startswith(("test/", "baseline/")) and "ceiling" in k]


def test_no_label_window_of_a_training_row_reaches_the_next_window():
    rng = np.random.default_rng(0)
    n = 20_000
    start = pd.Timestamp("2025-01-01", tz="UTC")
    booked = start + pd.to_timedelta(np.sort(rng.uniform(0, 400, n)), unit="D")
    delivered = booked + pd.to_timedelta(rng.gamma(3.0, 3.0, n), unit="D")
    frame = pd.DataFrame({"shipment_id": [f"SH{i:08d}" for i in range(n)],
                          "booked_at_s": booked.astype("int64") / 1e9,
                          "delivered_at": delivered})
    split = time_split(frame)
    b, horizon = split.bounds, split.horizon
    assert horizon == label_horizon(frame) and horizon.days >= 10
    for window, opens in (("train", "valid_start"), ("valid", "test_start")):
        rows = getattr(split, window)
        start_w = pd.to_datetime(rows["booked_at_s"], unit="s", utc=True)
        # a row's label window: from its booking to its label, within the horizon for most
        # and at its delivery for the slow rest
        ends = np.maximum(start_w + horizon, rows["delivered_at"])
        assert len(rows) and (ends < b[opens]).all()
    # the latest booking each window may hold, too: the gaps are longer than the horizon
    assert b["train_end"] + horizon < b["valid_start"]
    assert b["valid_end"] + horizon < b["test_start"]
    assert all(gap > horizon for gap in split.gaps)


def test_split_never_leaks(trained):
    _, split, _ = trained
    b = split.bounds
    booked = {k: pd.to_datetime(getattr(split, k)["booked_at_s"], unit="s", utc=True)
              for k in ("train", "valid", "test")}
    assert booked["train"].max() < b["train_end"] < b["valid_start"] - split.horizon
    assert booked["valid"].min() >= b["valid_start"] and booked["valid"].max() < b["valid_end"]
    assert booked["test"].min() >= b["test_start"] > b["valid_end"] + split.horizon
    # every label used in training was known before the next window opened
    assert split.train["delivered_at"].max() < b["valid_start"]
    assert split.valid["delivered_at"].max() < b["test_start"]
    assert not set(split.train["shipment_id"]) & set(split.test["shipment_id"])


def test_risk_never_falls_as_slip_grows(bundle, trained):
    _, split, _ = trained
    rows = split.test.sample(300, random_state=1)
    rows = rows.assign(slip_h=rows["slip_h"].fillna(0.0))  # from a known slip upwards
    previous = _p(bundle, rows)
    for extra in (2, 6, 12, 24, 48, 96):
        later = rows.assign(slip_h=rows["slip_h"] + extra)
        now = _p(bundle, later)
        assert (now >= previous - 1e-12).all()
        previous = now
    assert (previous > _p(bundle, rows)).mean() > 0.5  # and it does rise for most


def test_shipment_id_has_no_effect(bundle, trained):
    _, split, _ = trained
    rows = split.test.head(200)
    renamed = rows.assign(shipment_id=[f"X{i}" for i in range(len(rows))])
    assert np.array_equal(_p(bundle, rows), _p(bundle, renamed))


def test_customs_hold_raises_risk_and_a_delay_note_adds_to_it(bundle, trained):
    _, split, _ = trained
    rows = split.test[split.test["customs_holds"] == 0].sample(300, random_state=2)
    held = rows.assign(customs_holds=1, customs_open=1)
    before, after = _p(bundle, rows), _p(bundle, held)
    assert (after >= before - 1e-12).all() and after.mean() > before.mean() + 0.02
    # no list says what a hold note means: the note model learned it from the training window
    stamp = "2025-12-01T08:00:00Z "
    noted = held.assign(recent_notes=stamp + "held by customs for exam")
    routine = held.assign(recent_notes=stamp + "scanned")
    assert _p(bundle, noted).mean() > _p(bundle, routine).mean() + 0.02


def test_interval_and_probability_are_sane(bundle, trained):
    _, split, _ = trained
    X = bundle.spec.matrix(split.test)
    q = bundle.delay_quantiles(X)
    assert (q[0.1] <= q[0.5]).all() and (q[0.5] <= q[0.9]).all()
    p = bundle.p_late(X)
    assert ((p > 0) & (p < 1)).all()


def test_gate_refuses_a_worse_model_and_rollback_restores(trained):
    settings, split, _ = trained
    evaluate = holdout_evaluator(settings)
    first = promote(settings, evaluate)
    assert first.ok and alias_version(settings, "champion") is not None
    champion = alias_version(settings, "champion")
    # a crippled challenger: two leaves, a handful of rounds (early stopping alone would let a
    # two-leaf model grow into a fair additive one)
    train(settings, params={"num_leaves": 2, "learning_rate": 0.01, "num_iterations": 5},
          split=split, run_name="worse", challenger=True)
    refused = promote(settings, evaluate)
    assert not refused.ok and refused.reasons  # said why: log loss, calibration or a stage
    assert alias_version(settings, "champion") == champion
    forced = promote(settings, evaluate, force=True)
    assert forced.ok and alias_version(settings, "champion") != champion
    _rolled_from, rolled_to = rollback(settings)
    assert rolled_to == champion and alias_version(settings, "champion") == champion


def test_the_gate_judges_on_the_challengers_own_test_window(trained):
    """A challenger trained with its own split (here: a later test window; its run records
    where the window opens, as `shipdelay train --test-from` does) is judged on that window of
    the current lake, not on a split the gate would choose again."""
    from registry.loader import version_by_alias

    settings, split, report = trained
    booked = pd.to_datetime(split.test["booked_at_s"], unit="s", utc=True)
    later = booked.quantile(0.5).floor("D")
    c = client(settings)
    before = version_by_alias(c, "challenger")  # None once a promotion took it
    trained_version = c.get_model_version(MODEL_NAME, str(report.version))
    run = c.create_run(c.get_run(trained_version.run_id).info.experiment_id,
                       run_name="own-window")
    c.log_param(run.info.run_id, "test_start", str(later))
    c.set_terminated(run.info.run_id)
    own = c.create_model_version(MODEL_NAME, trained_version.source, run_id=run.info.run_id)
    c.set_registered_model_alias(MODEL_NAME, "challenger", own.version)
    try:
        rows = holdout_rows(settings)
    finally:
        if before is None:
            c.delete_registered_model_alias(MODEL_NAME, "challenger")
        else:
            c.set_registered_model_alias(MODEL_NAME, "challenger", before.version)
    expected = split.test[(booked >= later).to_numpy()]
    assert 0 < len(rows) < len(split.test)
    assert len(rows) == len(expected)
    assert sorted(zip(rows["shipment_id"], rows["as_of"])) == sorted(
        zip(expected["shipment_id"], expected["as_of"]))


def test_training_saves_the_monitoring_reference_of_its_rows(trained):
    """The drift reference of a registered version is saved at registration, from the shipments
    in flight at the nightly cut-offs before training (what the nightly batch reads), counted
    here from the lake's own tables with pandas."""
    from monitoring.drift import PREDICTION, load_reference, reference_nights

    settings, _split, report = trained
    ref = load_reference(settings.data_dir, str(report.version))
    lake = Lake(settings.lake_dir)
    shipments = lake.read("shipments", ["shipment_id", "booked_at"])
    events = lake.read("tracking_events", ["shipment_id", "event_type", "ingested_at"])
    outcomes = lake.read("outcomes", ["shipment_id", "delivered_at"])
    now = events["ingested_at"].max()
    delivered = events[events["event_type"] == "delivered"]
    in_flight = 0
    for night in reference_nights(now):
        known = set(delivered.loc[delivered["ingested_at"] <= night, "shipment_id"]) | set(
            outcomes.loc[outcomes["delivered_at"] <= night, "shipment_id"])
        booked = shipments[shipments["booked_at"] <= night]
        in_flight += int((~booked["shipment_id"].isin(known)).sum())
    assert ref is not None and "nightly cut-offs" in ref.source
    assert ref.rows == in_flight > 0
    assert PREDICTION in ref.binnings and "hours_since_last_scan" in ref.binnings
    assert any(name.startswith("carrier=") for name in ref.slices)
