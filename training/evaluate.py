"""How good a P(late) score and a delay interval are, overall and where it matters: by main mode
and by journey stage (a shipment at booking is a different question from one nearly there).

Everything returns plain dicts or a tidy table `[slice, group, metric, value]`, so a report, an
MLflow run and a plot read the same numbers. Rows whose score is NaN (e.g. no ceiling estimate)
are left out of that score's metrics, and `n` says how many rows each number rests on.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

# Journey stages: "booked" = no milestone seen yet; then bands of transit_elapsed_frac (share of
# the planned booking-to-arrival time already gone); "overdue" = past the planned arrival.
STAGES = ("booked", "early", "mid", "late", "overdue")
STAGE_EDGES = (0.33, 0.66, 1.0)  # upper edges of early, mid, late (right-closed)
SLICES = ("overall", "main_mode", "stage")
_EPS = 1e-15


def journey_stage(frame: pd.DataFrame) -> pd.Series:
    """Stage of each snapshot, an ordered categorical over STAGES.

    No milestone yet (milestones_done NaN or 0) is "booked" whatever the clock says. Otherwise the
    elapsed fraction is banded, with fractions <= 0 counted as "early" (a scan can precede the
    booking clock by rounding); a NaN fraction after a scan (no usable plan) stays NaN.
    """
    done = pd.to_numeric(frame["milestones_done"], errors="coerce").to_numpy(float)
    frac = pd.to_numeric(frame["transit_elapsed_frac"], errors="coerce").to_numpy(float)
    booked = np.isnan(done) | (done <= 0)
    band = np.searchsorted(np.asarray(STAGE_EDGES), frac, side="left") + 1  # 1..4
    codes = np.where(booked, 0, np.where(np.isnan(frac), -1, band))
    cat = pd.Categorical.from_codes(codes, categories=list(STAGES), ordered=True)
    return pd.Series(cat, index=frame.index, name="stage")


def _clean(y, p) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    keep = np.isfinite(y) & np.isfinite(p)
    return y[keep], p[keep]


def expected_calibration_error(y, p, bins: int = 15) -> float:
    """Equal-width-bin ECE: sum over bins of (bin share) * |late rate - mean score|."""
    y, p = _clean(y, p)
    if len(y) == 0:
        return float("nan")
    idx = np.minimum((np.clip(p, 0, 1) * bins).astype(int), bins - 1)
    count = np.bincount(idx, minlength=bins)
    gap = np.abs(np.bincount(idx, y, bins) - np.bincount(idx, p, bins))  # n_b * |ȳ_b - p̄_b|
    return float(gap.sum() / count.sum())


def classification_metrics(y, p) -> dict[str, float]:
    """roc_auc, pr_auc (average precision), log_loss, brier, ece, n, late_rate, mean_p.

    A slice with a single class gets NaN AUCs rather than an exception; an empty one all NaN.
    """
    y, p = _clean(y, p)
    n = len(y)
    out = dict.fromkeys(["roc_auc", "pr_auc", "log_loss", "brier", "ece", "late_rate", "mean_p"],
                        float("nan"))
    out["n"] = float(n)
    if n == 0:
        return out
    both = 0 < y.sum() < n
    out["roc_auc"] = float(roc_auc_score(y, p)) if both else float("nan")
    out["pr_auc"] = float(average_precision_score(y, p)) if both else float("nan")
    out["log_loss"] = float(log_loss(y, np.clip(p, _EPS, 1 - _EPS), labels=[0, 1]))
    out["brier"] = float(np.mean((p - y) ** 2))
    out["ece"] = expected_calibration_error(y, p)
    out["late_rate"] = float(y.mean())
    out["mean_p"] = float(p.mean())
    return out


def _pinball(y: np.ndarray, q: np.ndarray, tau: float) -> float:
    d = y - q
    return float(np.mean(np.maximum(tau * d, (tau - 1) * d)))


def interval_metrics(delay, q10, q50, q90) -> dict[str, float]:
    """Coverage and mean width of [P10, P90] (hours), pinball loss per quantile, MAE of P50."""
    arrays = [np.asarray(a, dtype=float) for a in (delay, q10, q50, q90)]
    keep = np.logical_and.reduce([np.isfinite(a) for a in arrays])
    y, lo, mid, hi = (a[keep] for a in arrays)
    if len(y) == 0:
        return dict.fromkeys(["coverage_p10_p90", "mean_width_h", "pinball_p10", "pinball_p50",
                              "pinball_p90", "mae_p50"], float("nan"))
    return {
        "coverage_p10_p90": float(np.mean((y >= lo) & (y <= hi))),
        "mean_width_h": float(np.mean(hi - lo)),
        "pinball_p10": _pinball(y, lo, 0.1),
        "pinball_p50": _pinball(y, mid, 0.5),
        "pinball_p90": _pinball(y, hi, 0.9),
        "mae_p50": float(np.mean(np.abs(y - mid))),
    }


def _groups(frame: pd.DataFrame) -> list[tuple[str, str, np.ndarray]]:
    """(slice, group, row mask) for overall, each main mode and each non-empty stage."""
    out = [("overall", "all", np.ones(len(frame), bool))]
    if "main_mode" in frame:
        mode = frame["main_mode"].astype("string").fillna("unknown").to_numpy()
        out += [("main_mode", str(m), mode == m) for m in sorted(set(mode))]
    if {"milestones_done", "transit_elapsed_frac"} <= set(frame.columns):
        stage = journey_stage(frame).to_numpy()
        out += [("stage", s, stage == s) for s in STAGES if (stage == s).any()]
    return out


def evaluate(frame: pd.DataFrame, p, q: Mapping[float, np.ndarray] | None = None) -> pd.DataFrame:
    """Tidy table [slice, group, metric, value] of one score on `frame` (labels is_late and, when
    quantiles `q` = {0.1, 0.5, 0.9: arrays} are given, delay_hours), rows aligned by position."""
    p = np.asarray(p, dtype=float)
    if len(p) != len(frame):
        raise ValueError(f"{len(p)} scores for {len(frame)} rows")
    y = frame["is_late"].to_numpy(float)
    if q is not None:
        delay = frame["delay_hours"].to_numpy(float)
        qs = [np.asarray(q[k], dtype=float) for k in (0.1, 0.5, 0.9)]
    rows = []
    for slice_, group, mask in _groups(frame):
        metrics = classification_metrics(y[mask], p[mask])
        if q is not None:
            metrics |= interval_metrics(delay[mask], *(a[mask] for a in qs))
        rows += [(slice_, group, k, v) for k, v in metrics.items()]
    return pd.DataFrame(rows, columns=["slice", "group", "metric", "value"])


def evaluate_many(frame: pd.DataFrame, scores: Mapping[str, np.ndarray],
                  quantiles: Mapping[str, Mapping[float, np.ndarray]] | None = None) -> pd.DataFrame:
    """`evaluate` for several scorers (model, baselines, ceiling) stacked with a `model` column.

    To compare against the ceiling on equal footing, pass only the rows that have a ceiling.
    """
    quantiles = quantiles or {}
    parts = [evaluate(frame, p, quantiles.get(name)).assign(model=name)
             for name, p in scores.items()]
    return pd.concat(parts, ignore_index=True)[["model", "slice", "group", "metric", "value"]]


def gap_closed(model: float, baseline: float, ceiling: float,
               higher_is_better: bool = True) -> float:
    """Share of the baseline-to-ceiling gap the model closes: (model - baseline) /
    (ceiling - baseline). NaN when the ceiling is not better than the baseline (for losses,
    pass higher_is_better=False: the ceiling must then be lower)."""
    gap = ceiling - baseline
    if not np.isfinite(gap) or (gap <= 0 if higher_is_better else gap >= 0):
        return float("nan")
    return float((model - baseline) / gap)


__all__ = [
    "STAGES",
    "STAGE_EDGES",
    "classification_metrics",
    "evaluate",
    "evaluate_many",
    "expected_calibration_error",
    "gap_closed",
    "interval_metrics",
    "journey_stage",
]
