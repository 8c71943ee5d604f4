"""The prediction service's own Prometheus metrics (`shipdelay_*`), and its log hygiene.

BentoML's workers run prometheus_client in multiprocess mode (PROMETHEUS_MULTIPROC_DIR is set
before they start): values then go to the shared files BentoML's /metrics collects, and every
increment is a write to a memory-mapped file. A request for 100 shipments would make ~300 such
writes one value at a time, so answers are counted per outcome and histograms are filled per
bucket (`observe_many`), a handful of writes per request whatever its size.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterable

import numpy as np


class Metrics:
    """shipdelay's own Prometheus metrics, in a private registry.

    In a single process (tests, TestClient) `ShipDelay.__metrics__` appends this registry to
    BentoML's exposition; in BentoML's workers the multiprocess files carry them."""

    def __init__(self) -> None:
        import prometheus_client as pc  # late: the worker's multiprocess setting must come first
        from prometheus_client import values

        self.multiprocess = values.ValueClass is not values.MutexValue
        self.registry = pc.CollectorRegistry()
        r = self.registry
        self.predictions = pc.Counter(
            "shipdelay_predictions", "Answered items by route and outcome "
            "(ok, stale, unknown, delivered, no_model, features_unavailable, error)",
            ["route", "outcome"], registry=r)
        self.latency = pc.Histogram(
            "shipdelay_predict_latency_seconds", "Time in the handler by route and stage "
            "(features, score, total); with batching one observation per batch",
            ["route", "stage"], registry=r,
            buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.batch_size = pc.Histogram(
            "shipdelay_batch_size", "Items scored per call", ["route"], registry=r,
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500))
        self.p_late = pc.Histogram(
            "shipdelay_p_late", "Predicted probability of arriving late", ["route"], registry=r,
            buckets=tuple(i / 10 for i in range(1, 11)))
        self.feature_age = pc.Histogram(
            "shipdelay_feature_age_hours", "Hours since the last tracking scan of scored "
            "in-flight shipments", registry=r,
            buckets=(1, 2, 4, 8, 12, 24, 48, 72, 120, 168, 336, 720))
        self.model_events = pc.Counter(
            "shipdelay_model_reloads", "Model reload checks that did something, by outcome "
            "(loaded, registry_error, no_champion, load_error, refused)", ["outcome"], registry=r)
        self.model_version = pc.Gauge(
            "shipdelay_model_version", "Registry version number being served",
            registry=r, multiprocess_mode="livemax")
        self.rejected = pc.Counter(
            "shipdelay_rejected_requests", "Requests refused before scoring, by reason "
            "(client_limit, unauthorized, too_large, media_type, body_timeout, invalid)",
            ["reason"], registry=r)
        self.prediction_log = pc.Counter(
            "shipdelay_prediction_log_rows", "Predictions for the prediction log by outcome "
            "(written, dropped: buffer full, failed: the write failed)", ["outcome"],
            registry=r)
        # the newest `shipdelay monitor` summary's headline numbers (monitoring.report)
        self.monitor = pc.Gauge(
            "shipdelay_monitor", "Headline numbers of the newest monitoring run (realized AUC, "
            "log loss, Brier, ECE, P10-P90 coverage, ETA error, largest PSI, estimated AUC "
            "before labels, alarms, judged and logged predictions)", ["metric"], registry=r,
            multiprocess_mode="mostrecent")
        self._monitor_seen: float | None = None

    def count_logged(self, outcome: str, rows: int) -> None:
        self.prediction_log.labels(outcome).inc(rows)

    def refresh_monitor(self, summary_file) -> None:
        """Set the monitoring gauges from the newest summary (`summary_file`, JSON) when it
        changed since the last look; a missing or unreadable file changes nothing."""
        import json
        import os

        try:
            changed = os.stat(summary_file).st_mtime
            if changed == self._monitor_seen:
                return
            with open(summary_file, encoding="utf-8") as f:
                headline = json.load(f)["headline"]
        except (OSError, ValueError, KeyError, TypeError):
            return
        for name, value in headline.items():
            if isinstance(value, (int, float)) and np.isfinite(value):
                self.monitor.labels(name).set(float(value))
        self._monitor_seen = changed

    def model_event(self, outcome: str, version: str | None) -> None:
        self.model_events.labels(outcome).inc()
        if outcome == "loaded" and version is not None and version.isdigit():
            self.model_version.set(float(version))

    def count_outcomes(self, route: str, outcomes: list[str]) -> None:
        for outcome, count in Counter(outcomes).items():
            self.predictions.labels(route, outcome).inc(count)

    def exposition(self) -> str:
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode("utf-8")


def observe_many(histogram, values) -> None:
    """`histogram.observe(v)` for every finite v, with one write per touched bucket.

    Same counts and sum as observing one at a time (a value goes to the first bucket whose
    upper bound is >= it). Falls back to `observe` when the client library's histogram lacks
    the bucket fields this relies on."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if not len(values):
        return
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for v in values.tolist():
            histogram.observe(v)
        return
    at = np.searchsorted(np.asarray(bounds, dtype=float), values, side="left")
    for i, count in zip(*np.unique(at, return_counts=True)):
        buckets[int(i)].inc(int(count))
    total.inc(float(values.sum()))


_metrics: Metrics | None = None
_metrics_lock = threading.Lock()


def metrics() -> Metrics:
    """The process's Metrics, created on first use (never at import)."""
    global _metrics
    if _metrics is None:
        with _metrics_lock:
            if _metrics is None:
                _metrics = Metrics()
    return _metrics


OTHER_ENDPOINT = "other"  # the `endpoint` label of every path that is not a route


class _KnownEndpoints:
    """One of BentoML's traffic metrics, with every `endpoint` label outside `known` given as
    OTHER_ENDPOINT."""

    def __init__(self, metric, known: frozenset[str]):
        self._metric = metric
        self._known = known

    def labels(self, *args, **kwargs):
        if "endpoint" in kwargs and kwargs["endpoint"] not in self._known:
            kwargs["endpoint"] = OTHER_ENDPOINT
        return self._metric.labels(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._metric, name)


def bound_endpoint_labels(known: Iterable[str]) -> None:
    """Label BentoML's request metrics by route, with any other path as "other".

    BentoML 1.4.40's traffic middleware labels every request by its raw path, answered or not,
    so each unknown path asked (a scanner, a typo, anyone without the key) added series to
    /metrics for the life of the process: 3,000 such requests grew it from 620 KB to 13 MB. The
    middleware creates its metrics on the app's first event (the lifespan start, before the
    service's `__init__`), so this wraps its setup; call it before the app starts."""
    from bentoml._internal.server.http import instruments

    known = frozenset(known)
    for cls in (instruments.RunnerTrafficMetricsMiddleware,
                instruments.HTTPTrafficMetricsMiddleware):
        setup = getattr(cls._setup, "_original", cls._setup)

        def _setup(self, *args, _setup=setup, **kwargs):
            _setup(self, *args, **kwargs)
            for name, value in list(vars(self).items()):
                if name.startswith("metrics_") and hasattr(value, "labels"):
                    setattr(self, name, _KnownEndpoints(value, known))

        _setup._original = setup
        cls._setup = _setup


class BadInputIsNotAServerError(logging.Filter):
    """BentoML logs every request body that fails validation as an ERROR with a traceback; a
    client's bad input is not a server fault: one WARNING line naming the field instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        from pydantic import ValidationError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ValidationError) and isinstance(record.args, tuple) \
                and len(record.args) == 2:  # ("Exception on %s [%s]", path, method)
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(part) for part in first["loc"]) or "body"
            record.msg = "rejected %s [%s]: invalid input at %s: %s"
            record.args = (*record.args, where, first["msg"])
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def quiet_bad_input_logs() -> None:
    bentoml_log = logging.getLogger("bentoml._internal.server.http_app")
    if not any(isinstance(f, BadInputIsNotAServerError) for f in bentoml_log.filters):
        bentoml_log.addFilter(BadInputIsNotAServerError())
