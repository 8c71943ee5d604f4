"""Evaluation figures as PNG files: calibration, ROC/PR, a metric by journey stage, gain
importance and a SHAP summary from LightGBM's own TreeSHAP (`pred_contrib=True`).

With a ceiling, `model_minus_ceiling` shows the model's AUC and log loss minus the ceiling's per
journey stage, with the paired bootstrap interval.

Every function takes the data and a path, writes one PNG with the Agg backend (no display
needed) and returns the path, so a report or an MLflow run can log it as an artifact.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

CEILING = "ceiling"
_CEILING_COLOR = "0.25"
_DPI = 110


def _colors(names) -> dict[str, object]:
    """Stable colours: the ceiling dark grey, the rest from the tab10 cycle in order."""
    cycle = plt.get_cmap("tab10").colors
    out, i = {}, 0
    for name in names:
        if name == CEILING:
            out[name] = _CEILING_COLOR
        else:
            out[name] = cycle[i % len(cycle)]
            i += 1
    return out


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _pair(y, p) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    keep = np.isfinite(y) & np.isfinite(p)
    return y[keep], p[keep]


def calibration_curve(y, scores: Mapping[str, np.ndarray], path, bins: int = 10) -> Path:
    """Reliability diagram (observed late rate vs mean score per equal-width bin) with the share
    of rows per bin underneath, one line per scorer."""
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(6.5, 7), sharex=True,
                                   gridspec_kw={"height_ratios": [3, 1]})
    colors = _colors(scores)
    edges = np.linspace(0, 1, bins + 1)
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1, label="perfectly calibrated")
    for name, p in scores.items():
        yy, pp = _pair(y, p)
        if len(yy) == 0:
            continue
        idx = np.minimum((np.clip(pp, 0, 1) * bins).astype(int), bins - 1)
        count = np.bincount(idx, minlength=bins)
        seen = count > 0
        mean_p = np.bincount(idx, pp, bins)[seen] / count[seen]
        rate = np.bincount(idx, yy, bins)[seen] / count[seen]
        ax.plot(mean_p, rate, marker="o", ms=4, color=colors[name], label=f"{name} (n={len(yy):,})")
        hist.step(edges[:-1], count / count.sum(), where="post", color=colors[name], lw=1.3)
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="observed late rate",
           title="Calibration: predicted P(late) vs observed late rate")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    hist.set(xlabel="predicted P(late)", ylabel="share of rows")
    hist.grid(alpha=0.3)
    return _save(fig, path)


def roc_pr_curves(y, scores: Mapping[str, np.ndarray], path) -> Path:
    """ROC (left) and precision-recall (right) curves, AUC / average precision in the legend."""
    fig, (roc, pr) = plt.subplots(1, 2, figsize=(12, 5.2))
    colors = _colors(scores)
    roc.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1, label="chance")
    base, total = None, int(np.isfinite(np.asarray(y, dtype=float)).sum())
    for name, p in scores.items():
        yy, pp = _pair(y, p)
        if len(np.unique(yy)) < 2:
            continue
        subset = f" (n={len(yy):,})" if len(yy) < total else ""  # e.g. ceiling rows only
        fpr, tpr, _ = roc_curve(yy, pp)
        roc.plot(fpr, tpr, color=colors[name], lw=1.6,
                 label=f"{name}  AUC {roc_auc_score(yy, pp):.3f}{subset}")
        prec, rec, _ = precision_recall_curve(yy, pp)
        pr.plot(rec, prec, color=colors[name], lw=1.6,
                label=f"{name}  AP {average_precision_score(yy, pp):.3f}{subset}")
        base = yy.mean() if base is None else base
    if base is not None:
        pr.axhline(base, ls="--", color="0.6", lw=1, label=f"late rate {base:.3f}")
    roc.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate",
            ylabel="true positive rate (recall)", title="ROC curve")
    pr.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="recall", ylabel="precision",
           title="Precision-recall curve")
    for ax in (roc, pr):
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if ax is roc else "lower left", fontsize=8)
    return _save(fig, path)


def metric_by_stage(table: pd.DataFrame, metric: str, path) -> Path:
    """Grouped bars of `metric` per journey stage, one bar per scorer (model, baselines, ceiling).

    `table` is `evaluate_many`'s output (or `evaluate`'s, then a single bar per stage).
    """
    from training.evaluate import STAGES

    rows = table[(table["slice"] == "stage") & (table["metric"] == metric)]
    if "model" not in rows:
        rows = rows.assign(model="model")
    if rows.empty:
        raise ValueError(f"no stage rows for metric {metric!r}")
    wide = rows.pivot_table(index="group", columns="model", values="value", aggfunc="first",
                            dropna=False)
    stages = [s for s in STAGES if s in wide.index]
    names = list(dict.fromkeys(rows["model"]))
    names = [n for n in names if n != CEILING] + ([CEILING] if CEILING in names else [])
    wide = wide.reindex(index=stages, columns=names)
    counts = table[(table["slice"] == "stage") & (table["metric"] == "n")]
    counts = counts.groupby("group")["value"].max().reindex(stages)

    colors = _colors(names)
    fig, ax = plt.subplots(figsize=(max(7, 1.6 * len(stages) + 0.5 * len(names)), 5))
    x = np.arange(len(stages))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        vals = wide[name].to_numpy(float)
        bars = ax.bar(x + (i - (len(names) - 1) / 2) * width, vals, width, label=name,
                      color=colors[name], hatch="//" if name == CEILING else None,
                      edgecolor="white" if name == CEILING else None)
        if len(names) * len(stages) <= 30:
            ax.bar_label(bars, labels=[f"{v:.2f}" if np.isfinite(v) else "" for v in vals],
                         fontsize=7, padding=1)
    labels = [f"{s}\n(n={int(counts[s]):,})" if np.isfinite(counts.get(s, np.nan)) else s
              for s in stages]
    ax.set_xticks(x, labels)
    ax.set(xlabel="journey stage", ylabel=metric, title=f"{metric} by journey stage")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=min(len(names), 5), loc="upper center",
              bbox_to_anchor=(0.5, -0.18), frameon=False)
    return _save(fig, path)


def model_minus_ceiling(paired: pd.DataFrame, path, level: float = 0.9) -> Path:
    """The model's AUC and log loss minus the ceiling's per journey stage (overall first), on the
    same rows, with the paired bootstrap interval as error bars (`compare_paired`'s table, its
    scorers named model and ceiling). Above zero for AUC or below it for log loss, with the whole
    bar, would mean the model beats what the hidden state allows: the ceiling would be wrong."""
    from training.evaluate import STAGES

    metrics = [m for m in ("roc_auc", "log_loss") if m in set(paired["metric"])]
    if not metrics:
        raise ValueError("no roc_auc or log_loss rows to plot")
    fig, axes = plt.subplots(1, len(metrics), figsize=(6.2 * len(metrics), 4.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        rows = paired[paired["metric"] == metric].copy()
        order = {("overall", "all"): -1} | {("stage", s): i for i, s in enumerate(STAGES)}
        rows["at"] = [order.get((a, b), 99) for a, b in zip(rows["slice"], rows["group"])]
        rows = rows.sort_values("at")
        x = np.arange(len(rows))
        diff = rows["diff"].to_numpy(float)
        err = np.vstack([diff - rows["lo"].to_numpy(float), rows["hi"].to_numpy(float) - diff])
        ax.errorbar(x, diff, yerr=err, fmt="o", color="tab:blue", ecolor="0.4", capsize=4)
        ax.axhline(0, color=_CEILING_COLOR, lw=1, ls="--")
        ax.set_xticks(x, [f"{g}\n(n={int(n):,})" for g, n in zip(rows["group"], rows["n"])])
        better = "above zero: model better" if metric == "roc_auc" else \
            "below zero: model better"
        ax.set(ylabel=f"{metric}: model - ceiling", xlabel="journey stage",
               title=f"{metric}, model minus ceiling ({level:.0%} interval; {better})")
        ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def feature_importance(booster, path, top: int = 25) -> Path:
    """Horizontal bars of the `top` features by total split gain, as a share of all gain."""
    gain = pd.Series(booster.feature_importance(importance_type="gain"),
                     index=booster.feature_name(), dtype=float)
    share = (gain / gain.sum() if gain.sum() > 0 else gain).sort_values(ascending=False)
    share = share.head(top)[::-1]
    fig, ax = plt.subplots(figsize=(7.5, 0.28 * len(share) + 1.4))
    ax.barh(share.index, 100 * share.to_numpy(), color="tab:blue")
    ax.set(xlabel="share of total split gain (%)",
           title=f"Feature importance (gain), top {len(share)}")
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def _value_colour(col: np.ndarray) -> np.ndarray:
    """Each feature's values as percentile ranks in [0, 1] (NaN stays NaN), so one colour scale
    serves features of any unit, and categorical codes too."""
    out = np.full(len(col), np.nan)
    ok = np.isfinite(col)
    if ok.sum() > 1:
        out[ok] = pd.Series(col[ok]).rank(pct=True).to_numpy()
    elif ok.any():
        out[ok] = 0.5
    return out


def shap_summary(booster, X: pd.DataFrame, path, top: int = 20, max_rows: int = 2000,
                 seed: int = 0) -> Path:
    """SHAP summary from LightGBM's TreeSHAP: mean |contribution| bars (left) and a jittered dot
    strip per feature (right), dots coloured by the feature's value rank (grey = missing).

    Contributions are in the booster's raw units (log-odds for the classifier). At most
    `max_rows` rows are drawn, sampled with a fixed seed.
    """
    if len(X) > max_rows:
        X = X.sample(max_rows, random_state=seed)
    contrib = np.asarray(booster.predict(X, pred_contrib=True))[:, :-1]  # last column: bias
    names = list(X.columns)
    mean_abs = np.abs(contrib).mean(axis=0)
    order = np.argsort(mean_abs)[::-1][:top][::-1]  # largest at the top of the plot

    fig, (bars, dots) = plt.subplots(1, 2, figsize=(13, max(3.5, 0.32 * len(order) + 1.8)),
                                     sharey=True, layout="constrained",
                                     gridspec_kw={"width_ratios": [1, 2.2]})
    ypos = np.arange(len(order))
    bars.barh(ypos, mean_abs[order], color="tab:blue")
    bars.set_yticks(ypos, [names[i] for i in order], fontsize=8)
    bars.set(xlabel="mean |SHAP value|", title="Mean impact")
    bars.grid(axis="x", alpha=0.3)

    rng = np.random.default_rng(seed)
    cmap = plt.get_cmap("coolwarm")
    values = X.to_numpy(dtype=float)
    for row, j in enumerate(order):
        colour = _value_colour(values[:, j])
        jitter = row + rng.uniform(-0.3, 0.3, len(colour))
        miss = np.isnan(colour)
        sc = dots.scatter(contrib[~miss, j], jitter[~miss], s=4, c=colour[~miss], cmap=cmap,
                          vmin=0, vmax=1, alpha=0.7, lw=0)
        dots.scatter(contrib[miss, j], jitter[miss], s=4, color="0.55", alpha=0.6, lw=0)
    dots.axvline(0, color="0.4", lw=0.8)
    dots.set(xlabel="SHAP value (contribution to raw score, log-odds for P(late))",
             title=f"Per-row contributions (n={len(X):,})")
    dots.grid(axis="x", alpha=0.3)
    if len(order):
        cbar = fig.colorbar(sc, ax=dots, pad=0.01, fraction=0.04, aspect=30)
        cbar.set_ticks([0, 1], labels=["low", "high"])
        cbar.set_label("feature value (rank; grey = missing)")
    fig.suptitle(f"SHAP summary, top {len(order)} features")
    return _save(fig, path)


__all__ = [
    "calibration_curve",
    "feature_importance",
    "metric_by_stage",
    "model_minus_ceiling",
    "roc_pr_curves",
    "shap_summary",
]
