"""What the prediction service is doing while it starts, for whoever started it.

A worker answers nothing, not even /readyz, until its service object is built, and building it
can take minutes: opening the feature store, loading the champion and, the first time a version
is served, compiling its trees to machine code. When `SHIPDELAY_SERVE_STATUS_FILE` names a
file, the service writes its phase there (JSON: phase, detail, pid, time), replaced atomically
at each change, so that `shipdelay ask` can show it and tell a slow start from a dead one.
Without the variable nothing is written.

`SHIPDELAY_SERVE_START_DELAY_SECONDS` makes a start slower by that many seconds while still
reporting progress every second: how the tests show that `shipdelay ask` waits for a start
that takes longer than it would have waited before.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

STATUS_ENV = "SHIPDELAY_SERVE_STATUS_FILE"
DELAY_ENV = "SHIPDELAY_SERVE_START_DELAY_SECONDS"

STARTING = "starting"
OPENING_STORE = "opening the feature store"
SLOWED = "slowed down on purpose"
LOADING_MODEL = "loading the champion model"
READY = "model loaded"
NO_MODEL = "no model to serve"
FAILED = "failed"

ENDED = (NO_MODEL, FAILED)  # the start will not succeed


def quiet_deprecations() -> None:
    """Keep libraries' deprecation notices out of the server's log, which `shipdelay serve`
    shows on the terminal: they are for the libraries' own developers. A filter here, after
    the imports, because Feast's modules set DeprecationWarning to "once" as they are imported,
    over PYTHONWARNINGS."""
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


def report(phase: str, detail: str = "") -> None:
    """Write `phase` (one of this module's phases) and `detail` to the status file, if any.
    Never raises: a status file that cannot be written must not stop the service."""
    path = os.environ.get(STATUS_ENV)
    if not path:
        return
    record = {"phase": phase, "detail": detail, "pid": os.getpid(), "time": time.time()}
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        Path(tmp).write_text(json.dumps(record), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass


def read(path: Path) -> dict | None:
    """The last status written to `path`, or None (none yet, or unreadable)."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "phase" in record else None


def slow_start() -> None:
    """Wait `SHIPDELAY_SERVE_START_DELAY_SECONDS`, reporting progress every second."""
    raw = os.environ.get(DELAY_ENV) or "0"
    try:
        seconds = max(0.0, float(raw))
    except ValueError:
        raise ValueError(f"{DELAY_ENV} must be a number of seconds, not {raw!r}") from None
    started = time.monotonic()
    for step in range(math.ceil(seconds)):
        report(SLOWED, f"{step} of {seconds:g} s")
        time.sleep(max(0.0, min(1.0, seconds - (time.monotonic() - started))))
