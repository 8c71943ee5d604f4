"""Reasons computed when a shipment's state changes, served from the online store.

On a copy of the `trained` world (service clock at the world's "now"): the nightly batch keeps
the reasons it computes online and /predict serves them without TreeSHAP, equal to LightGBM's
own pred_contrib on the vector Feast serves; once a statistic changes, the shipments it touches
get reasons computed for their new state, the others keep theirs; a what-if and an explicit
request compute. The stream keeps the reasons of the shipments whose risk it changes into the
high band (and of its alerts), with its state, on SQLite and on Redis, and nothing for events it
has already folded in.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

from features.online_direct import open_direct
from features.store import get_store, offline_dir
from serving.batch_scores import with_request_features
from serving.reasons import words_of
from serving.reasons_store import OnlineReasons
from shipdelay.settings import Settings, get_settings
from tests.conftest import redis_or_skip
from tests.integration.test_service import AS_OF, champion_copy

pytest.importorskip("bentoml")

REDIS_DB = 1  # this module's own (the other tests use 3+worker, 6-8, 10-15)
EVENTS = 400  # the first events after the stream's cut, one micro-batch


def _shap_top(bundle, frame: pd.DataFrame, k: int = 3) -> list[list[tuple[str, float]]]:
    """The strongest positive contributions, straight from LightGBM's pred_contrib on the
    matrix the bundle's spec builds from `frame` (features as served, recent_notes included)."""
    X = bundle.spec.matrix(frame).to_numpy(dtype=float)
    contrib = bundle.classifier.predict(X, pred_contrib=True)[:, :-1]
    names = bundle.spec.features
    out = []
    for row in contrib:
        order = sorted(range(len(row)), key=lambda j: -row[j])[:k]
        out.append([(names[j], row[j]) for j in order if row[j] > 0])
    return out


def _assert_same_top(record_top, expected) -> None:
    assert [f for f, _ in record_top] == [f for f, _ in expected]
    np.testing.assert_allclose([c for _, c in record_top], [c for _, c in expected],
                               rtol=1e-9, atol=1e-12)


@pytest.fixture(scope="module")
def world(trained, tmp_path_factory) -> Settings:
    source, _, _ = trained
    return champion_copy(source, tmp_path_factory.mktemp("stored-reasons") / "data")


@pytest.fixture(scope="module")
def kept(world):
    """The nightly batch at the world's now: the reasons it computed, as the store holds them."""
    from serving.batch import Job, read_scores

    result = Job.open(world, log_run=False).run(AS_OF)
    assert result.scored > 0
    scores = read_scores(world, result.run_date)
    explained = scores[scores["reasons"].map(len) > 0]
    online = open_direct(world)
    try:
        records = OnlineReasons.of_direct(online).read(explained["shipment_id"].tolist())
    finally:
        online.close()
    assert len(records) >= 5 and all(r is not None for r in records)
    assert [list(r.words) for r in records] == [list(w) for w in explained["reasons"]]
    return {r.shipment_id: r for r in records}


@pytest.fixture(scope="module")
def service(world):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SHIPDELAY_DATA_DIR", str(world.data_dir))
        mp.setenv("SHIPDELAY_SERVE_AS_OF", AS_OF.isoformat())
        mp.setenv("SHIPDELAY_MODEL_REFRESH_SECONDS", "3600")
        mp.setenv("SHIPDELAY_COMPILED_TREES", "0")
        mp.setenv("SHIPDELAY_SERVE_REASONS_SECONDS", "0")  # no memory: only kept or computed
        get_settings.cache_clear()
        from serving.service import ShipDelay

        yield ShipDelay()
    get_settings.cache_clear()


def test_predict_serves_the_batch_reasons_equal_to_treeshap(service, kept, reasons_calls):
    ids = sorted(kept)
    calls = reasons_calls(service._scorer())
    items = service.predict(ids)
    assert calls == []  # no TreeSHAP on the request path
    for item in items:
        assert item.ok and item.reasons == list(kept[item.shipment_id].words)
        assert item.reasons_at == AS_OF.to_pydatetime()
    vectors = pd.DataFrame(service.online_vectors(ids, AS_OF))  # the vectors /predict scored
    for sid, top in zip(ids, _shap_top(service._scorer().bundle, vectors)):
        _assert_same_top(kept[sid].top, top)


def test_a_what_if_and_an_explicit_request_compute(service, kept, reasons_calls):
    ids = sorted(kept)[:5]
    calls = reasons_calls(service._scorer())
    frame = pd.DataFrame(service.online_vectors(ids, AS_OF))
    rows = [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
            for r in frame[service._scorer().inputs].astype(object).to_dict("records")]
    what_if = service.predict_features(rows)
    assert calls == [len(ids)] and all(i.reasons for i in what_if)
    asked = service.shipment(ids[0], explain=True)
    assert calls[-1] == 1
    answer = json.loads(asked.body)
    assert answer["reasons"] == list(kept[ids[0]].words)  # same state, same instant
    assert pd.Timestamp(answer["reasons_at"]) == AS_OF


def test_a_changed_statistic_makes_kept_reasons_stale(service, world, kept, reasons_calls):
    """A lane statistic rolled to a new value (as at midnight): the shipments of that lane get
    reasons computed for their new state now; the others keep the batch's."""
    ids = sorted(kept)
    before = pd.DataFrame(service.online_vectors(ids, AS_OF))
    lane = before["lane_id"].value_counts().index[0]
    online = open_direct(world)
    try:
        row = online.read("lane_stats", [lane])
        assert row["found"].all()
        for c in ("lane_late_rate_28d", "lane_late_rate_7d"):  # a lane gone bad overnight
            row[c] = 1.0
        row["event_timestamp"] = pd.to_datetime(row["event_ts_us"], unit="us", utc=True)
        online.write("lane_stats", row.drop(columns=["found", "event_ts_us"]))
    finally:
        online.close()
    service.reader = service._direct_reader()  # without the lane rows it kept in memory
    after = pd.DataFrame(service.online_vectors(ids, AS_OF))
    moved = (after["lane_id"] == lane).to_numpy()
    assert moved.any() and not moved.all()
    calls = reasons_calls(service._scorer())
    items = service.predict(ids)
    assert sum(calls) == int(moved.sum())
    scorer = service._scorer()
    expected = _shap_top(scorer.bundle, after)  # TreeSHAP of the new state, then in words
    names = scorer.features
    words = words_of([[(names.index(f), c) for f, c in top] for top in expected], names,
                     scorer.with_notes(after))
    for item, changed, said in zip(items, moved, words):
        assert item.reasons_at == AS_OF.to_pydatetime()
        if changed:
            assert item.reasons == said
        else:
            assert item.reasons == list(kept[item.shipment_id].words)
    # an hour later nothing kept is young enough to be served
    with pytest.MonkeyPatch.context() as mp:
        import dataclasses

        mp.setattr(service, "options", dataclasses.replace(
            service.options, as_of=AS_OF + pd.Timedelta(seconds=3601)))
        calls.clear()
        later = service.predict(ids)
    assert sum(calls) == sum(1 for i in later if i.risk_band == "high")
    assert all(i.reasons_at == (AS_OF + pd.Timedelta(seconds=3601)).to_pydatetime()
               for i in later if i.reasons)


# ------------------------------------------------------------------------------ the stream

class _Message:
    def __init__(self, value: bytes, key: bytes, offset: int):
        self._value, self._key, self._offset = value, key, offset
        self._ms = int(time.time() * 1000)

    def value(self):
        return self._value

    def key(self):
        return self._key

    def partition(self):
        return 0

    def offset(self):
        return self._offset

    def timestamp(self):
        return (1, self._ms)

    def error(self):
        return None


class _Producer:
    def __init__(self):
        self.sent: list[tuple[str, bytes]] = []

    def produce(self, topic, value, key=None, on_delivery=None):
        self.sent.append((topic, value))
        on_delivery(None, None)

    def poll(self, _timeout):
        return 0

    def flush(self, _timeout=None):
        return 0


class _Consumer:
    def commit(self, offsets=None, asynchronous=True):
        return None


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_the_stream_keeps_reasons_when_risk_changes(trained, tmp_path, kind, reasons_calls):
    from features.stats_at import StatsAt
    from registry.loader import CHAMPION, alias_version, load_by_alias
    from registry.store import MODEL_NAME, client
    from serving.kafka import Topics
    from serving.replay import lake_events, to_messages
    from serving.scorer import Scorer
    from serving.stream import _one_batch
    from serving.stream_batch import AlertRule
    from serving.stream_metrics import StreamMetrics
    from serving.stream_offline import OfflineStager
    from serving.stream_setup import rewind, workspace
    from serving.stream_store import StreamStore
    from training.dataset import point_in_time

    source, _, _ = trained
    cut = lake_events(source)["ingested_at"].max() - pd.Timedelta(days=10)
    overrides = {}
    if kind == "redis":
        redis_or_skip(REDIS_DB)
        overrides = {"online_store": "redis", "redis_url": f"redis://127.0.0.1:6379/{REDIS_DB}"}
    settings = workspace(source, tmp_path / "data", **overrides)
    if alias_version(settings, CHAMPION) is None:
        c = client(settings)
        version = max((mv.version for mv in c.search_model_versions(f"name='{MODEL_NAME}'")),
                      key=int)
        c.set_registered_model_alias(MODEL_NAME, CHAMPION, str(version))
    feast = get_store(settings)
    rewind(settings, cut)
    if kind == "sqlite":  # a copied store may hold reasons a batch kept after the cut
        online = open_direct(settings)
        online.conn.execute("DROP TABLE IF EXISTS shipdelay_reasons")
        online.close()
    if kind == "redis":  # the profiles into Redis as `features build` loads them
        feast.materialize(start_date=(cut - pd.Timedelta(days=400)).to_pydatetime(),
                          end_date=(cut + pd.Timedelta(days=11)).to_pydatetime(),
                          feature_views=["shipment_profile"])
    events = lake_events(settings, since=cut).head(EVENTS)
    values, keys = to_messages(events)
    messages = [_Message(v, k, i) for i, (v, k) in enumerate(zip(values, keys))]

    store = StreamStore(open_direct(settings), lake_dir=settings.lake_dir)
    store.stats = StatsAt(offline_dir(settings))
    scorer = Scorer(load_by_alias(settings))
    topics = Topics.from_settings(settings)
    rule = AlertRule(settings.stream_alert_threshold, settings.stream_alert_jump)
    stager = OfflineStager(offline_dir(settings))
    calls = reasons_calls(scorer)
    producer = _Producer()
    try:
        _one_batch(messages, _Consumer(), producer, store, stager, scorer, topics, rule,
                   StreamMetrics(None, 1000), settings.stream_max_message_bytes)
        risk = [json.loads(v) for t, v in producer.sent if t == topics.risk]
        alerts = {json.loads(v)["shipment_id"] for t, v in producer.sent if t == topics.alerts}
        moving = [r for r in risk if not r["delivered"]]
        expected = sorted({r["shipment_id"] for r in moving
                           if r["p_late"] >= scorer.thresholds.high} | alerts)
        assert expected and len(expected) < len(moving)
        assert sum(calls) == len(expected)  # once each, in one call
        reader = OnlineReasons.of_direct(store.online)
        records = reader.read([r["shipment_id"] for r in risk])
        held = {r.shipment_id: r for r in records if r is not None}
        assert sorted(held) == expected
        # each is TreeSHAP of the vector at the instant it names, as the batch's join gives it
        as_of = {r["shipment_id"]: pd.Timestamp(r["as_of"]) for r in risk}
        for sid in expected:
            assert held[sid].at == pytest.approx(as_of[sid].timestamp(), abs=1e-6)
        snapshots = pd.DataFrame({"shipment_id": expected,
                                  "as_of": pd.DatetimeIndex([as_of[s] for s in expected])})
        vectors = with_request_features(point_in_time(offline_dir(settings), snapshots))
        vectors = vectors.set_index("shipment_id").loc[expected].reset_index()
        for sid, top in zip(expected, _shap_top(scorer.bundle, vectors)):
            _assert_same_top(held[sid].top, top)

        # the same events again (a redelivery): no state changes, nothing computed or written
        calls.clear()
        _one_batch([_Message(v, k, EVENTS + i) for i, (v, k) in enumerate(zip(values, keys))],
                   _Consumer(), _Producer(), store, stager, scorer, topics, rule,
                   StreamMetrics(None, 1000), settings.stream_max_message_bytes)
        assert calls == []
        assert reader.read([r["shipment_id"] for r in risk]) == records
    finally:
        stager.close()
        store.online.close()
