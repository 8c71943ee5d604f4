"""How good a P(late) score and a delay interval are, overall and where it matters: by main mode
and by journey stage (a shipment at booking is a different question from one nearly there), and
by snapshot kind: snapshots taken when something happened (booking, a milestone) apart from
clock ticks between them (a silent moment, long after the last scan), each kind also by stage
(slices `stage_milestone` and `stage_tick`).

Everything returns plain dicts or a tidy table `[slice, group, metric, value]`, so a report, an
MLflow run and a plot read the same numbers. Rows whose score is NaN (e.g. no ceiling estimate)
are left out of that score's metrics, and `n` says how many rows each number rests on. Every
score is clipped to [PROB_CLIP, 1 - PROB_CLIP] before any metric, whoever made it (the model,
a baseline, the ceiling's share of re-simulations), so one confident miss costs every scorer the
same.

Two scorers are compared on the same rows by `paired_bootstrap`: the difference of their AUC
and log loss with a bootstrap confidence interval, resampling whole shipments (the snapshots of
one shipment share its label, so they are not independent evidence).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

from shipdelay.snapshots import snapshot_kind

# Journey stages: "booked" = no milestone seen yet; then bands of transit_elapsed_frac (share of
# the planned booking-to-arrival time already gone); "overdue" = past the planned arrival.
STAGES = ("booked", "early", "mid", "late", "overdue")
STAGE_EDGES = (0.33, 0.66, 1.0)  # upper edges of early, mid, late (right-closed)
KINDS = ("milestone", "tick")  # snapshot kinds (shipdelay.snapshots.snapshot_kind)
SLICES = ("overall", "main_mode", "stage", "kind", *(f"stage_{k}" for k in KINDS))
PROB_CLIP = 1e-4  # the calibrator's and the baselines' bound too
BOOTSTRAP_DRAWS = 1000
BOOTSTRAP_LEVEL = 0.9
PAIRED_METRICS = ("roc_auc", "log_loss")


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


def clip_scores(p) -> np.ndarray:
    """Scores bounded to [PROB_CLIP, 1 - PROB_CLIP] (NaN stays NaN)."""
    return np.clip(np.asarray(p, dtype=float), PROB_CLIP, 1 - PROB_CLIP)


def _clean(y, p) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    keep = np.isfinite(y) & np.isfinite(p)
    return y[keep], clip_scores(p[keep])


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
    """roc_auc, pr_auc (average precision), log_loss, brier, ece, n, late_rate, mean_p, on
    scores clipped to [PROB_CLIP, 1 - PROB_CLIP].

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
    out["log_loss"] = float(log_loss(y, p, labels=[0, 1]))
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
    """(slice, group, row mask) for overall, each main mode, each non-empty stage, and when the
    frame says which snapshot each row is (`milestone`), each kind and each kind's stages."""
    out = [("overall", "all", np.ones(len(frame), bool))]
    if "main_mode" in frame:
        mode = frame["main_mode"].astype("string").fillna("unknown").to_numpy()
        out += [("main_mode", str(m), mode == m) for m in sorted(set(mode))]
    stage = None
    if {"milestones_done", "transit_elapsed_frac"} <= set(frame.columns):
        stage = journey_stage(frame).to_numpy()
        out += [("stage", s, stage == s) for s in STAGES if (stage == s).any()]
    if "milestone" in frame:
        kind = snapshot_kind(frame["milestone"].to_numpy(object))
        out += [("kind", k, kind == k) for k in KINDS if (kind == k).any()]
        if stage is not None:
            out += [(f"stage_{k}", s, (stage == s) & (kind == k))
                    for k in KINDS for s in STAGES if ((stage == s) & (kind == k)).any()]
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


def _weighted_auc(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC under each row of `weights` (resamples x rows), ties counted half: the
    Mann-Whitney statistic with weighted rows, in one pass over the sorted scores."""
    order = np.argsort(p, kind="stable")
    p, y, w = p[order], y[order], weights[:, order]
    starts = np.flatnonzero(np.r_[True, p[1:] != p[:-1]])  # groups of tied scores
    pos = np.add.reduceat(w * y, starts, axis=1)
    neg = np.add.reduceat(w * (1 - y), starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    den = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (pos * (below + 0.5 * neg)).sum(axis=1) / den, np.nan)


def _log_losses(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def paired_bootstrap(y, p_a, p_b, clusters=None, draws: int = BOOTSTRAP_DRAWS,
                     level: float = BOOTSTRAP_LEVEL, seed: int = 0) -> dict[str, dict[str, float]]:
    """AUC and log loss of scorer a minus scorer b on the same rows, with a percentile bootstrap
    interval at `level`: per metric {a, b, diff, lo, hi}, plus n (rows) and clusters.

    Rows where y or either score is missing are left out of both. `clusters` (e.g. shipment ids)
    are resampled whole; without them, rows are. Scores are clipped as everywhere here.
    """
    y, p_a, p_b = (np.asarray(v, dtype=float) for v in (y, p_a, p_b))
    keep = np.isfinite(y) & np.isfinite(p_a) & np.isfinite(p_b)
    y, p_a, p_b = y[keep], clip_scores(p_a[keep]), clip_scores(p_b[keep])
    codes = (pd.factorize(np.asarray(clusters)[keep])[0] if clusters is not None
             else np.arange(len(y)))
    n_clusters = int(codes.max()) + 1 if len(codes) else 0
    nan = dict.fromkeys(["a", "b", "diff", "lo", "hi"], float("nan"))
    out = {m: dict(nan) for m in PAIRED_METRICS} | {"n": float(len(y)),
                                                   "clusters": float(n_clusters)}
    if n_clusters < 2:
        return out
    full = np.ones((1, len(y)))
    loss_a, loss_b = _log_losses(y, p_a), _log_losses(y, p_b)
    rng = np.random.default_rng(seed)
    diffs = {m: [] for m in PAIRED_METRICS}
    for lo in range(0, draws, 200):  # resamples in blocks: memory stays bounded at any size
        counts = rng.multinomial(n_clusters, np.full(n_clusters, 1 / n_clusters),
                                 size=min(200, draws - lo))
        w = counts[:, codes].astype(float)
        diffs["roc_auc"].append(_weighted_auc(y, p_a, w) - _weighted_auc(y, p_b, w))
        diffs["log_loss"].append(w @ (loss_a - loss_b) / w.sum(axis=1))
    point = {"roc_auc": (_weighted_auc(y, p_a, full)[0], _weighted_auc(y, p_b, full)[0]),
             "log_loss": (loss_a.mean(), loss_b.mean())}
    tail = (1 - level) / 2
    for m in PAIRED_METRICS:
        spread = np.concatenate(diffs[m])
        spread = spread[np.isfinite(spread)]
        a, b = point[m]
        lo, hi = np.quantile(spread, [tail, 1 - tail]) if len(spread) else (np.nan, np.nan)
        out[m] = {"a": float(a), "b": float(b), "diff": float(a - b), "lo": float(lo),
                  "hi": float(hi)}
    return out


def compare_paired(frame: pd.DataFrame, p_a, p_b, draws: int = BOOTSTRAP_DRAWS,
                   level: float = BOOTSTRAP_LEVEL, seed: int = 0) -> pd.DataFrame:
    """`paired_bootstrap` of a minus b overall and per journey stage, shipments resampled whole:
    a table [slice, group, metric, a, b, diff, lo, hi, n]. For AUC a positive interval means a
    ranks better beyond bootstrap noise, for log loss a negative one."""
    p_a, p_b = np.asarray(p_a, dtype=float), np.asarray(p_b, dtype=float)
    y = frame["is_late"].to_numpy(float)
    ids = frame["shipment_id"].to_numpy() if "shipment_id" in frame else None
    rows = []
    for slice_, group, mask in _groups(frame):
        if slice_ == "main_mode":
            continue
        res = paired_bootstrap(y[mask], p_a[mask], p_b[mask],
                               None if ids is None else ids[mask], draws, level, seed)
        rows += [(slice_, group, m, *(res[m][k] for k in ("a", "b", "diff", "lo", "hi")),
                  res["n"]) for m in PAIRED_METRICS]
    return pd.DataFrame(rows, columns=["slice", "group", "metric", "a", "b", "diff", "lo", "hi",
                                       "n"])


def beats(paired: pd.DataFrame) -> pd.DataFrame:
    """Rows of a `compare_paired` table where a is better than b beyond bootstrap noise: a
    higher AUC or a lower log loss with the whole interval on that side of zero."""
    auc = (paired["metric"] == "roc_auc") & (paired["lo"] > 0)
    loss = (paired["metric"] == "log_loss") & (paired["hi"] < 0)
    return paired[auc | loss]


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
    "KINDS",
    "PROB_CLIP",
    "STAGES",
    "STAGE_EDGES",
    "beats",
    "classification_metrics",
    "clip_scores",
    "compare_paired",
    "evaluate",
    "evaluate_many",
    "expected_calibration_error",
    "gap_closed",
    "interval_metrics",
    "journey_stage",
    "paired_bootstrap",
]
