"""The FeatureService: the one contract between training and serving."""

from __future__ import annotations

from feast import FeatureService, FeatureView
from feast.on_demand_feature_view import OnDemandFeatureView

from features.schema import FEATURE_SERVICE, MODEL_FEATURES


def feature_service(views: dict[str, FeatureView | OnDemandFeatureView]) -> FeatureService:
    return FeatureService(
        name=FEATURE_SERVICE,
        features=[views[name][cols] for name, cols in MODEL_FEATURES.items()],
        description="inputs of the delay model, version 1",
    )
