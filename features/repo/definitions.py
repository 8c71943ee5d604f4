"""Everything `feast apply` needs, built for one offline folder."""

from __future__ import annotations

from pathlib import Path

from features.repo.entities import entities
from features.repo.on_demand import on_demand_view
from features.repo.services import feature_service
from features.repo.views import feature_views


def definitions(offline: Path) -> list:
    views = feature_views(offline)
    odfv = on_demand_view(views["shipment_profile"], views["shipment_progress"])
    service = feature_service({**views, odfv.name: odfv})
    push = views["shipment_progress"].stream_source
    return [*entities().values(), *views.values(), odfv, service, push]
