"""A shipment's reasons kept in the online store with its risk, for the state they explain.

The stream (every shipment whose risk it updates into the high band, and every alert) and the
nightly batch (the shipments it explains) compute reasons when they score, LightGBM's TreeSHAP
on the vector they score, and keep one record per shipment next to its features: the SQLite
table `shipdelay_reasons` (one row per shipment) or the field `_reasons` of the shipment's
Redis hash. A record says exactly what it explains:
- `version`: the model version whose trees were explained;
- `state`: the digest of the shipment's state as that model reads it (`Scorer.states`: every
  model input but the four clock features, bit for bit, and the note texts quoted);
- `at`: the instant of the vector explained (epoch seconds; its clock features are those of
  `at`);
- `top`: up to three (feature, contribution) pairs, the strongest risk-raising ones first;
- `words`: their sentences (`serving.reasons`).
`/predict` serves a record only while it is valid for the vector it scores (`Scorer.score_columns`
says when); anything else is computed.
The writers are handed a store; this module imports no store client itself, so the scorer that
uses its records stays light (a Spark executor imports it).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

TABLE = "shipdelay_reasons"
FIELD = b"_reasons"  # in the shipment's Redis hash, next to its features
_CREATE = (f"CREATE TABLE IF NOT EXISTS {TABLE} (entity_key BLOB PRIMARY KEY, at REAL NOT NULL, "
           "record TEXT NOT NULL)")
_UPSERT = (f"INSERT INTO {TABLE} (entity_key, at, record) VALUES (?, ?, ?) ON CONFLICT(entity_key) "
           "DO UPDATE SET at = excluded.at, record = excluded.record")
_CHUNK = 20_000  # below SQLite's host-parameter limit


@dataclass(frozen=True)
class Reasons:
    """One shipment's reasons and the vector they explain (see the module docstring)."""

    shipment_id: str
    version: str
    state: str
    at: float
    top: tuple[tuple[str, float], ...]
    words: tuple[str, ...]

    def encode(self) -> str:
        return json.dumps({"v": self.version, "s": self.state, "at": self.at,
                           "top": [list(p) for p in self.top], "w": list(self.words)},
                          separators=(",", ":"))


def decode(ids: Sequence[str], texts: Sequence[str | bytes | None]) -> list[Reasons | None]:
    """Records from their JSON texts (None where a shipment has none), one `json.loads` for all;
    a text that is not a record counts as none."""
    where = [i for i, t in enumerate(texts) if t]
    out: list[Reasons | None] = [None] * len(texts)
    if not where:
        return out
    parts = [texts[i].decode() if isinstance(texts[i], bytes) else texts[i] for i in where]
    try:
        parsed = json.loads("[" + ",".join(parts) + "]")
    except ValueError:  # one bad text: the others one by one
        parsed = [_loads(p) for p in parts]
    for i, r in zip(where, parsed):
        try:
            out[i] = Reasons(str(ids[i]), r["v"], r["s"], float(r["at"]),
                             tuple(map(tuple, r["top"])), tuple(r["w"]))
        except (KeyError, TypeError, ValueError):
            out[i] = None
    return out


def _loads(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return None


# ------------------------------------------------------------------------------ writes

def sqlite_write(conn: sqlite3.Connection, records: Sequence[Reasons], newer_only: bool = False
                 ) -> None:
    """Write `records` with `conn`, inside the caller's transaction. `newer_only`: a shipment's
    record for a later instant is kept (the nightly batch runs after the stream moved on)."""
    from features.online_direct import entity_keys

    if not records:
        return
    conn.execute(_CREATE)
    sql = _UPSERT + (f" WHERE excluded.at >= {TABLE}.at" if newer_only else "")
    keys = entity_keys("shipment_id", [r.shipment_id for r in records])
    conn.executemany(sql, [(k, r.at, r.encode()) for k, r in zip(keys, records)])


def redis_write(pipe, records: Sequence[Reasons], project: str) -> None:
    """Queue `records` on a Redis pipeline (the caller executes it: the stream inside its
    MULTI/EXEC with the shipments' progress)."""
    from features.online_direct import entity_keys

    keys = entity_keys("shipment_id", [r.shipment_id for r in records])
    suffix = project.encode()
    for k, r in zip(keys, records):
        pipe.hset(k + suffix, FIELD, r.encode())


class OnlineReasons:
    """The records in one online store: `read` for the service, `write` for the batch."""

    def __init__(self, kind: str, handle, project: str):
        """`handle`: a sqlite3 connection or a Redis client."""
        self.kind, self.handle, self.project = kind, handle, project
        self.lock = threading.Lock()  # a SQLite connection is used by one thread at a time

    @classmethod
    def of_direct(cls, online) -> OnlineReasons:
        """On the stream's and the batch's `features.online_direct.DirectOnline`."""
        from features.online_direct import SqliteOnline
        from features.store import PROJECT

        if isinstance(online, SqliteOnline):
            return cls("sqlite", online.conn, PROJECT)
        return cls("redis", online.client, PROJECT)

    @classmethod
    def of_feast(cls, store) -> OnlineReasons:
        """Read-only, on the online store of a Feast `FeatureStore` (the service's)."""
        config = store.config
        if config.online_store.type == "sqlite":
            from feast.infra.online_stores.sqlite import SqliteOnlineStore

            path = SqliteOnlineStore._get_db_path(config)
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False,
                                   timeout=5.0)
            return cls("sqlite", conn, config.project)
        from features.store import redis_client

        return cls("redis", redis_client(config.online_store), config.project)

    def read(self, ids: Sequence[str]) -> list[Reasons | None]:
        """Each shipment's record (None: none kept), in the order of `ids`."""
        from features.online_direct import entity_keys

        ids = [str(i) for i in ids]
        if not ids:
            return []
        keys = entity_keys("shipment_id", ids)
        texts: list = [None] * len(ids)
        if self.kind == "sqlite":
            where = {k: i for i, k in enumerate(keys)}
            with self.lock:
                for lo in range(0, len(keys), _CHUNK):
                    chunk = keys[lo:lo + _CHUNK]
                    try:
                        rows = self.handle.execute(
                            f"SELECT entity_key, record FROM {TABLE} WHERE entity_key IN "
                            f"({','.join('?' * len(chunk))})", chunk).fetchall()
                    except sqlite3.OperationalError as err:
                        if "no such table" in str(err):
                            return [None] * len(ids)  # nothing kept yet
                        raise
                    for key, text in rows:
                        texts[where[key]] = text
        else:
            from features.redis_wire import command, exchange

            suffix = self.project.encode()
            payload = b"".join(command(b"HGET", k + suffix, FIELD) for k in keys)
            texts = exchange(self.handle, payload, len(keys))
        return decode(ids, texts)

    def write(self, records: Sequence[Reasons]) -> int:
        """Write `records` unless the store holds a shipment's record for a later instant
        (the stream's, written while the batch ran); returns how many were written."""
        if not records:
            return 0
        if self.kind == "sqlite":
            from features.online_direct import with_tx

            before = self.handle.total_changes
            with_tx(self.handle, lambda: sqlite_write(self.handle, records, newer_only=True))
            return self.handle.total_changes - before
        held = self.read([r.shipment_id for r in records])
        keep = [r for r, h in zip(records, held) if h is None or not h.at > r.at]
        pipe = self.handle.pipeline(transaction=True)
        redis_write(pipe, keep, self.project)
        pipe.execute()
        return len(keep)

    def close(self) -> None:
        if self.kind == "sqlite":
            self.handle.close()


def instants(records: Sequence[Reasons | None]) -> np.ndarray:
    """The records' instants (epoch seconds, NaN where none)."""
    return np.array([np.nan if r is None else r.at for r in records], dtype=float)
