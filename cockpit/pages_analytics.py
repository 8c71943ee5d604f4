"""The analytics page (/analytics): late rate, delay and penalties by customer, lane, carrier or
market over the last weeks with a trend, carrier scorecards, at-risk arrivals per hub per day
ahead, and the chosen table as a CSV file."""

from __future__ import annotations

import plotly.graph_objects as go
from dash import dcc, html

from cockpit import analytics, geo
from cockpit.state import Cockpit
from cockpit.ui import data_table

TOP_LINES = 8  # lines on the trend chart: the values with the most penalties


def _records(frame):
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def _columns(frame):
    return [{"name": c.replace("_", " "), "id": c} for c in frame.columns]


def breakdown(cockpit: Cockpit, by: str):
    """The summary table's frame for one dimension (for the page and the CSV export)."""
    history = cockpit.history()
    if history.empty:
        return history
    return analytics.for_people(analytics.summary(history, by))


def trend_figure(cockpit: Cockpit, by: str) -> go.Figure:
    history = cockpit.history()
    fig = go.Figure()
    if not history.empty:
        top = analytics.summary(history, by)[by].head(TOP_LINES)
        weekly = analytics.weekly(history[history[by].isin(top)], by)
        for value, part in weekly.groupby(by, observed=True):
            fig.add_scatter(x=part["week"], y=part["late_rate"] * 100, mode="lines+markers",
                            name=str(value))
    fig.update_layout(yaxis_title="late %", xaxis_title="week (Monday)", height=340,
                      template="plotly_white", margin={"l": 50, "r": 10, "t": 10, "b": 40})
    return fig


def analytics_page(cockpit: Cockpit) -> html.Div:
    world = cockpit.world()
    history = cockpit.history()
    if history.empty:
        return html.Div(id="analytics-page", children=[html.P(
            "No deliveries known yet in the lake: nothing to analyse.", id="analytics-empty")])
    card = analytics.for_people(analytics.carrier_scorecard(history, world.shipments))
    days = geo.arriving_by_day(world.shipments, world.legs, world.now)
    days.insert(0, "hub", days["hub_id"].map(dict(zip(world.hubs["hub_id"],
                                                       world.hubs["label"]))))
    first = breakdown(cockpit, "customer")
    return html.Div(id="analytics-page", children=[
        html.H2("Analytics"),
        html.P(f"{len(history):,} shipments delivered in the 12 weeks to "
               f"{world.now:%d %b %Y}; trend: late rate of the last 4 weeks minus the 4 "
               "before, in points (positive is worse)."),
        html.Div(className="row", children=[
            html.Span("By"),
            dcc.Dropdown(id="analytics-by", value="customer", clearable=False,
                         options=[{"label": v, "value": k}
                                  for k, v in analytics.DIMENSIONS.items()],
                         style={"width": "12rem"}),
            html.Button("Export CSV", id="analytics-export"),
            dcc.Download(id="analytics-download")]),
        dcc.Graph(id="analytics-trend", figure=trend_figure(cockpit, "customer"),
                  config={"displaylogo": False}),
        data_table(id="analytics-table", data=_records(first), columns=_columns(first),
                   sort_action="native", filter_action="native", page_size=15),
        html.H3("Carrier scorecards"),
        data_table(id="carrier-scorecard", data=_records(card), columns=_columns(card),
                   sort_action="native", page_size=20),
        html.H3("At-risk shipments arriving per hub, per day ahead (UTC)"),
        data_table(id="hub-days", data=_records(days.drop(columns="hub_id")),
                   columns=_columns(days.drop(columns="hub_id")), sort_action="native",
                   page_size=15),
    ])
