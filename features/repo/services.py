"""The FeatureService: the one contract between training and serving.

`delay_model_v1` holds every model feature. A training run that leaves feature groups out
(`features.feature_sets`) gets a FeatureService of its own, the same views narrowed to the
features it keeps, applied next to the full one by `apply_feature_set`.
"""

from __future__ import annotations

from pathlib import Path

from feast import FeatureService, FeatureStore, FeatureView
from feast.on_demand_feature_view import OnDemandFeatureView

from features.feature_sets import FeatureSet


def feature_service(views: dict[str, FeatureView | OnDemandFeatureView],
                    feature_set: FeatureSet | None = None) -> FeatureService:
    feature_set = feature_set or FeatureSet()
    dropped = (f", without {', '.join(feature_set.dropped)}" if feature_set.dropped else "")
    return FeatureService(
        name=feature_set.service,
        features=[views[name][cols] for name, cols in feature_set.by_view().items()],
        description=f"inputs of the delay model, version 1{dropped}",
    )


def apply_feature_set(store: FeatureStore, offline: Path, feature_set: FeatureSet) -> str:
    """Register `feature_set`'s FeatureService in the store's registry (the views it reads are
    those `features build` applied) and return its name. Applying it again changes nothing."""
    from features.repo.definitions import views_for

    store.apply([feature_service(views_for(offline), feature_set)])
    return feature_set.service
