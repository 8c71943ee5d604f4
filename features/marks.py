"""How far the feature store has been rolled: one instant for the offline store, one for the
online store (`features.roll`).

- The offline mark (`<offline>/.rolled`, JSON): every statistics window that closed at or before
  it, and every weather observation ingested by then, has its rows in the offline tables.
- The online mark (SQLite: table `shipdelay_roll` in the online database; Redis: the key
  `shipdelay:roll:<project>`): the online store holds, per entity, its newest statistics and
  weather row stamped at or before it.

A feature build sets both to its as-of time; a roll moves them forward. Online readers that
keep rows in memory (`features.online_cache`) forget them when the online mark moves, so a
roll is seen by the next request.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pandas as pd

from features.store import PROJECT

_OFFLINE = ".rolled"
SQLITE_TABLE = "shipdelay_roll"
REDIS_KEY = f"shipdelay:roll:{PROJECT}".encode()


def _us(t) -> int:
    ts = pd.Timestamp(t)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.value // 1000)


def _ts(us: int | None) -> pd.Timestamp | None:
    return None if us is None else pd.Timestamp(int(us), unit="us", tz="UTC")


# ------------------------------------------------------------------ offline
def offline_mark(offline: Path) -> pd.Timestamp | None:
    path = offline / _OFFLINE
    if not path.exists():
        return None
    return _ts(json.loads(path.read_text())["until_us"])


def set_offline_mark(offline: Path, t) -> None:
    offline.mkdir(parents=True, exist_ok=True)
    tmp = offline / f"{_OFFLINE}.tmp"
    tmp.write_text(json.dumps({"until_us": _us(t), "until": _ts(_us(t)).isoformat()}))
    tmp.replace(offline / _OFFLINE)


# ------------------------------------------------------------------ online
def _sqlite_create(conn: sqlite3.Connection) -> None:
    conn.execute(f"CREATE TABLE IF NOT EXISTS {SQLITE_TABLE} "
                 "(name TEXT PRIMARY KEY, until_us INTEGER)")


def online_mark(direct) -> pd.Timestamp | None:
    """The online mark of a `features.online_direct.DirectOnline` store (None: never set)."""
    return _ts(read_online_mark_us(direct.kind, getattr(direct, "conn", None) or direct.client))


def read_online_mark_us(kind: str, handle) -> int | None:
    """The online mark in epoch microseconds, from a SQLite connection or a Redis client."""
    if kind == "sqlite":
        try:
            row = handle.execute(f"SELECT until_us FROM {SQLITE_TABLE} WHERE name = 'online'"
                                 ).fetchone()
        except sqlite3.OperationalError:  # no such table: a store never rolled
            return None
        return None if row is None else int(row[0])
    value = handle.get(REDIS_KEY)
    return None if value is None else int(value)


def set_online_mark(direct, t) -> None:
    us = _us(t)
    if direct.kind == "sqlite":
        _sqlite_create(direct.conn)
        direct.conn.execute(f"INSERT OR REPLACE INTO {SQLITE_TABLE} VALUES ('online', ?)", (us,))
    else:
        direct.client.set(REDIS_KEY, str(us).encode())
