"""The data contract: the schema of every lake table, checked on every write.

Real shipment and tracking data comes in through these schemas (see docs/data-contract.md), and
the world simulator writes through them too, so the rest of the pipeline never needs to know
where the data came from. All times are UTC; weights in kg, volumes in m3, delays in hours.
"""

from __future__ import annotations

import zoneinfo

import numpy as np
import pandas as pd
import pandera.pandas as pa

MODES = ("truck", "rail", "air", "ocean")
# The simulator's service levels and hub kinds; real data may bring others (any text is accepted).
SERVICE_LEVELS = ("economy", "standard", "express")
HUB_KINDS = ("seaport", "airport", "rail", "depot")
EVENT_TYPES = (
    "picked_up",
    "departed",
    "arrived",
    "customs_hold",
    "customs_released",
    "exception",
    "out_for_delivery",
    "delivered",
    # handling steps, appended (an event's type index is packed in 4 bits: at most 16 types)
    "received",  # freight received from the shipper at the origin hub (shipment level)
    "checked_in",  # accepted for a leg at that leg's departure hub (per leg)
    "handed_over",  # handed to the leg's carrier, loaded (per leg)
    "collected",  # collected by the consignee or its agent at the destination hub (shipment level)
)
# Steps that belong to one leg: an event of these types with no leg_index is mapped to the
# plan's leg by its hub (`shipdelay.itinerary`) or rejected. The others are shipment-level.
LEG_EVENTS = ("departed", "arrived", "customs_hold", "customs_released", "exception",
              "checked_in", "handed_over")
# Where an unlabelled leg event happens: at the leg's departure hub, or at its arrival hub
# (then, for customs and exceptions, at its departure hub).
FROM_HUB_EVENTS = ("departed", "checked_in", "handed_over")
# The milestones a `milestone_plans` row may plan: departures and arrivals are planned in
# `legs`, holds and exceptions are never planned. Per leg: checked_in, handed_over; the rest
# are shipment-level (leg_index empty).
PLANNED_STEPS = ("received", "picked_up", "checked_in", "handed_over", "out_for_delivery",
                 "delivered", "collected")
PLANNED_LEG_STEPS = ("checked_in", "handed_over")

STR = pd.StringDtype("pyarrow")
UTC = pd.DatetimeTZDtype("ns", "UTC")


def _str(*checks: pa.Check, nullable: bool = False, unique: bool = False) -> pa.Column:
    return pa.Column(STR, checks=list(checks), nullable=nullable, unique=unique, coerce=True)


def _time(nullable: bool = False) -> pa.Column:
    return pa.Column(UTC, nullable=nullable, coerce=True)


def _one_of(values: tuple[str, ...]) -> pa.Check:
    return pa.Check.isin(values, error=f"must be one of {', '.join(values)}")


# inf passes "> 0" and most comparisons: a quantity must be a finite number (NaN is a null)
_FINITE = pa.Check(np.isfinite, error="must be a finite number")


def _float(*checks: pa.Check, nullable: bool = False) -> pa.Column:
    return pa.Column(float, checks=[_FINITE, *checks], nullable=nullable, coerce=True)


_TIME_ZONES = sorted(zoneinfo.available_timezones())
_TIME_ZONE = pa.Check.isin(_TIME_ZONES, error="not an IANA time zone name such as Europe/Berlin")
# A mode outside MODES has no place in the mode shares; the importer maps it to one of them.
_MODE = pa.Check.isin(MODES, error=f"must be one of {', '.join(MODES)} (map other modes to "
                                   "one of them with --map-values mode=VALUE:MODE)")

# Attributes real data often lacks are nullable: the features built from them are then
# missing, never invented (docs/data-contract.md).
HUBS = pa.DataFrameSchema(
    {
        "hub_id": _str(pa.Check.str_length(1, 64), unique=True),
        "name": _str(nullable=True),
        "kind": _str(nullable=True),
        "city": _str(nullable=True),
        "country": _str(pa.Check.str_length(2, 2, error="ISO 3166 alpha-2 country code"),
                        nullable=True),
        "region": _str(nullable=True),
        "latitude": _float(pa.Check.in_range(-90, 90), nullable=True),
        "longitude": _float(pa.Check.in_range(-180, 180), nullable=True),
        "timezone": _str(_TIME_ZONE, nullable=True),
    },
    strict="filter",
    name="hubs",
)

SHIPMENTS = pa.DataFrameSchema(
    {
        "shipment_id": _str(pa.Check.str_length(1, 64), unique=True),
        "customer_id": _str(nullable=True),
        "origin_hub": _str(),
        "destination_hub": _str(),
        "service_level": _str(nullable=True),
        "weight_kg": _float(pa.Check.gt(0, error="weight must be > 0 kg"), nullable=True),
        "volume_m3": _float(pa.Check.gt(0, error="volume must be > 0 m3"), nullable=True),
        "parcel_count": pa.Column("int64", pa.Check.ge(1), coerce=True),
        "booked_at": _time(),
        "promised_at": _time(),
    },
    checks=[
        pa.Check(
            lambda df: df["promised_at"] > df["booked_at"],
            element_wise=False,
            error="promised_at must be after booked_at",
        )
    ],
    strict="filter",
    name="shipments",
)

# The planned itinerary: one row per leg, leg_index 0..n-1 in travel order.
LEGS = pa.DataFrameSchema(
    {
        "shipment_id": _str(),
        "leg_index": pa.Column("int64", pa.Check.in_range(0, 31), coerce=True),
        "mode": _str(_MODE),
        "carrier_id": _str(nullable=True),
        "from_hub": _str(),
        "to_hub": _str(),
        "planned_departure": _time(),
        "planned_arrival": _time(),
        # the leg this leg's cargo continues on; empty: leg_index + 1 (none for the last leg).
        # Two legs feeding one leg are a consolidation (parallel inbound legs merging).
        "feeds_leg": pa.Column("Int64", pa.Check.in_range(0, 31), nullable=True, coerce=True),
    },
    checks=[
        pa.Check(
            lambda df: df["planned_arrival"] > df["planned_departure"],
            element_wise=False,
            error="planned_arrival must be after planned_departure",
        ),
        pa.Check(
            lambda df: (df["feeds_leg"].isna() | (df["feeds_leg"] > df["leg_index"])).astype(bool),
            element_wise=False,
            error="feeds_leg must be after leg_index",
        ),
    ],
    unique=["shipment_id", "leg_index"],
    strict="filter",
    name="legs",
)

TRACKING_EVENTS = pa.DataFrameSchema(
    {
        "event_id": _str(pa.Check.str_length(1, 128), unique=True),
        "shipment_id": _str(),
        "parcel_id": _str(),
        "event_time": _time(),
        "ingested_at": _time(),
        "event_type": _str(_one_of(EVENT_TYPES)),
        "hub_id": _str(),
        "leg_index": pa.Column("Int64", pa.Check.in_range(0, 31), nullable=True, coerce=True),
        "latitude": _float(pa.Check.in_range(-90, 90), nullable=True),
        "longitude": _float(pa.Check.in_range(-180, 180), nullable=True),
        "note": _str(nullable=True),
    },
    checks=[
        pa.Check(
            lambda df: df["ingested_at"] >= df["event_time"],
            element_wise=False,
            error="ingested_at must not be before event_time",
        )
    ],
    strict="filter",
    name="tracking_events",
)

# Optional: planned times of handling steps (see PLANNED_STEPS), beside the legs' planned
# departures and arrivals. A shipment without rows here is planned by its legs and promise.
MILESTONE_PLANS = pa.DataFrameSchema(
    {
        "shipment_id": _str(),
        "event_type": _str(pa.Check.isin(PLANNED_STEPS, error="must be a planned step: "
                                         + ", ".join(PLANNED_STEPS))),
        "leg_index": pa.Column("Int64", pa.Check.in_range(0, 31), nullable=True, coerce=True),
        "planned_at": _time(),
    },
    checks=[
        pa.Check(
            lambda df: (df["leg_index"].notna() == df["event_type"].isin(PLANNED_LEG_STEPS)
                        ).astype(bool),
            element_wise=False,
            error="leg_index is required for checked_in and handed_over, and must be empty for "
                  "shipment-level steps",
        )
    ],
    strict="filter",
    name="milestone_plans",
)

OUTCOMES = pa.DataFrameSchema(
    {
        "shipment_id": _str(unique=True),
        "delivered_at": _time(),
        "promised_at": _time(),
        "delay_hours": _float(),
        "is_late": pa.Column(bool, coerce=True),
    },
    checks=[
        pa.Check(
            lambda df: ((df["delivered_at"] - df["promised_at"]).dt.total_seconds() / 3600
                        - df["delay_hours"]).abs() < 1 / 60,
            element_wise=False,
            error="delay_hours must equal delivered_at - promised_at in hours",
        ),
        pa.Check(
            lambda df: df["is_late"] == (df["delivered_at"] > df["promised_at"]),
            element_wise=False,
            error="is_late must equal delivered_at > promised_at",
        ),
    ],
    strict="filter",
    name="outcomes",
)

# Optional context: weather observed at a hub. Every measurement may be missing; the ranges
# reject impossible sensor readings rather than let them through as features.
def _measure(low: float, high: float) -> pa.Column:
    return _float(pa.Check.in_range(low, high), nullable=True)


HUB_WEATHER = pa.DataFrameSchema(
    {
        "hub_id": _str(),
        "observed_at": _time(),
        "ingested_at": _time(),
        "temperature_c": _measure(-90, 60),
        "humidity_pct": _measure(0, 100),
        "wind_speed_kmh": _measure(0, 400),
        "wind_gust_kmh": _measure(0, 500),
        "precipitation_mm": _measure(0, 500),
        "pressure_hpa": _measure(850, 1100),
        "visibility_km": _measure(0, 100),
    },
    checks=[
        pa.Check(
            lambda df: df["ingested_at"] >= df["observed_at"],
            element_wise=False,
            error="ingested_at must not be before observed_at",
        )
    ],
    strict="filter",
    name="hub_weather",
)

# Hidden ground truth from the simulator: P(late | full world state at as_of).
CEILING = pa.DataFrameSchema(
    {
        "shipment_id": _str(),
        "as_of": _time(),
        "p_late": _float(pa.Check.in_range(0, 1)),
        "draws": pa.Column("int64", pa.Check.ge(1), coerce=True),
    },
    strict="filter",
    name="ceiling",
)

REJECTS = pa.DataFrameSchema(
    {
        "table": _str(),
        "source": _str(),
        "row_number": pa.Column("int64", coerce=True),
        "reason": _str(),
        "raw": _str(),
        "rejected_at": _time(),
    },
    strict="filter",
    name="rejects",
)

SCHEMAS: dict[str, pa.DataFrameSchema] = {
    "hubs": HUBS,
    "shipments": SHIPMENTS,
    "legs": LEGS,
    "tracking_events": TRACKING_EVENTS,
    "outcomes": OUTCOMES,
    "hub_weather": HUB_WEATHER,
    "milestone_plans": MILESTONE_PLANS,
    "ceiling": CEILING,
    "rejects": REJECTS,
}

# Natural keys: importing the same row twice must not duplicate it.
KEYS: dict[str, tuple[str, ...]] = {
    "hubs": ("hub_id",),
    "shipments": ("shipment_id",),
    "legs": ("shipment_id", "leg_index"),
    "tracking_events": ("event_id",),
    "outcomes": ("shipment_id",),
    "hub_weather": ("hub_id", "observed_at"),
    "milestone_plans": ("shipment_id", "event_type", "leg_index"),
    "ceiling": ("shipment_id", "as_of"),
    "rejects": ("table", "source", "row_number"),
}

# How far after an import's clock a time may lie (`shipdelay ingest` rejects later ones, and
# times before 1970): an observed time (a booking, a scan, a delivery, a weather report) at
# most a day, for clock skew between systems; a planned one (a promise, a schedule) a year.
FUTURE_DEFAULT = pd.Timedelta(days=1)
FUTURE_ALLOWANCE: dict[str, pd.Timedelta] = {
    "promised_at": pd.Timedelta(days=366),
    "planned_departure": pd.Timedelta(days=366),
    "planned_arrival": pd.Timedelta(days=366),
    "planned_at": pd.Timedelta(days=366),
}

# The time column each table is partitioned by (one folder per UTC day); None = unpartitioned.
PARTITION_BY: dict[str, str | None] = {
    "hubs": None,
    "shipments": "booked_at",
    "legs": "planned_departure",
    "tracking_events": "ingested_at",
    "outcomes": "delivered_at",
    "hub_weather": "observed_at",
    "milestone_plans": "planned_at",
    "ceiling": "as_of",
    "rejects": "rejected_at",
}


def columns(table: str) -> list[str]:
    """The contract's column names for a table, in order."""
    return list(SCHEMAS[table].columns)


def validate(table: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Validate and coerce a frame against its table schema; raises SchemaErrors listing all.
    An absent nullable column (an optional one added after the data was written) is null."""
    schema = SCHEMAS[table]
    absent = [c for c, col in schema.columns.items() if col.nullable and c not in frame]
    if absent:
        frame = frame.assign(**{c: pd.Series(pd.NA, index=frame.index, dtype=object)
                                for c in absent})
    return schema.validate(frame, lazy=True)
