"""On-demand features: computed at request time from the shipment's views and the request."""

from __future__ import annotations

from typing import Any

from feast import FeatureView, Field, RequestSource
from feast.on_demand_feature_view import OnDemandFeatureView, on_demand_feature_view
from feast.types import Float64

from features.request_time import REQUEST_TIME
from features.schema import DESCRIPTIONS, ON_DEMAND, VIEW_DESCRIPTIONS

NAME = "delay_on_demand"


def request_source() -> RequestSource:
    return RequestSource(name="delay_request", schema=[Field(name=REQUEST_TIME, dtype=Float64)])


def on_demand_view(profile: FeatureView, progress: FeatureView) -> OnDemandFeatureView:
    @on_demand_feature_view(
        name=NAME,
        sources=[profile[["booked_at_s", "promised_at_s", "planned_arrival_s"]],
                 progress[["last_event_s", "next_planned_s"]], request_source()],
        # the features' descriptions go in the view's tags: Feast 0.67 drops a computed feature's
        # own description when it reads the view back, and its projection check at online reads
        # then refuses the described feature as missing
        schema=[Field(name=c, dtype=Float64) for c in ON_DEMAND],
        mode="python",
        description=VIEW_DESCRIPTIONS[NAME],
        tags={f"feature.{c}": DESCRIPTIONS[c] for c in ON_DEMAND},
    )
    def delay_on_demand(inputs: dict[str, Any]) -> dict[str, Any]:
        # Feast stores this function as source text and runs it elsewhere: import inside.
        from features.request_time import request_features

        out = request_features(inputs["booked_at_s"], inputs["promised_at_s"],
                               inputs["planned_arrival_s"], inputs["last_event_s"],
                               inputs["next_planned_s"], inputs["request_time_s"])
        return {k: v.tolist() for k, v in out.items()}

    return delay_on_demand
