"""The champion model of a long-running scorer, swapped in place when the registry moves the alias.

`ModelHolder` loads the version the "champion" alias points at, refuses it when the
FeatureService the online path reads lacks a feature it needs (docs/design.md, principle 2), and
`maybe_reload()` (cheap; call it on every request or probe) checks the alias again at most every
`refresh_seconds`, in a background thread so that no request waits for a download. Promotion
and rollback are therefore deployments without a restart. When the registry cannot be reached,
the alias is gone, or the new version fails to load or is refused, the last good model keeps
serving; each outcome is logged and reported to `on_event` (the service counts them).

A version serves as soon as its boosters are loaded, with LightGBM's own predict; meanwhile its
boosters are compiled to machine code in processes of their own (`serving.compiled_trees`), and
when all are done a Scorer on the compiled boosters replaces it: the same numbers (within
float rounding), a few times faster. `phase()` says where that stands. If compiling fails, the
LightGBM scorer stays and one line says why. SHIPDELAY_COMPILED_TREES=wait compiles before a
version serves (as does `background=False`), =0 never compiles.

A swap is one attribute assignment: a request reads `holder.scorer` once and keeps that
Scorer, so it never mixes two versions (nor compiled and LightGBM boosters).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
from feast.errors import FeatureServiceNotFoundException

from features.feature_sets import from_service
from features.online import FeatureServiceMismatch, require_features
from features.schema import CATEGORICAL, FEATURE_SERVICE
from registry.loader import CHAMPION, alias_version, load_by_alias
from serving import compiled_trees
from serving.scorer import Scorer
from shipdelay.settings import Settings
from training.bundle import Bundle

log = logging.getLogger(__name__)

REFRESH_ENV = "SHIPDELAY_MODEL_REFRESH_SECONDS"
THREADS_ENV = "SHIPDELAY_PREDICT_THREADS"
DEFAULT_REFRESH_SECONDS = 30.0

# Outcomes reported to `on_event`.
LOADED = "loaded"
REGISTRY_ERROR = "registry_error"
NO_CHAMPION = "no_champion"
LOAD_ERROR = "load_error"
REFUSED = "refused"
COMPILED_OBJECT_REJECTED = "compiled_object_rejected"  # a cached object failed its digest check
COMPILE_FAILED = "compile_failed"  # some boosters stay with LightGBM

# What `ModelHolder.phase()` returns (COMPILING and PARTLY_COMPILED carry "n/m" boosters).
LOADING = "loading"  # no model served yet: loading the first one
NO_MODEL = "no-model"  # nothing servable (no champion, registry unreachable, refused)
COMPILING = "compiling"  # "compiling 1/4": serving with LightGBM while compiling
READY_WITH_LIGHTGBM = "ready-with-lightgbm"  # compiled trees off, or none could be compiled
READY_COMPILED = "ready-compiled"  # every booster predicts from compiled trees
PARTLY_COMPILED = "ready-partly-compiled"  # "ready-partly-compiled 3/4": the rest LightGBM


def refresh_seconds_from_env(default: float = DEFAULT_REFRESH_SECONDS) -> float:
    raw = os.environ.get(REFRESH_ENV)
    try:
        return max(0.0, float(raw)) if raw else default
    except ValueError:
        log.warning("%s=%r is not a number; using %s s", REFRESH_ENV, raw, default)
        return default


def limit_threads(bundle: Bundle, threads: int) -> None:
    """Make every booster of `bundle` predict with `threads` OpenMP threads.

    LightGBM's default (all cores) costs ~8 ms of thread start-up per call on a busy 2-core
    machine, against ~0.1 ms single-threaded for the few rows a request carries; a server gets
    its parallelism from concurrent requests and workers instead."""
    for booster in (bundle.classifier, *bundle.quantiles.values()):
        booster.predict = functools.partial(booster.predict, num_threads=threads)


def check_servable(bundle: Bundle, store) -> None:
    """Raise FeatureServiceMismatch unless the online path can supply every feature `bundle`
    was trained on: same FeatureService, and the store's service provides all its features."""
    spec = bundle.spec
    try:  # the online path reads FEATURE_SERVICE: a model may use it or one of its feature sets
        feature_set = from_service(spec.service)
    except ValueError:
        raise FeatureServiceMismatch(
            f"model version {bundle.version} was trained on FeatureService '{spec.service}', "
            f"but the online path reads '{FEATURE_SERVICE}' and its feature sets") from None
    outside = [f for f in spec.inputs if f not in set(feature_set.features)]
    if outside:
        raise FeatureServiceMismatch(
            f"model version {bundle.version} needs feature(s) its FeatureService "
            f"'{spec.service}' does not hold: " + ", ".join(outside))
    if store is not None:
        try:
            require_features(store, list(spec.inputs), spec.service)
        except FeatureServiceNotFoundException:
            store.refresh_registry()  # applied by a training run since the store last looked
            try:
                require_features(store, list(spec.inputs), spec.service)
            except FeatureServiceNotFoundException:
                raise FeatureServiceMismatch(
                    f"model version {bundle.version} was trained on FeatureService "
                    f"'{spec.service}', which the feature store does not hold (a training "
                    "run applies it)") from None


def warm_up(scorer: Scorer) -> None:
    """Score one empty row: proves the boosters load and predict before the swap."""
    row = {f: (None if f in CATEGORICAL else np.nan) for f in scorer.inputs}
    scorer.score(pd.DataFrame([row]).assign(shipment_id="warm-up",
                                            request_time_s=time.time()))


class ModelHolder:
    """Holds the current champion Scorer and follows the alias without a restart.

    `store` is the Feast store whose FeatureService a model must match (default: the one
    `settings` describe); `background=False` makes `maybe_reload` check inline and compile
    before a version serves; `on_event` receives (outcome, version) for each load, refusal or
    failure; `on_phase` receives each new `phase()`. `close()` stops a compile under way."""

    def __init__(self, settings: Settings, refresh_seconds: float = DEFAULT_REFRESH_SECONDS, *,
                 store=None, alias: str = CHAMPION, background: bool = True,
                 on_event: Callable[[str, str | None], None] | None = None,
                 predict_threads: int | None = None, clock: Callable[[], float] = time.monotonic,
                 on_phase: Callable[[str], None] | None = None):
        self.settings = settings
        self.refresh_seconds = float(refresh_seconds)
        if store is None:
            from features.store import get_store

            store = get_store(settings)
        self.store = store
        self.alias = alias
        self.background = background
        self.on_event = on_event
        self.predict_threads = predict_threads or int(os.environ.get(THREADS_ENV, "1") or 1)
        self.clock = clock
        self.last_error: str | None = None
        self._scorer: Scorer | None = None
        self._check_lock = threading.Lock()  # one check at a time
        self._schedule_lock = threading.Lock()
        self._last_check = -np.inf
        self._worker: threading.Thread | None = None
        self._failed: set[str] = set()  # versions already logged as failing (log once)
        self.on_phase = on_phase
        self._phase = ""
        self._set_phase(LOADING)
        self._compile: compiled_trees.CompileRun | None = None  # the served version's, if any
        self._swap_lock = threading.Lock()  # a reload and a compiled swap never interleave
        self.check()

    @property
    def scorer(self) -> Scorer | None:
        """The current Scorer (None until a champion loads). Read it once per request."""
        return self._scorer

    @property
    def version(self) -> str | None:
        scorer = self._scorer
        return None if scorer is None else scorer.version

    @property
    def ready(self) -> bool:
        return self._scorer is not None

    def phase(self) -> str:
        """Where serving stands: "loading", "no-model", "compiling n/m" (answering with
        LightGBM while n of m boosters are compiled), "ready-with-lightgbm",
        "ready-partly-compiled n/m" or "ready-compiled"."""
        return self._phase

    def _set_phase(self, phase: str) -> None:
        if phase == self._phase:
            return
        self._phase = phase
        if self.on_phase is not None:
            try:
                self.on_phase(phase)
            except Exception:  # reporting must never break serving
                log.exception("model phase callback failed")

    def _event(self, outcome: str, version: str | None) -> None:
        if self.on_event is not None:
            try:
                self.on_event(outcome, version)
            except Exception:  # metrics must never break serving
                log.exception("model event callback failed")

    def _fail(self, outcome: str, version: str | None, message: str, exc: bool = False) -> bool:
        self.last_error = message
        if self._scorer is None:
            self._set_phase(NO_MODEL)
        key = f"{outcome}:{version}"
        if key not in self._failed:  # a version that keeps failing is logged once
            self._failed.add(key)
            (log.exception if exc else log.error)("%s; serving version %s", message, self.version)
        self._event(outcome, version)
        return False

    def check(self) -> bool:
        """Compare the alias with the served version now, and swap in a new version if it loads
        and is servable. Returns True when the model changed."""
        with self._check_lock:
            self._last_check = self.clock()
            try:
                wanted = self._wanted_version()
            except Exception as err:  # noqa: BLE001 - any failure: keep serving the last good
                self.last_error = f"registry unreachable: {type(err).__name__}: {err}"
                log.warning("%s; keeping version %s", self.last_error, self.version)
                if self._scorer is None:
                    self._set_phase(NO_MODEL)
                self._event(REGISTRY_ERROR, None)
                return False
            if wanted is None:
                return self._fail(NO_CHAMPION, None,
                                  f"no model version has the alias '{self.alias}'")
            if wanted == self.version:
                return False
            mode = compiled_trees.mode()
            inline = mode == "wait" or (mode == "background" and not self.background)
            run = None
            try:
                bundle = self._load_bundle()
                check_servable(bundle, self.store)
                limit_threads(bundle, self.predict_threads)
                if mode != "off":
                    run = self._compile_run(bundle)
                if inline:
                    bundle = run.run().compiled_bundle() or bundle
                    self._compile_finished(run)
                scorer = Scorer(bundle)
                warm_up(scorer)
            except FeatureServiceMismatch as err:
                return self._fail(REFUSED, wanted, f"refused model version {wanted}: {err}")
            except Exception as err:  # noqa: BLE001 - a broken version must not stop serving
                return self._fail(LOAD_ERROR, wanted,
                                  f"model version {wanted} failed to load: {err}", exc=True)
            with self._swap_lock:
                previous, replaced = self.version, self._compile
                self._scorer = scorer
                self._compile = run
                self.last_error = None
                self._set_phase(READY_WITH_LIGHTGBM if run is None else
                                _compiled_phase(run) if inline else
                                f"{COMPILING} {run.done}/{run.total}")
            if replaced is not None and replaced is not run:
                replaced.cancel(wait=0)  # an older version's compile: no longer wanted
            log.info("serving model version %s (was %s)", scorer.version, previous)
            self._event(LOADED, scorer.version)
            if run is not None and not inline:
                run.start(then=self._swap_compiled)
            return True

    # Where versions come from: the registry's alias here; `serving.bento_export` overrides
    # these three for a model exported to BentoML's store.
    def _wanted_version(self) -> str | None:
        return alias_version(self.settings, self.alias)

    def _load_bundle(self) -> Bundle:
        return load_by_alias(self.settings, self.alias)

    def _ledger(self, version: str):
        return compiled_trees.RegistryLedger(self.settings, version)

    def _compile_run(self, bundle: Bundle) -> compiled_trees.CompileRun:
        version = bundle.version
        ledger = self._ledger(version)

        def progress(done: int, total: int) -> None:
            if self._scorer is None or self.version == version:  # else an older one serves
                self._set_phase(f"{COMPILING} {done}/{total}")

        return compiled_trees.CompileRun(
            bundle, self.settings.data_dir / "compiled", ledger, on_progress=progress,
            on_rejected=lambda _name: self._event(COMPILED_OBJECT_REJECTED, version))

    def _compile_finished(self, run: compiled_trees.CompileRun) -> None:
        if run.failures and not run.cancelled.is_set():
            self._event(COMPILE_FAILED, run.bundle.version)

    def _swap_compiled(self, run: compiled_trees.CompileRun) -> None:
        """Serve `run`'s compiled boosters if its version is still the one served."""
        self._compile_finished(run)
        compiled = run.compiled_bundle()
        scorer = None
        if compiled is not None:
            try:
                scorer = Scorer(compiled)
                warm_up(scorer)
            except Exception:
                log.exception("model version %s: its compiled trees failed to score; keeping "
                              "LightGBM", run.bundle.version)
                scorer = None
        with self._swap_lock:
            if self._compile is not run or run.cancelled.is_set():
                return  # a newer version took over meanwhile
            if scorer is not None:
                self._scorer = scorer
                log.info("model version %s now predicts from compiled trees", scorer.version)
            self._set_phase(_compiled_phase(run) if scorer is not None else READY_WITH_LIGHTGBM)

    def wait_compiled(self, timeout: float | None = None) -> bool:
        """Wait until the served version's compile (if any) has ended and its result is
        served; False on timeout."""
        run = self._compile
        return True if run is None else run.wait(timeout)

    def close(self) -> None:
        """Stop a compile under way (its processes are killed); the model keeps serving."""
        run = self._compile
        if run is not None:
            run.cancel()

    def maybe_reload(self) -> None:
        """Start a check if the last one is older than `refresh_seconds` and none is running.
        Never blocks on the registry when `background` is set."""
        if self.clock() - self._last_check < self.refresh_seconds:
            return
        with self._schedule_lock:
            if self.clock() - self._last_check < self.refresh_seconds or self._check_lock.locked():
                return
            self._last_check = self.clock()  # no stampede while the check runs
            if not self.background:
                self.check()
                return
            self._worker = threading.Thread(target=self._check_quietly, name="model-reload",
                                            daemon=True)
            self._worker.start()

    def _check_quietly(self) -> None:
        try:
            self.check()
        except Exception:  # a background thread has nobody to raise to
            log.exception("model reload check failed")

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a background check in progress (tests, shutdown)."""
        worker = self._worker
        if worker is not None:
            worker.join(timeout)


def _compiled_phase(run: compiled_trees.CompileRun) -> str:
    n = len(run.compiled)
    return (READY_WITH_LIGHTGBM if n == 0 else READY_COMPILED if n == run.total else
            f"{PARTLY_COMPILED} {n}/{run.total}")
