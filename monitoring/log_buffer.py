"""The service's prediction log: a bounded in-memory buffer that a background thread writes.

A request only hands over references to the arrays it already built (the scorer's output and
the feature vectors): no conversion, no I/O, a lock held for a list append. The writer thread
turns what waits into Parquet every `flush_s` seconds, or sooner once `flush_rows` rows wait.
It first joins the waiting calls column by column (`merge_calls`) and converts them to Arrow
once: converted one call at a time, a thousand single-id requests cost the writer about 1.6 s
of CPU (and the GIL it holds meanwhile), joined about 0.1 s.
When more than `max_rows` wait (the disk is slow or failing) new predictions are dropped and
counted rather than waited for: monitoring never slows or blocks an answer. `close()` writes
what is left (the service's shutdown).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from monitoring.prediction_log import (
    SCORED_COLUMNS,
    Notes,
    log_schema,
    prediction_table,
    write_predictions,
)
from serving.columns import as_array

log = logging.getLogger("shipdelay.monitoring")

Counter = Callable[[str, int], None]  # (outcome, rows): written | dropped | failed


class PredictionBuffer:
    """Predictions of one door, buffered and written in the background."""

    def __init__(self, root: Path, path: str = "service", flush_s: float = 5.0,
                 flush_rows: int = 5_000, max_rows: int = 200_000,
                 on_count: Counter | None = None):
        self.root, self.path = Path(root), path
        self.flush_s, self.flush_rows, self.max_rows = flush_s, flush_rows, max_rows
        self.on_count = on_count or (lambda outcome, rows: None)
        self.counts = {"written": 0, "dropped": 0, "failed": 0}
        self._pending: list[tuple] = []  # (scored, vectors, instants, at, notes)
        self._rows = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    @classmethod
    def from_settings(cls, settings, path: str = "service",
                      on_count: Counter | None = None) -> PredictionBuffer | None:
        """The buffer the settings ask for, or None when logging is off."""
        if not settings.prediction_log:
            return None
        return cls(settings.predictions_dir, path, settings.prediction_log_flush_s,
                   settings.prediction_log_flush_rows, settings.prediction_log_max_rows,
                   on_count)

    def add(self, scored: Mapping, vectors: Mapping, instants, notes: Notes | None = None
            ) -> None:
        """Keep one scoring call's predictions for the next write (never raises, never waits
        for I/O). The arrays must not be changed afterwards. `notes` (the scorer's
        `with_notes`) reads the note features in the writer thread, off the request's path."""
        try:
            n = len(scored["p_late"])
            with self._lock:
                full = self._rows + n > self.max_rows or self._closed
                if not full:
                    self._pending.append((scored, vectors, instants, pd.Timestamp.now("UTC"),
                                          notes))
                    self._rows += n
                    wake = self._rows >= self.flush_rows
            if full:
                self._count("dropped", n)
            elif wake:
                self._wake.set()
        except Exception as err:  # noqa: BLE001 - never fail an answer because of its log
            log.warning("prediction not logged: %s", err)

    def _count(self, outcome: str, rows: int) -> None:
        self.counts[outcome] += rows
        try:
            self.on_count(outcome, rows)
        except Exception as err:  # noqa: BLE001 - metrics never stop logging
            log.debug("prediction log counter failed: %s", err)

    def flush(self) -> int:
        """Write what waits now; returns rows written (failures counted, never raised)."""
        with self._lock:
            batch, self._pending, rows, self._rows = self._pending, [], self._rows, 0
        if not batch:
            return 0
        try:
            tables = [prediction_table(self.path, *call) for call in merge_calls(batch)]
            write_predictions(self.root, pa.concat_tables(tables))
        except Exception as err:  # noqa: BLE001 - counted, logged, the service goes on
            log.warning("could not write %d logged prediction(s): %s", rows, err)
            self._count("failed", rows)
            return 0
        self._count("written", rows)
        return rows

    def _run(self) -> None:
        next_at = time.monotonic() + self.flush_s
        while not self._closed:
            self._wake.wait(max(0.0, next_at - time.monotonic()))
            self._wake.clear()
            self.flush()
            next_at = time.monotonic() + self.flush_s

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread and write what is left."""
        self._closed = True
        self._wake.set()
        self._thread.join(timeout)
        self.flush()


def _instants(instants, n: int) -> np.ndarray:
    """One call's instants (one timestamp or one per row) as n naive-UTC datetime64[us]."""
    if not np.ndim(instants):
        t = pd.Timestamp(instants)
        t = t.tz_convert("UTC").tz_localize(None) if t.tz is not None else t
        return np.full(n, t.to_datetime64().astype("M8[us]"))
    if isinstance(instants, np.ndarray) and instants.dtype.kind == "M":
        return instants.astype("M8[us]")
    t = pd.DatetimeIndex(pd.Series(instants))
    t = t.tz_convert("UTC").tz_localize(None) if t.tz is not None else t
    return t.to_numpy().astype("M8[us]")


def _join(calls: list[tuple]) -> tuple:
    """Calls with the same columns and note reader as one call: the columns the log reads
    concatenated (not the others: the reasons, say, are lists of any length)."""
    scored, vectors, _, _, notes = calls[0]
    sizes = [len(s["p_late"]) for s, *_ in calls]
    glue = lambda part, key: np.concatenate([as_array(c[part][key]) for c in calls])
    logged = set(log_schema().names)
    return ({k: glue(0, k) for k in SCORED_COLUMNS if k in scored},
            {k: glue(1, k) for k in vectors if k in logged},
            np.concatenate([_instants(c[2], n) for c, n in zip(calls, sizes)]),
            np.concatenate([np.full(n, _instants(c[3], 1)[0]) for c, n in zip(calls, sizes)]),
            notes)


def merge_calls(batch: list[tuple]) -> list[tuple]:
    """The waiting calls `(scored, vectors, instants, logged_at, notes)` as few calls of many
    rows, each `prediction_table`'s arguments after the door: calls are grouped by their
    columns and note reader (a model reload between requests starts a new group). A group whose
    columns do not concatenate (types that differ between calls) stays one call per request."""
    groups: dict[tuple, list[tuple]] = {}
    for call in batch:
        scored, vectors, *_, notes = call
        groups.setdefault((tuple(scored), tuple(vectors), notes), []).append(call)
    merged = []
    for calls in groups.values():
        if len(calls) == 1:
            merged.append(calls[0])
            continue
        try:
            merged.append(_join(calls))
        except (TypeError, ValueError) as err:
            log.debug("logged calls kept apart: %s", err)
            merged.extend(calls)
    return merged
