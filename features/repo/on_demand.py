"""On-demand features: computed at request time from the shipment's views and the request."""

from __future__ import annotations

from typing import Any

from feast import FeatureView, Field, RequestSource
from feast.on_demand_feature_view import OnDemandFeatureView, on_demand_feature_view
from feast.types import Float64

from features.request_time import REQUEST_TIME
from features.schema import DESCRIPTIONS, ON_DEMAND, VIEW_DESCRIPTIONS

NAME = "delay_on_demand"


class DescribedOnDemandFeatureView(OnDemandFeatureView):
    """An on-demand view whose declared features carry descriptions.

    Feast 0.67 checks each declared feature against those it infers by running the function,
    comparing descriptions too; inferred features have none, so a described feature would be
    refused as "not present". Here a declared feature is present when the inferred ones hold
    its name with its type."""

    def _feature_exists_in_inferred(self, specified_feature: Field,
                                    inferred_features: list[Field]) -> bool:
        return any(f.name == specified_feature.name and f.dtype == specified_feature.dtype
                   for f in inferred_features)


def request_source() -> RequestSource:
    return RequestSource(name="delay_request", schema=[Field(name=REQUEST_TIME, dtype=Float64)])


def on_demand_view(profile: FeatureView, progress: FeatureView) -> OnDemandFeatureView:
    @on_demand_feature_view(
        name=NAME,
        sources=[profile[["booked_at_s", "promised_at_s", "planned_arrival_s"]],
                 progress[["last_event_s", "next_planned_s"]], request_source()],
        schema=[Field(name=c, dtype=Float64, description=DESCRIPTIONS[c]) for c in ON_DEMAND],
        mode="python",
        description=VIEW_DESCRIPTIONS[NAME],
    )
    def delay_on_demand(inputs: dict[str, Any]) -> dict[str, Any]:
        # Feast stores this function as source text and runs it elsewhere: import inside.
        from features.request_time import request_features

        out = request_features(inputs["booked_at_s"], inputs["promised_at_s"],
                               inputs["planned_arrival_s"], inputs["last_event_s"],
                               inputs["next_planned_s"], inputs["request_time_s"])
        return {k: v.tolist() for k, v in out.items()}

    delay_on_demand.__class__ = DescribedOnDemandFeatureView  # see the class: same state
    return delay_on_demand
