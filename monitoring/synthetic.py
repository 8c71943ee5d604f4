"""A synthetic prediction log with outcomes whose truth is known, for the monitor's tests and
its benchmark: no simulator, no model, any size.

Each shipment is booked on a day of the window, in flight for 1-6 days, predicted by the batch
at every midnight it is in flight and once by the stream; P(late) is a logistic function of one
feature and the outcome is drawn from it, so the predictions are calibrated by construction.
`shift_from` moves one feature (`SHIFTED`) by a few standard deviations for predictions made
from that day on, a drift the monitor must flag; the other features keep their distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.schema import CATEGORICAL, NOTE_FEATURES, TEXT_FEATURES, model_feature_names
from monitoring.drift import Reference, build_reference
from monitoring.prediction_log import prediction_table, write_predictions
from shipdelay.lake import Lake

SHIFTED = "distance_km"
DRIVER = "slip_h"  # the feature P(late) depends on
LEVELS = ["a", "b", "c", "d"]
CARRIERS = [f"C{i:03d}" for i in range(20)]
LANES = [f"L{i:04d}" for i in range(200)]
MODES = ["truck", "rail", "air", "ocean"]


@dataclass
class SyntheticLog:
    predictions: int
    shipments: int
    delivered: int


def _features(rng: np.random.Generator, n: int, shifted: np.ndarray) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    categorical = set(CATEGORICAL)
    for f in [*model_feature_names(), *NOTE_FEATURES]:
        if f in TEXT_FEATURES:  # notes: text on some shipments, none on most
            out[f] = np.where(rng.random(n) < 0.1, "2026-01-01T00:00:00Z held at the port",
                              None).astype(object)
        elif f in categorical:
            out[f] = np.asarray(LEVELS, dtype=object)[rng.integers(0, len(LEVELS), n)]
        else:
            x = rng.normal(size=n)
            x[rng.random(n) < 0.02] = np.nan  # a few missing values, as online
            out[f] = x
    out[SHIFTED] = out[SHIFTED] + 3.0 * shifted
    out["main_mode"] = np.asarray(MODES, dtype=object)[rng.integers(0, len(MODES), n)]
    out["milestones_done"] = rng.integers(0, 6, n).astype(float)
    out["transit_elapsed_frac"] = rng.random(n) * 1.2
    return out


def p_late_of(driver: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-(np.nan_to_num(driver) * 1.2 - 1.0)))


def reference(rows: int = 20_000, seed: int = 1, log_loss: float | None = None,
              carriers=CARRIERS, lanes=LANES) -> Reference:
    """The reference for this synthetic world (no shift): one row per shipment, spread over
    `carriers` and `lanes` (the slices it keeps shares for)."""
    rng = np.random.default_rng(seed)
    vectors = _features(rng, rows, np.zeros(rows, bool))
    vectors |= {"shipment_id": np.array([f"R{i:08d}" for i in range(rows)], dtype=object),
                "carrier_id": np.asarray(carriers, dtype=object)[
                    rng.integers(0, len(carriers), rows)],
                "lane_id": np.asarray(lanes, dtype=object)[rng.integers(0, len(lanes), rows)]}
    p = p_late_of(vectors[DRIVER])
    if log_loss is None:
        log_loss = float(np.mean(-(p * np.log(p) + (1 - p) * np.log(1 - p))))
    return build_reference("1", pd.DataFrame(vectors), [*model_feature_names(), *NOTE_FEATURES],
                           set(CATEGORICAL), p, log_loss, "synthetic training window")


def write_log(root, lake: Lake, shipments: int, start: str, days: int, seed: int = 7,
              shift_from: pd.Timestamp | None = None, version: str = "1",
              as_of: pd.Timestamp | None = None) -> SyntheticLog:
    """Write the log under `root` and the outcomes (deliveries up to `as_of`, default the
    window's end) into `lake`; returns how many of each were written."""
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp(start, tz="UTC")
    end = t0 + pd.Timedelta(days=days)
    as_of = as_of or end
    ids = np.array([f"S{i:08d}" for i in range(shipments)], dtype=object)
    booked = t0 + pd.to_timedelta(rng.random(shipments) * days * 86400, unit="s")
    transit_h = rng.uniform(24, 144, shipments)
    carrier = np.asarray(CARRIERS, dtype=object)[rng.integers(0, len(CARRIERS), shipments)]
    lane = np.asarray(LANES, dtype=object)[rng.integers(0, len(LANES), shipments)]
    driver = rng.normal(size=shipments)
    p_true = p_late_of(driver)
    late = rng.random(shipments) < p_true
    delay = np.where(late, rng.uniform(0.5, 48, shipments), -rng.uniform(0, 24, shipments))
    promised = booked + pd.to_timedelta(transit_h, unit="h")
    delivered = promised + pd.to_timedelta(delay, unit="h")
    written = 0
    for day in pd.date_range(t0.normalize(), end, freq="D"):
        # the batch at midnight: every shipment booked before and not yet delivered
        moving = np.flatnonzero((booked <= day) & (delivered > day))
        # the stream: shipments booked this day, predicted at booking plus an hour
        fresh = np.flatnonzero((booked >= day) & (booked < day + pd.Timedelta(days=1)))
        for path, rows, instants in (
                ("batch", moving, pd.Series(day, index=range(len(moving)))),
                ("stream", fresh, pd.Series(booked[fresh] + pd.Timedelta(hours=1)))):
            if not len(rows) or instants.iloc[0] > as_of:
                continue
            vectors = _features(rng, len(rows), np.full(len(rows), shift_from is not None
                                                        and day >= shift_from))
            vectors[DRIVER] = driver[rows]
            vectors |= {"shipment_id": ids[rows], "carrier_id": carrier[rows],
                        "lane_id": lane[rows], "customer_id": lane[rows]}
            p = p_true[rows]
            hours = (promised[rows] - pd.DatetimeIndex(instants)).total_seconds() / 3600
            eta = pd.DatetimeIndex(promised[rows])
            scored = {"shipment_id": ids[rows], "p_late": p, "delay_p50_h": delay[rows] * 0.5,
                      "delay_p90_h": delay[rows] * 0.5 + 12, "model_version":
                      np.full(len(rows), version, dtype=object),
                      "eta": eta + pd.to_timedelta(delay[rows] * 0.5, unit="h"),
                      "eta_p10": eta + pd.to_timedelta(delay[rows] * 0.5 - 12, unit="h"),
                      "eta_p90": eta + pd.to_timedelta(delay[rows] * 0.5 + 12, unit="h")}
            del hours
            write_predictions(root, prediction_table(path, scored, vectors, instants.to_numpy()
                                                     if path == "stream" else day))
            written += len(rows)
    done = np.asarray(delivered <= as_of)
    outcomes = pd.DataFrame({"shipment_id": ids[done].astype(str),
                             "delivered_at": pd.DatetimeIndex(delivered[done]),
                             "promised_at": pd.DatetimeIndex(promised[done]),
                             "delay_hours": delay[done], "is_late": late[done]})
    lake.append("outcomes", outcomes)
    return SyntheticLog(written, shipments, int(done.sum()))
