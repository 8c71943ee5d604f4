"""The nightly pipeline with the real batch job, monitor, feature build, training and gate, on a
copy of the small trained world: what it scored is what the monitor judged, the scheduled
retrain trains a new version with its reason, and a promotion records why on the version."""

from __future__ import annotations

import shutil
from functools import partial

import pytest

from monitoring.pipeline import EXIT_FAILED, nightly, retrain
from registry.loader import CHAMPION, alias_version
from registry.store import MODEL_NAME, client
from tests.integration.batch_world import CUTOFF, copy_world

pytestmark = pytest.mark.slow


@pytest.fixture
def world(trained, tmp_path):
    """Own registry, own offline store (a retrain rebuilds it); the lake linked read-only."""
    source = trained[0]
    settings = copy_world(source, tmp_path / "data")
    offline = settings.data_dir / "feast" / "offline"
    offline.unlink()
    shutil.copytree(source.data_dir / "feast" / "offline", offline)
    return settings


def test_nightly_scores_monitors_and_the_scheduled_retrain_records_its_reason(world):
    before = alias_version(world, CHAMPION)
    report = nightly(world, CUTOFF, retrain_mode="always",
                     retrainer=partial(retrain, online=False))
    steps = {s.name: s for s in report.steps}
    assert [s.name for s in report.steps] == ["score-batch", "monitor", "retrain"]
    assert report.exit_code != EXIT_FAILED, [s.detail for s in report.steps]
    scored = int(steps["score-batch"].detail.split()[0].replace(",", ""))
    assert scored > 0 and f"of {scored:,} predictions" in steps["monitor"].detail
    assert report.retrain_reason == "schedule"

    c = client(world)
    versions = sorted((mv for mv in c.search_model_versions(f"name='{MODEL_NAME}'")),
                      key=lambda mv: int(mv.version))
    new = versions[-1]
    assert new.version != before and new.tags["retrain_reason"] == "schedule"
    assert new.tags["gate"] in ("promoted", "refused")
    champion = alias_version(world, CHAMPION)
    if new.tags["gate"] == "promoted":
        assert champion == str(new.version) == report.promoted_version
        assert new.tags["promotion_reason"] == "schedule"
        assert "schedule" in c.get_model_version(MODEL_NAME, new.version).description
    else:
        assert champion == before and "promotion_reason" not in new.tags
