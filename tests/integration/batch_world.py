"""A copy of the `trained` world for the batch-scoring tests: its own registry (with a champion)
and its own scores and reports; the lake and the offline feature tables are read-only, so linked.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from registry.loader import CHAMPION, alias_version
from registry.store import MODEL_NAME, client
from shipdelay.settings import Settings
from tests.conftest import TRAINING

WORLD_NOW = pd.Timestamp(TRAINING.start, tz="UTC") + pd.Timedelta(days=TRAINING.days)
# a cut-off well inside the world: a few hundred shipments in flight, stores long warmed up
CUTOFF = WORLD_NOW - pd.Timedelta(days=17, hours=9, minutes=30)


def copy_world(source: Settings, root: Path, *, champion: bool = True) -> Settings:
    """Own MLflow database under `root`; lake and offline tables linked from `source`."""
    (root / "feast").mkdir(parents=True)
    shutil.copy2(source.data_dir / "mlflow.db", root / "mlflow.db")
    (root / "feast" / "offline").symlink_to((source.data_dir / "feast" / "offline").resolve())
    (root / "lake").symlink_to(source.lake_dir.resolve())
    settings = Settings(data_dir=root)
    c = client(settings)
    if champion and alias_version(settings, CHAMPION) is None:
        version = alias_version(settings, "challenger") or max(
            (mv.version for mv in c.search_model_versions(f"name='{MODEL_NAME}'")), key=int)
        c.set_registered_model_alias(MODEL_NAME, CHAMPION, str(version))
    if not champion and alias_version(settings, CHAMPION) is not None:
        c.delete_registered_model_alias(MODEL_NAME, CHAMPION)
    return settings
