"""The online prediction service (BentoML 1.4): shipment ids or feature rows in, forecasts out.

Routes: `POST /predict` {"shipment_ids": [...]} reads each shipment's features from the online
store and scores them; `GET /shipments/{id}` answers one shipment as /predict does (404 when
unknown); `POST /predict_features` {"rows": [...]} scores given feature vectors ("what if");
`POST /noop`, only with SHIPDELAY_SERVE_NOOP=1, is the benchmark's reference (same framework
path, no work);
`/livez`, `/readyz` (a champion is loaded, the online store answers and holds this project's
rows) and `/metrics` (BentoML's own metrics, labelled by route with every other path as
"other", plus `shipdelay_*`, see `serving.metrics`) are BentoML's.

Both prediction routes answer one item per shipment, in request order, through the one scorer
(`serving/scorer.py`). /predict serves the reasons the stream and the nightly batch keep in the
online store while they explain the vector it scores, and computes the others
(`serving.explain`); a what-if and `GET /shipments/{id}?explain=true` always compute them. A shipment that cannot be scored gets `ok: false` and an `error`
("unknown shipment", "already delivered", ...); the request itself never fails because of one id.
Every /predict forecast goes to the prediction log, to be judged once the outcome is known
(`monitoring.log_buffer`: buffered, written by a background thread, never waited for); what-if
answers do not, since they describe no real moment of a shipment.

Online features come through the FeatureService `delay_model_v1`: by default read directly from
the online store's tables (`features.online_fast.OnlineReader`, the same values as Feast's
`get_online_features`, ~20 ms faster per call); `settings.online_read = "feast"` reads through
Feast itself (`features.online.online_vectors`), the reference. An online store that does not
answer within its timeouts (`settings.redis_*`) makes each item "feature store unavailable" and
/readyz "not ready" at once, not a timeout. The guards (requests per client, API key, JSON only,
body size and time) and the keep-alive limit are ASGI middleware (`serving.middleware`); the
OpenAPI document (/docs.json) states their answers (`serving.openapi_doc`). Settings come from
the environment (`SHIPDELAY_*`) when the service starts, never at import; other knobs:
`serving.options`. While a worker starts, it reports what it is doing to whoever started it
(`serving.startup`): loading and compiling a champion can take minutes.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from typing import Annotated

import bentoml
import numpy as np
import pandas as pd
from fastapi import FastAPI
from fastapi import Path as FastPath
from fastapi.exceptions import RequestValidationError
from starlette.responses import JSONResponse

from serving import startup
from serving.api import (
    ANSWERS,
    DELIVERED,
    FEATURES_UNAVAILABLE,
    ID_FIELD,
    MAX_ID_LENGTH,
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
from serving.batching import dispatch_without_corking
from serving.bento_export import holder_class
from serving.delivered import delivered_at
from serving.metrics import bound_endpoint_labels, metrics, observe_many, quiet_bad_input_logs
from serving.middleware import (
    OPEN_PATHS,
    ApiKeyMiddleware,
    ClientLimitMiddleware,
    KeepAliveLimitMiddleware,
    RequestLimitsMiddleware,
)
from serving.openapi_doc import document_errors
from serving.options import ServeOptions, pin_threads
from serving.reasons_memory import ReasonsMemory

log = logging.getLogger(__name__)

# Adaptive batching merges concurrent /predict requests into one feature read and one scoring
# call, which pays because each call has a fixed cost (building frames, four boosters, the
# answers) next to the cost per shipment: see benchmarks/README.md (service) for the figures.
# SHIPDELAY_SERVE_BATCHING=0 turns it off (read at import). BentoML sheds (503) the oldest
# queued request when it predicts the queue's wait above BATCH_MAX_LATENCY_MS: half the 10 s
# timeout, because a 100-shipment request alone takes ~0.1-0.3 s (reasons cost ~1 ms a
# shipment), so with 2 s a few such requests queued on a busy machine were all refused.
BATCHING = os.environ.get("SHIPDELAY_SERVE_BATCHING", "1").strip().lower() not in ("0", "false",
                                                                                   "no", "")
BATCH_MAX_LATENCY_MS = 5_000
_OUTCOMES = {UNKNOWN: "unknown", DELIVERED: "delivered", NO_MODEL: "no_model",
             FEATURES_UNAVAILABLE: "features_unavailable"}
startup.quiet_deprecations()  # before the class: BentoML's decorator warns while building it


# POST /noop exists only when SHIPDELAY_SERVE_NOOP=1 (read at import): the service benchmark's
# same-run reference (benchmarks/service_server.py sets it), never a route of the product.
SERVE_NOOP = os.environ.get("SHIPDELAY_SERVE_NOOP", "").strip().lower() in ("1", "true", "yes")
# GET /shipments/{id}: one shipment's forecast, for pages and people (a FastAPI view of the
# service, mounted by BentoML; the guards apply to it as to every route)
one_shipment = FastAPI()


@one_shipment.exception_handler(RequestValidationError)
async def _bad_id(request, err: RequestValidationError) -> JSONResponse:
    """A bad id is a 400 naming the problem, as on the other routes (FastAPI says 422)."""
    detail = [{"type": e["type"], "loc": list(e["loc"]), "msg": e["msg"]} for e in err.errors()]
    return JSONResponse({"error": f"{len(detail)} validation error(s) for the shipment id",
                         "detail": detail}, status_code=400)


@bentoml.asgi_app(one_shipment, path="/shipments")
@bentoml.service(workers=1, traffic={"timeout": 10, "max_concurrency": 64})
class ShipDelay:
    """Delay risk, delay interval, ETA and reasons for in-flight shipments."""

    def __init__(self) -> None:
        try:
            self._start()
        except BaseException as err:  # told to whoever waits for the start, then BentoML's
            startup.report(startup.FAILED, f"{type(err).__name__}: {err}")
            raise

    def _start(self) -> None:
        from features.store import get_store
        from shipdelay.settings import get_settings

        startup.report(startup.STARTING)
        quiet_bad_input_logs()
        if BATCHING:  # a request that finds the batcher idle goes at once (`serving.batching`)
            dispatch_without_corking()
        self.settings = get_settings()
        self.options = ServeOptions.from_env()
        if self.options.cpus is not None:
            pin_threads(self.options.cpus)
        self.metrics = metrics()
        from monitoring.log_buffer import PredictionBuffer
        from monitoring.report import latest_summary_path

        # every /predict answer is logged to be judged later, by a background writer
        self.prediction_log = PredictionBuffer.from_settings(self.settings, "service",
                                                             self.metrics.count_logged)
        self.monitor_summary = latest_summary_path(self.settings)
        self.metrics.refresh_monitor(self.monitor_summary)
        startup.report(startup.OPENING_STORE)
        self.store = get_store(self.settings)
        self.store_lock = threading.Lock()  # one online read at a time per worker
        self.reader = self._direct_reader()
        self.rows_probe = None  # built by the first readiness probe (it reads the registry)
        self.not_ready_because: str | None = None
        seconds = self.options.reasons_seconds
        self.reasons_memory = ReasonsMemory(seconds) if seconds > 0 else None
        self.kept_reasons = self._kept_reasons()
        startup.slow_start()
        startup.report(startup.LOADING_MODEL)
        holder = holder_class(self.options.model_source)  # the registry's, or BentoML's store
        self.holder = holder(self.settings, self.options.refresh_seconds, store=self.store,
                             on_event=self.metrics.model_event)
        if self.holder.ready:
            startup.report(startup.READY, f"version {self.holder.version}")
        else:
            startup.report(startup.NO_MODEL, self.holder.last_error or "")
        # Everything loaded so far (libraries, the store, the champion) lives as long as the
        # process: keep it out of the cycle collector's full passes, which otherwise walk
        # ~470,000 objects to find nothing: one full pass took 240-274 ms before freezing and
        # 1 ms after, measured in a loaded service (a request that meets one waits that long).
        # Then collect young objects less often (`ServeOptions.gc_threshold`).
        gc.freeze()
        if self.options.gc_threshold is not None:
            gc.set_threshold(*self.options.gc_threshold)

    def _direct_reader(self):
        """The direct online reader, or None to read through Feast (the setting says so, or
        the store or FeatureService is one the reader cannot reproduce exactly)."""
        if self.settings.online_read != "direct":
            return None
        from features.online_fast import DirectReadUnsupported, OnlineReader

        try:
            return OnlineReader(self.store, cache_seconds=self.options.cache_seconds)
        except DirectReadUnsupported as err:
            log.warning("reading online features through Feast: %s", err)
            return None

    def _kept_reasons(self):
        """The reader of the reasons the stream and the batch keep in the online store
        (`serving.reasons_store`), or None: not served (the option says so, or the store
        cannot be read that way; reasons are then computed)."""
        if self.options.reasons_max_age_s <= 0:
            return None
        from serving.reasons_store import OnlineReasons

        try:
            return OnlineReasons.of_feast(self.store)
        except Exception as err:  # noqa: BLE001 - a speed-up, never a condition for serving
            log.warning("reasons kept in the online store are not served: %s", err)
            return None

    # -- helpers -----------------------------------------------------------------------------
    def now(self) -> pd.Timestamp:
        return self.options.as_of if self.options.as_of is not None else pd.Timestamp.now("UTC")

    def online_vectors(self, ids: list[str], asked: pd.Timestamp) -> dict[str, np.ndarray]:
        """The FeatureService's vectors of `ids` (see `features.online.online_vectors`), as a
        dict of column -> array: no frame on the direct path."""
        if self.reader is not None:
            return self.reader.columns(ids, asked)
        from features.online import online_vectors

        with self.store_lock:
            frame = online_vectors(self.store, ids, asked)
        return _arrays(frame)

    def _scorer(self):
        self.holder.maybe_reload()
        return self.holder.scorer

    def _score(self, scorer, vectors: dict[str, np.ndarray], reasons_from: float | None,
               memory: ReasonsMemory | None = None,
               logged_at: pd.Timestamp | None = None, kept: bool = False) -> list[Prediction]:
        """Score rows together; if that fails, row by row, so one bad row fails alone. With
        `logged_at` (the instant the features describe) the predictions go to the prediction
        log: the buffer keeps references to these arrays, the writer thread does the rest.
        `kept`: serve the reasons kept in the online store where valid (`serving.explain`)."""
        limit = self.options.max_feature_age_h
        stored = self.kept_reasons.read if kept and self.kept_reasons is not None else None
        try:
            scored = scorer.score_columns(vectors, reasons_from, memory, stored,
                                          self.options.reasons_max_age_s)
            answers = predictions(scored, vectors, limit)
            if logged_at is not None and self.prediction_log is not None:
                self.prediction_log.add(scored, vectors, logged_at, notes=scorer.with_notes)
            return answers
        except Exception:
            log.exception("scoring %d row(s) failed; retrying one by one",
                          len(vectors["shipment_id"]))
        out = []
        for i in range(len(vectors["shipment_id"])):
            row = {k: v[i:i + 1] for k, v in vectors.items()}
            try:
                out += predictions(scorer.score_columns(row, reasons_from), row, limit)
            except Exception:  # noqa: BLE001 - logged above; this row fails alone
                out.append(failed(str(row["shipment_id"][0]), SCORING_FAILED, scorer.version))
        return out

    def _record(self, route: str, items: list[Prediction], started: float) -> None:
        m = self.metrics
        m.latency.labels(route, "total").observe(time.perf_counter() - started)
        m.batch_size.labels(route).observe(len(items))
        m.count_outcomes(route, [("stale" if i.stale else "ok") if i.ok else
                                 _OUTCOMES.get(i.error, "error") for i in items])
        observe_many(m.p_late.labels(route),
                     [i.p_late for i in items if i.ok and i.p_late is not None])

    def score_ids(self, shipment_ids: list[str], explain: bool = False) -> list[Prediction]:
        """The /predict logic: one answer per id, in order (ids may repeat when batched).
        `explain`: every shipment's reasons computed for this answer, whatever its band."""
        started = time.perf_counter()
        ids = [str(i) for i in shipment_ids]
        unique = list(dict.fromkeys(ids))
        scorer = self._scorer()
        if scorer is None:
            answers = {i: failed(i, NO_MODEL) for i in unique}
        else:
            try:
                answers = self._answers(scorer, unique, explain)
            except Exception:
                log.exception("online feature read failed for %d id(s)", len(unique))
                answers = {i: failed(i, FEATURES_UNAVAILABLE, scorer.version) for i in unique}
        items = [answers[i] for i in ids]
        self._record("predict", items, started)
        return items

    def _answers(self, scorer, ids: list[str], explain: bool = False) -> dict[str, Prediction]:
        t0 = time.perf_counter()
        asked = self.now()
        vectors = self.online_vectors(ids, asked)
        t1 = time.perf_counter()
        self.metrics.latency.labels("predict", "features").observe(t1 - t0)
        known = np.asarray(vectors["known"], bool)
        delivered = np.asarray(vectors["delivered"], bool) & known
        shipment_ids = np.asarray(vectors["shipment_id"], object)
        answers = {i: failed(i, UNKNOWN, scorer.version) for i in shipment_ids[~known].tolist()}
        answers.update({i: failed(i, DELIVERED, scorer.version)
                        for i in shipment_ids[delivered].tolist()})
        if len(answers):  # delivered before the online store's rows: the lake's outcomes say
            done = delivered_at(self.settings.lake_dir, list(answers), asked)
            answers.update({i: failed(i, DELIVERED, scorer.version).model_copy(
                update={"delivered_at": at.to_pydatetime()}) for i, at in done.items()})
        scored = known & ~delivered
        if scored.any():
            live = vectors if scored.all() else {k: np.asarray(v)[scored]
                                                 for k, v in vectors.items()}
            live["request_time_s"] = np.full(int(scored.sum()), asked.timestamp())
            observe_many(self.metrics.feature_age, live["hours_since_last_scan"])
            if explain:  # asked for: computed now, for every shipment
                items = self._score(scorer, live, 0.0, logged_at=asked)
            else:
                items = self._score(scorer, live, self.options.reasons_from,
                                    self.reasons_memory, logged_at=asked, kept=True)
            answers.update({item.shipment_id: item for item in items})
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
                                 columns=scorer.inputs)
            frame = frame.assign(shipment_id=labels, request_time_s=self.now().timestamp())
            items = self._score(scorer, _arrays(frame), reasons_from=0.0)  # what if: every why
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

    if SERVE_NOOP:  # the benchmark's reference only: not a route of the product
        @bentoml.api(route="/noop")
        def noop(self) -> dict:
            """Does nothing: the framework's own cost, the reference for benchmarks."""
            return {"ok": True}

    @one_shipment.get("/{shipment_id}", response_model=Prediction,
                      responses={404: {"model": Prediction, "description": UNKNOWN}})
    def shipment(self, shipment_id: Annotated[str, FastPath(min_length=1,
                                                            max_length=MAX_ID_LENGTH)],
                 explain: bool = False):
        """The forecast of one shipment, as /predict answers it for that id (404 when the
        online store does not know it). `?explain=true`: its reasons computed now (LightGBM's
        TreeSHAP on its features at this instant), whatever its risk band."""
        (item,) = self.score_ids([shipment_id], explain)
        code = 404 if item.status == "unknown" else 200
        return JSONResponse(item.model_dump(mode="json"), status_code=code)

    # -- probes and metrics (BentoML calls these) --------------------------------------------
    def __is_ready__(self) -> bool:
        """Ready when a champion is loaded, the online store answers a trivial read within its
        timeouts and holds this project's shipment rows (`features.online_probe`)."""
        self.holder.maybe_reload()
        if self.holder.scorer is None:
            return self._not_ready("no champion model is loaded")
        try:
            if self.reader is not None:
                self.reader.ping()
            else:
                with self.store_lock:
                    self.store.get_online_features(features=["shipment_progress:delivered"],
                                                   entity_rows=[{"shipment_id": "__readyz__"}])
            if self.rows_probe is None:
                from features.online_probe import RowsProbe

                self.rows_probe = RowsProbe(self.store)
            self.rows_probe.check()
        except Exception as err:  # noqa: BLE001 - any failure means "not ready"
            return self._not_ready(f"online store: {err}")
        if self.not_ready_because is not None:
            log.info("ready again")
            self.not_ready_because = None
        return True

    def _not_ready(self, why: str) -> bool:
        """False, logging `why` when it changes (probes come every few seconds)."""
        if why != self.not_ready_because:
            log.warning("not ready: %s", why)
            self.not_ready_because = why
        return False

    @bentoml.on_shutdown
    def _write_prediction_log(self) -> None:
        """Write the predictions still buffered before the worker exits."""
        if self.prediction_log is not None:
            self.prediction_log.close()

    def __metrics__(self, content: str) -> str:
        # read at each scrape, set for the next: the newest monitoring run's numbers
        self.metrics.refresh_monitor(self.monitor_summary)
        if self.metrics.multiprocess:  # already collected from the shared files
            return content
        return content + self.metrics.exposition()


def _arrays(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return {c: frame[c].to_numpy() for c in frame.columns}


def _answers_in_one_pass(output_spec) -> None:
    """Write a route's list of answers with pydantic's own JSON serializer, in one pass.

    BentoML 1.4.40 wraps a returned list in its root model, dumps it to Python objects twice
    and writes those with the standard library's `json`: for a 100-shipment answer that was a
    third of the event loop's time under load. The JSON holds the same values (the model's
    serializer makes them in both cases; only the spacing differs), as the service tests check
    against BentoML's own response."""
    from starlette.responses import Response

    async def to_http_response(cls, obj, serde) -> Response:
        return Response(ANSWERS.dump_json(obj), media_type="application/json")

    output_spec.to_http_response = classmethod(to_http_response)


# BentoML 1.4.40 works out a route's response media type from the output's JSON schema on
# every response unless it is stated: ~10 ms per answer for list[Prediction] on this machine.
# Stated once for every route (/noop too, so that the reference carries no such cost either).
for _name, _method in ShipDelay.apis.items():
    _method.output_spec.media_type = "application/json"
    if _name in ("predict", "predict_features"):
        _answers_in_one_pass(_method.output_spec)
# BentoML sets its request metrics up on the app's first event, before the service starts, so
# their labels are bounded here, by this service's routes and BentoML's own paths.
bound_endpoint_labels({*(m.route for m in ShipDelay.apis.values()), *OPEN_PATHS,
                       "/docs.json", "/schema.json", "/"})
document_errors(ShipDelay, ["/shipments/{shipment_id}"])
ShipDelay.add_asgi_middleware(ClientLimitMiddleware)  # first: it frees a slot soonest
ShipDelay.add_asgi_middleware(ApiKeyMiddleware)
ShipDelay.add_asgi_middleware(RequestLimitsMiddleware)
ShipDelay.add_asgi_middleware(KeepAliveLimitMiddleware)
