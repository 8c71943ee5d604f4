"""Feature views: one per table of features/schema.py, each over a folder of Parquet parts.

Shipment progress is fed by every tracking event: its PushSource (backed by the same batch
source) takes the streaming updater's rows into the online store.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from feast import FeatureView, Field, FileSource, PushSource
from feast.data_format import ParquetFormat
from feast.types import Array, Float64, Int64, String

from features.offline import view_glob
from features.repo.entities import entities
from features.schema import DESCRIPTIONS, TIMESTAMP, VIEW_DESCRIPTIONS, VIEW_ENTITY, VIEWS

FEAST_TYPES = {"str": String, "int": Int64, "float": Float64,
               "float_list": Array(Float64), "str_list": Array(String)}
# How long a value stays valid, offline (Feast's point-in-time join) and online alike
# (`features.instant`): a shipment's profile and progress for its whole journey (the longest
# take under 90 days; a build loads online the rows of the last 120 days), window statistics
# until the next window is computed (with a day of grace); weather for a few hours.
TTL = {"shipment_profile": timedelta(days=120), "shipment_progress": timedelta(days=120),
       "lane_stats": timedelta(days=2), "carrier_stats": timedelta(days=2),
       "customer_stats": timedelta(days=2), "hub_stats": timedelta(days=2),
       "hub_weather": timedelta(hours=3)}  # an hourly observation, with two missed hours' grace
PUSH_SOURCE = "shipment_progress_push"


def source(view: str, offline: Path) -> FileSource:
    return FileSource(name=f"{view}_source", path=view_glob(offline, view),
                      file_format=ParquetFormat(), timestamp_field=TIMESTAMP)


def feature_views(offline: Path) -> dict[str, FeatureView]:
    ents = entities()
    views = {}
    for name, columns in VIEWS.items():
        batch = source(name, offline)
        src = PushSource(name=PUSH_SOURCE, batch_source=batch) if name == "shipment_progress" else batch
        views[name] = FeatureView(
            name=name,
            entities=[ents[VIEW_ENTITY[name]]],
            ttl=TTL[name],
            schema=[Field(name=c, dtype=FEAST_TYPES[t], description=DESCRIPTIONS[c])
                    for c, t in columns.items()],
            source=src,
            online=True,
            description=VIEW_DESCRIPTIONS[name],
        )
    return views
