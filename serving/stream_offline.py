"""Exactly-once offline appends of the stream's progress rows, so training sees what serving saw.

A micro-batch's rows are first written as hidden staged files (`.staged-<token>.parquet`, which
readers of `part-*.parquet` never see); the online commit records the token in the same
transaction as the online rows; then the staged files are renamed to `part-stream-<token>.parquet`
(an atomic rename). After a crash, `recover` finishes what the dead process left: staged files
whose token was committed online are published, the others are deleted (their events were not
committed anywhere, so they are consumed again). Each live stream process holds an exclusive
lock on its own lock file, so recovery never touches the staged files of a process that is
still running; the kernel drops the lock when a process dies, even by SIGKILL.
"""

from __future__ import annotations

import fcntl
import os
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa

from features.schema import TIMESTAMP
from serving.stream_store import StreamStore
from shipdelay.lake import split_by_day, write_parquet_atomic

VIEW = "shipment_progress"
_STAGED, _PUBLISHED = ".staged-", "part-stream-"


class OfflineStager:
    def __init__(self, offline: Path, view: str = VIEW):
        self.root = offline / view
        self.locks = offline / ".stream-locks"
        self.locks.mkdir(parents=True, exist_ok=True)
        self.instance = uuid.uuid4().hex[:12]
        self._lock = open(self.locks / f"{self.instance}.lock", "w")  # noqa: SIM115 - held
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.seq = 0

    def next_token(self) -> str:
        self.seq += 1
        return f"{self.instance}-{self.seq:09d}"

    def stage(self, frame: pd.DataFrame, token: str) -> list[Path]:
        """Write `frame` as hidden staged files, one per UTC day of its event_timestamp."""
        if frame.empty:
            return []
        table = pa.Table.from_pandas(frame, preserve_index=False)
        times = pd.to_datetime(frame[TIMESTAMP], utc=True, cache=False).astype("datetime64[ns, UTC]")
        return [write_parquet_atomic(rows, self.root / day / f"{_STAGED}{token}.parquet")
                for day, rows in split_by_day(table, times)]

    @staticmethod
    def publish(staged: list[Path]) -> None:
        for path in staged:
            token = path.name[len(_STAGED):-len(".parquet")]
            os.replace(path, path.with_name(f"{_PUBLISHED}{token}.parquet"))

    def recover(self, store: StreamStore) -> tuple[int, int]:
        """Publish or delete the staged files of stream processes that are gone.
        Returns (published, deleted) file counts."""
        published = deleted = 0
        for path in sorted(self.root.glob(f"*/{_STAGED}*.parquet")):
            token = path.name[len(_STAGED):-len(".parquet")]
            owner = token.rsplit("-", 1)[0]
            if owner == self.instance or not self._owner_gone(owner):
                continue
            if store.committed(token):
                self.publish([path])
                published += 1
            else:
                path.unlink(missing_ok=True)
                deleted += 1
        return published, deleted

    def _owner_gone(self, owner: str) -> bool:
        lock_path = self.locks / f"{owner}.lock"
        if not lock_path.exists():
            return True
        with open(lock_path, "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            fcntl.flock(handle, fcntl.LOCK_UN)
        return True

    def close(self) -> None:
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        self._lock.close()
        (self.locks / f"{self.instance}.lock").unlink(missing_ok=True)
