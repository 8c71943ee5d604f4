"""The nightly run's summary: counts by risk band, mode, lane and customer, the riskiest
shipments with their reasons, as CSV files and one self-contained HTML page with plots, logged
to MLflow as a run (experiment `shipdelay-batch`).

Everything is computed from the published scores partition with DuckDB, so both engines (local
and Spark) get the same report from the same table, and a report can be rebuilt from any past
partition. Plots are matplotlib PNGs embedded in the page as base64: one file to mail or open.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import os
import shutil
import uuid
from pathlib import Path

import duckdb
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from serving.scorer import Thresholds
from shipdelay.parquet_io import sql_source
from shipdelay.settings import Settings

EXPERIMENT = "shipdelay-batch"
JOB = "score-batch"
BANDS = ["high", "medium", "low"]
COLORS = {"high": "#c0392b", "medium": "#e69f00", "low": "#4c9f70"}
GROUPS = {"mode": "mode", "lane": "lane", "customer": "customer"}
SHOWN_GROUPS = 20  # rows of each grouped table on the page (the CSV has all)


def _query(partition: Path, sql: str) -> pd.DataFrame:
    files = sorted(str(p) for p in Path(partition).glob("*.parquet"))
    with duckdb.connect() as con:
        if files:
            con.execute(f"create view scores as select * from {sql_source(con, files)}")
        else:  # nothing in flight: an empty table of the same shape
            from serving.batch import SCORES_SCHEMA

            con.register("scores", SCORES_SCHEMA.empty_table())
        return con.sql(sql).df()


def _by(column: str) -> str:
    bands = ", ".join(f"count(*) filter (where risk_band = '{b}') as {b}" for b in BANDS)
    return f"""select {column}, count(*) as shipments, {bands},
                      avg(p_late) as mean_p_late, median(delay_p50_h) as median_delay_p50_h
               from scores group by {column}
               order by high desc, mean_p_late desc, {column}"""


def summaries(partition: Path, top: int) -> dict[str, pd.DataFrame]:
    """by_band, by_mode, by_lane, by_customer and the `top` riskiest shipments."""
    out = {"by_band": _query(partition, """
        select risk_band, count(*) as shipments, avg(p_late) as mean_p_late,
               min(p_late) as min_p_late, max(p_late) as max_p_late,
               median(delay_p50_h) as median_delay_p50_h
        from scores group by risk_band""")}
    out["by_band"] = (out["by_band"].set_index("risk_band").reindex(BANDS).fillna(
        {"shipments": 0}).astype({"shipments": "int64"}).reset_index())
    for name, column in GROUPS.items():
        out[f"by_{name}"] = _query(partition, _by(column))
    out["top"] = _query(partition, f"""
        select shipment_id, mode, lane, customer, carrier, p_late, risk_band, delay_p50_h,
               delay_p90_h, eta, eta_p10, eta_p90, reasons
        from scores order by p_late desc, shipment_id limit {int(top)}""")
    out["p_late"] = _query(partition, "select p_late from scores")
    return out


# -- plots ------------------------------------------------------------------------------------
def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def plot_distribution(p: np.ndarray, thresholds: Thresholds) -> str:
    fig, ax = plt.subplots(figsize=(7, 3.2))
    edges = np.linspace(0, 1, 51)
    counts, _ = np.histogram(p, bins=edges)
    mids = (edges[:-1] + edges[1:]) / 2
    band = np.where(mids >= thresholds.high, "high",
                    np.where(mids >= thresholds.medium, "medium", "low"))
    ax.bar(mids, counts, width=edges[1] - edges[0], color=[COLORS[b] for b in band])
    for x in (thresholds.medium, thresholds.high):
        ax.axvline(x, color="0.3", lw=0.8, ls="--")
    ax.set(xlabel="P(late)", ylabel="shipments", title="Risk of every shipment in flight")
    if counts.max(initial=0) > 0:
        ax.set_yscale("symlog", linthresh=1)
    return _png(fig)


def plot_stacked(frame: pd.DataFrame, column: str, title: str, n: int = 15) -> str:
    shown = frame.head(n).iloc[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.35 * max(len(shown), 3) + 1))
    left = np.zeros(len(shown))
    labels = shown[column].fillna("unknown").astype(str)
    for b in BANDS:
        ax.barh(labels, shown[b], left=left, color=COLORS[b], label=b)
        left += shown[b].to_numpy()
    ax.set(xlabel="shipments", title=title)
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


# -- the page -----------------------------------------------------------------------------------
_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.9em}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f2f2f2} td.n{text-align:right} .high{color:#c0392b;font-weight:600}
.medium{color:#b07800} .low{color:#2e7d4f} img{max-width:100%} dt{font-weight:600}"""


def _table(frame: pd.DataFrame, floats: str = "{:.3f}") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for rec in frame.itertuples(index=False):  # a page's worth of rows, not the table
        cells = []
        for v in rec:
            if isinstance(v, (list, np.ndarray)):
                cells.append("<td>" + "<br>".join(html.escape(str(x)) for x in v) + "</td>")
            elif isinstance(v, (float, np.floating)):
                cells.append(f"<td class=n>{'' if pd.isna(v) else floats.format(v)}</td>")
            elif isinstance(v, (int, np.integer)):
                cells.append(f"<td class=n>{v:,}</td>")
            elif isinstance(v, str) and v in COLORS:
                cells.append(f"<td class={v}>{v}</td>")
            else:
                cells.append(f"<td>{html.escape('' if v is None else str(v))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def render_html(result, tables: dict[str, pd.DataFrame], images: dict[str, str]) -> str:
    facts = {
        "cut-off (UTC)": f"{result.as_of:%Y-%m-%d %H:%M:%S}",
        "run date": result.run_date.isoformat(),
        "model version": result.model_version,
        "engine": result.engine,
        "shipments scored": f"{result.scored:,}",
        "in flight but not in the feature store (not scored)": f"{len(result.missing):,}",
        "feature age at the cut-off": ", ".join(f"{v} {a:.1f} h"
                                                for v, a in result.feature_age_h.items()),
        "scores table": str(result.partition),
    }
    top = tables["top"].copy()
    for c in ("eta", "eta_p10", "eta_p90"):
        top[c] = pd.to_datetime(top[c], utc=True).dt.strftime("%Y-%m-%d %H:%M")
    parts = [
        f"<h1>Nightly risk scores, {html.escape(result.run_date.isoformat())}</h1><dl>",
        *[f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in facts.items()],
        "</dl><h2>Risk bands</h2>", _table(tables["by_band"]),
        f'<img alt="P(late) distribution" src="data:image/png;base64,{images["distribution"]}">',
        "<h2>By mode</h2>", _table(tables["by_mode"]),
        f'<img alt="by mode" src="data:image/png;base64,{images["mode"]}">',
        (f"<h2>Lanes with the most high-risk shipments (top {SHOWN_GROUPS} of "
         f"{len(tables['by_lane']):,}; all in by_lane.csv)</h2>"),
        f'<img alt="by lane" src="data:image/png;base64,{images["lane"]}">',
        _table(tables["by_lane"].head(SHOWN_GROUPS)),
        (f"<h2>Customers with the most high-risk shipments (top {SHOWN_GROUPS} of "
         f"{len(tables['by_customer']):,}; all in by_customer.csv)</h2>"),
        _table(tables["by_customer"].head(SHOWN_GROUPS)),
        f"<h2>The {len(top)} riskiest shipments</h2>", _table(top),
    ]
    return (f"<!doctype html><html><head><meta charset=utf-8><title>shipdelay scores "
            f"{result.run_date}</title><style>{_CSS}</style></head><body>"
            + "\n".join(parts) + "</body></html>")


def write_report(folder: Path, result, tables: dict[str, pd.DataFrame],
                 thresholds: Thresholds) -> Path:
    """CSV files and report.html into `folder`, replaced as a whole on a rerun."""
    images = {"distribution": plot_distribution(tables["p_late"]["p_late"].to_numpy(), thresholds),
              "mode": plot_stacked(tables["by_mode"], "mode", "Shipments in flight by mode"),
              "lane": plot_stacked(tables["by_lane"], "lane", "Lanes by high-risk shipments")}
    staging = folder.parent / f".{folder.name}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        for name in ("by_band", "by_mode", "by_lane", "by_customer"):
            tables[name].to_csv(staging / f"{name}.csv", index=False)
        top = tables["top"].copy()
        top["reasons"] = [" | ".join(r) for r in top["reasons"]]
        top.to_csv(staging / "top_risk.csv", index=False)
        if result.missing:
            pd.DataFrame({"shipment_id": result.missing}).to_csv(
                staging / "not_in_feature_store.csv", index=False)
        (staging / "report.html").write_text(render_html(result, tables, images))
        (staging / "summary.json").write_text(json.dumps(_summary(result), indent=1))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = folder.parent / f".{folder.name}-old-{uuid.uuid4().hex[:8]}"
    if folder.exists():
        folder.rename(old)
    staging.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def _summary(result) -> dict:
    return {"run_date": result.run_date.isoformat(), "as_of": result.as_of.isoformat(),
            "engine": result.engine, "model_version": result.model_version,
            "scored": result.scored, "not_in_feature_store": len(result.missing),
            "bands": result.bands, "feature_age_h": result.feature_age_h,
            "partition": str(result.partition),
            "reasons": {"from_p_late": result.reasons.from_p, "most": result.reasons.most},
            "seconds": {k: round(v, 3) for k, v in result.seconds.items()}}


def log_run(settings: Settings, result, folder: Path) -> str:
    """One MLflow run per scored day: parameters, counts and timings, the report as artifacts.

    In the experiment `shipdelay-batch`; launched by `mlflow run` (MLFLOW_RUN_ID set), a run
    nested in the project's run instead."""
    import mlflow

    from registry.store import activate, ensure_experiment

    with contextlib.ExitStack() as stack:
        if os.environ.get("MLFLOW_RUN_ID"):
            activate(settings)
            stack.enter_context(mlflow.start_run())  # the project's run
        else:
            ensure_experiment(settings, EXPERIMENT)
        run = stack.enter_context(mlflow.start_run(run_name=f"{JOB} {result.run_date}",
                                                   nested=mlflow.active_run() is not None))
        mlflow.set_tags({"job": JOB, "run_date": result.run_date.isoformat()})
        mlflow.log_params({"as_of": result.as_of.isoformat(), "engine": result.engine,
                           "model_version": result.model_version,
                           "run_date": result.run_date.isoformat()})
        mlflow.log_metrics({"scored": result.scored, "not_in_feature_store": len(result.missing),
                            **{f"band_{b}": n for b, n in result.bands.items()},
                            **{f"feature_age_h.{v}": a for v, a in result.feature_age_h.items()},
                            **{f"seconds_{k}": s for k, s in result.seconds.items()}})
        mlflow.log_artifacts(str(folder), artifact_path="report")
    return run.info.run_id


def finish(settings: Settings, result, top: int, thresholds: Thresholds | None = None,
           log_run_to_mlflow: bool = True) -> None:
    """Summaries of the published partition -> CSV + HTML -> MLflow; fills `result` in."""
    thresholds = thresholds or Thresholds()
    tables = summaries(result.partition, top)
    result.bands = {b: int(n) for b, n in zip(tables["by_band"]["risk_band"],
                                              tables["by_band"]["shipments"])}
    result.top = tables["top"]
    folder = settings.reports_dir / JOB / result.run_date.isoformat()
    result.report_dir = write_report(folder, result, tables, thresholds)
    if log_run_to_mlflow:
        result.run_id = log_run(settings, result, result.report_dir)


def print_summary(result, console, shown: int = 10) -> None:
    """What `shipdelay score-batch` prints for one run: bands, modes, the riskiest shipments."""
    from rich.table import Table

    console.print(f"[bold]{result.scored:,} shipments in flight at {result.as_of:%Y-%m-%d %H:%M} "
                  f"UTC scored by model version {result.model_version}[/bold] "
                  f"({result.engine} engine)")
    head = Table("risk band", "shipments", "share")
    for band in BANDS:
        n = result.bands.get(band, 0)
        head.add_row(f"[{COLORS[band]}]{band}[/]", f"{n:,}", f"{n / max(result.scored, 1):.1%}")
    console.print(head)
    top = result.top.head(shown)
    table = Table("shipment", "mode", "P(late)", "delay h\nP50 / P90", "why",
                  title=f"the {len(top)} riskiest shipments")
    for r in top.itertuples(index=False):
        table.add_row(r.shipment_id, r.mode, f"{r.p_late:.0%}",
                      f"{r.delay_p50_h:+.0f} / {r.delay_p90_h:+.0f}", "\n".join(r.reasons))
    console.print(table)
    if result.missing:
        console.print(f"[yellow]{len(result.missing):,} shipment(s) in flight are not in the "
                      "feature store and were not scored (listed in "
                      "not_in_feature_store.csv): run `shipdelay features build`[/yellow]")
    console.print(f"scores: {result.partition}\nreport: {result.report_dir / 'report.html'}"
                  + (f"\nMLflow run {result.run_id}" if result.run_id else ""))


def print_backfill(results, console) -> None:
    """One line per day of a backfill."""
    from rich.table import Table

    table = Table("run date", "cut-off (UTC)", "scored", *BANDS, "not in store",
                  title=f"backfill: {len(results)} day(s)")
    for r in results:
        table.add_row(r.run_date.isoformat(), f"{r.as_of:%Y-%m-%d %H:%M}", f"{r.scored:,}",
                      *[f"{r.bands.get(b, 0):,}" for b in BANDS], f"{len(r.missing):,}")
    console.print(table)
    if results:
        console.print(f"scores: {results[0].partition.parent}; reports under "
                      f"{results[0].report_dir.parent}")
