"""The map on the Now page: hubs sized by at-risk volume (present or arriving within the chosen
horizon), lanes coloured by their mean P(late), over hand-drawn continent outlines on plain
longitude/latitude axes: no map tiles, no topology download."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from cockpit import geo
from cockpit.state import World

LANE_BANDS = [("low risk lane", 0.0, 0.3, "#7fb77e"), ("medium risk lane", 0.3, 0.6, "#e6a23c"),
              ("high risk lane", 0.6, 1.01, "#c0392b")]


def _segments(xs0, ys0, xs1, ys1) -> tuple[list, list]:
    """Line segments as one trace's x and y, separated by None (one trace for many lines)."""
    n = len(xs0)
    x = np.column_stack([xs0, xs1, np.full(n, np.nan)]).ravel()
    y = np.column_stack([ys0, ys1, np.full(n, np.nan)]).ravel()
    return [None if np.isnan(v) else float(v) for v in x], \
        [None if np.isnan(v) else float(v) for v in y]


@lru_cache(maxsize=1)
def _outline_trace() -> dict:
    xs, ys = [], []
    for ring in geo.outlines():
        xs += [p[0] for p in ring] + [None]
        ys += [p[1] for p in ring] + [None]
    return {"type": "scatter", "x": xs, "y": ys, "mode": "lines", "fill": "toself",
            "fillcolor": "#f1f1ee", "line": {"color": "#c8c8c0", "width": 1},
            "hoverinfo": "skip", "showlegend": False}


def hub_map_figure(world: World, horizon_h: float,
                   shipments: pd.DataFrame | None = None) -> dict:
    """The map of `shipments` (default: all in flight) as a plain plotly figure (a dict: no
    figure objects to validate, a few milliseconds for thousands of lanes)."""
    shipments = world.shipments if shipments is None else shipments
    traces = [_outline_trace()]
    hubs = world.hubs.set_index("hub_id")
    lanes = geo.lane_risk(shipments)
    lanes = lanes[lanes["origin_hub"].isin(hubs.index) & lanes["destination_hub"].isin(hubs.index)]
    for name, low, high, colour in LANE_BANDS:
        part = lanes[(lanes["p_late"] >= low) & (lanes["p_late"] < high)]
        if part.empty:
            continue
        a, b = hubs.loc[part["origin_hub"]], hubs.loc[part["destination_hub"]]
        x, y = _segments(a["longitude"].to_numpy(float), a["latitude"].to_numpy(float),
                         b["longitude"].to_numpy(float), b["latitude"].to_numpy(float))
        traces.append({"type": "scatter", "x": x, "y": y, "mode": "lines", "name": name,
                       "hoverinfo": "skip", "line": {"color": colour, "width": 1},
                       "opacity": 0.5})
    load = geo.hub_load(shipments, world.legs, world.now, horizon_h)
    load = load[load["volume"] > 0].merge(world.hubs, on="hub_id")
    peak = max(int(load["volume"].max()), 1) if len(load) else 1
    size = 6 + 30 * np.sqrt(load["volume"] / peak)
    traces.append({
        "type": "scatter", "x": load["longitude"].astype(float).tolist(),
        "y": load["latitude"].astype(float).tolist(), "mode": "markers",
        "name": "at-risk volume",
        "marker": {"size": size.astype(float).tolist(), "color": "#1f4e79", "opacity": 0.75,
                   "line": {"color": "white", "width": 1}},
        "customdata": load["label"].astype(str).tolist(),
        "text": [f"{lab}<br>{v} at risk: {p} there now, {a} arriving within {horizon_h:.0f} h"
                 for lab, v, p, a in zip(load["label"], load["volume"], load["present"],
                                         load["arriving"])],
        "hovertemplate": "%{text}<extra></extra>"})
    return {"data": traces, "layout": {
        "height": 430, "margin": {"l": 10, "r": 10, "t": 10, "b": 10},
        "paper_bgcolor": "white", "plot_bgcolor": "white", "hovermode": "closest",
        "legend": {"orientation": "h", "y": 0.02, "x": 0.01}, "clickmode": "event",
        "xaxis": {"range": [-170, 180], "visible": False},
        "yaxis": {"range": [-58, 80], "visible": False, "scaleanchor": "x", "scaleratio": 1.2}}}


def hub_filter(label: str | None) -> str:
    """The list's filter for one hub: shipments there now or still to reach it."""
    if not label:
        return ""
    text = str(label).replace('"', "")
    return f'{{hub}} = "{text}" || {{hubs_ahead}} contains "{text}"'


def hub_table(world: World, horizon_h: float) -> pd.DataFrame:
    """The map's numbers as a table (for people who read tables, and for export)."""
    load = geo.hub_load(world.shipments, world.legs, world.now, horizon_h)
    return load.merge(world.hubs[["hub_id", "label"]], on="hub_id", how="left")
