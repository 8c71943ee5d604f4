"""The champion's boosters compiled to native code (lleaves, on LLVM) for the online scorers.

LightGBM's `predict` on the few rows a request carries is mostly a fixed cost per call plus the
tree walks: ~0.03 ms for one row and ~1.1 ms for 100 rows per booster of the default demo
world, four boosters per request. Compiled trees give the same numbers (within ~1e-13: only the
order of the float sums differs) in ~0.008 and ~0.3 ms. A booster compiles in a process of its
own (`serving.compile_worker`), one per booster and at most one per core, while the scorer
keeps answering with LightGBM (`CompileRun`; `serving.model_holder` swaps the compiled
boosters in when all are done).

Objects are kept on disk (`<data_dir>/compiled/<sha256 of the model>-<machine key>.o`, the
folder 0700, the files 0600; the newest `KEEP_OBJECTS` kept) so that a restart, a second
worker or a reload loads them in milliseconds; but a file is loaded only when its SHA-256
equals the digest recorded when it was compiled (`Ledger`: the registry's model version tags,
which whoever can write the cache folder cannot change). A file that does not match is not
loaded: it is compiled again, and the rejection is logged and counted (`counts`).

Explanations (`pred_contrib`, LightGBM's TreeSHAP) and raw scores stay LightGBM's own: the
wrapper hands every other call to the booster. A booster that cannot be compiled (lleaves does
not know its objective, the process died) keeps predicting with LightGBM and the reason is
logged: the compiled path is a speed-up, never a condition for serving.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from ctypes import POINTER, c_double
from pathlib import Path

import lightgbm as lgb
import numpy as np

from serving import compile_job, compile_worker
from serving.compiled_cache import (  # noqa: F401 - KEEP_OBJECTS, machine_key: public here too
    KEEP_OBJECTS,
    Ledger,
    MemoryLedger,
    RegistryLedger,
    machine_key,
    object_path,
    prune,
    secure_cache,
)
from training.bundle import Bundle

log = logging.getLogger(__name__)

# "1" (default): serve with LightGBM while compiling in the background; "wait": compile before
# a version serves; "0": LightGBM's own predict everywhere
ENV = "SHIPDELAY_COMPILED_TREES"
# outcomes since the process started: compiled, reused (from the cache), rejected (digest
# mismatch), unrecorded (no digest to check against), failed
counts: Counter[str] = Counter()
_load_lock = threading.Lock()  # LLVM's engine set-up, one at a time
PARALLEL_ROWS = 50_000  # rows per core before a prediction is split across the cores


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        (os.cpu_count() or 1)


def mode() -> str:
    """"off", "wait" or "background", from `ENV`."""
    raw = os.environ.get(ENV, "1").strip().lower()
    if raw in ("0", "false", "no", "off"):
        return "off"
    return "wait" if raw == "wait" else "background"


def enabled() -> bool:
    return mode() != "off"


class NativeForest:
    """A compiled forest loaded from object code: `predict(X)` for rows of `n_features`."""

    def __init__(self, data: bytes, n_features: int):
        binding = compile_worker.llvm()
        with _load_lock:
            engine = binding.create_mcjit_compiler(binding.parse_assembly(""),
                                                   compile_worker.target_machine())
            engine.set_object_cache(getbuffer_func=lambda _module: data)
            engine.finalize_object()
            engine.run_static_constructors()
        address = engine.get_function_address(compile_worker.ROOT)
        if not address:
            raise ValueError(f"the object code has no {compile_worker.ROOT} function")
        self._engine = engine  # owns the code: keep it as long as the function
        self._entry = compile_worker.ENTRY_TYPE(address)
        self.n_features = n_features

    def predict(self, X) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"rows must have {self.n_features} features, got shape {X.shape}")
        out = np.zeros(len(X))  # the trees' sums are added into it
        rows, sums = X.ctypes.data_as(POINTER(c_double)), out.ctypes.data_as(POINTER(c_double))
        parts = min(_cores(), len(X) // PARALLEL_ROWS)
        if parts <= 1:
            self._entry(rows, sums, 0, len(X))
            return out
        # a batch's millions of rows: one range per core (the call releases the interpreter
        # lock; each range writes only its own sums)
        bounds = np.linspace(0, len(X), parts + 1).astype(int)
        threads = [threading.Thread(target=self._entry, args=(rows, sums, a, b))
                   for a, b in itertools.pairwise(bounds.tolist())]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return out


class CompiledBooster:
    """A LightGBM booster whose plain predictions come from its compiled trees."""

    def __init__(self, booster: lgb.Booster, compiled: NativeForest) -> None:
        self.booster = booster
        self.compiled = compiled

    def predict(self, X, raw_score: bool = False, pred_contrib: bool = False, **kwargs):
        if raw_score or pred_contrib or kwargs.keys() - {"num_threads"}:
            return self.booster.predict(X, raw_score=raw_score, pred_contrib=pred_contrib,
                                        **kwargs)
        return self.compiled.predict(X)

    def __getattr__(self, name: str):
        return getattr(self.booster, name)


def _probe(n_features: int) -> np.ndarray:
    """Rows that walk many branches: a fixed pseudo-random spread, zeros and missing values."""
    rows = np.random.default_rng(20240301).normal(0, 50, (62, n_features))
    rows[::3, ::2] = np.nan
    return np.vstack([rows, np.zeros(n_features), np.full(n_features, np.nan)])


def booster_names(bundle: Bundle) -> dict[str, lgb.Booster]:
    return {"classifier": bundle.classifier,
            **{f"delay_q{int(q * 100):02d}": b for q, b in bundle.quantiles.items()}}


class CompileRun:
    """Compiling one bundle's boosters: `run()` inline, or `start()` in a thread; `cancel()`
    kills its processes. `done`/`total` report progress, `failures` the boosters left to
    LightGBM and why; `compiled_bundle()` is a copy of the bundle with the compiled boosters.
    `on_progress(done, total)` and `on_rejected(name)` are called from the compiling thread."""

    def __init__(self, bundle: Bundle, cache: Path, ledger: Ledger | None = None, *,
                 on_progress: Callable[[int, int], None] | None = None,
                 on_rejected: Callable[[str], None] | None = None):
        self.bundle = bundle
        self.cache = cache
        self.ledger = ledger if ledger is not None else MemoryLedger()
        self.on_progress, self.on_rejected = on_progress, on_rejected
        self.boosters = booster_names(bundle)
        self.total, self.done = len(self.boosters), 0
        self.compiled: dict[str, CompiledBooster] = {}
        self.failures: dict[str, str] = {}
        self.finished = threading.Event()
        self.cancelled = threading.Event()
        self._processes: set = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self, then: Callable[[CompileRun], None] | None = None) -> CompileRun:
        """Compile in a thread of its own; then, unless cancelled, call `then(self)` there."""
        self._thread = threading.Thread(target=self._run_quietly, args=(then,), daemon=True,
                                        name=f"compile-{self.bundle.version}")
        self._thread.start()
        return self

    def _run_quietly(self, then: Callable[[CompileRun], None] | None) -> None:
        try:
            self.run()
            if then is not None and not self.cancelled.is_set():
                then(self)
        except Exception:  # a background thread has nobody to raise to
            log.exception("compiling model version %s failed", self.bundle.version)
        finally:
            self.finished.set()

    def cancel(self, wait: float | None = 10.0) -> None:
        """Stop compiling: kill the running processes and wait for the thread."""
        self.cancelled.set()
        compile_job.stop(self._processes)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(wait)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the run (and its `then`) has finished; False on timeout."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return self.finished.wait(timeout)

    def run(self) -> CompileRun:
        started = time.perf_counter()
        try:
            secure_cache(self.cache)
        except OSError as err:
            self.failures = {name: f"the cache folder is not usable ({err})"
                             for name in self.boosters}
            self.done = self.total
            self.finished.set()
            self._report(time.perf_counter() - started)
            return self
        try:
            outcomes = self._each_booster()
            for name in self.boosters:
                outcome = outcomes.get(name, "the compile was cancelled")
                if isinstance(outcome, CompiledBooster):
                    self.compiled[name] = outcome
                else:
                    self.failures[name] = outcome
            prune(self.cache)
        finally:
            self.finished.set()
        self._report(time.perf_counter() - started)
        return self

    def _each_booster(self) -> dict[str, CompiledBooster | str]:
        """Every booster's outcome, `compile_job.parallelism` at a time. The threads are
        daemons (not a thread pool's, which interpreter exit would wait for): at exit nothing
        waits for a compile, and the processes are killed."""
        pending = iter(self.boosters.items())
        outcomes: dict[str, CompiledBooster | str] = {}
        lock = threading.Lock()

        def work() -> None:
            while not self.cancelled.is_set():
                with lock:
                    item = next(pending, None)
                if item is None:
                    return
                outcomes[item[0]] = self._one_quietly(item)

        threads = [threading.Thread(target=work, daemon=True, name=f"compile-{k}")
                   for k in range(compile_job.parallelism(self.total))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return outcomes

    def _report(self, seconds: float) -> None:
        version = self.bundle.version
        if self.cancelled.is_set():
            log.info("compiling model version %s stopped: a newer model or shutdown", version)
            return
        if self.failures:
            counts["failed"] += len(self.failures)
            reasons = "; ".join(f"{n}: {r}" for n, r in self.failures.items())
            log.warning("model version %s: %d of %d boosters keep predicting with LightGBM "
                        "because they could not be compiled (%s)", version, len(self.failures),
                        self.total, reasons)
        log.info("model version %s: %d of %d boosters predict from compiled trees (%.1f s)",
                 version, len(self.compiled), self.total, seconds)

    def _one_quietly(self, item: tuple[str, lgb.Booster]) -> CompiledBooster | str:
        name, booster = item
        try:
            return self._one(name, booster)
        except compile_job.CompileFailed as err:
            return str(err)
        except Exception as err:  # noqa: BLE001 - that booster keeps LightGBM
            return f"{type(err).__name__}: {err}"
        finally:
            with self._lock:
                self.done += 1
                done = self.done
            if self.on_progress is not None and not self.cancelled.is_set():
                self.on_progress(done, self.total)

    def _one(self, name: str, booster: lgb.Booster) -> CompiledBooster:
        if booster.num_model_per_iteration() != 1:
            raise compile_job.CompileFailed("compiled trees give one output per row only")
        text = booster.model_to_string()
        path = object_path(self.cache, text)
        data = self._cached(name, path)
        if data is None:
            data = self._compile(name, text, path)
        compiled = CompiledBooster(booster, NativeForest(data, booster.num_feature()))
        probe = _probe(booster.num_feature())
        if not np.allclose(compiled.predict(probe), booster.predict(probe, num_threads=1),
                           rtol=1e-9, atol=1e-9):
            raise compile_job.CompileFailed("its compiled trees disagree with LightGBM")
        return compiled

    def _cached(self, name: str, path: Path) -> bytes | None:
        """The bytes of `path` when they are what was recorded for `name`, else None."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        expected = self.ledger.recorded(name)
        if expected is None:
            counts["unrecorded"] += 1
            log.info("compiled object %s of booster %s has no recorded SHA-256; compiling "
                     "it again", path.name, name)
            return None
        if hashlib.sha256(data).hexdigest() != expected:
            counts["rejected"] += 1
            log.warning("compiled object %s of booster %s (model version %s) does not match "
                        "the SHA-256 recorded when it was compiled: not loaded, compiling it "
                        "again", path.name, name, self.bundle.version)
            if self.on_rejected is not None:
                self.on_rejected(name)
            return None
        counts["reused"] += 1
        return data

    def _compile(self, name: str, text: str, path: Path) -> bytes:
        workdir = Path(tempfile.mkdtemp(prefix="compile-", dir=self.cache))  # 0700
        try:
            data = compile_job.run_compile(text, workdir, self.cancelled, self._processes)
            os.replace(workdir / "model.o", path)  # whole: a reader never sees half a file
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        counts["compiled"] += 1
        digest = hashlib.sha256(data).hexdigest()
        if self.ledger.recorded(name) != digest:
            try:
                self.ledger.record(name, digest)
            except Exception as err:  # noqa: BLE001 - served from memory; recompiled next time
                log.warning("could not record the SHA-256 of booster %s's compiled object "
                            "(%s: %s); it will be compiled again at the next load", name,
                            type(err).__name__, err)
        return data

    def compiled_bundle(self) -> Bundle | None:
        """A copy of the bundle whose boosters are the compiled ones (where compiled), or
        None when none is."""
        if not self.compiled:
            return None
        c = self.compiled
        return dataclasses.replace(
            self.bundle, classifier=c.get("classifier", self.bundle.classifier),
            quantiles={q: c.get(f"delay_q{int(q * 100):02d}", b)
                       for q, b in self.bundle.quantiles.items()})


def compiled_for(settings, bundle: Bundle) -> Bundle:
    """`bundle` with its boosters compiled as the service's holder compiles them (the same
    cache folder, `<data_dir>/compiled`, and the registry's ledger, so a version the service
    or the stream compiled on this machine loads in milliseconds), for a scorer that starts,
    scores and stops: the nightly batch. LightGBM's own boosters where compiled trees are off
    (`ENV` = 0) or a booster cannot be compiled (the reason logged, as for the service)."""
    if mode() == "off":
        return bundle
    ledger = RegistryLedger(settings, bundle.version)
    run = CompileRun(bundle, settings.data_dir / "compiled", ledger).run()
    return run.compiled_bundle() or bundle


def compile_bundle(bundle: Bundle, cache: Path, ledger: Ledger | None = None) -> list[str]:
    """Compile `bundle`'s boosters now and swap them in place; returns the names of those left
    to LightGBM (with the reason logged). Without a `ledger`, objects already on disk are not
    trusted and everything compiles again."""
    run = CompileRun(bundle, cache, ledger).run()
    compiled = run.compiled_bundle()
    if compiled is not None:
        bundle.classifier, bundle.quantiles = compiled.classifier, compiled.quantiles
    return list(run.failures)
