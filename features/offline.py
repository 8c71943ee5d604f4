"""The offline feature tables on disk: `<feast>/offline/<view>/YYYY-MM-DD/part-*.parquet`.

A full build replaces a view's folder in one rename; an incremental build (`since`) replaces only
the day folders it recomputed; the streaming updater appends new parts. Readers (DuckDB, Feast)
see every `part-*.parquet` under the view's folder.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterable, Iterator
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa

from features.schema import TIMESTAMP
from shipdelay.lake import split_by_day, write_parquet_atomic
from shipdelay.memory import offline_connection
from shipdelay.parquet_io import sql_source


def view_glob(offline: Path, view: str) -> str:
    return str(offline / view / "**" / "part-*.parquet")


def view_days(offline: Path, view: str) -> list[tuple[date, Path]]:
    """The view's day folders (rows sit in the folder of their timestamp's UTC day), oldest
    first."""
    out = []
    for folder in (offline / view).glob("*"):
        try:
            out.append((date.fromisoformat(folder.name), folder))
        except ValueError:
            continue
    return sorted(out)


def view_files(offline: Path, view: str, first: date, last: date) -> list[str]:
    """The view's parts in the day folders from `first` to `last` inclusive, for readers that
    need only a window of days."""
    return [str(f) for day, folder in view_days(offline, view) if first <= day <= last
            for f in sorted(folder.glob("part-*.parquet"))]


def _write_days(frame: pd.DataFrame, root: Path, token: str) -> list[Path]:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    return [write_parquet_atomic(rows, root / day / f"part-{token}.parquet")
            for day, rows in split_by_day(table, frame[TIMESTAMP])]


def _frames(data: pd.DataFrame | Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    yield from ([data] if isinstance(data, pd.DataFrame) else data)


def replace_view(offline: Path, view: str, data: pd.DataFrame | Iterable[pd.DataFrame]) -> int:
    """Write a whole view anew (one frame or chunk by chunk) and swap it in: readers see the old
    or the new, never a mix. Returns rows written."""
    target = offline / view
    staging = offline / f".{view}-{uuid.uuid4().hex[:8]}"
    rows = 0
    for frame in _frames(data):
        _write_days(frame, staging, uuid.uuid4().hex[:12])
        rows += len(frame)
    staging.mkdir(parents=True, exist_ok=True)
    old = offline / f".{view}-old-{uuid.uuid4().hex[:8]}"
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return rows


def replace_days(offline: Path, view: str, data: pd.DataFrame | Iterable[pd.DataFrame]) -> int:
    """Replace the day folders present in the data (an incremental rebuild of those days)."""
    written: set[Path] = set()
    rows = 0
    for frame in _frames(data):
        written |= set(_write_days(frame, offline / view, uuid.uuid4().hex[:12]))
        rows += len(frame)
    for folder in {p.parent for p in written}:
        for other in folder.glob("part-*.parquet"):
            if other not in written:
                other.unlink()
    return rows


def append_parts(offline: Path, view: str, frame: pd.DataFrame) -> list[Path]:
    """Add rows as new parts (the streaming updater's offline write)."""
    return _write_days(frame, offline / view, uuid.uuid4().hex[:12])


def write_parts(offline: Path, view: str, frame: pd.DataFrame, token: str) -> list[Path]:
    """Add rows as parts named `part-<token>.parquet` in their day folders, replacing parts of
    that name (a roll written again after a crash, `features.roll`)."""
    return _write_days(frame, offline / view, token)


def read_view(offline: Path, view: str, where: str = "") -> pd.DataFrame:
    """A whole offline view as pandas (tests and small tools; big joins use DuckDB directly)."""
    con = offline_connection(data_dir=offline.parent.parent)  # offline: <data_dir>/feast/offline
    try:
        query = f"select * from {sql_source(con, view_glob(offline, view), union_by_name=True)}"
        frame = con.sql(query + (f" where {where}" if where else "")).df()
    finally:
        con.close()
    frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)
    return frame
