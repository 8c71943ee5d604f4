"""Names and types of every feature: the one list that the Feast definitions, the transforms, the
training-set builder and the model share. Add a feature here first.

Milestones along a plan of n legs have a core ordinal ("ord"): picked_up = 0, departed leg i =
1 + 2i, arrived leg i = 2 + 2i, out_for_delivery = 2n + 1, delivered = 2n + 2. Customs and
exception events are side milestones without an ord.
"""

from __future__ import annotations

ENTITY_KEYS = {"shipment": "shipment_id", "lane": "lane_id", "carrier": "carrier_id",
               "hub": "hub_id", "customer": "customer_id"}

# View name -> {column: type}; types are "str", "int", "float", "float_list", "str_list". Each
# table is written once below as {column: (type, description)}: the descriptions are what Feast
# shows (`feast feature-views describe`, `feast ui`), the types what everything else reads.
_SHIPMENT_PROFILE = {
    "lane_id": ("str", "the shipment's lane, \"<origin_hub>><destination_hub>\""),
    "customer_id": ("str", "the customer who booked the shipment"),
    "carrier_id": ("str", "carrier of the longest planned leg"),
    "origin_hub": ("str", "hub where the shipment is picked up"),
    "destination_hub": ("str", "hub where the shipment is delivered"),
    "origin_region": ("str", "region of the origin hub"),
    "destination_region": ("str", "region of the destination hub"),
    "service_level": ("str", "service level booked (e.g. express, standard)"),
    "main_mode": ("str", "mode of the longest planned leg: truck, rail, air or ocean"),
    "n_legs": ("int", "planned legs"),
    "share_truck": ("float", "share of planned leg hours by truck"),
    "share_rail": ("float", "share of planned leg hours by rail"),
    "share_air": ("float", "share of planned leg hours by air"),
    "share_ocean": ("float", "share of planned leg hours by ocean"),
    "distance_km": ("float", "great-circle distance summed over the planned legs, km"),
    "planned_transit_h": ("float", "hours from booking to the last planned arrival"),
    "weight_kg": ("float", "booked weight, kg"),
    "volume_m3": ("float", "booked volume, cubic metres"),
    "parcel_count": ("int", "parcels in the shipment"),
    "promised_slack_h": ("float", "promised time minus the last planned arrival, hours"),
    "international": ("float", ("1 across a border, 0 within a country, missing when a country "
                      "is unknown")),
    "booked_weekday": ("int", "weekday of the booking on the origin hub's clock (0 = Monday)"),
    "booked_month": ("int", "month of the booking on the origin hub's clock"),
    "booked_hour": ("int", ("hour of the booking on the origin hub's clock (UTC if its zone is "
                    "unknown)")),
    "booked_at_s": ("float", "booking time, epoch seconds (input of the on-demand features)"),
    "promised_at_s": ("float", "promised delivery time, epoch seconds"),
    "planned_arrival_s": ("float", "last planned arrival, epoch seconds"),
    # the plan, indexed by ord (what the streaming updater needs besides the prior state)
    "plan_times_s": ("float_list", "planned time of each core milestone by ord, epoch seconds"),
    "plan_hubs": ("str_list", "hub of each core milestone by ord"),
    "plan_modes": ("str_list", "mode of each planned leg"),
    "plan_feeds": ("float_list", "per leg, the leg its cargo continues on (-1: the end)"),
    "plan_steps": ("float_list", "planned handling steps: (milestone bit, planned time) pairs"),
}

_SHIPMENT_PROGRESS = {
    "milestone_mask": ("int", "bit set of the milestones seen (transforms.milestone_bit)"),
    "milestones_done": ("int", "distinct milestones seen, all kinds"),
    "milestones_planned": ("int", "core milestones planned: 2 x legs + 3"),
    "core_done": ("int", "distinct core milestones seen"),
    "furthest_ord": ("int", ("ord of the furthest core milestone seen (-1 before the first "
                     "scan)")),
    "furthest_time_s": ("float", "first scan time of the furthest milestone, epoch seconds"),
    "first_departure_s": ("float", "first scan time of the first departure, epoch seconds"),
    "last_event_s": ("float", "latest event time seen, epoch seconds"),
    "last_event_code": ("int", ("internal: event time in seconds x 16 + event type index, the "
                        "largest so far")),
    "last_event_type": ("str", "type of the latest event by event time (\"none\" before any)"),
    "current_leg": ("int", "leg the shipment is on"),
    "current_mode": ("str", "mode of the current leg"),
    "current_hub": ("str", "hub of the furthest milestone (the origin before any scan)"),
    "slip_h": ("float", "furthest milestone's scan time minus its planned time, hours"),
    "slip_trend_h": ("float", "slip_h minus the slip at the first departure, hours"),
    "last_slip_h": ("float", ("scan minus plan of the seen milestone planned latest, any kind, "
                    "hours")),
    "last_milestone_s": ("float", "internal: first scan time of that milestone, epoch seconds"),
    "planned_h_ahead": ("float", ("planned hours to delivery from where the critical path "
                        "stands")),
    "next_planned_s": ("float", ("earliest planned milestone of any kind not yet seen, epoch "
                       "seconds (missing: none)")),
    "legs_ahead": ("int", "planned legs not yet departed on the critical path"),
    "next_mode": ("str", "mode of the next planned movement"),
    "customs_holds": ("int", "customs holds seen"),
    "customs_open": ("int", "1 while a customs hold is seen without its release"),
    "exceptions": ("int", "exception events seen"),
    "missing_milestones": ("int", "planned milestones passed without a scan of their own"),
    "recent_notes": ("str", ("text of the newest tracking notes, one per line after its UTC "
                     "time (features.notes)")),
    "delivered": ("int", "1 once the delivery is scanned"),
    "event_count": ("int", "distinct events folded in (diagnostics, not a model input)"),
}

WINDOW_DAYS = (7, 28)


def _rolling(prefix: str) -> dict[str, tuple[str, str]]:
    cols = {}
    for d in WINDOW_DAYS:
        last = f"of the {prefix}'s shipments delivered in the last {d} days"
        cols |= {f"{prefix}_volume_{d}d": ("int", f"count {last}"),
                 f"{prefix}_late_rate_{d}d": ("float", f"share late {last}"),
                 f"{prefix}_mean_delay_{d}d": ("float", f"mean delay hours {last}"),
                 f"{prefix}_p90_delay_{d}d": ("float", f"90th percentile of delay hours {last}")}
    return cols


def _dep_slip(prefix: str) -> dict[str, tuple[str, str]]:
    return {f"{prefix}_dep_slip_7d": ("float", (f"mean departure slip on the {prefix}'s legs "
                                      "in the last 7 days, hours"))}


_LANE_STATS = _rolling("lane") | _dep_slip("lane")
_CARRIER_STATS = _rolling("carrier") | _dep_slip("carrier")
_CUSTOMER_STATS = _rolling("customer")
_HUB_STATS = {
    "hub_departures_24h": ("int", "departures scanned at the hub in the last 24 hours"),
    "hub_arrivals_24h": ("int", "arrivals scanned at the hub in the last 24 hours"),
    "hub_dep_slip_24h": ("float", ("mean departure slip from the hub in the last 24 hours, "
                         "hours")),
    "hub_dwell_24h": ("float", ("mean hours between arrival at and departure from the hub, last "
                      "24 hours")),
    "hub_exceptions_24h": ("int", "exception events at the hub in the last 24 hours"),
    "hub_customs_holds_24h": ("int", "customs holds at the hub in the last 24 hours"),
    "hub_notes_24h": ("int", ("tracking notes written at the hub in the last 24 hours, whatever "
                      "they say")),
}
# Weather observed at the hub (optional contract table hub_weather): the latest observation.
_HUB_WEATHER = {
    "weather_temperature_c": ("float", "air temperature at the hub, degrees Celsius"),
    "weather_humidity_pct": ("float", "relative humidity at the hub, percent"),
    "weather_wind_kmh": ("float", "wind speed at the hub, km/h"),
    "weather_gust_kmh": ("float", "wind gusts at the hub, km/h"),
    "weather_precipitation_mm": ("float", "precipitation at the hub, mm"),
    "weather_pressure_hpa": ("float", "air pressure at the hub, hPa"),
    "weather_visibility_km": ("float", "visibility at the hub, km"),
}
_ON_DEMAND = {
    "hours_to_promised": ("float", "hours from the request time to the promised time"),
    "transit_elapsed_frac": ("float", ("share of the planned booking-to-arrival time gone at the "
                             "request time")),
    "hours_since_last_scan": ("float", "hours since the latest scan (missing before any)"),
    "hours_overdue": ("float", ("hours the next planned milestone not yet seen is past due (0 "
                      "before it is due)")),
}


def _types(table: dict[str, tuple[str, str]]) -> dict[str, str]:
    return {column: kind for column, (kind, _) in table.items()}


SHIPMENT_PROFILE = _types(_SHIPMENT_PROFILE)
SHIPMENT_PROGRESS = _types(_SHIPMENT_PROGRESS)
LANE_STATS = _types(_LANE_STATS)
CARRIER_STATS = _types(_CARRIER_STATS)
CUSTOMER_STATS = _types(_CUSTOMER_STATS)
HUB_STATS = _types(_HUB_STATS)
HUB_WEATHER = _types(_HUB_WEATHER)
ON_DEMAND = _types(_ON_DEMAND)
# Column -> its one-line description, for every column of every view and the on-demand view.
DESCRIPTIONS = {column: text for table in (
    _SHIPMENT_PROFILE, _SHIPMENT_PROGRESS, _LANE_STATS, _CARRIER_STATS, _CUSTOMER_STATS,
    _HUB_STATS, _HUB_WEATHER, _ON_DEMAND) for column, (_, text) in table.items()}
VIEW_DESCRIPTIONS = {
    "shipment_profile": "what a shipment's booking and plan say, from its booking on",
    "shipment_progress": "a shipment's progress along its plan, folded from its tracking scans",
    "lane_stats": "a lane's delivery statistics over the last 7 and 28 days, at each midnight",
    "carrier_stats": "a carrier's delivery statistics over the last 7 and 28 days, at each "
                     "midnight",
    "customer_stats": "a customer's delivery statistics over the last 7 and 28 days, at each "
                      "midnight",
    "hub_stats": "a hub's activity over the last 24 hours, at each hour end",
    "hub_weather": "the latest weather observed at a hub",
    "delay_on_demand": "features of the request time, computed when asked",
}

VIEWS = {
    "shipment_profile": SHIPMENT_PROFILE,
    "shipment_progress": SHIPMENT_PROGRESS,
    "lane_stats": LANE_STATS,
    "carrier_stats": CARRIER_STATS,
    "customer_stats": CUSTOMER_STATS,
    "hub_stats": HUB_STATS,
    "hub_weather": HUB_WEATHER,
}
VIEW_ENTITY = {"shipment_profile": "shipment", "shipment_progress": "shipment",
               "lane_stats": "lane", "carrier_stats": "carrier",
               "customer_stats": "customer", "hub_stats": "hub", "hub_weather": "hub"}
# Views the stream scorer writes between feature builds; a build writes all of them.
STREAMED_VIEWS = ("shipment_progress",)
TIMESTAMP = "event_timestamp"  # every offline feature table's availability time column

# What the delay model sees (the FeatureService delay_model_v1), view by view.
_INTERNAL = {"milestone_mask", "furthest_time_s", "first_departure_s", "last_event_s",
             "last_event_code", "current_hub", "event_count", "delivered",
             "next_planned_s", "last_milestone_s"}
_PROFILE_KEYS = {"lane_id", "customer_id", "carrier_id", "origin_hub", "destination_hub",
                 "booked_at_s", "promised_at_s", "planned_arrival_s", "plan_times_s",
                 "plan_hubs", "plan_modes", "plan_feeds", "plan_steps"}
MODEL_FEATURES = {
    "shipment_profile": [c for c in SHIPMENT_PROFILE if c not in _PROFILE_KEYS],
    "shipment_progress": [c for c in SHIPMENT_PROGRESS if c not in _INTERNAL],
    "lane_stats": list(LANE_STATS),
    "carrier_stats": list(CARRIER_STATS),
    "customer_stats": list(CUSTOMER_STATS),
    "hub_stats": list(HUB_STATS),
    "hub_weather": list(HUB_WEATHER),
    "delay_on_demand": list(ON_DEMAND),
}
CATEGORICAL = ["origin_region", "destination_region", "service_level", "main_mode",
               "last_event_type", "current_mode", "next_mode"]
FEATURE_SERVICE = "delay_model_v1"


def model_feature_names() -> list[str]:
    """The flat, ordered list of the FeatureService's features (what every door reads)."""
    return [c for cols in MODEL_FEATURES.values() for c in cols]


# Text the trees never see as text: a bundle's note model (training.note_model), learned from
# the training window, turns recent_notes into these numbers before the trees.
NOTE_FEATURES = ["note_risk", "note_latest_risk", "note_count"]
TEXT_FEATURES = {"recent_notes": NOTE_FEATURES}


def model_input_names() -> list[str]:
    """The model's inputs in order: the FeatureService's features, text replaced by the
    numbers read from it."""
    return [f for c in model_feature_names() for f in TEXT_FEATURES.get(c, [c])]


# Named groups of the FeatureService's features, so that a training run can leave some out
# (`features.feature_sets`). Every feature is in exactly one group, derived from the lists
# above: calendar features are the profile's "booked_*" times, notes any feature read from
# tracking notes, the others one group per view.
_VIEW_GROUP = {"shipment_profile": "profile", "shipment_progress": "progress",
               "lane_stats": "lane", "carrier_stats": "carrier", "customer_stats": "customer",
               "hub_stats": "hub", "hub_weather": "weather", "delay_on_demand": "on_demand"}
FEATURE_GROUP_NAMES = ("calendar", "weather", "notes", "profile", "progress", "hub", "lane",
                       "carrier", "customer", "on_demand")


def feature_group(view: str, feature: str) -> str:
    """The group of one FeatureService feature of `view`."""
    if view == "shipment_profile" and feature.startswith("booked_"):
        return "calendar"
    if "note" in feature:
        return "notes"
    return _VIEW_GROUP[view]


def feature_groups() -> dict[str, list[str]]:
    """Group name -> its features, in FEATURE_GROUP_NAMES and FeatureService order."""
    groups: dict[str, list[str]] = {g: [] for g in FEATURE_GROUP_NAMES}
    for view, cols in MODEL_FEATURES.items():
        for c in cols:
            groups[feature_group(view, c)].append(c)
    return groups
