"""A copy of the `trained` world for the batch-scoring tests: its own registry (with a champion)
and its own scores and reports; the lake and the offline feature tables are read-only, so linked.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from registry.loader import CHAMPION, alias_version
from registry.store import MODEL_NAME, client
from shipdelay.crypto import active
from shipdelay.settings import Settings
from tests.conftest import TRAINING

WORLD_NOW = pd.Timestamp(TRAINING.start, tz="UTC") + pd.Timedelta(days=TRAINING.days)
# a cut-off well inside the world: a few hundred shipments in flight, stores long warmed up
CUTOFF = WORLD_NOW - pd.Timedelta(days=17, hours=9, minutes=30)


def copy_world(source: Settings, root: Path, *, champion: bool = True,
               plaintext: bool = False) -> Settings:
    """Own MLflow database under `root`; lake and offline tables linked from `source`
    (`plaintext`: copied decrypted, for readers that cannot decrypt)."""
    (root / "feast").mkdir(parents=True)
    shutil.copy2(source.data_dir / "mlflow.db", root / "mlflow.db")
    for name, folder in (("feast/offline", source.data_dir / "feast" / "offline"),
                         ("lake", source.lake_dir)):
        if plaintext:
            _decrypted_copy(folder.resolve(), root / name)
        else:
            (root / name).symlink_to(folder.resolve())
    settings = Settings(data_dir=root)
    c = client(settings)
    if champion and alias_version(settings, CHAMPION) is None:
        version = alias_version(settings, "challenger") or max(
            (mv.version for mv in c.search_model_versions(f"name='{MODEL_NAME}'")), key=int)
        c.set_registered_model_alias(MODEL_NAME, CHAMPION, str(version))
    if not champion and alias_version(settings, CHAMPION) is not None:
        c.delete_registered_model_alias(MODEL_NAME, CHAMPION)
    return settings


def _decrypted_copy(source: Path, target: Path) -> None:
    """Every Parquet file under `source` written again under `target` without encryption."""
    enc = active()
    for path in source.rglob("*.parquet"):
        out = target / path.relative_to(source)
        out.parent.mkdir(parents=True, exist_ok=True)
        props = enc.decryption_properties() if enc else None
        pq.write_table(pq.ParquetFile(path, decryption_properties=props).read(), out)
