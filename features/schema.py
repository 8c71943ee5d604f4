"""Names and types of every feature: the one list that the Feast definitions, the transforms, the
training-set builder and the model share. Add a feature here first.

Milestones along a plan of n legs have a core ordinal ("ord"): picked_up = 0, departed leg i =
1 + 2i, arrived leg i = 2 + 2i, out_for_delivery = 2n + 1, delivered = 2n + 2. Customs and
exception events are side milestones without an ord.
"""

from __future__ import annotations

ENTITY_KEYS = {"shipment": "shipment_id", "lane": "lane_id", "carrier": "carrier_id",
               "hub": "hub_id", "customer": "customer_id"}

# View name -> {column: type}; types are "str", "int", "float", "float_list", "str_list".
SHIPMENT_PROFILE = {
    "lane_id": "str",  # "<origin_hub>><destination_hub>"
    "customer_id": "str",
    "carrier_id": "str",  # carrier of the longest planned leg
    "origin_hub": "str",
    "destination_hub": "str",
    "origin_region": "str",
    "destination_region": "str",
    "service_level": "str",
    "main_mode": "str",  # mode of the longest planned leg
    "n_legs": "int",
    "share_truck": "float",  # share of planned leg hours by mode
    "share_rail": "float",
    "share_air": "float",
    "share_ocean": "float",
    "distance_km": "float",  # great-circle, summed over legs
    "planned_transit_h": "float",  # booking to the last planned arrival
    "weight_kg": "float",
    "volume_m3": "float",
    "parcel_count": "int",
    "promised_slack_h": "float",  # promised time minus the last planned arrival
    "international": "float",  # 1 across a border, 0 within a country, NaN: a country unknown
    "booked_weekday": "int",
    "booked_month": "int",
    "booked_hour": "int",  # hour of the day on the origin hub's clock (UTC if its zone is unknown)
    "booked_at_s": "float",  # epoch seconds, inputs of the on-demand features
    "promised_at_s": "float",
    "planned_arrival_s": "float",
    # the plan, indexed by ord (what the streaming updater needs besides the prior state)
    "plan_times_s": "float_list",
    "plan_hubs": "str_list",
    "plan_modes": "str_list",
    "plan_feeds": "float_list",  # per leg, the leg its cargo continues on (-1: the end)
    "plan_steps": "float_list",  # planned handling steps: (milestone bit, planned time) pairs
}

SHIPMENT_PROGRESS = {
    "milestone_mask": "int",  # bit set of milestones seen (see transforms.milestone_bit)
    "milestones_done": "int",  # distinct milestones seen, all kinds
    "milestones_planned": "int",  # 2n + 3 core milestones
    "core_done": "int",  # distinct core milestones seen
    "furthest_ord": "int",  # -1 before the first scan
    "furthest_time_s": "float",  # first scan time of the furthest milestone
    "first_departure_s": "float",  # first scan time of departed leg 0
    "last_event_s": "float",  # latest event_time seen
    "last_event_code": "int",  # internal: event_time_s * 16 + event type index, max so far
    "last_event_type": "str",  # type of the latest event by event_time ("none" before any)
    "current_leg": "int",
    "current_mode": "str",
    "current_hub": "str",  # the hub of the furthest milestone (origin before any scan)
    "slip_h": "float",  # furthest milestone's scan time minus its planned time, hours
    "slip_trend_h": "float",  # slip_h minus the slip at the first departure
    "last_slip_h": "float",  # scan minus plan of the seen milestone planned latest, any kind
    "last_milestone_s": "float",  # first scan time of that milestone (internal)
    "planned_h_ahead": "float",  # planned hours to delivery from where the critical path stands
    "next_planned_s": "float",  # earliest planned milestone of any kind not yet seen (NaN: none)
    "legs_ahead": "int",  # planned legs not yet departed on the critical path
    "next_mode": "str",  # mode of the next planned movement
    "customs_holds": "int",
    "customs_open": "int",  # a hold seen without its release
    "exceptions": "int",
    "missing_milestones": "int",  # planned milestones passed without a scan of their own
    "recent_notes": "str",  # the newest notes' text, one per line (see features.notes)
    "delivered": "int",
    "event_count": "int",  # distinct event ids folded in (diagnostics, not a model input)
}

WINDOW_DAYS = (7, 28)


def _rolling(prefix: str) -> dict[str, str]:
    cols = {}
    for d in WINDOW_DAYS:
        cols |= {f"{prefix}_volume_{d}d": "int", f"{prefix}_late_rate_{d}d": "float",
                 f"{prefix}_mean_delay_{d}d": "float", f"{prefix}_p90_delay_{d}d": "float"}
    return cols


LANE_STATS = _rolling("lane") | {"lane_dep_slip_7d": "float"}
CARRIER_STATS = _rolling("carrier") | {"carrier_dep_slip_7d": "float"}
CUSTOMER_STATS = _rolling("customer")
HUB_STATS = {
    "hub_departures_24h": "int",
    "hub_arrivals_24h": "int",
    "hub_dep_slip_24h": "float",  # mean departure slip from this hub, hours
    "hub_dwell_24h": "float",  # mean hours between arrival at and departure from this hub
    "hub_exceptions_24h": "int",
    "hub_customs_holds_24h": "int",
    "hub_notes_24h": "int",  # tracking notes written at this hub, whatever they say
}
# Weather observed at the hub (optional contract table hub_weather): the latest observation.
HUB_WEATHER = {
    "weather_temperature_c": "float",
    "weather_humidity_pct": "float",
    "weather_wind_kmh": "float",
    "weather_gust_kmh": "float",
    "weather_precipitation_mm": "float",
    "weather_pressure_hpa": "float",
    "weather_visibility_km": "float",
}
ON_DEMAND = {
    "hours_to_promised": "float",
    "transit_elapsed_frac": "float",
    "hours_since_last_scan": "float",
    "hours_overdue": "float",  # hours the next planned milestone not yet seen is past due
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
