"""The prediction log from the real doors of the trained world: the nightly batch logs every
shipment it scores (the scores table's numbers, the point-in-time vector), the service logs
every /predict answer and never fails one because its log cannot be written, its /metrics
carry the newest monitoring run's numbers; `run_monitor` then judges the batch's predictions
against the lake's outcomes with the champion's training reference."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from features.online import online_vectors
from features.store import get_store
from monitoring import drift
from monitoring.monitor import run_monitor
from monitoring.reader import log_days
from registry.loader import CHAMPION, alias_version
from serving.batch import read_scores, score_batch
from shipdelay.lake import Lake
from shipdelay.parquet_io import read_table
from shipdelay.settings import Settings, get_settings
from tests.integration.batch_world import CUTOFF, WORLD_NOW, copy_world

pytest.importorskip("bentoml")


def _log(settings: Settings) -> pd.DataFrame:
    files = [f for fs in log_days(settings.predictions_dir).values() for f in fs]
    return pd.concat([read_table(f).to_pandas() for f in files], ignore_index=True) \
        if files else pd.DataFrame()


@pytest.fixture(scope="module")
def batch_world(trained, tmp_path_factory) -> Settings:
    return copy_world(trained[0], tmp_path_factory.mktemp("monitor-batch") / "data")


def test_the_batch_logs_every_scored_shipment_and_the_monitor_judges_them(
        batch_world, trained, monkeypatch):
    settings = batch_world
    result = score_batch(settings, CUTOFF, log_run=False)
    log = _log(settings)
    scores = read_scores(settings, result.run_date).set_index("shipment_id")
    assert len(log) == result.scored > 100 and set(log["path"]) == {"batch"}
    assert (log["instant"] == CUTOFF.floor("us")).all()
    logged = log.set_index("shipment_id").loc[scores.index]
    assert np.allclose(logged["p_late"], scores["p_late"])
    assert np.allclose(logged["delay_p90_h"], scores["delay_p90_h"])
    assert (logged["carrier_id"].astype(str) == scores["carrier"].astype(str)).all()
    assert logged["hours_to_promised"].notna().all()  # the vector itself, not a reference

    # the champion's reference from its training window (the split the world was trained on)
    _, split, _ = trained
    monkeypatch.setattr("training.train.current_split", lambda s: split)
    version = alias_version(settings, CHAMPION)
    ref = drift.reference_from_training(settings, version)
    assert drift.load_reference(settings.data_dir, version).to_dict() == ref.to_dict()
    assert 0 < ref.log_loss < 1 and len(ref.binnings) > 80

    summary = run_monitor(settings, as_of=WORLD_NOW, days=30, log_to_mlflow=False)
    outcomes = Lake(settings.lake_dir).read("outcomes")
    known = outcomes.loc[outcomes["delivered_at"] <= WORLD_NOW, "shipment_id"].astype(str)
    assert summary.logged == len(log)
    assert summary.judged == int(log["shipment_id"].isin(set(known)).sum()) > 0
    assert summary.counts["unknown_model_version_rows"] == 0
    assert 0.5 < summary.headline["roc_auc"] <= 1
    body = json.loads(summary.json_path.read_text())
    assert body["reference"]["version"] == version
    assert {r["feature"] for r in body["tables"]["drift_by_day"]} >= {"p_late", "slip_h"}


# ------------------------------------------------------------------ the service, in process
AS_OF = WORLD_NOW


@pytest.fixture(scope="module")
def service_world(trained, tmp_path_factory) -> tuple[Settings, list[str]]:
    source = trained[0]
    root = tmp_path_factory.mktemp("monitor-service") / "data"
    settings = copy_world(source, root)
    for name in ("online.db", "registry.db"):
        shutil.copy2(source.data_dir / "feast" / name, root / "feast" / name)
    lake = Lake(settings.lake_dir)
    done = set(lake.read("outcomes")["shipment_id"].astype(str))
    ids = [i for i in lake.read("shipments")["shipment_id"].astype(str).tolist()[-400:]
           if i not in done]
    v = online_vectors(get_store(settings), ids, AS_OF)
    live = v.loc[v["known"] & ~v["delivered"], "shipment_id"].tolist()[:40]
    assert len(live) >= 10
    return settings, live


@pytest.fixture(scope="module")
def service(service_world):
    settings, _ = service_world
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SHIPDELAY_DATA_DIR", str(settings.data_dir))
        mp.setenv("SHIPDELAY_SERVE_AS_OF", AS_OF.isoformat())
        mp.setenv("SHIPDELAY_MODEL_REFRESH_SECONDS", "3600")
        mp.setenv("SHIPDELAY_PREDICTION_LOG_FLUSH_S", "3600")  # written when the test says
        get_settings.cache_clear()
        from serving.service import ShipDelay

        yield ShipDelay()
    get_settings.cache_clear()


def test_the_service_logs_every_answer_with_its_online_vector(service, service_world):
    settings, live = service_world
    answers = service.predict(live + ["NO-SUCH-SHIPMENT"])
    assert service.prediction_log.flush() == len(live)
    log = _log(settings).set_index("shipment_id")
    ok = {a.shipment_id: a for a in answers if a.ok}
    assert sorted(log.index) == sorted(ok) == sorted(live)  # the unknown id: no prediction
    assert np.allclose(log.loc[live, "p_late"], [ok[i].p_late for i in live])
    assert (log["instant"] == AS_OF).all() and set(log["path"]) == {"service"}
    served = online_vectors(get_store(settings), live, AS_OF).set_index("shipment_id")
    for feature in ("slip_h", "hours_since_last_scan", "lane_late_rate_7d"):
        assert np.allclose(log.loc[live, feature].astype(float),
                           served.loc[live, feature].astype(float), equal_nan=True), feature


def test_a_log_that_cannot_be_written_never_fails_an_answer(service, service_world, tmp_path):
    _, live = service_world
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(service.prediction_log, "root", blocker)
        answers = service.predict(live[:5])
        assert all(a.ok for a in answers)
        before = service.prediction_log.counts["failed"]
        assert service.prediction_log.flush() == 0
    assert service.prediction_log.counts["failed"] == before + 5
    assert 'shipdelay_prediction_log_rows_total{outcome="failed"} ' in \
        service.metrics.exposition()


def test_metrics_carry_the_newest_monitoring_summary(service, service_world):
    settings, _ = service_world
    from monitoring.report import latest_summary_path

    path = latest_summary_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"headline": {"roc_auc": 0.8125, "alarms": 2.0,
                                             "log_loss": float("nan")}}))
    service.__metrics__("")  # a scrape reads the summary; the gauges show from the next
    text = service.metrics.exposition()  # (in BentoML's workers: the multiprocess files)
    assert 'shipdelay_monitor{metric="roc_auc"} 0.8125' in text
    assert 'shipdelay_monitor{metric="alarms"} 2.0' in text
    assert 'metric="log_loss"' not in text  # not a number: not exported
