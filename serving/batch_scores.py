"""The scores table's rows from point-in-time feature vectors: what both batch engines run.

The local engine calls `scores_frame` on each chunk; the Spark engine ships `score_batches` to
its executors (`mapInPandas`). This module imports only what scoring needs (pandas, pyarrow,
LightGBM through the Scorer), so an executor's Python worker starts quickly and needs no access
to the registry, Feast or MLflow.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from features.request_time import REQUEST_TIME, request_features
from serving.scorer import Scorer, Thresholds
from training.bundle import Bundle

SCORER_COLUMNS = ["p_late", "risk_band", "delay_p50_h", "delay_p90_h", "eta", "eta_p10",
                  "eta_p90", "reasons", "model_version"]
# where the grouping columns come from (the shipment profile at the cut-off)
CONTEXT = {"mode": "main_mode", "lane": "lane_id", "customer": "customer_id",
           "carrier": "carrier_id"}
_TS = pa.timestamp("us", tz="UTC")
# The scores table; `run_date` is the partition column (the folder name). Reasons are a list
# column: up to three plain-word sentences, strongest first.
SCORES_SCHEMA = pa.schema([
    ("shipment_id", pa.string()), ("as_of", _TS), ("mode", pa.string()), ("lane", pa.string()),
    ("customer", pa.string()), ("carrier", pa.string()), ("p_late", pa.float64()),
    ("risk_band", pa.string()), ("delay_p50_h", pa.float64()), ("delay_p90_h", pa.float64()),
    ("eta", _TS), ("eta_p10", _TS), ("eta_p90", _TS), ("reasons", pa.list_(pa.string())),
    ("model_version", pa.string()),
])
SCORE_COLUMNS = SCORES_SCHEMA.names
_NO_REASONS: list[str] = []  # never mutated


def scores_frame(scorer: Scorer, vectors: pd.DataFrame, reasons: bool = True) -> pd.DataFrame:
    """The scores table's columns for point-in-time feature vectors (one row per shipment);
    without `reasons`, every row's reasons are an empty list (the batch then explains the
    shipments `ReasonsRule` picks)."""
    scored = scorer.score(vectors, reasons=reasons)
    if not reasons:  # one shared empty list: the rows explained later get lists of their own
        scored["reasons"] = [_NO_REASONS] * len(scored)
    out = pd.DataFrame({"shipment_id": vectors["shipment_id"].astype(str),
                        "as_of": pd.to_datetime(vectors["as_of"], utc=True)})
    for name, source in CONTEXT.items():
        out[name] = vectors[source].astype(object).where(vectors[source].notna(), None)
    for name in SCORER_COLUMNS:  # same index as `out`
        out[name] = scored[name].dt.floor("us") if name.startswith("eta") else scored[name]
    return out[SCORE_COLUMNS].reset_index(drop=True)


@dataclass(frozen=True)
class ReasonsRule:
    """Which scored shipments get their reasons in the scores table: those with P(late) at
    least `from_p`, the riskiest `most` of them (ties by shipment id). Reasons are LightGBM's
    TreeSHAP, about 1-2 ms a shipment on one core: explaining a million would take longer than
    scoring them; a planner reads the riskiest, and the service explains any shipment."""

    from_p: float = 0.6
    most: int = 2_000

    def pick(self, p_late: np.ndarray, shipment_ids: np.ndarray) -> np.ndarray:
        """Positions of the rows to explain."""
        rows = np.flatnonzero(np.asarray(p_late) >= self.from_p)
        if len(rows) > self.most:
            order = np.lexsort((np.asarray(shipment_ids, dtype=object)[rows].astype(str),
                                -np.asarray(p_late)[rows]))
            rows = np.sort(rows[order[:self.most]])
        return rows


def to_table(frame: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(frame[SCORE_COLUMNS], schema=SCORES_SCHEMA, preserve_index=False)


def with_request_features(frame: pd.DataFrame) -> pd.DataFrame:
    """Add the request time and request-time features at each row's `as_of`, exactly as
    `training.dataset.point_in_time` computes them (the same float operations)."""
    frame[REQUEST_TIME] = pd.to_datetime(frame["as_of"], utc=True).dt.as_unit(
        "ns").astype("int64") / 1e9
    for name, values in request_features(frame["booked_at_s"], frame["promised_at_s"],
                                         frame["planned_arrival_s"], frame["last_event_s"],
                                         frame["next_planned_s"], frame[REQUEST_TIME]).items():
        frame[name] = values
    return frame


# -- on a Spark executor ------------------------------------------------------------------------
_BUNDLES: dict[str, Bundle] = {}  # per Python worker: loaded once, reused across batches


def _bundle(files: dict[str, bytes], version: str, digest: str) -> Bundle:
    if digest not in _BUNDLES:
        folder = Path(tempfile.mkdtemp(prefix="shipdelay-bundle-"))
        try:
            for name, data in files.items():
                (folder / name).write_bytes(data)
            bundle = Bundle.load(folder, version=version)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        for booster in (bundle.classifier, *bundle.quantiles.values()):
            # Spark already runs one task per core
            booster.predict = functools.partial(booster.predict, num_threads=1)
        _BUNDLES[digest] = bundle
    return _BUNDLES[digest]


def score_batches(broadcast, version: str, digest: str, thresholds: Thresholds
                  ) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """The `mapInPandas` function: feature batches (as_of_us = cut-off in epoch microseconds)
    in, scores table rows out. `broadcast.value` holds the bundle's files by name."""
    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        scorer = Scorer(_bundle(broadcast.value, version, digest), thresholds)
        for frame in batches:
            frame["as_of"] = pd.to_datetime(frame.pop("as_of_us"), unit="us", utc=True)
            yield scores_frame(scorer, with_request_features(frame), reasons=False)
    return score
