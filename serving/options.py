"""Serving knobs that are not `Settings` fields, read from the environment when the service
starts (never at import), so that `serving.serve` can hand them to BentoML's worker processes."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pandas as pd

from serving import explain, reasons_memory
from serving.api import MAX_FEATURE_AGE_H
from serving.model_holder import DEFAULT_REFRESH_SECONDS, refresh_seconds_from_env
from serving.scorer import Thresholds

MAX_BODY_BYTES = 1_000_000
REASONS_FROM = Thresholds().high
CACHE_SECONDS = 60.0
REASONS_SECONDS = reasons_memory.SECONDS
REASONS_MAX_AGE_S = explain.MAX_AGE_S
GC_THRESHOLD = (50_000, 20, 100)
KEEPALIVE_REQUESTS = 100
MODEL_SOURCE = "mlflow"


def _utc(ts: pd.Timestamp) -> pd.Timestamp:
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


@dataclass(frozen=True)
class ServeOptions:
    """What the environment says about serving, beyond `Settings`."""

    refresh_seconds: float = DEFAULT_REFRESH_SECONDS  # SHIPDELAY_MODEL_REFRESH_SECONDS
    max_feature_age_h: float = MAX_FEATURE_AGE_H  # SHIPDELAY_MAX_FEATURE_AGE_H (unknown mode)
    max_body_bytes: int = MAX_BODY_BYTES  # SHIPDELAY_MAX_BODY_BYTES
    # SHIPDELAY_SERVE_AS_OF freezes the service clock (ISO time): for simulated worlds, whose
    # "now" is their last simulated moment, and for replays. Unset in production.
    as_of: pd.Timestamp | None = None
    # SHIPDELAY_SERVE_REASONS_FROM: /predict explains shipments from this P(late) on (0: every
    # shipment). Reasons (LightGBM's TreeSHAP, ~2 ms a shipment on one core) cost several times
    # the rest of an answer, so by default the shipments expected to be late (the high band)
    # get them, the rule the nightly batch follows. /predict_features (what if) always
    # explains every row.
    reasons_from: float = REASONS_FROM
    # SHIPDELAY_SERVE_CACHE_SECONDS: how long the direct reader keeps rows that only a feature
    # build changes (profiles, lane/carrier/customer/hub statistics); progress is always read
    # fresh. 0 reads everything from the store every time.
    cache_seconds: float = CACHE_SECONDS
    # SHIPDELAY_SERVE_REASONS_SECONDS: how long /predict remembers a shipment's reasons while
    # its state (every feature but the request-time ones) stays the same; 0: always computed.
    reasons_seconds: float = REASONS_SECONDS
    # SHIPDELAY_SERVE_REASONS_MAX_AGE_S: the oldest reasons kept in the online store (by the
    # stream and the nightly batch) /predict serves, in seconds between the instant they
    # explain and the answer's; they must also explain the shipment's state now
    # (`serving.explain`). 0: never served, always computed.
    reasons_max_age_s: float = REASONS_MAX_AGE_S
    # SHIPDELAY_SERVE_CPUS ("1" or "0,1"): the cores each worker's threads may run on (unset:
    # any). One worker is one interpreter lock; pinned to one core, its event loop and its
    # batch thread stop handing the lock across cores (see benchmarks/README.md, service).
    cpus: frozenset[int] | None = None
    # SHIPDELAY_SERVE_GC_THRESHOLD ("50000,20,100"; "0": Python's own 700,10,10): the cycle
    # collector's thresholds. A loaded service allocates fast and keeps what it caches; with
    # Python's defaults, full passes over the caches came every second or so and took up to
    # ~130 ms each (a request that meets one waits that long), see benchmarks/README.md.
    gc_threshold: tuple[int, int, int] | None = GC_THRESHOLD
    # SHIPDELAY_SERVE_KEEPALIVE_REQUESTS: answers on one keep-alive connection before the
    # service closes it (0: never), so that connections spread over the workers again
    # (`serving.middleware.KeepAliveLimitMiddleware`).
    keepalive_requests: int = KEEPALIVE_REQUESTS
    # SHIPDELAY_MODEL_SOURCE: "mlflow" follows the registry's champion alias; "bentoml" serves
    # the model exported to BentoML's store (`serving.bento_export`), as a Bento's image does.
    model_source: str = MODEL_SOURCE

    @classmethod
    def from_env(cls) -> ServeOptions:
        env = os.environ
        as_of = env.get("SHIPDELAY_SERVE_AS_OF") or None
        return cls(
            refresh_seconds=refresh_seconds_from_env(),
            max_feature_age_h=float(env.get("SHIPDELAY_MAX_FEATURE_AGE_H") or MAX_FEATURE_AGE_H),
            max_body_bytes=int(env.get("SHIPDELAY_MAX_BODY_BYTES") or MAX_BODY_BYTES),
            as_of=None if as_of is None else _utc(pd.Timestamp(as_of)),
            reasons_from=_probability("SHIPDELAY_SERVE_REASONS_FROM", REASONS_FROM),
            cache_seconds=_seconds("SHIPDELAY_SERVE_CACHE_SECONDS", CACHE_SECONDS),
            reasons_seconds=_seconds("SHIPDELAY_SERVE_REASONS_SECONDS", REASONS_SECONDS),
            reasons_max_age_s=_seconds("SHIPDELAY_SERVE_REASONS_MAX_AGE_S", REASONS_MAX_AGE_S),
            cpus=_cpus("SHIPDELAY_SERVE_CPUS"),
            gc_threshold=_gc_threshold("SHIPDELAY_SERVE_GC_THRESHOLD"),
            keepalive_requests=int(_number("SHIPDELAY_SERVE_KEEPALIVE_REQUESTS",
                                           KEEPALIVE_REQUESTS,
                                           lambda v: v >= 0 and float(v).is_integer(),
                                           "a whole number, 0 or more")),
            model_source=_model_source("SHIPDELAY_MODEL_SOURCE"),
        )


def _model_source(name: str) -> str:
    text = (os.environ.get(name) or MODEL_SOURCE).strip().lower()
    if text not in ("mlflow", "bentoml"):
        raise ValueError(f"{name} must be mlflow or bentoml, not {text!r}")
    return text


def _gc_threshold(name: str) -> tuple[int, int, int] | None:
    text = (os.environ.get(name) or "").strip()
    if not text:
        return GC_THRESHOLD
    if text == "0":
        return None
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 1:
        raise ValueError(f"{name} must be three positive integers (gen0,gen1,gen2) or 0, "
                         f"not {text!r}")
    return values


def _cpus(name: str) -> frozenset[int] | None:
    text = (os.environ.get(name) or "").strip()
    if not text:
        return None
    allowed = os.sched_getaffinity(0)
    try:
        cpus = frozenset(int(part) for part in text.split(","))
    except ValueError:
        cpus = frozenset()
    if not cpus or not cpus <= allowed:
        raise ValueError(f"{name} must list cores this process may use ({sorted(allowed)}), "
                         f"comma-separated, not {text!r}")
    return cpus


def pin_threads(cpus: frozenset[int]) -> None:
    """Keep every thread of this process, and those it starts later, on `cpus` (Linux)."""
    for task in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(task), cpus)
        except ProcessLookupError:  # the thread ended meanwhile
            pass


def _number(name: str, default: float, ok, what: str) -> float:
    """The number in environment variable `name` (default when unset), refused unless `ok`."""
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not ok(value):
        raise ValueError(f"{name} must be {what}, not {text!r}")
    return value


def _seconds(name: str, default: float) -> float:
    return _number(name, default, lambda v: 0.0 <= v < float("inf"),
                   "a number of seconds, 0 or more")


def _probability(name: str, default: float) -> float:
    return _number(name, default, lambda v: 0.0 <= v <= 1.0, "a probability between 0 and 1")
