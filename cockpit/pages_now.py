"""The Now page (/): counts by band, money at stake, the map, the list of shipments in flight and
the alert inbox. The list is paged, sorted and filtered on the server (`cockpit.listing`): the
browser receives the 25 rows it shows, and the counts, the money and the map describe every
shipment the filter keeps. The rows shown are asked from the prediction service each time a
page is served (the `Source` column says which rows are live)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from dash import dcc, html

from cockpit import data, money
from cockpit.listing import summary
from cockpit.state import Cockpit
from cockpit.ui import data_table

PAGE_SIZE = 25
NOW_COLUMNS = [
    ("shipment_id", "Shipment", "markdown"), ("customer", "Customer", None),
    ("route", "Route", None), ("lane", "Lane", None), ("mode", "Mode", None),
    ("carrier", "Carrier", None), ("hub", "Current hub", None), ("band", "Band", None),
    ("p_late_pct", "P(late) %", None), ("delay", "Expected delay", None),
    ("promise", "Promise", None), ("eta", "ETA (UTC)", None),
    ("eta_window", "P10 – P90 (UTC)", None), ("exposure", "Exposure", None),
    ("source", "Source", None), ("hubs_ahead", "Hubs ahead", None),
]
DEFAULT_SORT = [{"column_id": "exposure", "direction": "desc"}]
HORIZONS = (24, 48, 72)
MAP_PENDING, MAP_SHOWN = "map-pending", "map-shown"
BAND_COLOURS = {"high": "#c0392b", "medium": "#e67e22", "low": "#27ae60"}


@dataclass
class NowView:
    """What the list and its figures show for one filter, sort and page."""

    rows: list[dict]
    page: int
    page_count: int
    matched: int
    in_flight: int
    counts: dict[str, int]
    exposure: float
    service: str
    filter_problem: str | None


def table_rows(frame: pd.DataFrame, cockpit: Cockpit) -> list[dict]:
    """The list's rows for people (`data.now_rows`), the shipment column a link to its page."""
    world = cockpit.world()
    rows = data.now_rows(frame, world.hubs, world.now)
    rows["id"] = rows["shipment_id"]
    rows["shipment_id"] = "[" + rows["id"] + "](/shipment/" + rows["id"] + ")"
    return rows.to_dict("records")


def service_note(cockpit: Cockpit, n: int) -> str:
    if not cockpit.service_url:
        return "No prediction service configured (SHIPDELAY_COCKPIT_SERVICE_URL): nightly scores."
    return f"{n} row(s) refreshed from the prediction service at {cockpit.service_url}."


def now_view(cockpit: Cockpit, page: int = 0, sort_by: list[dict] | None = None,
             filter_query: str | None = None, size: int = PAGE_SIZE) -> NowView:
    """One page of the list under `filter_query` and `sort_by`, its rows refreshed from the
    service, with the counts and the money of all the shipments the filter keeps."""
    world = cockpit.world()
    listing = world.listing
    chosen = listing.select(filter_query)
    ordered = listing.order(chosen.positions, sort_by)
    shown, page, count = listing.page(ordered, page, size)
    ids = world.shipments["shipment_id"].iloc[shown].tolist()
    fresh, problem = cockpit.live(ids)
    counts, total = summary(world.shipments, chosen.positions)
    return NowView(table_rows(fresh, cockpit) if len(fresh) else [], page, count,
                   len(chosen.positions), len(world.shipments), counts, total,
                   problem or service_note(cockpit, len(ids)), chosen.problem)


def map_graph() -> dcc.Graph:
    """The map's graph, put on the page once the list has drawn its first rows: plotly's
    script (4.8 MB) is loaded and run only then, so it does not hold the list back."""
    return dcc.Graph(id="hub-map", config={"displaylogo": False, "scrollZoom": True})


def band_spans(counts: dict[str, int]) -> list:
    return [html.Span(f"{band}: {counts[band]:,}", id=f"band-count-{band}",
                      style={"background": BAND_COLOURS[band]}, className="band")
            for band in data.BANDS]


def exposure_text(cockpit: Cockpit, view: NowView) -> str:
    whose = ("in flight" if view.matched == view.in_flight
             else f"of the {view.matched:,} shipments the filter keeps")
    return (f"Expected penalties {whose}: {money.money_text(view.exposure)} "
            f"(P(late) x {money.money_text(cockpit.settings.penalty_per_late)} per late "
            f"delivery + expected hours late x "
            f"{money.money_text(cockpit.settings.penalty_per_hour)} per hour, "
            "unless a customer's or service level's contract says otherwise).")


def matched_text(view: NowView) -> str:
    if view.filter_problem:
        return view.filter_problem
    if view.matched == view.in_flight:
        return f"All {view.in_flight:,} shipments in flight, the most money at stake first."
    return (f"{view.matched:,} of {view.in_flight:,} shipments in flight match the filter "
            "(the counts, the money and the map show them; \"Show all\" clears it).")


def now_page(cockpit: Cockpit) -> html.Div:
    world = cockpit.world()
    if world.problem:
        return html.Div(id="now-page", children=[html.P(world.problem, id="now-problem")])
    view = now_view(cockpit, 0, DEFAULT_SORT)
    return html.Div(id="now-page", children=[
        html.H2("Now: shipments in flight at risk"),
        html.P(id="now-status", children=(
            f"Nightly run {world.run_date}; now {world.now:%a %d %b %Y %H:%M} UTC; "
            f"{view.in_flight:,} shipments in flight, listed by money at stake.")),
        html.Div(id="band-counts", className="bands", children=band_spans(view.counts)),
        html.P(id="exposure-total", children=exposure_text(cockpit, view)),
        html.Div(className="row", children=[
            html.Span("At-risk volume at each hub, there now or arriving within"),
            dcc.RadioItems(id="map-horizon", value=HORIZONS[0], inline=True,
                           options=[{"label": f" {h} h ", "value": h} for h in HORIZONS]),
            html.Span("(click a hub to filter the list)")]),
        html.Div(id="hub-map-box", className=MAP_PENDING, children=html.P(
            "The map is drawn once the list shows.", id="hub-map-pending")),
        html.Div(className="row", children=[
            html.Button("Refresh visible rows from the service", id="refresh-visible"),
            html.Button("Show all", id="clear-filter"),
            html.Span(view.service, id="now-service")]),
        html.P(matched_text(view), id="now-matched"),
        data_table(
            id="risk-table", data=view.rows, page_count=view.page_count, page_current=0,
            columns=[{"name": name, "id": cid, **({"presentation": p} if p else {}),
                      **({"type": "numeric"} if cid in ("p_late_pct", "exposure") else {})}
                     for cid, name, p in NOW_COLUMNS],
            sort_action="custom", filter_action="custom", page_action="custom",
            filter_query="", page_size=PAGE_SIZE, sort_by=DEFAULT_SORT,
            markdown_options={"link_target": "_self"},
            style_table={"overflowX": "auto"},
            style_cell={"fontSize": "0.85rem", "textAlign": "left"},
            style_data_conditional=[
                {"if": {"filter_query": f'{{band}} = "{b}"', "column_id": "band"},
                 "color": c, "fontWeight": "bold"} for b, c in BAND_COLOURS.items()]),
        html.H3("Alerts"),
        html.P(id="alert-status"),
        dcc.Interval(id="alert-poll", interval=3_000),
        data_table(
            id="alert-inbox", data=[], page_size=10, sort_action="native",
            columns=[{"name": n, "id": i} for i, n in (
                ("when", "When (UTC)"), ("shipment_id", "Shipment"), ("what", "What"),
                ("risk", "Risk"), ("why", "Why"))],
            style_cell={"fontSize": "0.85rem", "whiteSpace": "normal", "textAlign": "left"}),
    ])
