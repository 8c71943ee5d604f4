"""The cockpit's Dash app: thin layout and callbacks over `cockpit.state` and the data modules.

Pages: "/" (Now: the shipments at risk, counts by band, money at stake, the alert inbox) and
"/shipment/<id>" (one shipment). Dash serves its own scripts (`serve_locally`): nothing is
fetched from the internet. Stable element ids (risk-table, band-counts, alert-inbox, ...) are
what browser tests and people's bookmarks rely on.
"""

from __future__ import annotations

from urllib.parse import unquote

import dash
from dash import Dash, Input, Output, State, ctx, dcc, html

from cockpit import access
from cockpit.alerts import AlertFollower, inbox_rows
from cockpit.health import health_page
from cockpit.pages_analytics import analytics_page, breakdown, trend_figure
from cockpit.pages_map import hub_filter, hub_map_figure
from cockpit.pages_now import (
    HORIZONS,
    MAP_SHOWN,
    band_spans,
    exposure_text,
    map_graph,
    matched_text,
    now_page,
    now_view,
)
from cockpit.pages_shipment import shipment_page
from cockpit.state import Cockpit
from shipdelay.settings import Settings


def create_app(settings: Settings, service_url: str | None = None,
               follow_alerts: bool = True) -> Dash:
    """The cockpit for `settings` (its lake, scores and API key), asking `service_url`."""
    cockpit = Cockpit(settings, service_url or settings.cockpit_service_url)
    cockpit.keep_loaded()  # the nightly run is ready before the first visitor asks for it
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

    @app.callback(Output("risk-table", "data"), Output("risk-table", "page_count"),
                  Output("risk-table", "page_current"), Output("band-counts", "children"),
                  Output("exposure-total", "children"), Output("now-matched", "children"),
                  Output("now-service", "children"),
                  Input("risk-table", "page_current"), Input("risk-table", "sort_by"),
                  Input("risk-table", "filter_query"), Input("refresh-visible", "n_clicks"),
                  State("risk-table", "page_size"), prevent_initial_call=True)
    def _list(page, sort_by, filter_query, _, size):
        if ctx.triggered_id == "risk-table" and not any(
                t["prop_id"].endswith(".page_current") for t in ctx.triggered):
            page = 0  # a new sort or filter starts on its first page
        view = now_view(cockpit, page or 0, sort_by, filter_query, size or 25)
        return (view.rows, view.page_count, view.page, band_spans(view.counts),
                exposure_text(cockpit, view), matched_text(view), view.service)

    @app.callback(Output("hub-map-box", "children"), Output("hub-map-box", "className"),
                  Input("risk-table", "derived_viewport_data"),
                  State("hub-map-box", "className"), prevent_initial_call=True)
    def _map_after_list(_, drawn):
        if drawn == MAP_SHOWN:
            return dash.no_update, dash.no_update
        return map_graph(), MAP_SHOWN

    @app.callback(Output("hub-map", "figure"), Input("map-horizon", "value"),
                  Input("risk-table", "filter_query"))
    def _map(horizon, filter_query):
        world = cockpit.world()
        chosen = world.listing.select(filter_query)
        return hub_map_figure(world, float(horizon or HORIZONS[0]),
                              world.shipments.iloc[chosen.positions])

    @app.callback(Output("risk-table", "filter_query"), Input("hub-map", "clickData"),
                  Input("clear-filter", "n_clicks"), prevent_initial_call=True)
    def _hub_clicked(click, _):
        if ctx.triggered_id == "clear-filter":
            return ""
        points = (click or {}).get("points") or [{}]
        return hub_filter(points[0].get("customdata"))

    @app.callback(Output("alert-inbox", "data"), Output("alert-status", "children"),
                  Input("alert-poll", "n_intervals"))
    def _alerts(_):
        rows = inbox_rows(follower.alerts())
        status = follower.problem or f"{len(rows)} alert(s), newest first"
        return rows.to_dict("records"), status

    return app
