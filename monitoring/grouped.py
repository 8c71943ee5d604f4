"""`judge.realized` of many groups at once: every day, door or slice group of the judged rows in
one sort, with the same formulas as `training.evaluate` (sklearn's roc_auc_score,
average_precision_score and log_loss, the equal-width ECE, P10-P90 coverage) on every row of
every group: no sampling, no Python loop per group.

AUC is the Mann-Whitney statistic (a tie counts half, as sklearn's trapezoids do); average
precision sums, over the distinct scores from the highest down, the recall each adds times the
precision at it (sklearn's step rule); both from the rows sorted by (group, P(late)) once.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.evaluate import clip_scores

ECE_BINS = 15  # training.evaluate.expected_calibration_error's default
METRICS = ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "late_rate", "mean_p", "n",
           "coverage_p10_p90", "eta_mae_h", "expected_log_loss", "log_loss_se")


def _sums(groups: np.ndarray, weights, count: int) -> np.ndarray:
    return np.bincount(groups, weights, minlength=count).astype(float)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _ranking(g: np.ndarray, y: np.ndarray, p: np.ndarray, pos: np.ndarray, neg: np.ndarray,
             count: int) -> tuple[np.ndarray, np.ndarray]:
    """AUC and average precision of each group (NaN where a group lacks a class)."""
    order = np.lexsort((p, g))
    gs, ps, ys = g[order], p[order], y[order]
    start = np.ones(len(gs), bool)
    start[1:] = (gs[1:] != gs[:-1]) | (ps[1:] != ps[:-1])
    block = np.cumsum(start) - 1  # runs of one group and one score
    b_pos = np.bincount(block, ys).astype(float)
    b_neg = np.bincount(block).astype(float) - b_pos
    b_group = gs[start]
    before_pos, before_neg = np.cumsum(b_pos) - b_pos, np.cumsum(b_neg) - b_neg
    first = np.ones(len(b_group), bool)
    first[1:] = b_group[1:] != b_group[:-1]
    offset = np.cumsum(first) - 1
    below_pos = before_pos - before_pos[first][offset]  # in the group, with a lower score
    below_neg = before_neg - before_neg[first][offset]
    both = (pos > 0) & (neg > 0)
    auc = _ratio(_sums(b_group, b_pos * (below_neg + 0.5 * b_neg), count), pos * neg)
    # at a block's score, every row scored at or above it is called late
    tps, fps = pos[b_group] - below_pos, neg[b_group] - below_neg
    ap = _ratio(_sums(b_group, b_pos * tps / (tps + fps), count), pos)
    return np.where(both, auc, np.nan), np.where(both, ap, np.nan)


def realized_groups(rows: pd.DataFrame, groups: np.ndarray, count: int) -> pd.DataFrame:
    """`judge.realized` of each group 0..count-1 of `groups` (one code per row; -1: in no
    group): a frame indexed by group with the columns METRICS."""
    groups = np.asarray(groups, np.int64)
    y_all, p_all = rows["y"].to_numpy(float), rows["p"].to_numpy(float)
    in_group = groups >= 0
    keep = in_group & np.isfinite(y_all) & np.isfinite(p_all)
    g, y, p = groups[keep], y_all[keep], clip_scores(p_all[keep])
    n = _sums(g, None, count)
    pos = _sums(g, y, count)
    neg = n - pos
    auc, ap = _ranking(g, y, p, pos, neg, count)
    loss = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    at = np.minimum((np.clip(p, 0, 1) * ECE_BINS).astype(int), ECE_BINS - 1)
    cell = g * ECE_BINS + at
    gap = np.abs(_sums(cell, y, count * ECE_BINS) - _sums(cell, p, count * ECE_BINS))
    out = {"roc_auc": auc, "pr_auc": ap, "log_loss": _ratio(_sums(g, loss, count), n),
           "brier": _ratio(_sums(g, (p - y) ** 2, count), n),
           "ece": _ratio(gap.reshape(count, ECE_BINS).sum(axis=1), n),
           "late_rate": _ratio(pos, n), "mean_p": _ratio(_sums(g, p, count), n), "n": n}
    delay, q10, q90 = (rows[c].to_numpy(float) for c in ("delay", "q10", "q90"))
    q50 = rows["q50"].to_numpy(float)
    ok = in_group & np.isfinite(delay) & np.isfinite(q10) & np.isfinite(q50) & np.isfinite(q90)
    inside = (delay >= q10) & (delay <= q90)
    out["coverage_p10_p90"] = _ratio(_sums(groups[ok], inside[ok], count),
                                     _sums(groups[ok], None, count))
    err = rows["eta_err_h"].to_numpy(float)
    ok = in_group & np.isfinite(err)
    out["eta_mae_h"] = _ratio(_sums(groups[ok], err[ok], count), _sums(groups[ok], None, count))
    q = clip_scores(p_all)
    ok = in_group & np.isfinite(q)
    q, h = q[ok], groups[ok]
    entropy = -(q * np.log(q) + (1 - q) * np.log(1 - q))
    out["expected_log_loss"] = _ratio(_sums(h, entropy, count), _sums(h, None, count))
    out["log_loss_se"] = _log_loss_se(rows, ok, q, h, count)
    return pd.DataFrame(out, columns=list(METRICS))


def _log_loss_se(rows: pd.DataFrame, ok: np.ndarray, q: np.ndarray, h: np.ndarray,
                 count: int) -> np.ndarray:
    """The standard error of each group's log loss if the model were calibrated there: a row's
    loss varies by p(1-p)logit(p)^2 around its entropy, and the predictions of one shipment
    share its outcome, so the group counts as many observations as it has shipments."""
    v = q * (1 - q) * np.log(q / (1 - q)) ** 2
    mean_v = _ratio(_sums(h, v, count), _sums(h, None, count))
    if "shipment_key" in rows or "shipment_id" in rows:
        ships = (rows["shipment_key"].to_numpy(np.int64) if "shipment_key" in rows
                 else codes_of(rows["shipment_id"])[0])[ok]
        width = int(ships.max(initial=0)) + 2  # code -1 (no id) shifted to 0
        pairs = pd.unique(h * width + ships + 1)  # hashed, not sorted: many calls, many rows
        independent = _sums(pairs // width, None, count)
    else:
        independent = _sums(h, None, count)
    return np.sqrt(_ratio(mean_v, independent))


def codes_of(values: pd.Series) -> tuple[np.ndarray, list]:
    """Group codes of a column (-1: missing) and the group each code names."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return values.cat.codes.to_numpy(np.int64), list(values.cat.categories)
    codes, uniques = pd.factorize(values, sort=True)
    return codes.astype(np.int64), list(uniques)
