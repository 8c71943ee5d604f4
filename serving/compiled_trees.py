"""The champion's boosters compiled to native code (lleaves, on LLVM) for the online scorers.

LightGBM's `predict` on the few rows a request carries is mostly a fixed cost per call (input
checks, a predictor set up for every call) plus the tree walks: ~0.1-0.7 ms per booster for 100
rows here, four boosters per request. lleaves compiles each booster's trees into one native
function that gives the same numbers (within ~1e-14: only the order of the float sums differs)
in ~0.01-0.04 ms for 100 rows. Compiling takes ~1-5 s a booster on this machine, so it is done
once per model text and kept on disk (`<data_dir>/compiled/<sha256 of the model>.o`): a restart,
a second worker or a reload of the same version loads it in milliseconds. The cache keeps the
newest `KEEP_OBJECTS` files.

Explanations (`pred_contrib`, LightGBM's TreeSHAP) and raw scores stay LightGBM's own: the
wrapper hands every other call to the booster. When lleaves cannot compile a booster (not
installed, an objective it does not know), that booster keeps predicting with LightGBM and the
reason is logged: the compiled path is a speed-up, never a condition for serving.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from pathlib import Path

import lightgbm as lgb
import numpy as np

from training.bundle import Bundle

log = logging.getLogger(__name__)

ENV = "SHIPDELAY_COMPILED_TREES"  # "0" keeps LightGBM's own predict everywhere
# object files kept in the cache: the four boosters of the last four versions compiled; older
# ones are removed when a new one is written (a version promoted again compiles again, ~15 s;
# a process that already loaded an object keeps it in memory)
KEEP_OBJECTS = 16


def enabled() -> bool:
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


class CompiledBooster:
    """A LightGBM booster whose plain predictions come from its compiled trees."""

    def __init__(self, booster: lgb.Booster, compiled) -> None:
        self.booster = booster
        self.compiled = compiled

    def predict(self, X, raw_score: bool = False, pred_contrib: bool = False, **kwargs):
        if raw_score or pred_contrib or kwargs.keys() - {"num_threads"}:
            return self.booster.predict(X, raw_score=raw_score, pred_contrib=pred_contrib,
                                        **kwargs)
        return self.compiled.predict(np.ascontiguousarray(X, dtype=np.float64), n_jobs=1)

    def __getattr__(self, name: str):
        return getattr(self.booster, name)


def compile_booster(booster: lgb.Booster, cache: Path) -> CompiledBooster:
    """`booster` with compiled trees, from `cache` when this model text was compiled before."""
    import lleaves

    text = booster.model_to_string()
    digest = hashlib.sha256(text.encode()).hexdigest()[:24]
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"{digest}.o"
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        model_file = Path(tmp) / "model.txt"
        model_file.write_text(text)
        model = lleaves.Model(model_file=str(model_file))
        if target.exists():
            model.compile(cache=str(target))
        else:  # compiled aside and renamed: a reader never sees half an object file
            partial = Path(tmp) / "model.o"
            model.compile(cache=str(partial))
            os.replace(partial, target)
            prune(cache)
    return CompiledBooster(booster, model)


def prune(cache: Path, keep: int = KEEP_OBJECTS) -> None:
    """Remove all but the `keep` newest object files from `cache`."""
    def written(path: Path) -> float:
        try:
            return path.stat().st_mtime
        except FileNotFoundError:  # removed meanwhile by another worker
            return float("inf")

    for old in sorted(cache.glob("*.o"), key=written, reverse=True)[keep:]:
        old.unlink(missing_ok=True)


def compile_bundle(bundle: Bundle, cache: Path) -> list[str]:
    """Swap each of `bundle`'s boosters for its compiled form in place; returns the names of
    those left to LightGBM (with the reason logged)."""
    started = time.perf_counter()
    left = []
    boosters = {"classifier": bundle.classifier,
                **{f"delay_q{int(q * 100):02d}": b for q, b in bundle.quantiles.items()}}
    compiled = {}
    for name, booster in boosters.items():
        try:
            compiled[name] = compile_booster(booster, cache)
        except Exception as err:  # noqa: BLE001 - LightGBM's own predict still serves
            log.warning("booster %s of model version %s predicts with LightGBM: %s: %s", name,
                        bundle.version, type(err).__name__, err)
            left.append(name)
    bundle.classifier = compiled.get("classifier", bundle.classifier)
    bundle.quantiles = {q: compiled.get(f"delay_q{int(q * 100):02d}", b)
                        for q, b in bundle.quantiles.items()}
    log.info("model version %s: %d of %d boosters predict from compiled trees (%.1f s)",
             bundle.version, len(compiled), len(boosters), time.perf_counter() - started)
    return left
