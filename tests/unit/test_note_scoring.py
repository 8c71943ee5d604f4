"""Every door reads notes alike: the one scorer computes the note features from recent_notes
with the bundle's note model, and the service's arrays, the batch's frame, the training matrix
and a bundle read back from its files give the same numbers; reasons quote the note."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from features.schema import CATEGORICAL, NOTE_FEATURES, model_feature_names
from serving.api import row_problems
from serving.scorer import Scorer
from training.bundle import QUANTILES, Bundle, Calibrator
from training.features import FeatureSpec

DELAY = ["Verspätung wegen Sturm", "Stau am Hafen", "grumbo vorlag am tor"]
ROUTINE = ["Ware verladen", "Sendung gescannt", "zibbo klar"]
PARAMS = {"verbose": -1, "num_threads": 1, "num_leaves": 7, "min_data_in_leaf": 10, "seed": 1}


def frame_of(n: int, seed: int) -> pd.DataFrame:
    """Feature vectors whose only signal is the notes: late shipments wrote a delay note."""
    rng = np.random.default_rng(seed)
    late = rng.random(n) < 0.4
    cols = {c: (rng.choice(["truck", "air"], n) if c in CATEGORICAL else rng.normal(size=n))
            for c in model_feature_names()}
    notes = []
    for i in range(n):
        words = [rng.choice(ROUTINE)] + ([rng.choice(DELAY)] if late[i] else [])
        notes.append("\n".join(f"2025-10-0{k + 1}T08:00:00Z {w}"
                               for k, w in enumerate(words[::-1])) if rng.random() < 0.9 else "")
    cols["recent_notes"] = notes
    return pd.DataFrame(cols).assign(shipment_id=[f"S{seed}-{i}" for i in range(n)],
                                     is_late=late.astype(int),
                                     delay_hours=np.where(late, 5.0, -2.0),
                                     request_time_s=1.76e9)


@pytest.fixture(scope="module")
def scorer():
    train = frame_of(600, seed=1)
    spec = FeatureSpec.fit(train)
    X = spec.matrix(train, cross_fitted=True)
    classifier = lgb.train({**PARAMS, "objective": "binary"},
                           lgb.Dataset(X, train["is_late"]), num_boost_round=30)
    quantiles = {q: lgb.train({**PARAMS, "objective": "quantile", "alpha": q},
                              lgb.Dataset(X, train["delay_hours"]), num_boost_round=10)
                 for q in QUANTILES}
    calibrator = Calibrator.fit(classifier.predict(X), train["is_late"].to_numpy())
    return Scorer(Bundle(classifier, quantiles, calibrator, spec))


def _arrays(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """As the online reader gives them: numbers as float64, text as objects (None: missing)."""
    return {c: (frame[c].to_numpy(dtype=object) if frame[c].dtype == object
                else frame[c].to_numpy()) for c in frame.columns}


def test_service_batch_and_training_read_the_same_note_features(scorer):
    rows = frame_of(200, seed=2)[["shipment_id", "request_time_s", *scorer.inputs]]
    assert "recent_notes" in scorer.inputs and not set(NOTE_FEATURES) & set(scorer.inputs)
    at = [scorer.features.index(c) for c in NOTE_FEATURES]
    service = scorer.matrix(_arrays(rows))
    batch = scorer.matrix(rows)
    training = scorer.bundle.spec.matrix(rows)[NOTE_FEATURES].to_numpy()
    np.testing.assert_array_equal(service[:, at], batch[:, at])
    np.testing.assert_array_equal(service[:, at], training)
    assert np.isnan(service[:, at[0]]).any() and not np.isnan(service[:, at[0]]).all()
    served = scorer.score_columns(_arrays(rows), reasons_from=0.0)
    nightly = scorer.score(rows)
    np.testing.assert_array_equal(served["p_late"], nightly["p_late"].to_numpy())
    assert served["reasons"] == nightly["reasons"].tolist()


def test_notes_drive_the_risk_and_reasons_quote_them(scorer):
    rows = frame_of(200, seed=3)
    p = scorer.score(rows[["shipment_id", "request_time_s", *scorer.inputs]])
    late = rows["is_late"].to_numpy() == 1
    assert p["p_late"][late].mean() > p["p_late"][~late].mean() + 0.3
    quoted = [r for words in p["reasons"][late] for r in words if r.startswith("recent notes")]
    assert quoted and all(any(f'"{d}"' in r for d in DELAY) for r in quoted)


def test_a_bundle_read_back_from_its_files_scores_the_same(scorer, tmp_path):
    rows = frame_of(100, seed=4)[["shipment_id", "request_time_s", *scorer.inputs]]
    loaded = Scorer(Bundle.load(scorer.bundle.save(tmp_path / "bundle")))
    assert loaded.bundle.spec.notes is not None
    np.testing.assert_array_equal(loaded.matrix(rows), scorer.matrix(rows))


def test_what_if_rows_carry_notes_as_text():
    row = {f: ("truck" if f in CATEGORICAL else 1.0) for f in model_feature_names()}
    assert row_problems({**row, "recent_notes": "Stau am Hafen"}) == []
    assert row_problems({**row, "recent_notes": None}) == []
    assert row_problems({**row, "recent_notes": 3.0}) == ["recent_notes must be a string or null"]
