"""Compiled boosters answer as LightGBM does, are compiled once per model text, leave
explanations to LightGBM, and never stop a model from serving when they cannot be built."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from registry.loader import MODEL_NAME, bundle_folder, client
from serving import compiled_trees
from serving.compiled_trees import CompiledBooster, compile_bundle
from serving.scorer import Scorer
from training.bundle import Bundle


def _bundle(trained) -> Bundle:
    settings, _, report = trained
    c = client(settings)
    mv = c.get_model_version(MODEL_NAME, str(report.version))
    return Bundle.load(bundle_folder(settings, c, mv), version=str(mv.version))


@pytest.fixture(scope="module")
def rows(trained):
    _, split, _ = trained
    scorer = Scorer(_bundle(trained))
    rows = split.test.sample(min(400, len(split.test)), random_state=11).reset_index(drop=True)
    rows = rows[["shipment_id", *scorer.features]].copy()
    rows["request_time_s"] = pd.Timestamp("2025-06-01", tz="UTC").timestamp()
    for c in scorer.bundle.spec.categories:  # as the online reader gives them
        rows[c] = rows[c].astype(object).where(rows[c].notna(), None)
    return rows


def test_compiled_scores_equal_lightgbm(trained, rows, tmp_path):
    plain = Scorer(_bundle(trained))
    fast_bundle = _bundle(trained)
    assert compile_bundle(fast_bundle, tmp_path) == []
    assert isinstance(fast_bundle.classifier, CompiledBooster)
    assert all(isinstance(b, CompiledBooster) for b in fast_bundle.quantiles.values())
    fast = Scorer(fast_bundle)
    X = plain.matrix(rows)
    assert np.isnan(X).any()  # missing values and unseen categories take the default branches
    np.testing.assert_allclose(fast_bundle.classifier.predict(X),
                               plain.bundle.classifier.predict(X), rtol=0, atol=1e-12)
    for q, booster in plain.bundle.quantiles.items():
        np.testing.assert_allclose(fast_bundle.quantiles[q].predict(X), booster.predict(X),
                                   rtol=0, atol=1e-9)
    a, b = plain.score(rows), fast.score(rows)
    np.testing.assert_allclose(b["p_late"], a["p_late"], rtol=0, atol=1e-12)
    assert (b["risk_band"] == a["risk_band"]).all()
    assert (b["reasons"] == a["reasons"]).all()  # explanations stay LightGBM's TreeSHAP
    gap = (b["eta"] - a["eta"]).abs().max()
    assert gap <= pd.Timedelta(microseconds=1), gap


def test_contributions_and_raw_scores_come_from_lightgbm(trained, rows, tmp_path):
    bundle = _bundle(trained)
    compile_bundle(bundle, tmp_path)
    X = Scorer(bundle).matrix(rows.head(5))
    inner = bundle.classifier.booster
    np.testing.assert_array_equal(bundle.classifier.predict(X, pred_contrib=True),
                                  inner.predict(X, pred_contrib=True))
    np.testing.assert_array_equal(bundle.classifier.predict(X, raw_score=True),
                                  inner.predict(X, raw_score=True))
    assert bundle.classifier.num_feature() == inner.num_feature()  # the rest is the booster's


def test_each_model_text_is_compiled_once(trained, tmp_path, monkeypatch):
    first = _bundle(trained)
    compile_bundle(first, tmp_path)
    objects = sorted(tmp_path.glob("*.o"))
    assert len(objects) == 4 and all(o.stat().st_size > 0 for o in objects)
    stamps = [o.stat().st_mtime_ns for o in objects]
    import lleaves

    def no_compiling(*args, **kwargs):
        raise AssertionError("compiled again")

    monkeypatch.setattr(lleaves.lleaves.compiler, "compile_to_module", no_compiling)
    again = _bundle(trained)
    assert compile_bundle(again, tmp_path) == []
    assert [o.stat().st_mtime_ns for o in sorted(tmp_path.glob("*.o"))] == stamps
    X = np.zeros((3, again.classifier.num_feature()))
    np.testing.assert_allclose(again.classifier.predict(X), first.classifier.predict(X))


def test_a_booster_that_cannot_compile_keeps_lightgbm(trained, tmp_path, monkeypatch, caplog):
    bundle = _bundle(trained)
    original = bundle.quantiles[0.5]
    real = compiled_trees.compile_booster

    def picky(booster, cache):
        if booster is original:
            raise ValueError("objective not supported")
        return real(booster, cache)

    monkeypatch.setattr(compiled_trees, "compile_booster", picky)
    with caplog.at_level(logging.WARNING, logger="serving.compiled_trees"):
        assert compile_bundle(bundle, tmp_path) == ["delay_q50"]
    assert bundle.quantiles[0.5] is original
    assert isinstance(bundle.classifier, CompiledBooster)
    assert "delay_q50" in caplog.text and "objective not supported" in caplog.text


@pytest.mark.parametrize("value, on", [(None, True), ("1", True), ("0", False), ("off", False)])
def test_the_switch(monkeypatch, value, on):
    if value is None:
        monkeypatch.delenv(compiled_trees.ENV, raising=False)
    else:
        monkeypatch.setenv(compiled_trees.ENV, value)
    assert compiled_trees.enabled() is on


def test_the_cache_keeps_the_newest_objects(trained, tmp_path):
    import os

    old = []
    for k in range(compiled_trees.KEEP_OBJECTS + 3):  # older versions' objects
        path = tmp_path / f"old{k:02d}.o"
        path.write_bytes(b"\0")
        os.utime(path, (1_000_000 + k, 1_000_000 + k))
        old.append(path)
    bundle = _bundle(trained)
    assert compile_bundle(bundle, tmp_path) == []
    kept = set(tmp_path.glob("*.o"))
    assert len(kept) == compiled_trees.KEEP_OBJECTS
    new = kept - set(old)
    assert len(new) == 4  # this version's four boosters, all kept
    assert kept - new == set(old[-(compiled_trees.KEEP_OBJECTS - 4):])  # the newest old ones
    X = np.zeros((2, bundle.classifier.num_feature()))
    assert np.isfinite(bundle.classifier.predict(X)).all()
