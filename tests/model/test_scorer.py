"""The one scorer gives the same answers from a frame and from plain arrays (the online
service's path), and explains exactly the rows it is asked to."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from registry.loader import MODEL_NAME, bundle_folder, client
from serving.api import predictions
from serving.scorer import Scorer
from training.bundle import Bundle


@pytest.fixture(scope="module")
def scorer(trained):
    """The version the training run registered (other tests move its aliases about)."""
    settings, _, report = trained
    c = client(settings)
    mv = c.get_model_version(MODEL_NAME, str(report.version))
    return Scorer(Bundle.load(bundle_folder(settings, c, mv), version=str(mv.version)))


@pytest.fixture(scope="module")
def vectors(trained, scorer):
    _, split, _ = trained
    rows = split.test.sample(min(300, len(split.test)), random_state=3).reset_index(drop=True)
    rows = rows[["shipment_id", *scorer.inputs]].copy()
    rows["request_time_s"] = pd.Timestamp("2025-06-01", tz="UTC").timestamp()
    # the online reader's kinds: numbers as float64, categories as text or None
    for c in scorer.bundle.spec.categories:
        rows[c] = rows[c].astype(object).where(rows[c].notna(), None)
    return rows


def _arrays(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return {c: frame[c].to_numpy() for c in frame.columns}


def test_arrays_score_as_the_frame_does(scorer, vectors):
    framed = scorer.score(vectors)
    plain = scorer.score_columns(_arrays(vectors), reasons_from=0.0)
    np.testing.assert_array_equal(scorer.matrix(_arrays(vectors)), scorer.matrix(vectors))
    for c in ("p_late", "delay_p50_h", "delay_p90_h"):
        np.testing.assert_array_equal(plain[c], framed[c].to_numpy())
    assert plain["risk_band"].tolist() == framed["risk_band"].tolist()
    for c in ("eta", "eta_p10", "eta_p90"):
        assert plain[c].dtype == np.dtype("M8[ns]")
        assert (pd.DatetimeIndex(plain[c]).tz_localize("UTC") == framed[c]).all()
    assert plain["reasons"] == framed["reasons"].tolist()
    # and the answers built from either are the same
    assert predictions(plain, _arrays(vectors)) == predictions(framed, vectors)


def test_reasons_only_from_the_asked_probability(scorer, vectors):
    every = scorer.score_columns(_arrays(vectors), reasons_from=0.0)
    cut = float(np.quantile(every["p_late"], 0.7))
    some = scorer.score_columns(_arrays(vectors), reasons_from=cut)
    explained = every["p_late"] >= cut
    assert 0 < explained.sum() < len(explained)
    for i, asked in enumerate(explained):
        assert some["reasons"][i] == (every["reasons"][i] if asked else [])
    assert "reasons" not in scorer.score_columns(_arrays(vectors), reasons_from=None)
    np.testing.assert_array_equal(some["p_late"], every["p_late"])


def test_text_in_a_numeric_column_is_missing_not_an_error(scorer, vectors):
    arrays = _arrays(vectors.head(3))
    arrays["weight_kg"] = np.array(["heavy", None, 12.5], dtype=object)
    X = scorer.matrix(arrays)
    column = scorer.features.index("weight_kg")
    assert np.isnan(X[0, column]) and np.isnan(X[1, column]) and X[2, column] == 12.5


def test_few_rows_get_the_codes_many_rows_get(scorer, vectors):
    """Small requests look categories up one by one; the codes must be the bulk path's,
    missing, unseen and non-text values included."""
    from serving.scorer import SMALL

    many = pd.concat([vectors] * (SMALL // len(vectors) + 2), ignore_index=True)
    for c in scorer.bundle.spec.categories:
        odd = many[c].astype(object).copy()
        odd.iloc[:6] = [None, np.nan, "never seen", 7, 2.5, pd.NA]
        odd.iloc[SMALL + 1] = None  # a chunk of text and None only (the reader's columns)
        odd.iloc[SMALL + 2] = "never seen either"
        bulk = scorer._codes(c, odd)
        few = np.concatenate([scorer._codes(c, odd.iloc[i:i + SMALL])
                              for i in range(0, len(odd), SMALL)])
        np.testing.assert_array_equal(few, bulk)


def test_remembered_reasons_are_the_computed_ones_until_the_state_changes(scorer, vectors,
                                                                         reasons_calls):
    """A shipment's reasons are recalled while its state (all but the request-time features)
    stands; a new state, a new model version or the end of the period computes them again."""
    from serving.reasons_memory import ReasonsMemory

    now = [0.0]
    memory = ReasonsMemory(seconds=300, clock=lambda: now[0])
    rows = _arrays(vectors)
    fresh = scorer.score_columns(rows, reasons_from=0.0)["reasons"]
    calls = reasons_calls(scorer)
    assert scorer.score_columns(rows, 0.0, memory)["reasons"] == fresh
    assert calls == [len(vectors)]
    later = dict(rows, request_time_s=rows["request_time_s"] + 60.0,  # the clock moved on
                 hours_since_last_scan=rows["hours_since_last_scan"] + 1 / 60)
    assert scorer.score_columns(later, 0.0, memory)["reasons"] == fresh
    assert calls == [len(vectors)]  # all recalled
    moved = dict(rows, slip_h=np.where(np.arange(len(vectors)) < 5, 48.0, rows["slip_h"]))
    again = scorer.score_columns(moved, 0.0, memory)["reasons"]
    assert calls[-1] == 5  # only the shipments whose state changed
    assert again == scorer.score_columns(moved, 0.0)["reasons"]
    now[0] = 301.0
    scorer.score_columns(rows, 0.0, memory)
    assert calls[-1] == len(vectors)  # the period ended: computed again
    # the same shipments in the same state under another model version are not recalled
    state = scorer.matrix(rows)[:, scorer._lasting]
    ids = rows["shipment_id"]
    assert all(w is not None for w in memory.recall(memory.keys(scorer.version, ids, state)))
    assert all(w is None for w in memory.recall(memory.keys("another-version", ids, state)))


def test_request_times_become_the_instants_pandas_makes():
    """The ETAs' anchor is built without pandas; it must be pandas' nanosecond, not a float's."""
    from serving.scorer import _instants

    rng = np.random.default_rng(0)
    seconds = np.concatenate([1.77e9 + rng.random(20_000) * 3e7, [0.5, 1e9, -1.5]])
    np.testing.assert_array_equal(_instants(seconds).view("i8"),
                                  pd.to_datetime(seconds, unit="s").asi8)
