"""The shipment page (/shipment/<id>): facts, forecast with its interval and reasons, itinerary
planned vs actual, risk over time, raw events and notes."""

from __future__ import annotations

import pandas as pd
from dash import dcc, html

from cockpit import data, inflight, money, shipment
from cockpit.state import Cockpit
from cockpit.ui import data_table
from shipdelay.lake import Lake

TIME = "%a %d %b %H:%M"


def _when(value) -> str:
    t = pd.Timestamp(value) if value is not None else pd.NaT
    return "-" if pd.isna(t) else t.tz_convert("UTC").strftime(TIME) if t.tzinfo else \
        t.strftime(TIME)


def _table(table_id: str, frame: pd.DataFrame):
    shown = frame.copy()
    for col in shown.columns:
        if isinstance(shown[col].dtype, pd.DatetimeTZDtype):
            shown[col] = shown[col].dt.strftime(TIME).fillna("-")
    shown = shown.astype(object).where(shown.notna(), "-")
    return data_table(
        id=table_id, data=shown.to_dict("records"),
        columns=[{"name": c.replace("_", " "), "id": c} for c in shown.columns],
        page_size=50, style_cell={"fontSize": "0.85rem", "whiteSpace": "normal",
                                  "textAlign": "left"})


def risk_figure(history: pd.DataFrame) -> dict:
    """P(late) over time, one line per door, as a plain figure (no plotly objects to build)."""
    lines = [{"type": "scatter", "mode": "lines+markers", "name": str(path),
              "x": part["instant"].dt.strftime("%Y-%m-%dT%H:%M:%S").tolist(),
              "y": (part["p_late"].astype(float) * 100).tolist()}
             for path, part in history.groupby("path")]
    return {"data": lines, "layout": {
        "height": 300, "margin": {"l": 50, "r": 10, "t": 10, "b": 40},
        "paper_bgcolor": "white", "plot_bgcolor": "white",
        "yaxis": {"title": {"text": "P(late) %"}, "range": [0, 100], "gridcolor": "#ebebeb"},
        "xaxis": {"gridcolor": "#ebebeb"}}}


def lake_rows(cockpit: Cockpit, shipment_id: str) -> inflight.InFlight:
    """The shipment's facts, legs and events: kept with the nightly run when it is in flight,
    read from the lake otherwise."""
    world = cockpit.world()
    if world.lake_rows is not None and shipment_id in world.lake_rows:
        return world.lake_rows
    return inflight.read_one(Lake(cockpit.settings.lake_dir), shipment_id, world.now)


def shipment_page(cockpit: Cockpit, shipment_id: str) -> html.Div:
    world = cockpit.world()
    rows = lake_rows(cockpit, shipment_id)
    found = rows.rows("facts", shipment_id)
    if found.empty:
        return html.Div(id="shipment-page", children=[
            html.P(f"No shipment {shipment_id} in the lake.", id="shipment-missing"),
            dcc.Link("Back to the list", href="/")])
    facts = found.iloc[0].to_dict()
    names = dict(zip(world.hubs["hub_id"], world.hubs["label"]))
    live, problem = cockpit.live([shipment_id])
    row = live.iloc[0].to_dict() if len(live) else None
    hours_left = (pd.Timestamp(facts["promised_at"]) - world.now).total_seconds() / 3600
    seen = rows.rows("events", shipment_id)
    booked = pd.Timestamp(facts["booked_at"])
    history = shipment.risk_history(cockpit.settings.predictions_dir, shipment_id,
                                    None if pd.isna(booked) else booked.date())
    if row is None:
        forecast = [html.P("Not in flight in the newest nightly run (delivered, or booked "
                           "after it).", id="shipment-forecast")]
    else:
        reasons = list(row.get("reasons") if row.get("reasons") is not None else [])
        forecast = [
            html.P(id="shipment-forecast", children=(
                f"P(late) {row['p_late']:.0%} ({row['risk_band']} risk, "
                f"{row.get('source', 'nightly')}); expected delay "
                f"{data.delay_text(row['delay_p50_h'])}; expected penalty "
                f"{money.money_text(row['exposure'])}.")),
            html.P(id="shipment-interval", children=(
                f"ETA {_when(row['eta'])} UTC, 80% interval (P10 – P90) "
                f"{_when(row['eta_p10'])} – {_when(row['eta_p90'])} UTC.")),
            html.Ul(id="shipment-reasons", children=[html.Li(r) for r in reasons] or [
                html.Li("No reasons given: the service explains only the riskier shipments.")]),
        ]
    return html.Div(id="shipment-page", children=[
        dcc.Link("← Back to the list", href="/", id="shipment-back"),
        html.H2(f"Shipment {shipment_id}", id="shipment-title"),
        html.P(id="shipment-facts", children=(
            f"Customer {facts['customer_id']}, {facts['service_level']} service, "
            f"{names.get(facts['origin_hub'], facts['origin_hub'])} → "
            f"{names.get(facts['destination_hub'], facts['destination_hub'])}; booked "
            f"{_when(facts['booked_at'])}, promised {_when(facts['promised_at'])} UTC "
            f"({data.time_left_text(hours_left)}).")),
        html.Div(id="shipment-forecast-box", children=forecast),
        html.P(problem or "", id="shipment-service"),
        html.H3("Itinerary: planned vs actual"),
        _table("shipment-itinerary", shipment.itinerary(rows.rows("legs", shipment_id), seen, names)),
        html.H3("Risk over time"),
        dcc.Graph(id="shipment-risk", figure=risk_figure(history),
                  config={"displaylogo": False}) if len(history) else
        html.P("No logged forecasts for this shipment yet.", id="shipment-risk"),
        html.H3("Events and notes"),
        _table("shipment-events", shipment.events(seen, names)[
            ["event_time", "event_type", "hub", "leg_index", "parcel_id", "note"]]),
    ])
