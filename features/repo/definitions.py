"""Everything `feast apply` needs, built for one offline folder."""

from __future__ import annotations

from pathlib import Path

from feast import FeatureView
from feast.on_demand_feature_view import OnDemandFeatureView

from features.repo.entities import entities
from features.repo.on_demand import on_demand_view
from features.repo.services import feature_service
from features.repo.views import feature_views


def views_for(offline: Path) -> dict[str, FeatureView | OnDemandFeatureView]:
    """The feature views and the on-demand view, by name."""
    views = feature_views(offline)
    odfv = on_demand_view(views["shipment_profile"], views["shipment_progress"])
    return {**views, odfv.name: odfv}


def definitions(offline: Path) -> list:
    views = views_for(offline)
    service = feature_service(views)
    push = views["shipment_progress"].stream_source
    return [*entities().values(), *views.values(), service, push]
