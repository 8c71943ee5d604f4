"""The stream scorer's state, kept in the online store next to each shipment's features.

Per shipment the stream keeps the event ids it has folded in (so a re-delivered or re-sent event
never counts twice) and the last P(late) it published (so alerts survive restarts). The ids are
kept as one JSON list, so no id can be mistaken for two or two for one whatever characters it
holds; a store written before keeps them newline-joined in another field, read until the
shipment's next commit replaces it. `commit`
writes the new progress rows in Feast's layout, this state and a commit token in ONE
transaction (SQLite) or one MULTI/EXEC (Redis): either a micro-batch is in the online store
entirely, with its event ids, or not at all. The token lets the offline part staged for the
batch be published exactly when the online write happened (see `serving.stream_offline`); once
published, its token is deleted by the next commit. The progress rows cost one statement per
shipment on SQLite (`features.online_direct.SqliteOnline.write_in_tx`), one HSET on Redis.
The store also answers which hubs the lake knows (the stream dead-letters events at others,
as ingest rejects them).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from features.online_direct import DirectOnline, RedisOnline, SqliteOnline, entity_keys, with_tx
from features.store import PROJECT
from serving.reasons_store import redis_write, sqlite_write
from shipdelay.lake import Lake

STATE_COLUMNS = ["shipment_id", "applied", "p_late"]
PROFILE_TTL_S = 300.0  # a rebuilt profile (nightly `features build`) is seen within this
PROFILE_CACHE_MAX = 200_000
HUB_TTL_S = 60.0  # an unknown hub makes the lake's hubs be read again, at most this often
_IDS, _OLD_IDS, _P_LATE = b"_stream:applied_ids", b"_stream:applied", b"_stream:p_late"
STATE_FIELDS = (_IDS, _OLD_IDS, _P_LATE)  # the stream's fields in a shipment's Redis hash
_TOKEN_PREFIX = "shipdelay:stream:commit:"
TOKEN_TTL_S = 7 * 86_400


def encode_ids(ids: list[list[str]]) -> list[str]:
    """Each shipment's applied event ids as one JSON list."""
    return [json.dumps(one) for one in ids]


def decode_ids(texts: list[str | None], old: list[str | None]) -> list[list[str]]:
    """The JSON lists (`texts`, all read by one `json.loads`), or where a shipment has none
    yet, its ids as a store written before kept them (`old`: newline-joined)."""
    new = [i for i, t in enumerate(texts) if t]
    parsed = json.loads("[" + ",".join(texts[i] for i in new) + "]") if new else []
    out = [o.split("\n") if o else [] for o in old]
    for i, ids in zip(new, parsed):
        out[i] = ids
    return out


class StreamStore:
    def __init__(self, online: DirectOnline, profile_ttl_s: float = PROFILE_TTL_S,
                 lake_dir: Path | None = None):
        """`lake_dir`: the lake whose hubs events must name (None: hubs are not checked)."""
        self.online = online
        self.profile_ttl_s = profile_ttl_s
        # statistics and weather at any instant (`features.stats_at.StatsAt`); None: the
        # online store's rows at each instant
        self.stats = None
        self._profiles: pd.DataFrame | None = None  # by shipment_id, with the read time
        self._lake_dir = lake_dir
        self._hubs: pd.Index | None = None
        self._hubs_at = -np.inf
        self._forgotten: list[str] = []  # tokens whose offline parts are published
        self._old_fields: set[bytes] = set()  # Redis: entity keys read with the former ids
        if isinstance(online, SqliteOnline):
            online.conn.execute("CREATE TABLE IF NOT EXISTS shipdelay_stream_state "
                                "(entity_key BLOB PRIMARY KEY, applied TEXT, p_late REAL, "
                                "applied_ids TEXT)")
            columns = {row[1] for row in online.conn.execute(
                "PRAGMA table_info(shipdelay_stream_state)")}
            if "applied_ids" not in columns:  # a store from before the JSON lists
                online.conn.execute("ALTER TABLE shipdelay_stream_state ADD COLUMN applied_ids "
                                    "TEXT")
            online.conn.execute("CREATE TABLE IF NOT EXISTS shipdelay_stream_commits "
                                "(token TEXT PRIMARY KEY, at INTEGER)")

    # ------------------------------------------------------------------------ reads
    def profiles(self, ids: list[str]) -> pd.DataFrame:
        """Shipment profiles (plans) by shipment_id, `found` False for unknown shipments.
        A profile changes only when the feature store is rebuilt, so known ones are kept for
        `profile_ttl_s`; unknown ones are asked for again every time (a new booking)."""
        now, cache = time.monotonic(), self._profiles
        fresh = np.zeros(len(ids), bool)
        if cache is not None:
            at = cache.index.get_indexer(ids)
            fresh = (at >= 0) & (cache["_read_at"].to_numpy()[np.maximum(at, 0)]
                                 > now - self.profile_ttl_s)
        missing = [i for i, f in zip(ids, fresh) if not f]
        if missing:
            got = self.online.read("shipment_profile", missing).set_index("shipment_id")
            got["_read_at"] = now
            known = got[got["found"]]
            cache = known if cache is None else pd.concat(
                [cache.drop(known.index, errors="ignore"), known])
            if len(cache) > PROFILE_CACHE_MAX:
                cache = cache.sort_values("_read_at").iloc[-PROFILE_CACHE_MAX:]
            self._profiles = cache
            unknown = got[~got["found"]]
            out = pd.concat([cache, unknown]) if len(unknown) else cache
        else:
            out = cache
        return out.loc[ids].drop(columns="_read_at")

    def known_hubs(self, hubs: pd.Series) -> np.ndarray:
        """Which of `hubs` the lake's hubs table holds (all, when no lake was given). The ids
        are kept; an unknown one has them read again if they are older than `HUB_TTL_S`."""
        if self._lake_dir is None:
            return np.ones(len(hubs), bool)
        if self._hubs is None or (time.monotonic() - self._hubs_at > HUB_TTL_S
                                  and not hubs.isin(self._hubs).all()):
            lake = Lake(self._lake_dir)
            ids = lake.read("hubs", columns=["hub_id"])["hub_id"] if lake.exists("hubs") else []
            self._hubs, self._hubs_at = pd.Index(ids, dtype=object), time.monotonic()
        return hubs.isin(self._hubs).to_numpy(bool)

    def read_state(self, ids: list[str]) -> pd.DataFrame:
        """Applied event ids (a list per id, empty when none) and last P(late) (NaN) per id."""
        keys = entity_keys("shipment_id", ids)
        texts, old = [None] * len(ids), [None] * len(ids)
        p_late = np.full(len(ids), np.nan)
        if isinstance(self.online, SqliteOnline):
            where = {k: i for i, k in enumerate(keys)}
            for lo in range(0, len(keys), 20_000):
                chunk = keys[lo:lo + 20_000]
                for key, text, p, was in self.online.conn.execute(
                        "SELECT entity_key, applied_ids, p_late, applied FROM "
                        "shipdelay_stream_state WHERE "
                        f"entity_key IN ({','.join('?' * len(chunk))})", chunk):
                    i = where[key]
                    texts[i], old[i] = text, was
                    p_late[i] = np.nan if p is None else p
        else:
            pipe = self.online.client.pipeline(transaction=False)
            for k in keys:
                pipe.hmget(RedisOnline.redis_key(k), [_IDS, _P_LATE, _OLD_IDS])
            for i, (text, p, was) in enumerate(pipe.execute()):
                texts[i] = text.decode() if text else None
                old[i] = was.decode() if was else None
                if was:  # the former field: deleted by the shipment's next commit
                    self._old_fields.add(keys[i])
                p_late[i] = float(p) if p else np.nan
        applied = pd.Series(decode_ids(texts, old), dtype=object)
        return pd.DataFrame({"shipment_id": ids, "applied": applied, "p_late": p_late})

    # ------------------------------------------------------------------------ commit
    def commit(self, progress: pd.DataFrame, state: pd.DataFrame, token: str,
               reasons: list | None = None) -> None:
        """Progress rows (one per shipment), their stream state (`applied`: the lists of event
        ids), their reasons (`serving.reasons_store` records) and `token`, atomically."""
        if isinstance(self.online, SqliteOnline):
            self._commit_sqlite(progress, state, token, reasons or [])
        else:
            self._commit_redis(progress, state, token, reasons or [])

    def _commit_sqlite(self, progress, state, token, reasons=()) -> None:
        conn = self.online.conn
        done = self._forgotten
        keys = entity_keys("shipment_id", state["shipment_id"].astype(str))
        p = state["p_late"].astype(object).where(state["p_late"].notna(), None).tolist()
        state_rows = list(zip(keys, p, encode_ids(state["applied"].tolist())))

        def body():
            # one statement per shipment: its 28 progress rows in Feast's layout at once
            self.online.write_in_tx("shipment_progress", progress)
            conn.executemany("INSERT OR REPLACE INTO shipdelay_stream_state (entity_key, "
                             "applied, p_late, applied_ids) VALUES (?, NULL, ?, ?)", state_rows)
            sqlite_write(conn, reasons)
            conn.execute("INSERT OR REPLACE INTO shipdelay_stream_commits VALUES (?, ?)",
                         (token, int(time.time())))
            conn.executemany("DELETE FROM shipdelay_stream_commits WHERE token = ?",
                             [(t,) for t in done])

        with_tx(conn, body)
        self._forgotten = []

    def _commit_redis(self, progress, state, token, reasons=()) -> None:
        mappings = dict(self.online.hash_mappings("shipment_progress", progress))
        raw = entity_keys("shipment_id", state["shipment_id"].astype(str))
        keys = [RedisOnline.redis_key(k) for k in raw]
        old = {RedisOnline.redis_key(k) for k in self._old_fields.intersection(raw)}
        pipe = self.online.client.pipeline(transaction=True)
        for key, applied, p in zip(keys, encode_ids(state["applied"].tolist()),
                                   state["p_late"].tolist()):
            fields = mappings.pop(key, {})
            fields[_IDS] = applied
            if not np.isnan(p):
                fields[_P_LATE] = repr(float(p))
            pipe.hset(key, mapping=fields)
            if key in old:
                pipe.hdel(key, _OLD_IDS)
        for key, fields in mappings.items():  # progress without state (not expected)
            pipe.hset(key, mapping=fields)
        redis_write(pipe, reasons, PROJECT)
        pipe.set(_TOKEN_PREFIX + token, b"1", ex=TOKEN_TTL_S)
        if self._forgotten:
            pipe.delete(*(_TOKEN_PREFIX + t for t in self._forgotten))
        pipe.execute()
        self._forgotten = []
        self._old_fields.difference_update(raw)

    # ------------------------------------------------------------------------ tokens
    def committed(self, token: str) -> bool:
        if isinstance(self.online, SqliteOnline):
            return self.online.conn.execute("SELECT 1 FROM shipdelay_stream_commits WHERE "
                                            "token = ?", (token,)).fetchone() is not None
        return bool(self.online.client.exists(_TOKEN_PREFIX + token))

    def forget(self, token: str) -> None:
        """`token`'s offline parts are published: its record is no longer needed. It is
        deleted inside the next commit's transaction (no write of its own per micro-batch);
        a stopped process leaves its last one (Redis: until its TTL)."""
        self._forgotten.append(token)
