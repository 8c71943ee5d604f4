"""The lake: partitioned Parquet tables under `<data_dir>/lake`, written atomically.

Layout: `<lake>/<table>/day=YYYY-MM-DD/part-<id>.parquet`, one folder per UTC day of the table's
partition column (see `contract.PARTITION_BY`). Every file is written to a hidden temporary name
and renamed into place, so readers never see half a file, and a write (one append, or the
appends of one `Lake.transaction()`) is seen whole or not at all: readers keep only the files of
committed writes (`lake_commits`), and the next writer removes what a killed one left. A full
rewrite (`Lake.rewrite`) builds a new lake beside the current one and swaps the `lake` symlink in
one atomic rename: an exception midway leaves the previous lake untouched, and the folder of a
killed rewrite is removed by the next one (or the next `open_lake`).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from shipdelay import contract, lake_commits, parquet_io

_STRING_TYPES = {pa.string(): pd.StringDtype("pyarrow"), pa.large_string(): pd.StringDtype("pyarrow")}


def write_parquet_atomic(table: pa.Table, path: Path) -> Path:
    """Write one Parquet file via a hidden temp file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        parquet_io.write_table(table, tmp, compression="zstd", coerce_timestamps="us",
                               allow_truncated_timestamps=True)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def split_by_day(table: pa.Table, times: pd.Series) -> Iterator[tuple[str, pa.Table]]:
    """The rows of `table` grouped by the UTC day of `times` (aligned with it), day by day."""
    days = (times.array.asi8 // 86_400_000_000_000).astype("datetime64[D]")
    order = np.argsort(days, kind="stable")
    sorted_days = days[order]
    bounds = np.flatnonzero(sorted_days[1:] != sorted_days[:-1]) + 1
    for chunk in np.split(np.arange(len(order)), bounds):
        if len(chunk):
            yield str(sorted_days[chunk[0]]), table.take(pa.array(order[chunk]))


def to_arrow(frame: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(frame, preserve_index=False)


def from_arrow(table: pa.Table) -> pd.DataFrame:
    """Arrow -> pandas with Arrow-backed strings and nanosecond UTC times (the contract's dtypes)."""
    return table.to_pandas(types_mapper=_STRING_TYPES.get, coerce_temporal_nanoseconds=True)


def _to_microseconds(frame: pd.DataFrame) -> pd.DataFrame:
    times = [c for c in frame.columns if isinstance(frame[c].dtype, pd.DatetimeTZDtype)]
    if not times:
        return frame
    frame = frame.copy(deep=False)
    for c in times:
        frame[c] = frame[c].dt.floor("us")
    return frame


class Lake:
    """Read and write the contract's tables under one lake root."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self._txn: lake_commits.Transaction | None = None  # the open write, if any

    # -- reading -------------------------------------------------------------------------------
    def table_dir(self, table: str) -> Path:
        return self.root / table

    def exists(self, table: str) -> bool:
        return any(self.files(table))

    def files(self, table: str, since: date | None = None) -> list[Path]:
        """Data files of a table's committed writes (and of this lake's open transaction),
        optionally only day partitions on or after `since`."""
        own = [self._txn.id] if self._txn is not None else []
        return lake_commits.visible(self.root, lambda: self._listed(table, since), own)

    def _listed(self, table: str, since: date | None) -> list[Path]:
        base = self.table_dir(table)
        if not base.exists():
            return []
        if contract.PARTITION_BY[table] is None:
            return sorted(base.glob("part-*.parquet"))
        out = []
        for part in sorted(base.glob("day=*")):
            if since is None or date.fromisoformat(part.name[4:]) >= since:
                out.extend(sorted(part.glob("part-*.parquet")))
        return out

    def scan(self, table: str, since: date | None = None) -> ds.Dataset:
        """An Arrow dataset over the table (for DuckDB or Arrow aggregations)."""
        files = self.files(table, since)
        if not files:
            raise FileNotFoundError(f"lake table '{table}' is empty or missing under {self.root}")
        return parquet_io.dataset(files)

    def read(self, table: str, columns: list[str] | None = None,
             since: date | None = None, filter: ds.Expression | None = None) -> pd.DataFrame:
        """A table as a pandas frame in the contract's dtypes."""
        return from_arrow(self.scan(table, since).to_table(columns=columns, filter=filter))

    # -- writing -------------------------------------------------------------------------------
    def append(self, table: str, frame: pd.DataFrame, *, validated: bool = False,
               skip_existing: bool = False) -> int:
        """Validate and add rows, one new file per day partition; returns rows written.

        With `skip_existing`, rows whose key is already in the lake (or repeated in `frame`)
        are dropped first, so importing the same data twice adds nothing. Outside a
        `transaction()`, the append is a transaction of its own.
        """
        if self._txn is None:
            with self.transaction():
                return self.append(table, frame, validated=validated, skip_existing=skip_existing)
        if skip_existing:
            frame = frame.drop_duplicates(subset=list(contract.KEYS[table]), keep="first")
        if not validated:
            frame = contract.validate(table, frame)
        frame = _to_microseconds(frame)  # what Parquet stores; keys must compare equal after
        if skip_existing:
            frame = self._new_rows(table, frame)
        if frame.empty:
            return 0
        arrow = to_arrow(frame[contract.columns(table)])
        column, txn = contract.PARTITION_BY[table], self._txn
        if column is None:
            path = write_parquet_atomic(arrow, self.table_dir(table) / txn.next_name())
            txn.wrote(table, path, len(frame))
            return len(frame)
        for day, rows in split_by_day(arrow, frame[column]):
            path = self.table_dir(table) / f"day={day}" / txn.next_name()
            txn.wrote(table, write_parquet_atomic(rows, path), rows.num_rows)
        return len(frame)

    @contextmanager
    def transaction(self) -> Iterator[Lake]:
        """One write, all or nothing: the appends made in the block become visible to readers
        together when it ends, and an exception (or the death of the process) leaves none of
        them. Writers of one lake take turns; a nested block joins the open transaction."""
        if self._txn is not None:
            yield self
            return
        with lake_commits.transaction(self.root) as txn:
            self._txn = txn
            try:
                yield self
            finally:
                self._txn = None

    def _new_rows(self, table: str, frame: pd.DataFrame) -> pd.DataFrame:
        keys = list(contract.KEYS[table])
        if not self.exists(table):
            return frame
        existing = self.read(table, columns=keys)
        seen = pd.MultiIndex.from_frame(existing) if len(keys) > 1 else pd.Index(existing[keys[0]])
        mine = pd.MultiIndex.from_frame(frame[keys]) if len(keys) > 1 else pd.Index(frame[keys[0]])
        return frame[~mine.isin(seen)]

    @classmethod
    @contextmanager
    def rewrite(cls, link: Path | str) -> Iterator[Lake]:
        """Build a whole new lake, then swap it in atomically; on error keep the old one. The
        folders of builds killed earlier are removed first."""
        link = Path(link)
        link.parent.mkdir(parents=True, exist_ok=True)
        lake_commits.remove_dead_builds(link)
        with lake_commits.new_lake_folder(link) as staging:
            try:
                yield cls(staging)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            previous = link.resolve() if link.is_symlink() else None
            if link.exists() and not link.is_symlink():
                # a plain directory from an earlier layout: move it aside, then link
                link.rename(link.parent / f"{link.name}-old-{uuid.uuid4().hex[:6]}")
            tmp_link = link.parent / f".{link.name}.{uuid.uuid4().hex[:8]}"
            tmp_link.symlink_to(staging.name)
            os.replace(tmp_link, link)
        if previous is not None and previous != staging.resolve():
            trash = previous.parent / f".{previous.name}.trash"  # removed later if we die now
            os.rename(previous, trash)
            shutil.rmtree(trash, ignore_errors=True)


def open_lake(link: Path | str) -> Lake:
    """The current lake behind `link`, creating an empty one (and the link) if there is none;
    the folders of lake builds killed earlier are removed."""
    link = Path(link)
    link.parent.mkdir(parents=True, exist_ok=True)
    lake_commits.remove_dead_builds(link)
    if not link.exists():
        with lake_commits.new_lake_folder(link) as target:
            if link.is_symlink():  # dangling: its lake is gone
                tmp_link = link.parent / f".{link.name}.{uuid.uuid4().hex[:8]}"
                tmp_link.symlink_to(target.name)
                os.replace(tmp_link, link)
            else:
                try:
                    os.symlink(target.name, link)  # fails if another process linked one first
                except FileExistsError:
                    shutil.rmtree(target, ignore_errors=True)
    return Lake(link)
