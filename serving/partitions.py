"""Date partitions swapped in whole: `<root>/run_date=YYYY-MM-DD` is a symlink to a version folder.

A writer fills a fresh folder `<root>/_versions/run_date=YYYY-MM-DD-<hex>/` and then points the
partition's symlink at it with one atomic rename (as `shipdelay.lake.Lake.rewrite` swaps the
lake). Readers therefore see the previous partition or the new one, never a mix; a rerun for the
same date replaces the partition cleanly; a writer that fails midway removes its folder and
leaves the previous partition untouched (a killed writer leaves only an unreferenced folder
under `_versions`, which the next successful write of that date removes).

Readers of the whole table (`pd.read_parquet(root)`, Spark, `read_parquet('<root>/*/*.parquet')`
in DuckDB) follow the links and skip `_versions`, as they skip any name starting with `_` or `.`:
the partition column `run_date` comes from the folder name, in Hive style.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import pyarrow as pa

from shipdelay.parquet_io import write_table

VERSIONS = "_versions"
KEY = "run_date"


def partition_path(root: Path, day: date) -> Path:
    return Path(root) / f"{KEY}={day.isoformat()}"


def partition_days(root: Path) -> list[date]:
    """The dates that have a published partition, oldest first."""
    root = Path(root)
    if not root.exists():
        return []
    return sorted(date.fromisoformat(p.name.split("=", 1)[1])
                  for p in root.glob(f"{KEY}=*") if p.exists())


def write_part(table: pa.Table, folder: Path, index: int) -> Path:
    """One Parquet file of a partition being written (the folder is not visible yet)."""
    path = folder / f"part-{index:05d}.parquet"
    write_table(table, path, compression="zstd", coerce_timestamps="us",
                allow_truncated_timestamps=True)
    return path


@contextmanager
def publish(root: Path, day: date) -> Iterator[Path]:
    """Yield an empty folder to fill; on success it becomes the `day` partition atomically.

    Any exception inside the block removes the folder and keeps the previous partition."""
    root = Path(root)
    versions = root / VERSIONS
    versions.mkdir(parents=True, exist_ok=True)
    name = f"{KEY}={day.isoformat()}"
    staging = versions / f"{name}-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _swap(root, name, staging)


def _swap(root: Path, name: str, staging: Path) -> None:
    link = root / name
    previous = link.resolve() if link.is_symlink() else None
    if link.exists() and not link.is_symlink():  # a plain folder written by other means
        link.rename(root / VERSIONS / f"{name}-replaced-{uuid.uuid4().hex[:6]}")
    tmp_link = root / f".{name}.{uuid.uuid4().hex[:8]}"
    tmp_link.symlink_to(Path(VERSIONS) / staging.name)
    os.replace(tmp_link, link)
    # the previous version and any folders left by killed writers of this date
    for old in (root / VERSIONS).glob(f"{name}-*"):
        if old.resolve() != staging.resolve() and (old == previous or _unreferenced(old, link)):
            shutil.rmtree(old, ignore_errors=True)


def _unreferenced(folder: Path, link: Path) -> bool:
    """True for a version folder that no partition link points at and that no writer is still
    filling (an in-progress folder of a concurrent run is younger than an hour)."""
    try:
        age = time.time() - folder.stat().st_mtime
    except FileNotFoundError:
        return False
    return link.resolve() != folder.resolve() and age > 3600
