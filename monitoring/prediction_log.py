"""The prediction log: every forecast the service, the stream and the batch give, kept to be
judged later against what happened.

Layout: `<data_dir>/predictions/day=YYYY-MM-DD/path=<service|stream|batch>/part-<id>.parquet`,
the day being the UTC day of the prediction's instant (the moment the features describe). A
row holds the shipment, the instant, the door, the model version, P(late), the P10/P50/P90
delay hours, the ETA with its interval, the shipment's lane, carrier and customer (slices of the
monitor), and the model's feature vector itself. The vector is at hand in every door when the
answer is made, copying references to its arrays costs the hot path nothing, and drift is
computed from it directly: a reference (shipment and instant, to be joined again at the offline
point-in-time rule) would make every monitoring run repeat the feature join over the whole
window, and would not show what a door really served if it ever disagreed with the join.

Each file is written to a hidden temporary name and renamed into place (readers never see half
a file) and encrypted when encryption at rest is on (`shipdelay.parquet_io`). A prediction
written twice (a stream batch replayed after a crash, a batch run again) has the same key
(`KEY`): readers keep one row per key (`monitoring.reader`).

Writing never blocks an answer and never fails one: the service buffers in memory and a thread
writes (`monitoring.log_buffer`), the stream writes with its micro-batch, and a failed write is
counted and logged, the answer goes out all the same.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.schema import CATEGORICAL, NOTE_FEATURES, TEXT_FEATURES, model_feature_names
from serving.columns import as_array, as_numbers
from shipdelay.lake import split_by_day, write_parquet_atomic

log = logging.getLogger("shipdelay.monitoring")

PATHS = ("service", "stream", "batch")
KEY = ("path", "shipment_id", "instant", "model_version")
SLICE_KEYS = ("lane_id", "carrier_id", "customer_id")
_TS = pa.timestamp("us", tz="UTC")
Notes = Callable[[Mapping], Mapping]  # vectors -> vectors with the note features
BASE_SCHEMA = pa.schema([
    ("shipment_id", pa.string()), ("instant", _TS), ("logged_at", _TS), ("path", pa.string()),
    ("model_version", pa.string()), ("p_late", pa.float64()), ("delay_p10_h", pa.float64()),
    ("delay_p50_h", pa.float64()), ("delay_p90_h", pa.float64()), ("eta", _TS),
    ("eta_p10", _TS), ("eta_p90", _TS),
    *[(k, pa.string()) for k in SLICE_KEYS],
])


# what the log reads of a scoring call's output (`prediction_table`)
SCORED_COLUMNS = ("shipment_id", "model_version", "p_late", "delay_p50_h", "delay_p90_h", "eta",
                  "eta_p10", "eta_p90")


def log_schema() -> pa.Schema:
    """Every column of the log: the base columns, the model's features by name (categorical
    and text features as text: `recent_notes` is the notes themselves), then the numbers the
    model read from the notes (`NOTE_FEATURES`; null when the model reads no notes)."""
    text = set(CATEGORICAL) | set(TEXT_FEATURES)
    return pa.schema([*BASE_SCHEMA, *[(f, pa.string() if f in text else pa.float64())
                                      for f in model_feature_names()],
                      *[(f, pa.float64()) for f in NOTE_FEATURES]])


def _texts(values, n: int) -> pa.Array:
    if values is None:
        return pa.nulls(n, pa.string())
    array = as_array(values)
    if array.dtype != object:
        return pa.array(array.astype(str), type=pa.string())
    try:  # text with None / NaN for missing: one Arrow conversion
        return pa.array(array, type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # anything else that is not text: missing
        return pa.array([v if isinstance(v, str) else None for v in array.tolist()],
                        type=pa.string())


def _times(values, n: int) -> pa.Array:
    """UTC instants (aware Series/Index, numpy datetime64 in UTC) as microsecond timestamps."""
    if values is None:
        return pa.nulls(n, _TS)
    if isinstance(values, np.ndarray) and values.dtype.kind == "M":
        stamps = values.astype("M8[us]")
    else:
        t = pd.DatetimeIndex(pd.Series(values))
        t = t.tz_convert("UTC").tz_localize(None) if t.tz is not None else t
        stamps = t.to_numpy().astype("M8[us]")
    return pa.array(stamps, type=pa.timestamp("us")).cast(_TS)


def prediction_table(path: str, scored: Mapping, vectors: Mapping, instants,
                     logged_at: pd.Timestamp | np.ndarray | None = None,
                     notes: Notes | None = None) -> pa.Table:
    """The log's rows for one scoring call: `scored` as `Scorer.score_columns` (or `score`)
    gives it, `vectors` the rows it scored (same order), `instants` each row's moment (one
    timestamp or one per row); `logged_at` one UTC timestamp or one naive-UTC datetime64 per
    row (now when not given); `notes` (the scorer's `with_notes`) adds the note features the
    model read when `vectors` lacks them. Vectorized: one conversion per column."""
    n = len(scored["p_late"])
    if notes is not None and not all(f in vectors for f in NOTE_FEATURES):
        vectors = notes(vectors)
    if logged_at is None:
        logged_at = pd.Timestamp.now("UTC")
    if np.ndim(logged_at):  # one per row (calls joined by the service's buffer), naive UTC
        logged = pa.array(np.asarray(logged_at).astype("M8[us]"), type=pa.timestamp("us"))
    else:
        logged = pa.array(np.full(n, logged_at.tz_convert("UTC").tz_localize(None)
                                  .to_datetime64()).astype("M8[us]"), type=pa.timestamp("us"))
    if not np.ndim(instants):
        instant = pd.Series([instants] * n)
    else:
        instant = instants if isinstance(instants, np.ndarray) else pd.Series(instants)
    p50, p90 = as_numbers(scored["delay_p50_h"]), as_numbers(scored["delay_p90_h"])
    eta = _times(scored["eta"], n)
    eta_p10 = _times(scored["eta_p10"], n)
    # P10 of the delay: the P10 ETA lies as far before the P50 ETA as P10 before P50
    gap_h = (pc.subtract(eta.cast(pa.int64()), eta_p10.cast(pa.int64()))
             .to_numpy(zero_copy_only=False).astype(float) / 3.6e9)
    columns = {
        "shipment_id": _texts(scored["shipment_id"], n),
        "instant": _times(instant, n),
        "logged_at": logged.cast(_TS),
        "path": pa.array(np.full(n, path, dtype=object), type=pa.string()),
        "model_version": _texts(scored["model_version"], n),
        "p_late": pa.array(as_numbers(scored["p_late"])),
        "delay_p10_h": pa.array(p50 - gap_h), "delay_p50_h": pa.array(p50),
        "delay_p90_h": pa.array(p90),
        "eta": eta, "eta_p10": eta_p10, "eta_p90": _times(scored["eta_p90"], n),
    }
    for key in SLICE_KEYS:
        columns[key] = _texts(vectors.get(key) if key in vectors else None, n)
    schema = log_schema()
    text = set(CATEGORICAL) | set(TEXT_FEATURES)
    for f in [*model_feature_names(), *NOTE_FEATURES]:
        if f not in vectors:
            columns[f] = pa.nulls(n, schema.field(f).type)
        elif f in text:
            columns[f] = _texts(vectors[f], n)
        else:
            columns[f] = pa.array(as_numbers(vectors[f]), type=pa.float64())
    return pa.table(columns, schema=schema)


def write_predictions(root: Path, table: pa.Table) -> list[Path]:
    """Append rows to the log: one new file per (day, path), each atomic and (when on)
    encrypted. Returns the files written."""
    if table.num_rows == 0:
        return []
    root = Path(root)
    written = []
    instants = pd.Series(pd.DatetimeIndex(table.column("instant").to_numpy()
                                          .astype("M8[ns]")).tz_localize("UTC"))
    for day, rows in split_by_day(table, instants):
        for door in pc.unique(rows.column("path")).to_pylist():
            part = rows.filter(pc.equal(rows.column("path"), door))
            name = f"part-{uuid.uuid4().hex}.parquet"
            written.append(write_parquet_atomic(part, root / f"day={day}" / f"path={door}" / name))
    return written


def log_now(root: Path, path: str, scored: Mapping, vectors: Mapping, instants,
            counts: dict | None = None, notes: Notes | None = None) -> int:
    """Write one scoring call's predictions at once (the stream, the batch; `notes` as for
    `prediction_table`). A failure is logged and counted in `counts["failed"]`, never raised:
    monitoring never blocks scoring. Returns rows written."""
    try:
        table = prediction_table(path, scored, vectors, instants, notes=notes)
        write_predictions(root, table)
    except Exception as err:  # noqa: BLE001 - the answer matters more than its log
        n = len(scored["p_late"]) if "p_late" in scored else 0
        log.warning("could not log %d %s prediction(s): %s", n, path, err)
        if counts is not None:
            counts["failed"] = counts.get("failed", 0) + n
        return 0
    if counts is not None:
        counts["written"] = counts.get("written", 0) + table.num_rows
    return table.num_rows
