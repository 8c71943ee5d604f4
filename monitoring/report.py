"""The monitoring reports: a JSON summary for machines, an HTML page with plots for people,
both logged to MLflow (experiment `shipdelay-monitoring`), and `latest.json` beside them, which
the prediction service reads for its `/metrics` gauges.

`<reports_dir>/monitor/<cut-off day>/monitor.json` and `monitor.html`; the plots are PNGs
embedded in the page (realized metrics over time with the share already judged, the reliability
curve, drift by feature, hours out).
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import logging
import os
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from monitoring.drift import PREDICTION, Reference
from monitoring.summary import MonitorSummary

log = logging.getLogger("shipdelay.monitoring")
EXPERIMENT = "shipdelay-monitoring"
JOB = "monitor"


def latest_summary_path(settings) -> Path:
    return settings.reports_dir / JOB / "latest.json"


def _atomic_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _records(frame) -> list[dict]:
    if not isinstance(frame, pd.DataFrame) or frame.empty:
        return []
    return json.loads(frame.to_json(orient="records", date_format="iso"))


def write(settings, summary: MonitorSummary, tables: dict, judged: pd.DataFrame | None,
          ref: Reference | None, log_to_mlflow: bool = True) -> None:
    """Write the JSON and HTML reports (and latest.json), then log them to MLflow; fills in
    the summary's paths. An MLflow failure is logged and counted, never raised."""
    folder = settings.reports_dir / JOB / pd.Timestamp(summary.as_of).date().isoformat()
    summary.json_path = folder / "monitor.json"
    summary.html_path = folder / "monitor.html"
    body = summary.to_dict()
    body["reference"] = ({"version": ref.version, "source": ref.source, "rows": ref.rows,
                          "log_loss": ref.log_loss} if ref else None)
    body["tables"] = {k: (_records(v) if isinstance(v, pd.DataFrame) else v)
                      for k, v in tables.items()}
    text = json.dumps(body, default=str, allow_nan=True)
    _atomic_text(summary.json_path, text)
    _atomic_text(summary.html_path, page(summary, tables))
    _atomic_text(latest_summary_path(settings), text)
    if log_to_mlflow:
        try:
            _log_run(settings, summary, folder)
        except Exception as err:  # noqa: BLE001 - the reports are written; MLflow is extra
            log.warning("monitoring run not logged to MLflow: %s", err)
            summary.counts["mlflow_failed"] = 1


def _log_run(settings, summary: MonitorSummary, folder: Path) -> None:
    import mlflow

    from registry.store import activate, ensure_experiment

    with contextlib.ExitStack() as stack:
        if os.environ.get("MLFLOW_RUN_ID"):
            activate(settings)
            stack.enter_context(mlflow.start_run())
        else:
            ensure_experiment(settings, EXPERIMENT)
        stack.enter_context(mlflow.start_run(run_name=f"{JOB} {summary.as_of[:10]}",
                                             nested=mlflow.active_run() is not None))
        mlflow.set_tags({"job": JOB, "should_retrain": str(summary.should_retrain)})
        mlflow.log_params({"as_of": summary.as_of, "days": summary.days})
        mlflow.log_metrics({k: v for k, v in summary.headline.items()
                            if isinstance(v, float) and np.isfinite(v)})
        mlflow.log_artifacts(str(folder), artifact_path="report")


# -- the page -----------------------------------------------------------------------------------
def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return f'<img src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _plots(tables: dict) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    daily = tables["realized_by_day"]
    counts = tables["daily_counts"]
    if len(daily):
        overall = daily[daily["slice"] == "overall"].pivot(index="day", columns="metric",
                                                           values="value")
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
        for ax, metric in zip(axes, ("roc_auc", "log_loss", "ece")):
            if metric in overall:
                ax.plot(pd.to_datetime(overall.index), overall[metric], marker=".")
            ax.set_title(f"realized {metric} by prediction day")
            ax.tick_params(axis="x", rotation=45)
        out.append(("Realized performance over time", _png(fig)))
    if len(counts):
        per = counts[counts["path"] != "all"].groupby("day")[["logged", "judged"]].sum()
        if len(per):
            fig, ax = plt.subplots(figsize=(8, 3))
            ax.bar(pd.to_datetime(per.index), per["logged"], label="logged", color="0.75")
            ax.bar(pd.to_datetime(per.index), per["judged"], label="judged", color="tab:blue")
            ax.legend()
            ax.set_title("predictions per day and how many are judged")
            out.append(("Predictions judged so far", _png(fig)))
    rel = tables["reliability"]
    if len(rel):
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        ax.plot([0, 1], [0, 1], color="0.6", linestyle="--")
        ok = rel["n"] > 0
        ax.plot(rel.loc[ok, "mean_p"], rel.loc[ok, "late_rate"], marker="o")
        ax.set_xlabel("mean P(late)")
        ax.set_ylabel("observed late rate")
        ax.set_title("reliability of judged predictions")
        out.append(("Reliability curve", _png(fig)))
    drift = tables["drift_recent"]
    if len(drift):
        top = drift[drift["slice"] == "overall"].nlargest(20, "psi")
        fig, ax = plt.subplots(figsize=(8, 5))
        ax.barh(top["feature"][::-1], top["psi"][::-1],
                color=["tab:red" if f == PREDICTION else "tab:blue" for f in top["feature"]][::-1])
        ax.set_xlabel("PSI against the training window (newest days)")
        out.append(("Drift by feature", _png(fig)))
    hours = tables["hours_out"]
    if len(hours):
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.bar(hours["band"].astype(str), hours["mae_h"])
        ax.set_xlabel("hours before delivery")
        ax.set_ylabel("mean |ETA error| (h)")
        ax.set_title("hours out")
        out.append(("Hours out", _png(fig)))
    return out


def _table(frame: pd.DataFrame, rows: int = 30) -> str:
    if not isinstance(frame, pd.DataFrame) or frame.empty:
        return "<p>none</p>"
    return frame.head(rows).to_html(index=False, float_format=lambda v: f"{v:.4g}",
                                    border=0, classes="t")


def page(summary: MonitorSummary, tables: dict) -> str:
    alarms = pd.DataFrame([a.__dict__ for a in summary.alarms])
    head = pd.DataFrame([{"metric": k, "value": v} for k, v in summary.headline.items()])
    counts = pd.DataFrame([{"count": k, "value": v} for k, v in summary.counts.items()])
    slices = tables["realized_by_slice"]
    if len(slices):
        slices = slices.pivot_table(index=["slice", "group"], columns="metric",
                                    values="value").reset_index()
    parts = [f"<h1>shipdelay monitoring, {html.escape(summary.as_of)} ({summary.days} days)</h1>",
             (f"<p>{summary.logged:,} predictions logged, {summary.judged:,} judged; "
              f"{len(summary.alarms)} alarm(s); retrain: {summary.should_retrain}</p>"),
             "<h2>Alarms</h2>", _table(alarms, 100), "<h2>Headline</h2>", _table(head, 50),
             "<h2>Bad input and housekeeping</h2>", _table(counts)]
    for title, img in _plots(tables):
        parts += [f"<h2>{title}</h2>", img]
    parts += ["<h2>Realized metrics by slice (window)</h2>", _table(slices, 200),
              "<h2>Hours out</h2>", _table(tables["hours_out"]),
              "<h2>Estimated performance before labels (CBPE)</h2>",
              _table(tables["estimated_by_day"], 200),
              "<h2>Input volume per source and day</h2>", _table(tables["volume"], 400),
              "<h2>Feature view freshness (hours)</h2>",
              _table(pd.DataFrame([tables["freshness_h"]]))]
    style = ("body{font-family:sans-serif;margin:2em} table.t{border-collapse:collapse}"
             " table.t td,table.t th{padding:2px 8px;border-bottom:1px solid #ddd}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>shipdelay monitoring"
            f"</title><style>{style}</style></head><body>{''.join(parts)}</body></html>")


def print_summary(summary: MonitorSummary, console, shown: int = 15) -> None:
    """What `shipdelay monitor` prints: counts, headline numbers, the alarms."""
    from rich.table import Table

    h = summary.headline
    console.print(f"[bold]{summary.logged:,} predictions logged over {summary.days} days up to "
                  f"{summary.as_of[:16]} UTC, {summary.judged:,} judged[/bold]")
    numbers = Table("realized (judged)", "value", "estimated (not judged yet)", "value")
    left = [("AUC", "roc_auc"), ("log loss", "log_loss"), ("Brier", "brier"), ("ECE", "ece"),
            ("P10-P90 coverage", "coverage_p10_p90"), ("ETA error, h", "eta_mae_h")]
    right = [("AUC", "expected_roc_auc"), ("log loss", "expected_log_loss"),
             ("late rate", "expected_late_rate"), ("largest feature PSI", "max_feature_psi"),
             ("P(late) PSI", "prediction_psi"), ("", "")]

    def shown_value(key: str) -> str:
        v = h.get(key)
        return f"{v:.3f}" if isinstance(v, float) and np.isfinite(v) else ("-" if key else "")
    for (ln, lk), (rn, rk) in zip(left, right):
        numbers.add_row(ln, shown_value(lk), rn, shown_value(rk))
    console.print(numbers)
    bad = {k: v for k, v in summary.counts.items() if v}
    if bad:
        console.print("counted: " + ", ".join(f"{k.replace('_', ' ')} {v:,}"
                                              for k, v in bad.items()))
    if summary.alarms:
        table = Table("kind", "slice", "what", title=f"{len(summary.alarms)} alarm(s)"
                      + (f", the {shown} first" if len(summary.alarms) > shown else ""))
        for a in summary.alarms[:shown]:
            table.add_row(a.kind, a.slice, a.message)
        console.print(table)
        if summary.should_retrain:
            console.print("drift or performance alarms: retrain (`shipdelay retrain`, or let "
                          "`shipdelay nightly` do it)")
    else:
        console.print("no alarm")
    console.print(f"report: {summary.html_path}\nsummary: {summary.json_path}")
