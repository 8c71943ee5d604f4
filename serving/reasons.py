"""Plain-word reasons from the model's per-feature contributions (LightGBM's own TreeSHAP).

Each feature that can push risk up has a sentence; the top three positive contributions of a
shipment become its reasons. A feature without a sentence falls back to "name = value".
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

_H = "{:.0f} h"
TEMPLATES: dict[str, str] = {
    "slip_h": "running {v:.0f} h behind schedule at the last milestone",
    "slip_trend_h": "slipping further: {v:+.0f} h since departure",
    "last_slip_h": "{v:+.0f} h against plan at the latest milestone scanned (handling included)",
    "customs_open": "customs hold not yet released",
    "customs_holds": "held by customs on this journey",
    "note_risk": "recent notes read like delays",  # quoting the note when known (QUOTES)
    "note_latest_risk": "the newest note reads like a delay",
    "note_count": "{v:.0f} tracking note(s) written on this journey recently",
    "exceptions": "{v:.0f} exception(s) reported on this journey",
    "missing_milestones": "{v:.0f} milestone scan(s) missing",
    "lane_dep_slip_7d": "lane running {v:.0f} h behind schedule this week",
    "lane_late_rate_28d": "lane late on {v:.0%} of deliveries in the last 4 weeks",
    "lane_late_rate_7d": "lane late on {v:.0%} of deliveries this week",
    "lane_p90_delay_28d": "lane's worst deliveries {v:.0f} h late recently",
    "carrier_dep_slip_7d": "carrier departing {v:.0f} h late this week",
    "carrier_late_rate_28d": "carrier late on {v:.0%} of deliveries in the last 4 weeks",
    "customer_late_rate_28d": "this customer's shipments late {v:.0%} of the time recently",
    "hub_dep_slip_24h": "departures from the current hub {v:.0f} h late in the last 24 h",
    "hub_dwell_24h": "long dwell at the current hub: {v:.0f} h on average",
    "hub_notes_24h": "{v:.0f} tracking notes written at the current hub in the last 24 h",
    "hub_customs_holds_24h": "customs holds at the current hub today",
    "promised_slack_h": "tight promise: {v:.0f} h of slack in the plan",
    "hours_to_promised": "{v:.0f} h left to the promised time",
    "hours_since_last_scan": "no scan for {v:.0f} h",
    "transit_elapsed_frac": "{v:.0%} of the planned transit time already used",
    "planned_transit_h": "long planned journey ({v:.0f} h)",
    "main_mode": "{v} journeys run late more often",
    "service_level": "{v} service has little slack",
    "current_mode": "currently on a {v} leg",
    "next_mode": "a {v} leg still ahead",
    "planned_h_ahead": "{v:.0f} h of the planned journey still ahead",
    "legs_ahead": "{v:.0f} leg(s) still to depart",
    "last_event_type": "last event: {v}",
    "destination_region": "destination region {v}",
    "origin_region": "origin region {v}",
    "booked_month": "booked in a peak month",
    "n_legs": "{v:.0f} legs to connect",
    "international": "crosses a border",
    "furthest_ord": "early in the journey (milestone {v:.0f})",
    "milestones_done": "{v:.0f} milestones done so far",
    "core_done": "{v:.0f} planned milestones scanned",
    "current_leg": "on leg {v:.0f} of the journey",
    "milestones_planned": "{v:.0f} planned milestones",
    "weight_kg": "heavy consignment ({v:.0f} kg)",
    "volume_m3": "bulky consignment ({v:.2f} m3)",
    "parcel_count": "{v:.0f} parcels to keep together",
    "distance_km": "long distance ({v:,.0f} km)",
    "booked_weekday": "booked on a busy weekday",
    "share_ocean": "{v:.0%} of the plan at sea",
    "share_air": "{v:.0%} of the plan by air",
    "share_rail": "{v:.0%} of the plan by rail",
    "share_truck": "{v:.0%} of the plan by road",
}
for _prefix, _who in (("lane", "lane"), ("carrier", "carrier"), ("customer", "customer")):
    for _d in (7, 28):
        _when = "this week" if _d == 7 else "in the last 4 weeks"
        TEMPLATES.setdefault(f"{_prefix}_late_rate_{_d}d",
                             f"{_who} late on {{v:.0%}} of deliveries {_when}")
        TEMPLATES.setdefault(f"{_prefix}_mean_delay_{_d}d",
                             f"{_who} deliveries {{v:+.0f}} h against promise on average {_when}")
        TEMPLATES.setdefault(f"{_prefix}_p90_delay_{_d}d",
                             f"{_who}'s worst deliveries {{v:.0f}} h late {_when}")
        TEMPLATES.setdefault(f"{_prefix}_volume_{_d}d", f"{_who} volume: {{v:.0f}} deliveries {_when}")
TEMPLATES.update({
    "hours_overdue": "the next planned milestone is {v:.0f} h overdue",
    "booked_hour": "booked at {v:.0f}:00 local time",
    "recent_notes": "what the recent tracking notes say",
    "weather_temperature_c": "{v:.0f} C at the current hub",
    "weather_humidity_pct": "humidity {v:.0f}% at the current hub",
    "weather_wind_kmh": "wind {v:.0f} km/h at the current hub",
    "weather_gust_kmh": "gusts of {v:.0f} km/h at the current hub",
    "weather_precipitation_mm": "{v:.1f} mm of rain or snow at the current hub",
    "weather_pressure_hpa": "air pressure {v:.0f} hPa at the current hub",
    "weather_visibility_km": "visibility {v:.1f} km at the current hub",
    "hub_departures_24h": "busy hub: {v:.0f} departures in the last 24 h",
    "hub_arrivals_24h": "busy hub: {v:.0f} arrivals in the last 24 h",
    "hub_exceptions_24h": "{v:.0f} exceptions at the current hub today",
})

# a time left that has run out reads as the time past it
PAST = {"hours_to_promised": "{v:.0f} h past the promised time"}


# Note features are explained by quoting the note they were read from (a column the scorer adds
# next to them: `training.note_model.NoteModel.features`).
QUOTES = {"note_risk": "note_risk_text", "note_latest_risk": "note_latest_text"}
QUOTED = {"note_risk": 'recent notes read like delays: "{q}"',
          "note_latest_risk": 'the newest note reads like a delay: "{q}"'}
QUOTE_CHARS = 80


def _note_sentence(feature: str, value, note) -> str:
    """A note feature's sentence: the note it read quoted; no notes at all said so."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "no tracking notes to go by"
    if not isinstance(note, str) or not note:
        return TEMPLATES[feature]
    short = note if len(note) <= QUOTE_CHARS else note[:QUOTE_CHARS - 3].rstrip() + "..."
    return QUOTED[feature].format(q=short)


def _sentence(feature: str, value) -> str:
    template = TEMPLATES.get(feature)
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        if template and "{" not in template:
            return template
        return f"{feature.replace('_', ' ')} unknown"
    if template is None:
        return f"{feature} = {value:.3g}" if isinstance(value, (int, float)) else f"{feature} = {value}"
    if feature in PAST and isinstance(value, (int, float)) and value < 0:
        return PAST[feature].format(v=-value)  # "35 h past the promised time", not "-35 h left"
    try:
        return template.format(v=value)
    except (ValueError, TypeError):
        return template.format(v=str(value)) if "{v}" in template else template


def strongest(contrib: np.ndarray, n_features: int, k: int = 3) -> list[list[tuple[int, float]]]:
    """Per row, the k strongest risk-raising contributions as (feature position, contribution),
    strongest first; only positive ones (a row may have fewer than k, or none).

    `contrib` is LightGBM's pred_contrib output (rows x features + bias)."""
    c = contrib[:, :n_features]
    order = np.argsort(-c, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(c, order, axis=1)
    return [[(j, v) for j, v in zip(cols, values) if v > 0]
            for cols, values in zip(order.tolist(), top.tolist())]


def words_of(top: list[list[tuple[int, float]]], features: list[str], raw: Mapping
             ) -> list[list[str]]:
    """The sentences of `strongest`'s pairs; `raw` (a frame or a mapping of column -> array)
    holds the human-readable values (categories as text) in the same row order."""
    out = []
    for i, pairs in enumerate(top):  # k sentences per row: cheap next to the trees
        out.append([_note_sentence(features[j], _value(raw[features[j]], i),
                                   _value(raw[QUOTES[features[j]]], i))
                    if features[j] in QUOTES and QUOTES[features[j]] in raw
                    else _sentence(features[j], _value(raw[features[j]], i)) for j, _ in pairs])
    return out


def top_reasons(contrib: np.ndarray, features: list[str], raw: Mapping, k: int = 3) -> list[list[str]]:
    """The k strongest risk-raising contributions of each row, in words (`strongest`, then
    `words_of`)."""
    return words_of(strongest(contrib, len(features), k), features, raw)


def _value(column, i: int):
    """Row i of a column as a plain Python value (the sentences format Python numbers)."""
    v = column.iat[i] if isinstance(column, pd.Series) else column[i]
    return v.item() if isinstance(v, np.generic) else v
