"""Realized performance of judged predictions, and its estimate where labels are not in yet.

Realized: the training evaluation's own metrics (`training.evaluate`: AUC, log loss, Brier, ECE,
P10-P90 coverage), per day of the prediction and per slice (mode, lane, carrier, customer,
journey stage, door, model version), a reliability curve, the ETA's absolute error in hours and
"hours out": that error by how many hours before the delivery the prediction was made.

Estimated (the idea of NannyML's CBPE): a calibrated P(late) says how often a shipment is late,
so before the outcome is known, the expected late rate is the mean of P(late), the expected log
loss is the mean binary entropy of P(late), and the expected AUC is the chance that a random late
shipment outranks a random on-time one, each row counted as late with weight p and on time with
weight 1 - p. Trustworthy only while the model stays calibrated; the realized numbers replace it
as outcomes arrive.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from monitoring.grouped import codes_of, realized_groups
from training.evaluate import (
    classification_metrics,
    clip_scores,
    interval_metrics,
)

SLICES = {"mode": "main_mode", "lane": "lane_id", "carrier": "carrier_id",
          "customer": "customer_id", "stage": "stage", "path": "path",
          "model_version": "model_version"}
DAILY_SLICES = ("path",)  # judged day by day; every slice is judged over the window
MAX_GROUPS = 25  # largest groups of a slice that the report shows
HOURS_OUT_EDGES = (0, 6, 12, 24, 48, 96, 168, 336, np.inf)
RELIABILITY_BINS = 10
MIN_GROUP = 50  # fewest judged rows a slice group needs to get metrics
HEADLINE = ("roc_auc", "log_loss", "brier", "ece", "late_rate", "mean_p")


def realized(rows: pd.DataFrame) -> dict[str, float]:
    """The evaluation's metrics on judged rows, plus P10-P90 coverage and the ETA's error."""
    out = classification_metrics(rows["y"], rows["p"])
    interval = interval_metrics(rows["delay"], rows["q10"], rows["q50"], rows["q90"])
    out["coverage_p10_p90"] = interval["coverage_p10_p90"]
    err = rows["eta_err_h"].to_numpy(float)
    err = err[np.isfinite(err)]
    out["eta_mae_h"] = float(err.mean()) if len(err) else float("nan")
    # what the model itself expected on these rows: a calibrated model's realized log loss
    # stays near it whatever the slice's difficulty
    out["expected_log_loss"] = estimated(rows["p"])["expected_log_loss"]
    return out


def estimated(p) -> dict[str, float]:
    """CBPE: expected late rate, log loss and AUC from calibrated probabilities alone."""
    p = clip_scores(np.asarray(p, float))
    p = p[np.isfinite(p)]
    if len(p) == 0:
        return {"expected_late_rate": float("nan"), "expected_log_loss": float("nan"),
                "expected_roc_auc": float("nan"), "n": 0.0}
    entropy = -(p * np.log(p) + (1 - p) * np.log(1 - p))
    order = np.argsort(p, kind="stable")
    s, w_late, w_on = p[order], p[order], 1 - p[order]
    # for each row, the on-time weight of rows ranked strictly below it (ties count half)
    below = np.cumsum(w_on) - w_on
    _, first, counts = np.unique(s, return_index=True, return_counts=True)
    tie_on = np.add.reduceat(w_on, first)
    start_below = below[first]
    group = np.repeat(np.arange(len(first)), counts)
    ranked_below = start_below[group] + 0.5 * (tie_on[group] - w_on)
    pairs = w_late.sum() * w_on.sum() - (w_late * w_on).sum()
    auc = float((w_late * ranked_below).sum() / pairs) if pairs > 0 else float("nan")
    return {"expected_late_rate": float(p.mean()), "expected_log_loss": float(entropy.mean()),
            "expected_roc_auc": auc, "n": float(len(p))}


def by_day(rows: pd.DataFrame) -> pd.DataFrame:
    """Realized metrics per prediction day, overall and per daily slice (groups of at least
    MIN_GROUP rows): tidy rows [day, slice, group, metric, value]."""
    days, day_values = codes_of(rows["day"])
    n_days = len(day_values)
    overall = realized_groups(rows, days, n_days)
    sizes = np.bincount(days[days >= 0], minlength=n_days)
    slices = []
    for name in DAILY_SLICES:
        codes, values = codes_of(rows[SLICES[name]])
        both = np.where((days >= 0) & (codes >= 0), days * len(values) + codes, -1)
        slices.append((name, values, realized_groups(rows, both, n_days * len(values)),
                       np.bincount(both[both >= 0], minlength=n_days * len(values))))
    out = []
    for d, day in enumerate(day_values):
        if sizes[d]:
            out += _tidy(day, "overall", "all", overall.iloc[d].to_dict())
        for name, values, table, counts in slices:
            for v, group in enumerate(values):
                if counts[d * len(values) + v] >= MIN_GROUP:
                    out += _tidy(day, name, group, table.iloc[d * len(values) + v].to_dict())
    return pd.DataFrame(out, columns=["day", "slice", "group", "metric", "value"])


def by_slice(rows: pd.DataFrame) -> pd.DataFrame:
    """Realized metrics over the whole window per slice group: the MAX_GROUPS largest groups
    of each slice with at least MIN_GROUP judged rows, every row of each."""
    everyone = realized_groups(rows, np.zeros(len(rows), np.int64), 1)
    out = _tidy(None, "overall", "all", everyone.iloc[0].to_dict())
    for name, column in SLICES.items():
        codes, values = codes_of(rows[column])
        sizes = np.bincount(codes[codes >= 0], minlength=len(values))
        top = [g for g in np.argsort(-sizes, kind="stable") if sizes[g] >= MIN_GROUP]
        top = top[:MAX_GROUPS]
        remap = np.full(len(values) + 1, -1, np.int64)
        remap[top] = np.arange(len(top))
        table = realized_groups(rows, remap[codes], len(top))  # code -1 maps to -1
        for i, g in enumerate(top):
            metrics = table.iloc[i].to_dict()
            metrics["n"] = float(sizes[g])  # the group's judged rows
            out += _tidy(None, name, values[g], metrics)
    return pd.DataFrame(out, columns=["day", "slice", "group", "metric", "value"])


def _tidy(day, slice_name: str, group, metrics: dict) -> list[tuple]:
    return [(day, slice_name, str(group), k, float(v)) for k, v in metrics.items()]


def reliability(rows: pd.DataFrame, bins: int = RELIABILITY_BINS) -> pd.DataFrame:
    """Mean P(late) against the observed late rate in equal-width bins of P(late)."""
    p = clip_scores(rows["p"].to_numpy(float))
    y = rows["y"].to_numpy(float)
    at = np.minimum((p * bins).astype(int), bins - 1)
    n = np.bincount(at, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return pd.DataFrame({"bin": np.arange(bins), "n": n,
                             "mean_p": np.bincount(at, p, bins) / n,
                             "late_rate": np.bincount(at, y, bins) / n})


def hours_out(rows: pd.DataFrame) -> pd.DataFrame:
    """The ETA's mean and median absolute error (hours) by hours before the delivery."""
    lead = rows["lead_h"].to_numpy(float)
    err = rows["eta_err_h"].to_numpy(float)
    keep = np.isfinite(lead) & np.isfinite(err) & (lead >= 0)
    edges = np.asarray(HOURS_OUT_EDGES, float)
    band = pd.cut(lead[keep], edges, right=False)
    frame = pd.DataFrame({"band": band, "err": err[keep]})
    out = frame.groupby("band", observed=False)["err"].agg(["count", "mean", "median"])
    out.index = [f"{int(i.left)}-{'' if np.isinf(i.right) else int(i.right)} h"
                 for i in out.index]
    return out.rename(columns={"count": "n", "mean": "mae_h", "median": "median_h"})
