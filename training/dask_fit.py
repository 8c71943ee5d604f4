"""Fitting the delay models across a Dask cluster (`shipdelay train --engine dask`): the same
boosters as `training.model.fit_bundle`, trained by LightGBM's Dask interface (`lightgbm.dask`)
from a training set partitioned across the cluster's workers, and returned as an ordinary Bundle
that every scoring path loads.

What is the same as the local fit: the feature spec and its categorical levels, the model matrix
(training rows read out-of-fold note scores), the parameters of each booster (defaults, the large
data rules, a study's or a file's), the monotone constraints, the categorical features, the row
weights, and early stopping on the whole validation window with the same patience and metric.
The calibrator and the conformal interval adjustment are fitted here, on the client, from the
fitted boosters, as the local fit does.

What lightgbm.dask does not do, and what this module does instead:
- early stopping (LightGBM 4.7: each worker would judge only its own share of the validation
  window, stop at its own round and leave the others waiting on the network): every worker
  receives the whole validation window and judges every round on it with LightGBM's own early
  stopping rule, so all stop at the same round (`WholeValidationStop`);
- monotone_constraints_method "intermediate" (LightGBM trains data-parallel with "basic"
  only, and says so in the booster's parameters): the Dask classifier holds the same monotone
  constraints by the stricter method, which can cost a little accuracy, within noise here;
- bit-for-bit equality with the local fit: data-parallel trees find their bins and splits from
  histograms summed over workers, and the quantile boosters' leaves are renewed from each
  worker's rows and averaged across workers, so the boosters differ from the local ones in
  their details; their quality is the same within noise (tests/model/test_dask_fit.py). Nor
  is a Dask fit reproducible bit for bit from run to run: which worker receives which
  partition can change.

The training set partitions by shipment (a hash of shipment_id), so that one shipment's
snapshots stay on one worker. The matrix is built on the client (the note model's out-of-fold
scores need the whole training window) and its partitions are scattered to the workers; each
worker also holds the validation window. Workers run the same environment as the client (the
project with its training extra): they unpickle the early-stopping callback from this module.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import lightgbm as lgb
import numpy as np
import pandas as pd
from lightgbm.basic import _ConfigAliases

from features.feature_sets import FeatureSet
from training.bundle import QUANTILES, Bundle, Calibrator
from training.features import FeatureSpec
from training.model import (
    CLASSIFIER_PARAMS,
    EARLY_STOP,
    LARGE_DATA_CLASSIFIER,
    LARGE_DATA_PARAMS,
    LARGE_DATA_QUANTILE_ROUNDS,
    LARGE_ROWS,
    MAX_ROUNDS,
    QUANTILE_PARAMS,
    interval_adjustment,
    narrowed,
    row_weights,
)
from training.split import Split

LOCAL_WORKERS = 2  # the LocalCluster started when no scheduler is given: 2 processes, 1 thread
PARTS_PER_WORKER = 2  # partitions of the training set per worker
CONNECT_TIMEOUT_S = 10
_LABELS = ("is_late", "delay_hours")


class DaskClusterError(RuntimeError):
    """The Dask cluster cannot be reached or started (the message says what to do)."""


@contextmanager
def dask_client(scheduler: str | None = None, workers: int = LOCAL_WORKERS,
                timeout_s: float = CONNECT_TIMEOUT_S) -> Iterator:
    """A `distributed.Client` of the scheduler at `scheduler` (tcp://host:8786), or of a
    LocalCluster of `workers` processes with one thread each on loopback, closed (and the local
    cluster shut down) on leaving. DaskClusterError when the scheduler cannot be reached within
    `timeout_s` or has no worker."""
    from distributed import Client, LocalCluster

    cluster = None
    try:
        if scheduler is None:
            try:
                cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None,
                                       silence_logs=logging.ERROR)
            except Exception as err:  # noqa: BLE001  (ports, spawn failures: one sentence)
                raise DaskClusterError(f"could not start a local Dask cluster of {workers} "
                                       f"workers ({err}); give --scheduler instead") from None
            client = Client(cluster)
            client.run(silence_output)
        else:
            try:
                client = Client(scheduler, timeout=timeout_s)
            except ValueError:
                raise DaskClusterError(f"'{scheduler}' is not a Dask scheduler address: give "
                                       "one like tcp://host:8786") from None
            except (OSError, TimeoutError):
                raise DaskClusterError(
                    f"cannot reach the Dask scheduler at {scheduler} within {timeout_s:g} s: "
                    f"check the address and that it runs (dask scheduler, then dask worker "
                    f"{scheduler} on each machine)") from None
        try:
            if not client.nthreads():
                try:
                    client.wait_for_workers(1, timeout=timeout_s)
                except TimeoutError:
                    raise DaskClusterError(
                        f"the Dask scheduler at {scheduler} has no worker: start some with "
                        f"dask worker {scheduler}") from None
            yield client
        finally:
            client.close()
    finally:
        if cluster is not None:
            cluster.close()


class WholeValidationStop:
    """LightGBM's early stopping, judged on the whole validation window on every worker.

    Two callbacks share this state: `attach` (before the first round) adds the window as a
    validation set of the worker's booster, binned like its training data; `stop` (after each
    round) evaluates it and applies `lgb.early_stopping`'s rule. Every worker sees the same trees
    and the same rows, so every worker computes the same metric and stops at the same round."""

    def __init__(self, X: pd.DataFrame, label: np.ndarray, weight: np.ndarray | None,
                 categorical: list[str], rounds: int = EARLY_STOP):
        self.X, self.label, self.weight = X, label, weight
        self.categorical, self.rounds = categorical, rounds
        self.attach = _Attach(self)
        self.stop = _Stop(self)

    def callbacks(self) -> list:
        return [self.attach, self.stop]


class _Attach:
    before_iteration = True
    order = 0

    def __init__(self, owner: WholeValidationStop):
        self.owner = owner

    def __call__(self, env: lgb.callback.CallbackEnv) -> None:
        if env.iteration != env.begin_iteration:
            return
        o = self.owner
        train = env.model.train_set
        data = lgb.Dataset(o.X, label=o.label, weight=o.weight, reference=train,
                           categorical_feature=o.categorical, params=train.get_params(),
                           free_raw_data=True)
        env.model.add_valid(data, "valid")


class _Stop:
    before_iteration = False
    order = 30  # where lgb.early_stopping runs

    def __init__(self, owner: WholeValidationStop):
        self.owner = owner
        self.rule = None

    def __call__(self, env: lgb.callback.CallbackEnv) -> None:
        if self.rule is None:  # a fresh rule per fit (the callback is unpickled per worker)
            self.rule = lgb.early_stopping(self.owner.rounds, verbose=False)
        results = env.model.eval_valid()
        self.rule(lgb.callback.CallbackEnv(
            model=env.model, params=env.params, iteration=env.iteration,
            begin_iteration=env.begin_iteration, end_iteration=env.end_iteration,
            evaluation_result_list=results))


def estimator_params(params: Mapping) -> dict:
    """LightGBM parameters for a scikit-learn style (Dask) estimator: each under the name the
    estimator's own argument has (its defaults, e.g. subsample=1.0, would otherwise sit next to
    the aliases, e.g. bagging_fraction); thread counts dropped (lightgbm.dask gives each worker
    its own)."""
    names = set(lgb.LGBMModel().get_params())
    out = {}
    for key, value in params.items():
        aliases = _ConfigAliases.get(key) | {key}
        if aliases & {"num_threads"}:
            continue
        own = sorted(aliases & names)
        out[own[0] if own else key] = value
    return out


def partitioned(client, frame: pd.DataFrame, shipment: pd.Series, parts: int):
    """`frame` as a Dask DataFrame of `parts` partitions held by the cluster's workers, each
    shipment's rows in one partition (in their order)."""
    import dask.dataframe as dd

    bucket = (pd.util.hash_pandas_object(shipment, index=False).to_numpy() % parts)
    pieces = [frame[bucket == b] for b in range(parts) if (bucket == b).any()]
    futures = client.scatter(pieces)
    return dd.from_delayed(futures, meta=frame.iloc[:0], verify_meta=False)


def _quiet(fit) -> object:
    """lightgbm.dask prints where it found ports and warns that the estimator's thread count
    is replaced by each worker's; the product's output stays its own."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return fit()


def silence_output() -> None:
    """Run on a local cluster's workers, which share the terminal: LightGBM's network set-up
    prints there (ports bound, machines connected) whatever its verbosity, from the worker's
    task threads, and a worker that loses its scheduler as the cluster stops logs a traceback;
    the workers' standard output and error go to /dev/null instead (their failures reach the
    client as exceptions)."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)


def _local_booster(estimator, params: dict, rounds: int, machines: int) -> lgb.Booster:
    """The fitted booster as a plain local Booster whose recorded parameters are the ones the
    local fit records (the estimator's argument names and the fit's network settings aside),
    with the tree learner and the number of machines."""
    booster = estimator.to_local().booster_
    booster.params = {**params, "num_iterations": rounds, "tree_learner": "data",
                      "num_machines": machines}
    text = booster.model_to_string(num_iteration=1)
    at = text.rfind("[monotone_constraints_method: ")  # data-parallel LightGBM used "basic"
    if "monotone_constraints_method" in params and at >= 0:
        used = text[at + 1:].split("]", 1)[0].split(": ", 1)[1]
        booster.params["monotone_constraints_method"] = used
    return booster


def classifier_lgb_params(spec: FeatureSpec, rows: int, params: dict | None = None) -> dict:
    """The classifier's parameters, as `training.model.fit_classifier` composes them."""
    large = LARGE_DATA_CLASSIFIER if rows >= LARGE_ROWS else {}
    return {**CLASSIFIER_PARAMS, "monotone_constraints_method": "intermediate", **large,
            **(params or {}), "metric": "binary_logloss", "monotone_constraints": spec.monotone()}


def quantile_lgb_params(q: float, rows: int, params: dict | None = None,
                    seed: int | None = None) -> dict:
    """A quantile booster's parameters, as `training.model.fit_quantile` composes them."""
    large = rows >= LARGE_ROWS
    return {**QUANTILE_PARAMS, **(LARGE_DATA_PARAMS if large else {}), **(params or {}),
            **({} if seed is None else {"seed": seed}),
            "objective": "quantile", "alpha": q, "metric": "quantile"}


def fit_bundle_dask(split: Split, client, params: dict | None = None,
                    max_rounds: int = MAX_ROUNDS, feature_set: FeatureSet | None = None,
                    seed: int | None = None,
                    quantile_params: Mapping[float, dict] | None = None) -> Bundle:
    """`training.model.fit_bundle` with the boosters fitted on the Dask cluster of `client`
    (same arguments, same Bundle)."""
    from distributed import KilledWorker
    from lightgbm.dask import DaskLGBMClassifier, DaskLGBMRegressor

    spec = FeatureSpec.fit(split.train)
    if feature_set is not None and not feature_set.is_full:
        spec = narrowed(spec, feature_set)
    params = {**(params or {}), **({} if seed is None else {"seed": seed})}
    X_train = spec.matrix(split.train, cross_fitted=True)
    X_valid = spec.matrix(split.valid)
    weight = row_weights(split.train)
    table = X_train.assign(**{c: split.train[c].to_numpy(float) for c in _LABELS},
                           **({} if weight is None else {"_weight": weight}))
    workers = max(1, len(client.nthreads()))
    data = partitioned(client, table, split.train["shipment_id"], workers * PARTS_PER_WORKER)
    X = data[list(X_train.columns)]
    rows = len(split.train)
    valid_weight = row_weights(split.valid)

    def fit(estimator_class, lgb_params: dict, label: str, rounds: int) -> lgb.Booster:
        stopper = WholeValidationStop(X_valid, split.valid[label].to_numpy(float),
                                      valid_weight, spec.categorical)
        estimator = estimator_class(client=client, n_estimators=rounds,
                                    **estimator_params(lgb_params))
        try:
            _quiet(lambda: estimator.fit(X, data[label],
                                         sample_weight=None if weight is None else data["_weight"],
                                         categorical_feature=spec.categorical,
                                         callbacks=stopper.callbacks()))
        except (lgb.basic.LightGBMError, OSError, KilledWorker) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise DaskClusterError(
                f"the fit on the Dask cluster failed ({first}): check that the workers are "
                "running and reach one another on any port (LightGBM opens its own)") from None
        return _local_booster(estimator, lgb_params, rounds, workers)

    classifier = fit(DaskLGBMClassifier, classifier_lgb_params(spec, rows, params), "is_late",
                     max_rounds)
    calibrator = Calibrator.fit(classifier.predict(X_valid),
                                split.valid["is_late"].to_numpy(float), valid_weight)
    rounds = min(max_rounds, LARGE_DATA_QUANTILE_ROUNDS) if rows >= LARGE_ROWS else max_rounds
    quantiles = {q: fit(DaskLGBMRegressor,
                        quantile_lgb_params(q, rows, (quantile_params or {}).get(q), seed),
                        "delay_hours", rounds)
                 for q in QUANTILES}
    bundle = Bundle(classifier, quantiles, calibrator, spec)
    bundle.interval_adjust_h = interval_adjustment(bundle, X_valid,
                                                   split.valid["delay_hours"].to_numpy(float))
    return bundle


def fit_bundle_on_cluster(split: Split, params: dict | None = None, *,
                          scheduler: str | None = None, **kwargs) -> Bundle:
    """`fit_bundle_dask` (the arguments of `training.model.fit_bundle`) on the scheduler at
    `scheduler`, or on a LocalCluster of LOCAL_WORKERS processes (shut down at the end)
    without one."""
    with dask_client(scheduler) as client:
        return fit_bundle_dask(split, client, params, **kwargs)


def check_scheduler(scheduler: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Raise DaskClusterError unless the scheduler at `scheduler` answers and has a worker (for
    failing before the training set is built rather than after)."""
    with dask_client(scheduler, timeout_s=timeout_s):
        pass
