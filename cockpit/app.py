"""The cockpit's Dash app: thin layout and callbacks over `cockpit.state` and the data modules.

Pages: "/" (Now: the shipments at risk, counts by band, money at stake, the alert inbox) and
"/shipment/<id>" (one shipment). Dash serves its own scripts (`serve_locally`): nothing is
fetched from the internet. Stable element ids (risk-table, band-counts, alert-inbox, ...) are
what browser tests and people's bookmarks rely on.
"""

from __future__ import annotations

from urllib.parse import unquote

import dash
import pandas as pd
from dash import Dash, Input, Output, State, dcc, html

from cockpit import access, data, money
from cockpit.alerts import AlertFollower, inbox_rows
from cockpit.health import health_page
from cockpit.pages_analytics import analytics_page, breakdown, trend_figure
from cockpit.pages_map import hub_filter, hub_map_figure
from cockpit.pages_shipment import shipment_page
from cockpit.state import Cockpit
from cockpit.ui import data_table
from shipdelay.settings import Settings

PAGE_SIZE = 25
ALERT_POLL_MS = 3_000
NOW_COLUMNS = [
    ("shipment_id", "Shipment", "markdown"), ("customer", "Customer", None),
    ("route", "Route", None), ("lane", "Lane", None), ("mode", "Mode", None),
    ("carrier", "Carrier", None), ("hub", "Current hub", None), ("band", "Band", None),
    ("p_late_pct", "P(late) %", None), ("delay", "Expected delay", None),
    ("promise", "Promise", None), ("eta", "ETA (UTC)", None),
    ("eta_window", "P10 – P90 (UTC)", None), ("exposure", "Exposure", None),
    ("source", "Source", None), ("hubs_ahead", "Hubs ahead", None),
]
HORIZONS = (24, 48, 72)
BAND_COLOURS = {"high": "#c0392b", "medium": "#e67e22", "low": "#27ae60"}


def create_app(settings: Settings, service_url: str | None = None,
               follow_alerts: bool = True) -> Dash:
    """The cockpit for `settings` (its lake, scores and API key), asking `service_url`."""
    cockpit = Cockpit(settings, service_url or settings.cockpit_service_url)
    follower = AlertFollower(settings)
    if follow_alerts:
        follower.start()
    app = Dash(__name__, title="shipdelay cockpit", serve_locally=True,
               suppress_callback_exceptions=True, update_title=None)
    app.cockpit, app.alert_follower = cockpit, follower
    access.protect(app.server, cockpit.api_key)
    app.layout = html.Div([
        dcc.Location(id="url"),
        html.Nav(id="nav", className="nav", children=[
            html.Strong("shipdelay cockpit"), dcc.Link("Now", href="/", id="nav-now"),
            dcc.Link("Analytics", href="/analytics", id="nav-analytics"),
            dcc.Link("Model health", href="/health", id="nav-health"),
            html.A("Sign out", href="/logout", id="nav-logout") if cockpit.api_key else None]),
        html.Div(id="page"),
    ])

    @app.callback(Output("page", "children"), Input("url", "pathname"))
    def _route(path):
        path = path or "/"
        if path.startswith("/shipment/"):
            return shipment_page(cockpit, unquote(path.split("/", 2)[2]))
        if path.startswith("/health"):
            return health_page(cockpit)
        if path.startswith("/analytics"):
            return analytics_page(cockpit)
        return now_page(cockpit)

    @app.callback(Output("analytics-table", "data"), Output("analytics-table", "columns"),
                  Output("analytics-trend", "figure"), Input("analytics-by", "value"),
                  prevent_initial_call=True)
    def _breakdown(by):
        frame = breakdown(cockpit, by)
        return (frame.astype(object).where(frame.notna(), None).to_dict("records"),
                [{"name": c.replace("_", " "), "id": c} for c in frame.columns],
                trend_figure(cockpit, by))

    @app.callback(Output("analytics-download", "data"), Input("analytics-export", "n_clicks"),
                  State("analytics-by", "value"), prevent_initial_call=True)
    def _export(_, by):
        frame = breakdown(cockpit, by)
        return dcc.send_data_frame(frame.to_csv, f"shipdelay-{by}.csv", index=False)

    @app.callback(Output("risk-table", "data"), Output("now-service", "children"),
                  Input("refresh-visible", "n_clicks"),
                  State("risk-table", "derived_viewport_row_ids"), State("risk-table", "data"),
                  prevent_initial_call=True)
    def _refresh(_, ids, rows):
        if not ids:
            return dash.no_update, dash.no_update
        return refreshed(cockpit, rows, list(ids))

    @app.callback(Output("hub-map", "figure"), Input("map-horizon", "value"))
    def _map(horizon):
        return hub_map_figure(cockpit.world(), float(horizon or HORIZONS[0]))

    @app.callback(Output("risk-table", "filter_query"), Input("hub-map", "clickData"),
                  prevent_initial_call=True)
    def _hub_clicked(click):
        points = (click or {}).get("points") or [{}]
        return hub_filter(points[0].get("customdata"))

    @app.callback(Output("alert-inbox", "data"), Output("alert-status", "children"),
                  Input("alert-poll", "n_intervals"))
    def _alerts(_):
        rows = inbox_rows(follower.alerts())
        status = follower.problem or f"{len(rows)} alert(s), newest first"
        return rows.to_dict("records"), status

    return app


def table_rows(frame: pd.DataFrame, cockpit: Cockpit) -> list[dict]:
    world = cockpit.world()
    rows = data.now_rows(frame, world.hubs, world.now)
    rows["id"] = rows["shipment_id"]
    rows["shipment_id"] = "[" + rows["id"] + "](/shipment/" + rows["id"] + ")"
    return rows.to_dict("records")


def refreshed(cockpit: Cockpit, rows: list[dict], ids: list[str]) -> tuple[list[dict], str]:
    """`rows` with those of `ids` replaced by the service's fresh answers."""
    fresh, problem = cockpit.live(ids)
    new = {r["id"]: r for r in table_rows(fresh, cockpit)}
    out = [new.get(r["id"], r) for r in rows]
    return out, problem or service_note(cockpit, len(new))


def service_note(cockpit: Cockpit, n: int) -> str:
    if not cockpit.service_url:
        return "No prediction service configured (SHIPDELAY_COCKPIT_SERVICE_URL): nightly scores."
    return f"{n} row(s) refreshed from the prediction service at {cockpit.service_url}."


def now_page(cockpit: Cockpit) -> html.Div:
    world = cockpit.world()
    if world.problem:
        return html.Div(id="now-page", children=[html.P(world.problem, id="now-problem")])
    ranked = data.riskiest(world.shipments)
    visible = ranked["shipment_id"].head(PAGE_SIZE).tolist()
    fresh, problem = cockpit.live(visible)
    top = pd.concat([fresh, ranked.iloc[PAGE_SIZE:]], ignore_index=True)
    counts = data.band_counts(world.shipments)
    total = float(world.shipments["exposure"].sum())
    shown = len(ranked)
    return html.Div(id="now-page", children=[
        html.H2("Now: shipments in flight at risk"),
        html.P(id="now-status", children=(
            f"Nightly run {world.run_date}; now {world.now:%a %d %b %Y %H:%M} UTC; "
            f"{len(world.shipments):,} shipments in flight, the {shown:,} with the most money "
            "at stake listed.")),
        html.Div(id="band-counts", className="bands", children=[
            html.Span(f"{band}: {counts[band]:,}", id=f"band-count-{band}",
                      style={"background": BAND_COLOURS[band]}, className="band")
            for band in data.BANDS]),
        html.P(id="exposure-total", children=(
            f"Expected penalties in flight: {money.money_text(total)} "
            f"(P(late) x {money.money_text(cockpit.settings.penalty_per_late)} per late "
            f"delivery + expected hours late x "
            f"{money.money_text(cockpit.settings.penalty_per_hour)} per hour, "
            "unless a customer's or service level's contract says otherwise).")),
        html.Div(className="row", children=[
            html.Span("At-risk volume at each hub, there now or arriving within"),
            dcc.RadioItems(id="map-horizon", value=HORIZONS[0], inline=True,
                           options=[{"label": f" {h} h ", "value": h} for h in HORIZONS]),
            html.Span("(click a hub to filter the list)")]),
        dcc.Graph(id="hub-map", config={"displaylogo": False, "scrollZoom": True}),
        html.Div(className="row", children=[
            html.Button("Refresh visible rows from the service", id="refresh-visible"),
            html.Span(problem or service_note(cockpit, len(visible)), id="now-service")]),
        data_table(
            id="risk-table", data=table_rows(top, cockpit),
            columns=[{"name": name, "id": cid, **({"presentation": p} if p else {}),
                      **({"type": "numeric"} if cid in ("p_late_pct", "exposure") else {})}
                     for cid, name, p in NOW_COLUMNS],
            sort_action="native", filter_action="native", page_action="native",
            page_size=PAGE_SIZE, sort_by=[{"column_id": "exposure", "direction": "desc"}],
            markdown_options={"link_target": "_self"},
            style_table={"overflowX": "auto"}, style_cell={"fontSize": "0.85rem", "textAlign": "left"},
            style_data_conditional=[
                {"if": {"filter_query": f'{{band}} = "{b}"', "column_id": "band"},
                 "color": c, "fontWeight": "bold"} for b, c in BAND_COLOURS.items()]),
        html.H3("Alerts"),
        html.P(id="alert-status"),
        dcc.Interval(id="alert-poll", interval=ALERT_POLL_MS),
        data_table(
            id="alert-inbox", data=[], page_size=10, sort_action="native",
            columns=[{"name": n, "id": i} for i, n in (
                ("when", "When (UTC)"), ("shipment_id", "Shipment"), ("what", "What"),
                ("risk", "Risk"), ("why", "Why"))],
            style_cell={"fontSize": "0.85rem", "whiteSpace": "normal", "textAlign": "left"}),
    ])
