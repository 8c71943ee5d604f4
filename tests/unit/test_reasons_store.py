"""Reasons kept with a shipment's risk: served only while they explain the vector scored, equal
to LightGBM's own TreeSHAP on it, and kept in SQLite and in Redis alike."""

from __future__ import annotations

import sqlite3

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from features.online_direct import SqliteOnline
from features.schema import CATEGORICAL, ON_DEMAND, model_feature_names
from features.store import PROJECT
from serving.explain import states
from serving.reasons_store import OnlineReasons, Reasons, decode, redis_write, sqlite_write
from serving.scorer import Scorer
from tests.conftest import redis_or_skip
from training.bundle import QUANTILES, Bundle, Calibrator
from training.features import FeatureSpec

PARAMS = {"verbose": -1, "num_threads": 1, "num_leaves": 7, "min_data_in_leaf": 10, "seed": 1}
T0 = 1.76e9
REDIS_DB = 9  # this module's own (the other tests use 3+worker, 6, 7, 8, 10-15)
NOTES = ["2025-10-01T08:00:00Z Stau am Hafen", "2025-10-01T08:00:00Z Ware verladen", ""]


def frame_of(n: int, seed: int) -> pd.DataFrame:
    """Vectors whose risk rises with the slip and with the hours since the last scan (a clock
    feature), so that reasons move with the clock too."""
    rng = np.random.default_rng(seed)
    cols = {c: (rng.choice(["truck", "air"], n) if c in CATEGORICAL else rng.normal(size=n))
            for c in model_feature_names()}
    cols["recent_notes"] = rng.choice(NOTES, n)
    late = (cols["slip_h"] + cols["hours_since_last_scan"] + 0.3 * rng.normal(size=n)) > 0.5
    return pd.DataFrame(cols).assign(shipment_id=[f"S{seed}-{i}" for i in range(n)],
                                     is_late=late.astype(int),
                                     delay_hours=np.where(late, 5.0, -2.0), request_time_s=T0)


@pytest.fixture(scope="module")
def scorer():
    train = frame_of(800, seed=1)
    spec = FeatureSpec.fit(train)
    X = spec.matrix(train, cross_fitted=True)
    classifier = lgb.train({**PARAMS, "objective": "binary"},
                           lgb.Dataset(X, train["is_late"]), num_boost_round=30)
    quantiles = {q: lgb.train({**PARAMS, "objective": "quantile", "alpha": q},
                              lgb.Dataset(X, train["delay_hours"]), num_boost_round=5)
                 for q in QUANTILES}
    calibrator = Calibrator.fit(classifier.predict(X), train["is_late"].to_numpy())
    return Scorer(Bundle(classifier, quantiles, calibrator, spec, version="7"))


@pytest.fixture
def rows(scorer) -> dict[str, np.ndarray]:
    """Vectors as the online reader gives them (numbers float64, text objects)."""
    frame = frame_of(120, seed=2)[["shipment_id", "request_time_s", *scorer.inputs]]
    return {c: (frame[c].to_numpy(dtype=object) if frame[c].dtype == object
                else frame[c].to_numpy()) for c in frame.columns}


def _lookup(records: list[Reasons]):
    held = {r.shipment_id: r for r in records}
    return lambda ids: [held.get(str(i)) for i in ids]


def _shap_top(scorer, rows: dict, k: int = 3) -> list[list[tuple[str, float]]]:
    """The strongest positive contributions by LightGBM's pred_contrib, on the matrix the
    bundle's spec builds (not the scorer's own fast path)."""
    X = scorer.bundle.spec.matrix(pd.DataFrame(rows)).to_numpy(dtype=float)
    contrib = scorer.bundle.classifier.predict(X, pred_contrib=True)[:, :-1]
    out = []
    for row in contrib:
        order = sorted(range(len(row)), key=lambda j: -row[j])[:k]
        out.append([(scorer.features[j], row[j]) for j in order if row[j] > 0])
    return out


def test_kept_reasons_are_treeshap_of_the_vector_they_name(scorer, rows):
    records = scorer.explain(rows)
    expected = _shap_top(scorer, rows)
    assert any(r.top for r in records)
    for record, top in zip(records, expected):
        assert [f for f, _ in record.top] == [f for f, _ in top]
        np.testing.assert_allclose([c for _, c in record.top], [c for _, c in top], rtol=1e-12)
        assert record.version == "7" and record.at == T0
    fresh = scorer.score_columns(rows, reasons_from=0.0)["reasons"]
    assert [list(r.words) for r in records] == fresh


def test_valid_kept_reasons_are_served_and_nothing_is_computed(scorer, rows, reasons_calls):
    records = scorer.explain(rows)
    calls = reasons_calls(scorer)
    later = dict(rows, request_time_s=rows["request_time_s"] + 600.0,  # the clock moved on
                 hours_since_last_scan=rows["hours_since_last_scan"] + 1 / 6)
    got = scorer.score_columns(later, 0.0, stored=_lookup(records))
    assert calls == []
    assert got["reasons"] == [list(r.words) for r in records]
    assert (got["reasons_at"] == np.datetime64(int(T0), "s")).all()  # they say when


@pytest.mark.parametrize("change", ["state", "note", "category", "version", "age", "future"])
def test_kept_reasons_that_no_longer_explain_the_vector_are_computed(scorer, rows, change,
                                                                    reasons_calls):
    records = scorer.explain(rows)
    now = rows["request_time_s"] + 60.0
    moved = dict(rows, request_time_s=now)
    first = np.arange(len(now)) < 5
    if change == "state":
        moved["slip_h"] = np.where(first, moved["slip_h"] + 48.0, moved["slip_h"])
    elif change == "note":
        moved["recent_notes"] = np.where(first, "2025-10-02T08:00:00Z neu", moved["recent_notes"])
    elif change == "category":
        moved["main_mode"] = np.where(first, np.where(moved["main_mode"] == "air", "truck", "air"),
                                      moved["main_mode"])
    elif change == "version":
        records = [r if i >= 5 else Reasons(r.shipment_id, "6", r.state, r.at, r.top, r.words)
                   for i, r in enumerate(records)]
    elif change == "age":
        records = [r if i >= 5 else Reasons(r.shipment_id, r.version, r.state, r.at - 3600.0,
                                             r.top, r.words) for i, r in enumerate(records)]
    else:  # kept for an instant after the answer's
        records = [r if i >= 5 else Reasons(r.shipment_id, r.version, r.state, r.at + 61.0,
                                             r.top, r.words) for i, r in enumerate(records)]
    calls = reasons_calls(scorer)
    got = scorer.score_columns(moved, 0.0, stored=_lookup(records), max_age_s=3600.0)
    assert calls == [5]  # only the five whose kept reasons do not hold
    at = got["reasons_at"].astype("M8[s]").astype(np.int64)
    assert (at[:5] == now[:5]).all() and (at[5:] == T0).all()
    fresh = scorer.score_columns(moved, reasons_from=0.0)["reasons"]
    assert got["reasons"][:5] == fresh[:5]


def test_the_state_ignores_the_clock_and_the_spelling_of_nan_and_zero(scorer, rows):
    X = scorer.matrix(rows)
    every = np.arange(len(X))
    base = states(scorer, X, scorer.with_notes(rows), every)
    clock = X.copy()
    clock[:, [scorer.features.index(c) for c in ON_DEMAND]] += 5.0
    spelled = X.copy()
    j = scorer.features.index("weight_kg")
    spelled[0, j], spelled[1, j] = -0.0, np.float64("nan")
    spelled[1, j] = np.frombuffer(np.array([0x7FF8000000000ABC], np.uint64).tobytes())[0]
    zero, nan = X.copy(), X.copy()
    zero[0, j], nan[1, j] = 0.0, np.nan
    assert states(scorer, clock, scorer.with_notes(rows), every) == base
    assert states(scorer, spelled, scorer.with_notes(rows), every)[:2] == \
        states(scorer, np.where(np.arange(len(X))[:, None] == 0, zero, nan),
               scorer.with_notes(rows), every)[:2]
    assert states(scorer, zero, scorer.with_notes(rows), every)[0] != base[0]


def _records() -> list[Reasons]:
    return [Reasons("SH-1", "3", "ab" * 16, 100.0, (("slip_h", 0.5), ("note_risk", 0.25)),
                    ("running 12 h behind", 'recent notes read like delays: "Stau \\"am\\" Hafen"')),
            Reasons("SH-é-2", "3", "cd" * 16, 200.0, (), ())]


def _check_round_trip(reader: OnlineReasons) -> None:
    got = reader.read(["SH-1", "SH-NONE", "SH-é-2"])
    assert got == [_records()[0], None, _records()[1]]


def test_records_round_trip_and_the_batch_keeps_later_ones_sqlite(tmp_path):
    online = SqliteOnline(str(tmp_path / "online.db"))
    service = sqlite3.connect(f"file:{tmp_path / 'online.db'}?mode=ro", uri=True)
    reader = OnlineReasons("sqlite", service, PROJECT)
    assert reader.read(["SH-1"]) == [None]  # nothing kept yet: no table either
    online.conn.execute("BEGIN")
    sqlite_write(online.conn, _records())  # as the stream's commit does
    online.conn.execute("COMMIT")
    _check_round_trip(reader)
    batch = OnlineReasons.of_direct(online)
    older = Reasons("SH-1", "3", "ef" * 16, 50.0, (), ())
    newer = Reasons("SH-é-2", "3", "ef" * 16, 250.0, (), ())
    assert batch.write([older, newer]) == 1
    assert reader.read(["SH-1", "SH-é-2"]) == [_records()[0], newer]
    online.close()


def test_records_round_trip_and_the_batch_keeps_later_ones_redis():
    client = redis_or_skip(REDIS_DB)
    pipe = client.pipeline(transaction=True)
    redis_write(pipe, _records(), PROJECT)
    pipe.execute()
    reader = OnlineReasons("redis", client, PROJECT)
    _check_round_trip(reader)
    older = Reasons("SH-1", "3", "ef" * 16, 50.0, (), ())
    newer = Reasons("SH-é-2", "3", "ef" * 16, 250.0, (), ())
    assert reader.write([older, newer]) == 1
    assert reader.read(["SH-1", "SH-é-2"]) == [_records()[0], newer]
    client.flushdb()


def test_a_text_that_is_not_a_record_counts_as_none():
    good = _records()[0].encode()
    assert decode(["a", "b", "c"], [good, "{not json", '{"v": 1}']) == [
        Reasons("a", *[getattr(_records()[0], f) for f in ("version", "state", "at", "top",
                                                           "words")]), None, None]


def test_the_stream_explains_risk_changed_into_the_high_band_and_its_alerts(scorer, rows,
                                                                           reasons_calls):
    from serving.stream_batch import BatchResult, explain_risk

    ids = rows["shipment_id"].tolist()
    p = scorer.score_columns(rows, None)["p_late"]
    high = p >= scorer.thresholds.high
    assert 5 < high.sum() < len(ids) - 5
    previous = np.where(np.arange(len(ids)) % 2 == 0, np.nan, p)  # odd rows: risk unchanged
    alerting = [i for i in range(len(ids)) if not high[i]][:2]
    risk = pd.DataFrame({"shipment_id": [*ids, "DELIVERED"], "delivered": [False] * len(ids)
                         + [True], "p_late": [*p, np.nan], "previous_p_late": [*previous, 0.5]})
    alerts = pd.DataFrame({"shipment_id": [ids[i] for i in alerting], "kind": "jumped"})
    empty = pd.DataFrame()
    result = BatchResult(empty, empty, empty, risk, alerts, empty, vectors=pd.DataFrame(rows))
    calls = reasons_calls(scorer)
    out = explain_risk(scorer, result)
    expected = {ids[i] for i in range(len(ids)) if high[i] and i % 2 == 0} | \
        {ids[i] for i in alerting}
    assert {r.shipment_id for r in result.reasons} == expected
    assert calls == [len(expected)]
    words = {r.shipment_id: list(r.words) for r in result.reasons}
    assert out["reasons"].tolist() == [words[ids[i]] for i in alerting]
