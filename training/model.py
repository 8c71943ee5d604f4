"""Fitting the delay models: a LightGBM classifier for P(late), calibrated on the validation
window, and LightGBM quantile models for delay hours (P10/P50/P90) whose interval is then
conformally adjusted on the same window so that it covers what it claims.

Rows carry a `weight` (`shipdelay.snapshots`: clock-tick snapshots of a long journey share a
bounded weight); the boosters, their early stopping and the calibrator all use it. A frame
without the column weighs every row 1."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.feature_sets import FeatureSet
from training.bundle import QUANTILES, Bundle, Calibrator
from training.features import FeatureSpec
from training.split import Split

# The same rows, parameters and seed give the same boosters bit for bit, whatever the number of
# threads: LightGBM's deterministic mode, and a fixed histogram layout (left to itself, LightGBM
# picks row- or column-wise by timing both on the data, so a busy machine could change it).
# Row-wise was the faster below LARGE_ROWS (200 rounds on a 3,400-row train window, 2 busy
# cores: 21 s row-wise, 44 s column-wise); LARGE_DATA_PARAMS switch to column-wise.
REPRODUCIBLE = {"deterministic": True, "force_row_wise": True, "force_col_wise": False}
CLASSIFIER_PARAMS = {
    "objective": "binary", "learning_rate": 0.05, "num_leaves": 63, "min_data_in_leaf": 40,
    "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1, "lambda_l2": 1.0,
    "max_cat_to_onehot": 8, "verbose": -1, "num_threads": 0, "seed": 7, **REPRODUCIBLE,
}
# The quantile boosters' trees are what a scoring pass spends most of its time on (three boosters
# against the classifier's one): a learning rate of 0.1 halves their trees against 0.05 at the
# same pinball loss within noise (measured on the benchmark's 5,000-shipment world: 273 trees
# against 579; pinball P10/P50/P90 1.19/3.63/3.32 against 1.16/3.64/3.22).
QUANTILE_PARAMS = {
    "learning_rate": 0.1, "num_leaves": 31, "min_data_in_leaf": 60, "feature_fraction": 0.8,
    "bagging_fraction": 0.8, "bagging_freq": 1, "verbose": -1, "num_threads": 0, "seed": 7,
    **REPRODUCIBLE,
}
# num_threads 0: OpenMP's default, every core unless OMP_NUM_THREADS says otherwise (the test
# target runs one thread per test worker: two spinning OpenMP teams per core slow fits many times)
MAX_ROUNDS = 2000
EARLY_STOP = 50
# From a million training rows on, each round sees 30% of the rows through column-wise
# histograms, the classifier learns at 0.1 and the quantile boosters stop at 300 rounds.
# Measured on the fit benchmark's 5.4M-row train window, 2 cores: a classifier round cost
# 0.76 s at the parameters above, 0.51 s so (0.69 s row-wise); the classifier then stopped after
# 328 rounds in 141 s at a validation log loss of 0.3049. A quantile round cost 0.28 s, and the
# pinball loss keeps improving by crumbs long after the trees stop mattering: uncapped, the
# P50 booster ran 1,795 rounds (508 s) to 3.979 h, against 4.012 h at 400 and 4.025 h at 300.
LARGE_ROWS = 1_000_000
LARGE_DATA_PARAMS = {"bagging_fraction": 0.3, "force_col_wise": True, "force_row_wise": False}
LARGE_DATA_CLASSIFIER = {**LARGE_DATA_PARAMS, "learning_rate": 0.1}
LARGE_DATA_QUANTILE_ROUNDS = 300


def row_weights(frame: pd.DataFrame) -> np.ndarray | None:
    """The rows' `weight` column as floats, or None (every row 1) without one."""
    return frame["weight"].to_numpy(float) if "weight" in frame else None


@dataclass
class Matrices:
    """The train and validation windows as LightGBM datasets, binned once per fit and shared
    by every booster of it (`relabel` switches the target)."""

    train: lgb.Dataset
    valid: lgb.Dataset
    X_valid: pd.DataFrame
    rows: int

    @classmethod
    def build(cls, spec: FeatureSpec, train: pd.DataFrame, valid: pd.DataFrame,
              target: str = "is_late") -> Matrices:
        # training rows read out-of-fold note scores: the trees never see a note model's
        # in-sample confidence (training.note_model)
        X_train = spec.matrix(train, cross_fitted=True)
        dtrain = lgb.Dataset(X_train, label=train[target].to_numpy(float),
                             weight=row_weights(train), categorical_feature=spec.categorical,
                             free_raw_data=False)
        X_valid = spec.matrix(valid)
        dvalid = lgb.Dataset(X_valid, label=valid[target].to_numpy(float),
                             weight=row_weights(valid), categorical_feature=spec.categorical,
                             reference=dtrain, free_raw_data=False)
        return cls(dtrain, dvalid, X_valid, len(train))

    def relabel(self, train: pd.DataFrame, valid: pd.DataFrame, target: str) -> Matrices:
        self.train.set_label(train[target].to_numpy(float))
        self.valid.set_label(valid[target].to_numpy(float))
        return self


def fit_classifier(spec: FeatureSpec, train: pd.DataFrame, valid: pd.DataFrame,
                   params: dict | None = None, callbacks: Sequence = (),
                   max_rounds: int = MAX_ROUNDS, data: Matrices | None = None) -> lgb.Booster:
    """The P(late) booster, early-stopped on validation log loss, monotone in the risk drivers."""
    data = data or Matrices.build(spec, train, valid)
    large = LARGE_DATA_CLASSIFIER if data.rows >= LARGE_ROWS else {}
    # "advanced" broke the constraint here (LightGBM 4.7, categorical features): measured rises
    # of 0.06 log-odds in risk when only slip_h fell; "intermediate" holds it exactly.
    params = {**CLASSIFIER_PARAMS, "monotone_constraints_method": "intermediate", **large,
              **(params or {}), "metric": "binary_logloss", "monotone_constraints": spec.monotone()}
    return lgb.train(params, data.train, num_boost_round=max_rounds, valid_sets=[data.valid],
                     valid_names=["valid"],
                     callbacks=[lgb.early_stopping(EARLY_STOP, verbose=False), *callbacks])


def fit_quantile(data: Matrices, q: float, params: dict | None = None,
                 max_rounds: int = MAX_ROUNDS, seed: int | None = None,
                 callbacks: Sequence = ()) -> lgb.Booster:
    """The delay-hour booster of quantile `q` on `data` labelled with delay hours, early-stopped
    on the validation pinball loss (`params` over QUANTILE_PARAMS; `seed`: LightGBM's)."""
    large = data.rows >= LARGE_ROWS
    rounds = min(max_rounds, LARGE_DATA_QUANTILE_ROUNDS) if large else max_rounds
    params = {**QUANTILE_PARAMS, **(LARGE_DATA_PARAMS if large else {}), **(params or {}),
              **({} if seed is None else {"seed": seed}),
              "objective": "quantile", "alpha": q, "metric": "quantile"}
    return lgb.train(params, data.train, num_boost_round=rounds, valid_sets=[data.valid],
                     valid_names=["valid"],
                     callbacks=[lgb.early_stopping(EARLY_STOP, verbose=False), *callbacks])


def fit_quantiles(data: Matrices, max_rounds: int = MAX_ROUNDS, seed: int | None = None,
                  params: Mapping[float, dict] | None = None) -> dict[float, lgb.Booster]:
    """Delay-hour quantile boosters on `data` labelled with delay hours (`seed`: LightGBM's,
    default QUANTILE_PARAMS'; `params`: per quantile, e.g. a study's best)."""
    return {q: fit_quantile(data, q, (params or {}).get(q), max_rounds, seed)
            for q in QUANTILES}


def interval_adjustment(bundle: Bundle, X_valid: pd.DataFrame, hours: np.ndarray,
                        coverage: float = 0.8) -> float:
    """Conformalized quantile regression: widen (or narrow) P10..P90 by the hours that make the
    validation window's coverage exactly `coverage`."""
    q = bundle.delay_quantiles(X_valid)
    scores = np.maximum(q[QUANTILES[0]] - hours, hours - q[QUANTILES[-1]])
    n = len(scores)
    return float(np.quantile(scores, min(1.0, np.ceil((n + 1) * coverage) / n)))


def narrowed(spec: FeatureSpec, feature_set: FeatureSet) -> FeatureSpec:
    """`spec` reading only `feature_set`'s inputs, named after its FeatureService."""
    spec.service = feature_set.service
    kept = set(feature_set.model_inputs)
    spec.features = [f for f in spec.features if f in kept]
    spec.categories = {c: v for c, v in spec.categories.items() if c in spec.features}
    if not spec.reads_notes:
        spec.notes = None
    return spec


def fit_bundle(split: Split, params: dict | None = None, max_rounds: int = MAX_ROUNDS,
               feature_set: FeatureSet | None = None, seed: int | None = None,
               quantile_params: Mapping[float, dict] | None = None) -> Bundle:
    """Everything a scorer needs, fitted on the split's train window, calibrated on its valid.

    `params`: the classifier's, `quantile_params` each quantile booster's (over the defaults);
    `feature_set`: the features to learn from (default all); `seed`: LightGBM's seed for every
    booster (default the parameters'). The same split, parameters and seed give the same
    bundle bit for bit."""
    spec = FeatureSpec.fit(split.train)
    if feature_set is not None and not feature_set.is_full:
        spec = narrowed(spec, feature_set)
    params = {**(params or {}), **({} if seed is None else {"seed": seed})}
    data = Matrices.build(spec, split.train, split.valid)
    classifier = fit_classifier(spec, split.train, split.valid, params, max_rounds=max_rounds,
                                data=data)
    raw = classifier.predict(data.X_valid)
    calibrator = Calibrator.fit(raw, split.valid["is_late"].to_numpy(float),
                                row_weights(split.valid))
    quantiles = fit_quantiles(data.relabel(split.train, split.valid, "delay_hours"), max_rounds,
                              seed, quantile_params)
    bundle = Bundle(classifier, quantiles, calibrator, spec)
    bundle.interval_adjust_h = interval_adjustment(bundle, data.X_valid,
                                                   split.valid["delay_hours"].to_numpy(float))
    return bundle
