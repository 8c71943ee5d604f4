"""The online prediction service (BentoML 1.4): shipment ids or feature rows in, forecasts out.

Routes: `POST /predict` {"shipment_ids": [...]} reads each shipment's features from the Feast
online store and scores them; `POST /predict_features` {"rows": [...]} scores given feature
vectors ("what if"); `POST /noop` is the benchmark's reference (same framework path, no work);
`/livez`, `/readyz` (a champion is loaded and the online store answers) and `/metrics`
(BentoML's own metrics plus `shipdelay_*`) are BentoML's.

Both prediction routes answer one item per shipment, in request order, through the one scorer
(`serving/scorer.py`). A shipment that cannot be scored gets `ok: false` and an `error`
("unknown shipment", "already delivered", ...); the request itself never fails because of one id.

Guards are ASGI middleware, so they cover every route, including any added later: the API key
(`X-API-Key`, when `settings.api_key` is set; all routes except the probes and /metrics), JSON
only (415 otherwise; pickle in particular is never parsed), and a body size limit (413).

Settings come from the environment (`SHIPDELAY_*`) when the service starts, never at import.
Serving options that are not `Settings` fields (see `ServeOptions`) are read from the
environment too, so `serving.serve` can pass them to BentoML's worker processes.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import threading
import time
from dataclasses import dataclass

import bentoml
import pandas as pd

from serving.api import (
    DELIVERED,
    FEATURES_UNAVAILABLE,
    ID_FIELD,
    MAX_FEATURE_AGE_H,
    MAX_IDS,
    NO_MODEL,
    SCORING_FAILED,
    UNKNOWN,
    PredictFeaturesRequest,
    Prediction,
    PredictRequest,
    failed,
    predictions,
)
from serving.model_holder import (
    DEFAULT_REFRESH_SECONDS,
    ModelHolder,
    refresh_seconds_from_env,
)

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/livez", "/healthz", "/readyz", "/metrics"})
MAX_BODY_BYTES = 1_000_000
# Adaptive batching merges concurrent /predict requests into one feature read and one scoring
# call. Each call has a large fixed cost (two Feast online reads rebuild the FeatureService from
# the registry: ~25 ms; scoring ~5 ms), so merging pays: measured on this 2-core machine (one
# worker, client on the same cores, 1 id per request) 75 req/s with batching against 15 without
# at concurrency 32, 39 against 17 at 8, and the same latency at concurrency 1 (p50 ~60 ms).
# SHIPDELAY_SERVE_BATCHING=0 turns it off (read when the module is imported).
BATCHING = os.environ.get("SHIPDELAY_SERVE_BATCHING", "1").strip().lower() not in ("0", "false",
                                                                                   "no", "")
BATCH_MAX_LATENCY_MS = 2_000  # well under the 10 s timeout: only a long queue is shed (503)


@dataclass(frozen=True)
class ServeOptions:
    """Serving knobs that are not `Settings` fields, read from the environment at start."""

    refresh_seconds: float = DEFAULT_REFRESH_SECONDS  # SHIPDELAY_MODEL_REFRESH_SECONDS
    max_feature_age_h: float = MAX_FEATURE_AGE_H  # SHIPDELAY_MAX_FEATURE_AGE_H (unknown mode)
    max_body_bytes: int = MAX_BODY_BYTES  # SHIPDELAY_MAX_BODY_BYTES
    # SHIPDELAY_SERVE_AS_OF freezes the service clock (ISO time): for simulated worlds, whose
    # "now" is their last simulated moment, and for replays. Unset in production.
    as_of: pd.Timestamp | None = None

    @classmethod
    def from_env(cls) -> ServeOptions:
        env = os.environ
        as_of = env.get("SHIPDELAY_SERVE_AS_OF") or None
        return cls(
            refresh_seconds=refresh_seconds_from_env(),
            max_feature_age_h=float(env.get("SHIPDELAY_MAX_FEATURE_AGE_H") or MAX_FEATURE_AGE_H),
            max_body_bytes=int(env.get("SHIPDELAY_MAX_BODY_BYTES") or MAX_BODY_BYTES),
            as_of=None if as_of is None else _utc(pd.Timestamp(as_of)),
        )


def _utc(ts: pd.Timestamp) -> pd.Timestamp:
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


# ---------------------------------------------------------------------------------- metrics
class Metrics:
    """shipdelay's own Prometheus metrics, in a private registry.

    BentoML's workers run prometheus_client in multiprocess mode (PROMETHEUS_MULTIPROC_DIR is
    set before they start): values then go to the shared files BentoML's /metrics collects. In a
    single process (tests, TestClient) `ShipDelay.__metrics__` appends this registry instead."""

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
            "(unauthorized, too_large, media_type, invalid)", ["reason"], registry=r)

    def model_event(self, outcome: str, version: str | None) -> None:
        self.model_events.labels(outcome).inc()
        if outcome == "loaded" and version is not None and version.isdigit():
            self.model_version.set(float(version))

    def exposition(self) -> str:
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode("utf-8")


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


class _BadInputIsNotAServerError(logging.Filter):
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


def _quiet_bad_input_logs() -> None:
    bentoml_log = logging.getLogger("bentoml._internal.server.http_app")
    if not any(isinstance(f, _BadInputIsNotAServerError) for f in bentoml_log.filters):
        bentoml_log.addFilter(_BadInputIsNotAServerError())


# -------------------------------------------------------------------------------- middleware
async def _reply(send, status: int, error: str) -> None:
    body = json.dumps({"error": error}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _header(scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value
    return None


class ApiKeyMiddleware:
    """Requires `X-API-Key` equal to `settings.api_key` (when set) on every route except the
    probes and /metrics; 401 JSON otherwise. The key is read once, when the app starts."""

    def __init__(self, app, api_key: str | None = None, open_paths=OPEN_PATHS):
        from shipdelay.settings import get_settings

        self.app = app
        if api_key is None:
            secret = get_settings().api_key
            api_key = secret.get_secret_value() if secret is not None else None
        self.key = api_key.encode() if api_key else None
        self.open_paths = open_paths

    async def __call__(self, scope, receive, send):
        if self.key is None or scope["type"] != "http" or scope["path"] in self.open_paths:
            return await self.app(scope, receive, send)
        supplied = _header(scope, b"x-api-key")
        if supplied is None or not hmac.compare_digest(supplied, self.key):
            metrics().rejected.labels("unauthorized").inc()
            return await _reply(send, 401, "missing or invalid X-API-Key header")
        return await self.app(scope, receive, send)


class RequestLimitsMiddleware:
    """JSON bodies only (415) and at most `max_bytes` of them (413), checked before any parsing;
    also counts the 4xx answers the API itself gives to invalid input."""

    def __init__(self, app, max_bytes: int | None = None):
        self.app = app
        self.max_bytes = max_bytes or ServeOptions.from_env().max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        media = (_header(scope, b"content-type") or b"application/json").split(b";")[0].strip()
        if media.lower() != b"application/json":
            metrics().rejected.labels("media_type").inc()
            return await _reply(send, 415, "Content-Type must be application/json")
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            metrics().rejected.labels("too_large").inc()
            return await _reply(send, 413, f"request body over {self.max_bytes} bytes")
        chunks, size = [], 0
        while True:  # read the whole (bounded) body here, then hand it on
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                metrics().rejected.labels("too_large").inc()
                return await _reply(send, 413, f"request body over {self.max_bytes} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def counting_send(message):
            if message["type"] == "http.response.start" and 400 <= message["status"] < 500:
                metrics().rejected.labels("invalid").inc()
            await send(message)

        return await self.app(scope, replay, counting_send)


# ----------------------------------------------------------------------------------- service
@bentoml.service(workers=1, traffic={"timeout": 10, "max_concurrency": 64})
class ShipDelay:
    """Delay risk, delay interval, ETA and reasons for in-flight shipments."""

    def __init__(self) -> None:
        from features.store import get_store
        from shipdelay.settings import get_settings

        _quiet_bad_input_logs()
        self.settings = get_settings()
        self.options = ServeOptions.from_env()
        self.metrics = metrics()
        self.store = get_store(self.settings)
        self.store_lock = threading.Lock()  # one online read at a time per worker
        self.holder = ModelHolder(self.settings, self.options.refresh_seconds, store=self.store,
                                  on_event=self.metrics.model_event)

    # -- helpers -----------------------------------------------------------------------------
    def now(self) -> pd.Timestamp:
        return self.options.as_of if self.options.as_of is not None else pd.Timestamp.now("UTC")

    def _scorer(self):
        self.holder.maybe_reload()
        return self.holder.scorer

    def _score(self, scorer, vectors: pd.DataFrame) -> list[Prediction]:
        """Score rows together; if that fails, row by row, so one bad row fails alone."""
        limit = self.options.max_feature_age_h
        try:
            return predictions(scorer.score(vectors), vectors, limit)
        except Exception:
            log.exception("scoring %d row(s) failed; retrying one by one", len(vectors))
        out = []
        for i in range(len(vectors)):
            row = vectors.iloc[[i]]
            try:
                out += predictions(scorer.score(row), row, limit)
            except Exception:  # noqa: BLE001 - logged above; this row fails alone
                out.append(failed(str(row["shipment_id"].iloc[0]), SCORING_FAILED,
                                  scorer.version))
        return out

    def _record(self, route: str, items: list[Prediction], started: float) -> None:
        m = self.metrics
        m.latency.labels(route, "total").observe(time.perf_counter() - started)
        m.batch_size.labels(route).observe(len(items))
        for item in items:
            outcome = ("stale" if item.stale else "ok") if item.ok else {
                UNKNOWN: "unknown", DELIVERED: "delivered", NO_MODEL: "no_model",
                FEATURES_UNAVAILABLE: "features_unavailable"}.get(item.error, "error")
            m.predictions.labels(route, outcome).inc()
            if item.ok and item.p_late is not None:
                m.p_late.labels(route).observe(item.p_late)

    def score_ids(self, shipment_ids: list[str]) -> list[Prediction]:
        """The /predict logic: one answer per id, in order (ids may repeat when batched)."""
        started = time.perf_counter()
        ids = [str(i) for i in shipment_ids]
        unique = list(dict.fromkeys(ids))
        scorer = self._scorer()
        if scorer is None:
            answers = {i: failed(i, NO_MODEL) for i in unique}
        else:
            try:
                answers = self._answers(scorer, unique)
            except Exception:
                log.exception("online feature read failed for %d id(s)", len(unique))
                answers = {i: failed(i, FEATURES_UNAVAILABLE, scorer.version) for i in unique}
        items = [answers[i] for i in ids]
        self._record("predict", items, started)
        return items

    def _answers(self, scorer, ids: list[str]) -> dict[str, Prediction]:
        from features.online import online_vectors

        t0 = time.perf_counter()
        asked = self.now()
        with self.store_lock:
            vectors = online_vectors(self.store, ids, asked)
        t1 = time.perf_counter()
        self.metrics.latency.labels("predict", "features").observe(t1 - t0)
        answers: dict[str, Prediction] = {}
        known = vectors["known"].to_numpy(bool)
        delivered = vectors["delivered"].to_numpy(bool) & known
        for i in vectors.loc[~known, "shipment_id"]:
            answers[i] = failed(i, UNKNOWN, scorer.version)
        for i in vectors.loc[delivered, "shipment_id"]:
            answers[i] = failed(i, DELIVERED, scorer.version)
        live = vectors[known & ~delivered].assign(request_time_s=asked.timestamp())
        if len(live):
            for age in pd.to_numeric(live["hours_since_last_scan"], errors="coerce").dropna():
                self.metrics.feature_age.observe(age)
            for item in self._score(scorer, live):
                answers[item.shipment_id] = item
            self.metrics.latency.labels("predict", "score").observe(time.perf_counter() - t1)
        return answers

    def score_rows(self, rows: list[dict]) -> list[Prediction]:
        """The /predict_features logic: score the given feature rows, one answer per row."""
        started = time.perf_counter()
        labels = [str(r.get(ID_FIELD) or f"row-{i}") for i, r in enumerate(rows)]
        scorer = self._scorer()
        if scorer is None:
            items = [failed(label, NO_MODEL) for label in labels]
        else:
            frame = pd.DataFrame([{k: v for k, v in r.items() if k != ID_FIELD} for r in rows],
                                 columns=scorer.features)
            frame = frame.assign(shipment_id=labels, request_time_s=self.now().timestamp())
            items = self._score(scorer, frame)
            self.metrics.latency.labels("predict_features", "score").observe(
                time.perf_counter() - started)
        self._record("predict_features", items, started)
        return items

    # -- API ---------------------------------------------------------------------------------
    @bentoml.api(route="/predict", input_spec=PredictRequest, batchable=BATCHING,
                 max_batch_size=MAX_IDS, max_latency_ms=BATCH_MAX_LATENCY_MS)
    def predict(self, shipment_ids: list[str]) -> list[Prediction]:
        """Forecast for each shipment id, from the online feature store, in request order.
        Unknown or delivered shipments get `ok: false` and an `error`."""
        return self.score_ids(shipment_ids)

    @bentoml.api(route="/predict_features", input_spec=PredictFeaturesRequest)
    def predict_features(self, rows: list[dict]) -> list[Prediction]:
        """Forecast for given feature vectors ("what if"): every model feature must be present
        (null when unknown); categorical features are strings, the others numbers."""
        return self.score_rows(rows)

    @bentoml.api(route="/noop")
    def noop(self) -> dict:
        """Does nothing: the framework's own cost, the reference for benchmarks."""
        return {"ok": True}

    # -- probes and metrics (BentoML calls these) --------------------------------------------
    def __is_ready__(self) -> bool:
        """Ready when a champion is loaded and the online store answers a trivial read."""
        self.holder.maybe_reload()
        if self.holder.scorer is None:
            return False
        try:
            with self.store_lock:
                self.store.get_online_features(features=["shipment_progress:delivered"],
                                               entity_rows=[{"shipment_id": "__readyz__"}])
        except Exception:
            log.warning("online store read failed in readiness probe", exc_info=True)
            return False
        return True

    def __metrics__(self, content: str) -> str:
        if self.metrics.multiprocess:  # already collected from the shared files
            return content
        return content + self.metrics.exposition()


ShipDelay.add_asgi_middleware(ApiKeyMiddleware)
ShipDelay.add_asgi_middleware(RequestLimitsMiddleware)
