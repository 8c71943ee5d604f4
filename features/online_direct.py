"""Feast's online store read and written directly, a whole batch of entities at a time.

Feast's `get_online_features` and `push` build and parse one protobuf per value in Python and
cost ~20 ms per call plus ~1.5 ms per row: far too slow for a stream of thousands of events a
second. This module reads and writes the very same records Feast does (SQLite: one row per
(entity key, feature) in the table `<project>_<view>`; Redis: one hash per entity key with a
murmur3 field per `view:feature` and a `_ts:<view>` timestamp), so Feast, the service and the
training path keep seeing one online store. A SQLite write costs one statement per entity, not
per feature: an entity already online has all its rows of a view rewritten by one UPDATE (the
columns Feast's upsert sets, to the same values); only a new one gets Feast's row-by-row upsert,
in key order (one query per 20,000 entities says which are online: a first build's UPDATEs that
found nothing were 22 s of a 1M-shipment load). Values are encoded as Feast's `ValueProto` bytes,
vectorized: doubles by byte layout, ints and strings through their distinct values only, lists a
message each (`_encode_lists`, the bytes of Feast's converter at twice its speed); they
are decoded by `features.online_decode`, the decoder the service's `OnlineReader` uses too.
Tests prove records written here read back identically through Feast and vice versa.
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Iterable

import numpy as np
import pandas as pd
from feast.infra.online_stores.helpers import _mmh3
from feast.protos.feast.types.Value_pb2 import DoubleList, StringList, Value
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp

from features import instant
from features.online_decode import columns, decode_cells
from features.request_time import REQUEST_TIME, request_features
from features.schema import ENTITY_KEYS, MODEL_FEATURES, ON_DEMAND, VIEW_ENTITY, VIEWS
from features.store import PROJECT, redis_client, repo_config
from shipdelay.settings import Settings

_DOUBLE_TAG = 0x29  # ValueProto field 5 (double_val), wire type 1
STAMP_US = "event_ts_us"  # the column `DirectOnline.read` gives each row's timestamp in
_STRING_TYPE = 2  # feast ValueType.STRING in serialized entity keys
_LIST_TYPES = {"float_list": ValueType.DOUBLE_LIST, "str_list": ValueType.STRING_LIST}
_LIST_MESSAGES = {"float_list": ("double_list_val", DoubleList),
                  "str_list": ("string_list_val", StringList)}


def entity_keys(join_key: str, values: Iterable[str]) -> list[bytes]:
    """Feast's serialized entity keys (version 3) of one string join key, as
    `feast.infra.key_encoding_utils.serialize_entity_key` makes them."""
    jk = join_key.encode()
    head = struct.pack("<III", 1, _STRING_TYPE, len(jk)) + jk + struct.pack("<I", _STRING_TYPE)
    out = []
    for v in values:
        b = v.encode()
        out.append(head + struct.pack("<I", len(b)) + b)
    return out


# ------------------------------------------------------------------------------ values

def encode(values: pd.Series, kind: str) -> list[bytes]:
    """Serialized ValueProto per value, as Feast writes a column of `kind` ("int", "float",
    "str", "float_list", "str_list"); nulls become the empty Value (b"")."""
    if kind in _LIST_TYPES:  # the plan's lists (shipment profile only)
        return _encode_lists(values.to_numpy(dtype=object), kind)
    if kind == "float":
        arr = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        buf = np.empty((len(arr), 9), np.uint8)
        buf[:, 0] = _DOUBLE_TAG
        buf[:, 1:] = np.ascontiguousarray(arr).view(np.uint8).reshape(-1, 8)
        out = np.array([bytes(r) for r in buf.view("V9").ravel()], dtype=object) if len(arr) \
            else np.array([], dtype=object)
        out[np.isnan(arr)] = b""
        return out.tolist()
    codes, uniques = pd.factorize(pd.Series(values), use_na_sentinel=True)
    if kind == "int":
        enc = [Value(int64_val=int(u)).SerializeToString() for u in uniques]
    elif kind == "str":
        enc = [Value(string_val=str(u)).SerializeToString() for u in uniques]
    else:
        raise ValueError(f"cannot write values of kind {kind!r}")
    return np.array([*enc, b""], dtype=object)[codes].tolist()


def _encode_lists(values: np.ndarray, kind: str) -> list[bytes]:
    """Serialized ValueProtos of list values, the bytes Feast's converter
    (`python_values_to_proto_values`) makes, a message each without its per-item checks (a
    million shipments' plans spent 15 s there): a missing value (None, NaN) is the empty Value,
    an empty list a set but empty list (tests compare both ways)."""
    field, message = _LIST_MESSAGES[kind]
    out = []
    for v in values:
        if v is None or not hasattr(v, "__len__"):  # None, NaN, pd.NA: missing
            out.append(b"")
        else:
            out.append(Value(**{field: message(val=v)}).SerializeToString())
    return out


def typed(values: np.ndarray, kind: str) -> pd.Series:
    """A decoded column (`features.online_decode.columns`) as the view's pandas type; list kinds
    are left to Feast's converter by the decoder and kept as Python lists (None when missing)."""
    if kind.endswith("_list"):
        is_list = np.fromiter((isinstance(v, list) for v in values), bool, len(values))
        return pd.Series(np.where(is_list, values, None), dtype=object)
    if kind == "str":
        return pd.Series(values, dtype="string")
    numbers = pd.to_numeric(pd.Series(values), errors="coerce")
    return numbers.astype("Int64") if kind == "int" else numbers.astype("float64")


def decode(raw: list, kind: str) -> pd.Series:
    """Typed values from serialized ValueProtos (None or b"" = null)."""
    blobs = [r or b"" for r in raw]
    text = np.full(len(blobs), kind == "str")
    num, txt, exceptions = decode_cells(blobs, np.arange(len(blobs)), text)
    [column] = columns(num, txt, exceptions, 0, len(blobs), ["str" if kind == "str" else "num"])
    return typed(column, kind)


def _decode_table(pos: np.ndarray, col: np.ndarray, values: list, n: int,
                  names: list[str], kinds: dict[str, str]) -> dict[str, pd.Series]:
    """Columns from (row position, column index, raw value) triples, all decoded at once."""
    text = np.tile([kinds[c] == "str" for c in names], n)
    num, txt, exceptions = decode_cells([v or b"" for v in values],
                                        pos * len(names) + col, text)
    cols = columns(num, txt, exceptions, 0, n, ["str" if kinds[c] == "str" else "num"
                                                 for c in names])
    return {c: typed(v, kinds[c]) for c, v in zip(names, cols)}


def _value_text(values: pd.Series, kind: str) -> list:
    """Feast's `value_text` column: str() of the value, None for nulls and lists."""
    if kind in _LIST_TYPES:
        return [None] * len(values)
    null = values.isna().to_numpy()
    typed = (pd.to_numeric(values, errors="coerce").astype("float64" if kind == "float"
                                                           else "Int64")
             if kind in ("float", "int") else values)
    text = typed.astype(str).to_numpy(dtype=object)
    text[null] = None
    return text.tolist()


def _epoch_s(times: pd.Series) -> np.ndarray:
    return pd.DatetimeIndex(pd.to_datetime(times, utc=True, cache=False)).as_unit("ns").asi8 // 10**9


# ------------------------------------------------------------------------------ stores

class DirectOnline:
    """Batch reads and writes of Feast online records; `sqlite` or `redis` per Settings."""

    kind: str

    def read(self, view: str, ids: list[str], columns: list[str] | None = None) -> pd.DataFrame:
        """One row per id (in order): the view's typed columns, `found` False where the online
        store has no record of the entity for this view, and the row's timestamp in epoch
        microseconds (`STAMP_US`, NaN when not found)."""
        columns = list(columns or VIEWS[view])
        pos, col, values, found, stamps = self._fetch(
            view, entity_keys(ENTITY_KEYS[VIEW_ENTITY[view]], ids), columns)
        out = pd.DataFrame(_decode_table(pos, col, values, len(ids), columns, VIEWS[view]))
        out.insert(0, ENTITY_KEYS[VIEW_ENTITY[view]], pd.array(ids, dtype="string"))
        out["found"] = found
        out[STAMP_US] = stamps
        return out

    def write(self, view: str, frame: pd.DataFrame) -> None:
        """Write `frame` (one row per entity, the view's columns and event_timestamp) as
        Feast's online write would, in one transaction."""
        raise NotImplementedError

    def view_mapping(self, view: str, frame: pd.DataFrame) -> tuple[list[bytes], dict[str, list]]:
        """Entity keys and encoded values of `frame` (one row per entity, with the view's
        columns and event_timestamp)."""
        keys = entity_keys(ENTITY_KEYS[VIEW_ENTITY[view]], frame[ENTITY_KEYS[VIEW_ENTITY[view]]]
                           .astype(str))
        return keys, {c: encode(frame[c], t) for c, t in VIEWS[view].items()}

    def _fetch(self, view, keys, columns
               ) -> tuple[np.ndarray, np.ndarray, list, np.ndarray, np.ndarray]:
        """(row position, column index, raw value) of every stored value, `found`, and each
        entity's row timestamp (epoch microseconds, NaN when not found)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class SqliteOnline(DirectOnline):
    kind = "sqlite"

    def __init__(self, path: str):
        self.path = path
        self.conn = sqlite3.connect(path, timeout=60, isolation_level=None,
                                    check_same_thread=False, cached_statements=256)
        self._updates: dict[str, str] = {}  # view -> its per-entity UPDATE

    def _fetch(self, view, keys, columns):
        where = {k: i for i, k in enumerate(keys)}
        rows: list = []
        table = f"{PROJECT}_{view}"
        names = ",".join(f"'{c}'" for c in columns)
        for lo in range(0, len(keys), 20_000):  # stay below SQLite's host-parameter limit
            chunk = keys[lo:lo + 20_000]
            rows += self.conn.execute(
                f'SELECT entity_key, feature_name, value, event_ts FROM "{table}" WHERE '
                f"entity_key IN ({','.join('?' * len(chunk))}) AND feature_name IN ({names})",
                chunk).fetchall()
        stamps = np.full(len(keys), np.nan)
        if not rows:
            return np.array([], int), np.array([], int), [], np.zeros(len(keys), bool), stamps
        ks, ns, vs, ts = zip(*rows)
        pos = np.fromiter(map(where.__getitem__, ks), np.int64, len(ks))
        col = pd.Index(columns).get_indexer(pd.Index(ns))
        found = np.zeros(len(keys), bool)
        found[pos] = True
        stamps[pos] = instant.from_sqlite(ts)  # one row's features share its timestamp
        return pos, col, list(vs), found, stamps

    def upsert_statements(self, view: str, frame: pd.DataFrame) -> tuple[str, list[tuple]]:
        """The statement and parameter rows that write `frame` as Feast's SQLite store does
        (one row per entity and feature; an entity's rows are adjacent, so the upserts of one
        entity land on the same index and table pages)."""
        keys, cells, ts = self._cells(view, frame)
        return _upsert_sql(view), _per_feature_rows(keys, list(VIEWS[view]), cells, ts)

    def _cells(self, view: str, frame: pd.DataFrame) -> tuple[list[bytes], list[tuple], list]:
        """Entity keys, one tuple per entity of (value, value_text) for each of the view's
        features in order (flattened), and the entities' timestamps (whole seconds, as Feast
        writes them)."""
        keys, values = self.view_mapping(view, frame)
        columns = []
        for c, kind in VIEWS[view].items():
            columns += (values[c], _value_text(frame[c], kind))
        ts = _epoch_s(frame["event_timestamp"]).tolist()
        return keys, list(zip(*columns)) if len(keys) else [], ts

    def _update_statement(self, view: str) -> str:
        """One UPDATE that rewrites all of an entity's feature rows of `view` (its values, value
        texts and the shared timestamp), exactly as the upsert of each row would."""
        sql = self._updates.get(view)
        if sql is None:
            names = list(VIEWS[view])
            m = len(names)
            value = " ".join(f"WHEN '{c}' THEN ?{2 * j + 1}" for j, c in enumerate(names))
            text = " ".join(f"WHEN '{c}' THEN ?{2 * j + 2}" for j, c in enumerate(names))
            listed = ",".join(f"'{c}'" for c in names)
            sql = self._updates[view] = (
                f'UPDATE "{PROJECT}_{view}" SET value = CASE feature_name {value} END, '
                f"value_text = CASE feature_name {text} END, event_ts = ?{2 * m + 1}, "
                f"created_ts = NULL WHERE entity_key = ?{2 * m + 2} AND feature_name IN "
                f"({listed})")
        return sql

    def write_in_tx(self, view: str, frame: pd.DataFrame) -> int:
        """Write `frame` (one row per entity) inside the caller's transaction, leaving the table
        exactly as Feast's upsert of every (entity, feature) row would: one UPDATE per entity
        whose rows are all there (the usual case: a shipment already online), the per-feature
        upsert for the others. Returns how many entities needed the upsert."""
        keys, cells, ts = self._cells(view, frame)
        if not keys:
            return 0
        m = len(VIEWS[view])
        update = self._update_statement(view)
        execute = self.conn.execute
        online = self._online_keys(view, keys)
        missing = [i for i, (k, c, t) in enumerate(zip(keys, cells, ts))
                   if k not in online or execute(update, (*c, t, k)).rowcount != m]
        if missing:
            missing.sort(key=keys.__getitem__)  # in index order: appended, not scattered
            self.conn.executemany(_upsert_sql(view), _per_feature_rows(
                [keys[i] for i in missing], list(VIEWS[view]), [cells[i] for i in missing],
                [ts[i] for i in missing]))
        return len(missing)

    def _online_keys(self, view: str, keys: list[bytes]) -> set[bytes]:
        """Which of `keys` have any row of `view` online: one indexed query per 20,000 keys,
        so that an entity new to the store costs no UPDATE that finds nothing (a first build
        loads hundreds of thousands)."""
        table, found = f"{PROJECT}_{view}", set()
        for lo in range(0, len(keys), 20_000):  # below SQLite's host-parameter limit
            chunk = keys[lo:lo + 20_000]
            found.update(k for (k,) in self.conn.execute(
                f'SELECT DISTINCT entity_key FROM "{table}" WHERE entity_key IN '
                f"({','.join('?' * len(chunk))})", chunk))
        return found

    def write(self, view: str, frame: pd.DataFrame) -> None:
        with_tx(self.conn, lambda: self.write_in_tx(view, frame))

    def close(self) -> None:
        self.conn.close()


def _upsert_sql(view: str) -> str:
    """Feast's SQLite upsert of one (entity, feature) row."""
    return (f'INSERT INTO "{PROJECT}_{view}" (entity_key, feature_name, value, value_text, '
            "event_ts, created_ts) VALUES (?, ?, ?, ?, ?, NULL) ON CONFLICT(entity_key, "
            "feature_name) DO UPDATE SET value = excluded.value, value_text = "
            "excluded.value_text, event_ts = excluded.event_ts, created_ts = NULL")


def _per_feature_rows(keys: list[bytes], names: list[str], cells: list[tuple], ts: list
                      ) -> list[tuple]:
    """Feast's (entity_key, feature_name, value, value_text, event_ts) rows, entity by
    entity: `cells` holds each entity's (value, value_text) pairs flattened in `names` order."""
    return [(k, name, c[2 * j], c[2 * j + 1], t) for k, c, t in zip(keys, cells, ts)
            for j, name in enumerate(names)]


def with_tx(conn: sqlite3.Connection, body) -> None:
    """Run `body` in one immediate transaction (all or nothing)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        body()
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class RedisOnline(DirectOnline):
    kind = "redis"

    def __init__(self, client):
        self.client = client

    @staticmethod
    def redis_key(entity_key: bytes) -> bytes:
        return entity_key + PROJECT.encode()

    def _fetch(self, view, keys, columns):
        fields = [_mmh3(f"{view}:{c}") for c in columns] + [f"_ts:{view}".encode()]
        pipe = self.client.pipeline(transaction=False)
        for k in keys:
            pipe.hmget(self.redis_key(k), fields)
        got = pipe.execute()
        k, m = len(keys), len(columns)
        found = np.array([g[-1] is not None for g in got], bool)
        values = [v for g in got for v in g[:m]]
        stamps = instant.from_proto([g[-1] for g in got])
        return np.repeat(np.arange(k), m), np.tile(np.arange(m), k), values, found, stamps

    def hash_mappings(self, view: str, frame: pd.DataFrame) -> list[tuple[bytes, dict]]:
        """(redis key, field -> bytes) per row, exactly what Feast's Redis store writes."""
        keys, values = self.view_mapping(view, frame)
        names = [_mmh3(f"{view}:{c}") for c in VIEWS[view]]
        cols = [values[c] for c in VIEWS[view]]
        stamps = pd.DatetimeIndex(pd.to_datetime(frame["event_timestamp"], utc=True, cache=False)).as_unit("ns")
        ts_field = f"_ts:{view}".encode()
        out = []
        for i, (k, ns) in enumerate(zip(keys, stamps.asi8.tolist())):
            ts = Timestamp(seconds=ns // 10**9, nanos=(ns % 10**9) // 1000 * 1000)
            mapping = {ts_field: ts.SerializeToString()}
            mapping.update(zip(names, (c[i] for c in cols)))
            out.append((self.redis_key(k), mapping))
        return out

    def write(self, view: str, frame: pd.DataFrame) -> None:
        pipe = self.client.pipeline(transaction=True)
        for key, mapping in self.hash_mappings(view, frame):
            pipe.hset(key, mapping=mapping)
        pipe.execute()

    def close(self) -> None:
        self.client.close()


def open_direct(settings: Settings) -> DirectOnline:
    """The direct reader/writer of the online store `settings` configure for Feast."""
    config = repo_config(settings)
    if settings.online_store == "redis":
        return RedisOnline(redis_client(config.online_store))
    return SqliteOnline(config.online_store.path)


# ------------------------------------------------------------------------------ vectors

_STAT_VIEWS = [v for v in MODEL_FEATURES if v in VIEWS and VIEW_ENTITY[v] != "shipment"]


def model_vectors(store: DirectOnline, profile: pd.DataFrame, progress: pd.DataFrame,
                  request_time: pd.Timestamp | np.ndarray, stats=None) -> pd.DataFrame:
    """The FeatureService's vectors for shipments whose profile and progress rows are at hand
    (as `online_vectors` reads them through Feast): statistics views by the shipment's lane,
    carrier, customer and current hub (origin before the first scan), on-demand features from
    `request_features`. `profile` and `progress` are aligned row by row; `request_time` is one
    instant or one per row (epoch seconds).

    Every value is the one at its row's instant (`features.instant`): rows carrying their
    timestamp (`STAMP_US`, as `DirectOnline.read` gives them) count only when stamped at or
    before it and no older than their view's TTL. Statistics and weather come from `stats`
    (`features.stats_at.StatsAt`, the offline rows at each instant: what the stream scorer,
    whose instants differ per shipment, uses) or else from the online store's rows."""
    n = len(profile)
    now = np.broadcast_to(np.asarray(pd.Timestamp(request_time).timestamp()
                                     if not isinstance(request_time, np.ndarray)
                                     else request_time, dtype=float), (n,))
    now_us = np.round(now * 1e6)
    p_present, p_fresh = _gates(profile, "shipment_profile", now_us)
    g_present, g_fresh = _gates(progress, "shipment_progress", now_us)
    current = progress["current_hub"].astype(object).to_numpy()
    origin = profile["origin_hub"].astype(object).to_numpy()
    hub = np.where(g_present & pd.notna(current), current, np.where(p_present, origin, None))
    keys = {e: np.where(p_present, profile[f"{e}_id"].astype(object).to_numpy(), None)
            for e in ("lane", "carrier", "customer")} | {"hub": hub}
    out = {"shipment_id": profile["shipment_id"].to_numpy()}
    out |= {c: instant.blank(profile[c].to_numpy(), p_fresh)
            for c in MODEL_FEATURES["shipment_profile"]}
    out |= {c: instant.blank(progress[c].to_numpy(), g_fresh)
            for c in MODEL_FEATURES["shipment_progress"]}
    for view in _STAT_VIEWS:
        entity = pd.Series(keys[VIEW_ENTITY[view]]).astype(object)
        if stats is not None:
            out |= stats.lookup(view, entity.to_numpy(), now_us, MODEL_FEATURES[view])
            continue
        codes, uniques = pd.factorize(entity, use_na_sentinel=True)
        got = store.read(view, [str(u) for u in uniques], MODEL_FEATURES[view])
        got = pd.concat([got, got.iloc[:0].reindex([len(got)])])  # row for a missing key
        rows = got.iloc[np.where(codes >= 0, codes, len(got) - 1)]
        fresh = instant.fresh(view, rows[STAMP_US].to_numpy(float), now_us)
        out |= {c: instant.blank(rows[c].to_numpy(), fresh) for c in MODEL_FEATURES[view]}
    on_demand = request_features(
        *(instant.blank(profile[c].to_numpy(float), p_fresh)
          for c in ("booked_at_s", "promised_at_s", "planned_arrival_s")),
        *(instant.blank(pd.to_numeric(progress[c]).to_numpy(float), g_fresh)
          for c in ("last_event_s", "next_planned_s")), now)
    out |= {c: on_demand[c] for c in ON_DEMAND}
    out[REQUEST_TIME] = now
    return pd.DataFrame(out)


def _gates(frame: pd.DataFrame, view: str, now_us: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which rows exist at their instant, and which count (`features.instant`); rows without a
    timestamp (a state just computed from events) are taken as of their instant."""
    if STAMP_US not in frame:
        every = np.ones(len(frame), bool)
        return every, every
    stamps = frame[STAMP_US].to_numpy(float)
    return instant.present(stamps, now_us), instant.fresh(view, stamps, now_us)
