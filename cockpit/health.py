"""Model health (/health): the monitor's latest summary when `shipdelay monitor` has run
(realized accuracy, drift, alarms), and always which model serves and how fresh the numbers are.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
from dash import html

from cockpit.state import Cockpit
from cockpit.ui import data_table

METRICS = {"roc_auc": "ROC AUC (realized)", "log_loss": "log loss (realized)",
           "brier": "Brier score (realized)", "ece": "calibration error (realized)",
           "coverage_p10_p90": "share of deliveries inside P10-P90",
           "eta_mae_h": "ETA mean absolute error (h)", "expected_roc_auc": "ROC AUC (estimated, "
           "not yet judged)", "max_feature_psi": "largest feature drift (PSI)",
           "prediction_psi": "P(late) drift (PSI)", "logged": "predictions logged",
           "judged": "predictions judged", "judged_share": "share judged"}


def monitor_summary(reports_dir: Path) -> dict | None:
    """The latest monitor summary (`<reports>/monitor/latest.json`), or None when absent or
    unreadable."""
    path = reports_dir / "monitor" / "latest.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def headline_rows(summary: dict) -> pd.DataFrame:
    """The summary's headline figures for people: name, value (rounded)."""
    rows = []
    for key, label in METRICS.items():
        value = (summary.get("headline") or {}).get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        shown = f"{value:,.0f}" if key in ("logged", "judged") else (
            f"{value:.0%}" if key in ("coverage_p10_p90", "judged_share") else f"{value:.3f}")
        rows.append({"figure": label, "value": shown})
    return pd.DataFrame(rows, columns=["figure", "value"])


def serving_versions(cockpit: Cockpit) -> dict[str, str | None]:
    """The model version of the nightly scores and of the service's answers (asked about one
    shipment in flight)."""
    world = cockpit.world()
    nightly = (world.shipments["model_version"].astype(str).mode().iloc[0]
               if len(world.shipments) else None)
    live, problem = cockpit.live(world.shipments["shipment_id"].head(1).tolist())
    service = None
    if cockpit.service_url and not problem and "source" in live and \
            (live["source"] == "service").any():
        service = cockpit.last_service_version
    return {"nightly": nightly, "service": service, "problem": problem}


def feature_freshness(settings, now: pd.Timestamp) -> str:
    """How far the feature store has been rolled (its offline mark) against the lake's now."""
    try:
        from features.marks import offline_mark
        from features.store import offline_dir

        mark = offline_mark(offline_dir(settings))
    except (ImportError, OSError, ValueError, KeyError) as err:
        return f"Feature store: its mark could not be read ({err})."
    if mark is None:
        return "Feature store: not built yet (`shipdelay features build`)."
    behind = (now - mark).total_seconds() / 3600
    return (f"Feature store: rolled up to {mark:%a %d %b %H:%M} UTC, "
            f"{max(behind, 0):.0f} h behind the lake's newest event.")


def health_page(cockpit: Cockpit) -> html.Div:
    world = cockpit.world()
    versions = serving_versions(cockpit)
    summary = monitor_summary(cockpit.settings.reports_dir)
    age = None
    if len(world.shipments):
        cut = pd.to_datetime(world.shipments["as_of"], utc=True).max()
        age = (world.now - cut).total_seconds() / 3600
    facts = [
        html.Li(f"Nightly scores: model version {versions['nightly'] or '-'}, run "
                f"{world.run_date or '-'}" + (f", {age:.0f} h older than the lake's newest "
                                              "event" if age is not None else "")),
        html.Li("Prediction service: " + (
            f"model version {versions['service']}" if versions["service"] else
            (versions["problem"] or "not configured (SHIPDELAY_COCKPIT_SERVICE_URL)"))),
        html.Li(feature_freshness(cockpit.settings, world.now), id="health-features"),
    ]
    parts = [html.H2("Model health"), html.Ul(id="health-versions", children=facts)]
    if summary is None:
        parts.append(html.P("No monitoring summary yet: run `shipdelay monitor` (it judges "
                            "the logged predictions against the deliveries).",
                            id="health-monitor"))
        return html.Div(id="health-page", children=parts)
    table = headline_rows(summary)
    alarms = pd.DataFrame(summary.get("alarms") or [],
                          columns=["kind", "slice", "metric", "value", "threshold", "message"])
    parts += [
        html.P(f"Monitor as of {summary.get('as_of', '-')} over {summary.get('days', '-')} "
               "days" + (": a new model is advised." if summary.get("should_retrain") else "."),
               id="health-monitor"),
        data_table(id="health-figures", data=table.to_dict("records"),
                   columns=[{"name": c, "id": c} for c in table.columns]),
        html.H3(f"Alarms ({len(alarms)})"),
        data_table(id="health-alarms", data=alarms[["kind", "slice", "message"]]
                   .to_dict("records"), columns=[{"name": c, "id": c}
                                                 for c in ("kind", "slice", "message")],
                   style_cell={"whiteSpace": "normal", "textAlign": "left"}),
    ]
    return html.Div(id="health-page", children=parts)
