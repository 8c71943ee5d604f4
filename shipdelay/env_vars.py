"""Environment variables that are not `Settings` fields: the serving knobs (`serving.options` and
the modules it names), the start-up reporting of `shipdelay ask`, and test hooks.

`shipdelay config` prints them in its "serving" table with their current value, default and
meaning. The modules that read them keep their own parsing and defaults (read when a service
or command starts, never at import of this list); `tests/unit/test_config_lists_all.py` checks
that every SHIPDELAY_* name the product's code mentions is here or a setting, and that the
defaults written here are the ones the code applies. Importing this module costs nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class EnvVar:
    name: str
    default: str  # as the code applies it when the variable is unset or empty
    meaning: str  # one line

    def current(self) -> str | None:
        """The value set in this process's environment, or None."""
        return os.environ.get(self.name) or None


UNSET = "(unset)"

ENV_VARS: tuple[EnvVar, ...] = (
    # the prediction service (serving/options.py, serving/service.py, serving/model_holder.py)
    EnvVar("SHIPDELAY_MODEL_SOURCE", "mlflow", "where the service loads its model: mlflow = "
           "the registry's champion alias, followed live; bentoml = the model exported to "
           "BentoML's store (`shipdelay export-bento`), as a Bento does"),
    EnvVar("SHIPDELAY_MODEL_REFRESH_SECONDS", "30", "how often the service checks the champion "
           "alias for a newly promoted version (0: on every request)"),
    EnvVar("SHIPDELAY_PREDICT_THREADS", "1", "OpenMP threads of one LightGBM predict call in a "
           "service worker"),
    EnvVar("SHIPDELAY_COMPILED_TREES", "1", "1: compile the champion's trees in the background "
           "and swap them in; wait: compile before serving; 0: LightGBM only"),
    EnvVar("SHIPDELAY_MAX_FEATURE_AGE_H", "72", "answers whose features are older than this "
           "many hours are marked stale (when the shipment's mode gives no limit)"),
    EnvVar("SHIPDELAY_MAX_BODY_BYTES", "1000000", "largest request body the service reads; "
           "413 beyond"),
    EnvVar("SHIPDELAY_SERVE_AS_OF", UNSET, "freeze the service clock at this ISO time "
           "(simulated worlds, replays); unset in production"),
    EnvVar("SHIPDELAY_SERVE_REASONS_FROM", "0.6", "/predict explains shipments with P(late) at "
           "least this (0: every shipment); default: the high-risk band"),
    EnvVar("SHIPDELAY_SERVE_REASONS_SECONDS", "300", "seconds /predict remembers a shipment's "
           "reasons while its state is unchanged (0: always computed)"),
    EnvVar("SHIPDELAY_SERVE_REASONS_MAX_AGE_S", "3600", "oldest reasons stored by the stream or "
           "the batch that /predict serves, in seconds (0: always computed)"),
    EnvVar("SHIPDELAY_SERVE_CACHE_SECONDS", "60", "seconds the direct online reader keeps rows "
           "only a feature build changes (0: read every time)"),
    EnvVar("SHIPDELAY_SERVE_CPUS", UNSET, "cores each worker's threads may run on, e.g. 0 or "
           "0,1 (unset: any)"),
    EnvVar("SHIPDELAY_SERVE_GC_THRESHOLD", "50000,20,100", "the cycle collector's thresholds in "
           "a worker (0: Python's own 700,10,10)"),
    EnvVar("SHIPDELAY_SERVE_KEEPALIVE_REQUESTS", "100", "answers on one keep-alive connection "
           "before the service closes it (0: never)"),
    EnvVar("SHIPDELAY_SERVE_BATCHING", "1", "merge concurrent /predict requests into one "
           "scoring call (0: off); read when the service module loads"),
    EnvVar("SHIPDELAY_SERVE_NOOP", UNSET, "1 adds POST /noop, the service benchmark's "
           "reference route; never in production"),
    # starting the service and waiting for it (serving/startup.py, serving/demo.py)
    EnvVar("SHIPDELAY_SERVE_STATUS_FILE", UNSET, "file where a starting worker writes its phase; "
           "`shipdelay ask` sets it to follow the start"),
    EnvVar("SHIPDELAY_SERVE_START_DELAY_SECONDS", "0", "slow a service start by this many "
           "seconds while reporting progress (tests of the start watcher)"),
    EnvVar("SHIPDELAY_ASK_PATIENCE_SECONDS", "300", "`shipdelay ask` gives up after this many "
           "seconds without start-up progress"),
    EnvVar("SHIPDELAY_ASK_START_LIMIT_SECONDS", "3600", "... or after this many seconds of "
           "start-up in all"),
    # test hooks
    EnvVar("SHIPDELAY_LAKE_FAILPOINT", UNSET, "tests of crashes: stop a lake write at "
           "after-file:N or before-commit"),
)


def by_name() -> dict[str, EnvVar]:
    return {v.name: v for v in ENV_VARS}
