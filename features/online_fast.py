"""Online feature vectors read straight from the tables Feast's online store writes.

`OnlineReader.vectors(ids, request_time)` returns what `features.online.online_vectors` returns
(the same rows, columns and values; numbers as float64, missing as NaN/None) without
`FeatureStore.get_online_features`, which costs ~20 ms per call whatever the number of ids,
and ~1 ms more per id, mostly in decoding protobuf values one at a time into Python objects.

The contract stays the FeatureService (docs/design.md, principle 2): the reader reads exactly the features
the registry's FeatureService lists, from the views and entities the registry names, in two
steps like `online_vectors` (the shipment's own views give its lane, carrier, customer and hub
keys; then the views keyed by those). The request-time features are computed with
`features.request_time.request_features`, the function the on-demand view itself calls.

Storage layouts are Feast's own (feast 0.67, entity key serialization version 3):
- SQLite: one table `<project>_<view>` with a row (entity_key, feature_name, value) per feature;
- Redis: one hash per entity key (`serialize_entity_key(...) + project`) holding every view's
  features under `mmh3("<view>:<feature>")`.
Values are serialized `feast.types.Value` messages. `features.online_decode` decodes the scalar
kinds in bulk with numpy and hands anything else to Feast's own converter, so no value is
guessed. Anything the reader cannot do exactly (another key serialization, a projection with
aliases, an unknown entity) raises `DirectReadUnsupported` when it is built, never at read time.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass

import numpy as np
import pandas as pd
from feast import FeatureStore

from features import instant
from features.instant import STAMP
from features.marks import REDIS_KEY, read_online_mark_us
from features.online import (
    FIRST_READ,
    KEY_SOURCES,
    PASS_THROUGH,
    join_key_values,
    pass_through,
    vector_columns,
)
from features.online_cache import CachedTables
from features.online_decode import DirectReadUnsupported, columns, decode_cells, kind_of
from features.online_direct import entity_keys
from features.redis_wire import exchange
from features.request_time import REQUEST_INPUTS, REQUEST_TIME, request_features
from features.schema import FEATURE_SERVICE, ON_DEMAND, STREAMED_VIEWS

SHIPMENT_KEY = "shipment_id"


@dataclass(frozen=True)
class ViewRead:
    """One feature view to read: its entity join key and the features wanted from it."""

    view: str
    table: str  # SQLite table name / Redis field prefix (versioned name when enabled)
    join_key: str
    features: tuple[str, ...]
    kinds: tuple[str, ...]  # "num" or "str" per feature


def _keys(join_key: str, values: list[str], suffix: bytes = b"") -> list[bytes]:
    """Feast's entity key bytes (version 3) of one string join key, plus `suffix` (Redis)."""
    return [k + suffix for k in entity_keys(join_key, values)] if suffix else \
        entity_keys(join_key, values)


def _check_key_encoding(join_key: str) -> None:
    """The fast key builder must agree with Feast's serializer, or nothing would be found."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    probe = "SH-é-0001"
    feast_key = serialize_entity_key(
        EntityKey(join_keys=[join_key], entity_values=[Value(string_val=probe)]), 3)
    if _keys(join_key, [probe]) != [feast_key]:
        raise DirectReadUnsupported(f"entity key encoding of {join_key} differs from Feast's")


def plan(store: FeatureStore, service_name: str = FEATURE_SERVICE) -> tuple[list[ViewRead],
                                                                            dict]:
    """What to read for the FeatureService: the views with their features (plus the keys and
    the on-demand inputs `online_vectors` uses), and the on-demand view's inputs."""
    from feast.infra.online_stores.helpers import compute_table_id, compute_versioned_name

    config = store.config
    if config.entity_key_serialization_version != 3:
        raise DirectReadUnsupported("entity key serialization version "
                                    f"{config.entity_key_serialization_version} (3 is read)")
    versioning = config.registry.enable_online_feature_view_versioning
    service = store.get_feature_service(service_name)
    odfvs = {v.name: v for v in store.list_on_demand_feature_views()}
    wanted: dict[str, list[str]] = {}
    on_demand = None
    for proj in service.feature_view_projections:
        if proj.name_alias or proj.join_key_map:
            raise DirectReadUnsupported(f"projection {proj.name} renames views or keys")
        names = [f.name for f in proj.features]
        if proj.name in odfvs:
            on_demand = _on_demand_inputs(odfvs[proj.name], names)
            for view, feats in on_demand["inputs"].items():
                wanted.setdefault(view, [])
                wanted[view] += [f for f in feats if f not in wanted[view]]
            continue
        wanted.setdefault(proj.name, [])
        wanted[proj.name] += [f for f in names if f not in wanted[proj.name]]
    for view, feats in FIRST_READ.items():  # the keys and flags online_vectors reads first
        wanted.setdefault(view, [])
        wanted[view] += [f for f in feats if f not in wanted[view]]
    reads = []
    for view, feats in wanted.items():
        fv = store.get_feature_view(view)
        keys = [c.name for c in fv.entity_columns]
        if len(keys) != 1 or (keys[0] != SHIPMENT_KEY and keys[0] not in KEY_SOURCES):
            raise DirectReadUnsupported(f"view {view} is keyed by {keys}")
        dtypes = {f.name: f.dtype for f in fv.features}
        missing = [f for f in feats if f not in dtypes]
        if missing:
            raise DirectReadUnsupported(f"view {view} has no feature(s) {missing}")
        _check_key_encoding(keys[0])
        table = (compute_table_id(config.project, fv, versioning)
                 if config.online_store.type == "sqlite" else compute_versioned_name(fv, versioning))
        # each row's timestamp comes last (STAMP): a value counts only at the instants the
        # offline join would give it (`features.instant`)
        reads.append(ViewRead(view, table, keys[0], (*feats, STAMP),
                              (*(kind_of(dtypes[f]) for f in feats), "num")))
    return reads, on_demand or {}


def _on_demand_inputs(odfv, names: list[str]) -> dict:
    """Inputs of the on-demand view, checked against `request_features`' signature."""
    if sorted(names) != sorted(ON_DEMAND):
        raise DirectReadUnsupported(f"on-demand view {odfv.name} gives {names}, not {ON_DEMAND}")
    inputs = {proj.name: [f.name for f in proj.features]
              for proj in odfv.source_feature_view_projections.values()}
    request = [f.name for src in odfv.source_request_sources.values() for f in src.schema]
    flat = [f for feats in inputs.values() for f in feats]
    expected = list(REQUEST_INPUTS)
    if sorted(flat) != sorted(expected) or request != [REQUEST_TIME]:
        raise DirectReadUnsupported(f"on-demand view {odfv.name} reads {flat} and {request}")
    return {"name": odfv.name, "features": names, "inputs": inputs}


class OnlineReader:
    """`online_vectors` without `get_online_features`: see the module docstring."""

    def __init__(self, store: FeatureStore, service_name: str = FEATURE_SERVICE,
                 cache_seconds: float = 0.0):
        """`cache_seconds` > 0 keeps the rows of the views only a feature build changes (all
        but the streamed ones) in memory that long (`features.online_cache`)."""
        self.reads, self.on_demand = plan(store, service_name)
        kind = store.config.online_store.type
        if kind == "sqlite":
            tables = _SqliteTables(store)
        elif kind == "redis":
            tables = _RedisHashes(store)
        else:
            raise DirectReadUnsupported(f"online store type {kind}")
        built = {r.view for r in self.reads} - set(STREAMED_VIEWS)
        shared = {r.view for r in self.reads if r.join_key != SHIPMENT_KEY}
        self.tables = CachedTables(tables, cache_seconds, built, absent_too=shared)
        tables.track_mark = bool(self.tables.views)  # read the roll mark with each shipment read
        self.kind = kind
        self.first = [r for r in self.reads if r.join_key == SHIPMENT_KEY]
        self.second = [r for r in self.reads if r.join_key != SHIPMENT_KEY]

    def ping(self) -> None:
        """Raise unless the online store answers a read (of an id it does not hold)."""
        self.vectors(["__readyz__"], pd.Timestamp.now(tz="UTC"))

    def vectors(self, ids: list[str], request_time: pd.Timestamp) -> pd.DataFrame:
        """The model's features for each shipment, as `online_vectors` returns them."""
        return pd.DataFrame(self.columns(ids, request_time))

    def columns(self, ids: list[str], request_time: pd.Timestamp) -> dict[str, np.ndarray]:
        """`vectors` as a dict of column -> array, without building a frame (the service's
        path: for a few ids the frame costs more than the read).

        Values are those at `request_time` (`features.instant`), as the offline join gives
        them: a row stamped after it is not there yet, one older than its view's TTL counts
        for nothing (the entity keys still come from it, as in the join)."""
        ids = [str(i) for i in ids]
        unique = list(dict.fromkeys(ids))
        n = len(unique)
        now_us = instant.micros(request_time)
        cols: dict[str, np.ndarray] = {}
        key_cols: dict[str, np.ndarray] = {}
        first = self.tables.read([(r, unique) for r in self.first])
        if self.tables.views:  # rows kept in memory: forgotten once a roll moved the store on
            self.tables.renew(self.tables.tables.last_mark)
        for read, arrays in zip(self.first, first):
            there = instant.present(arrays[-1], now_us)
            fresh = instant.fresh(read.view, arrays[-1], now_us)
            every = fresh.all()  # the usual case: nothing to blank
            for f, values in zip(read.features[:-1], arrays):
                if f not in cols:
                    key_cols[f] = values if every else instant.blank(values, there)
                    cols[f] = values if every else instant.blank(values, fresh)
        known = np.not_equal(cols["lane_id"], None)
        keys = join_key_values(key_cols)
        wanted, places = [], []
        for read in self.second:
            values = keys[read.join_key]
            present = known & pd.notna(values)
            codes, distinct = _factorize(values[present])
            wanted.append((read, [str(v) for v in distinct]))
            places.append((present, codes))
        for (read, _), (present, codes), arrays in zip(wanted, places, self.tables.read(wanted)):
            fresh = instant.fresh(read.view, arrays[-1], now_us)
            if not fresh.all():  # a stale row is missing: its shipments get nothing from it
                counted = fresh[codes]
                present, codes = present.copy(), codes[counted]
                present[present] = counted
            whole = bool(present.all())  # every shipment has a row here: a take each
            for f, values in zip(read.features[:-1], arrays):
                if f not in cols:
                    if whole:
                        cols[f] = values[codes]
                        continue
                    out = np.full(n, None if values.dtype == object else np.nan, values.dtype)
                    out[present] = values[codes]
                    cols[f] = out
        if self.on_demand:
            cols.update(request_features(*(cols[c] for c in REQUEST_INPUTS),
                                         np.full(n, request_time.timestamp())))
        delivered = cols["delivered"]
        delivered = (delivered == 1) if delivered.dtype != object else np.array(
            [v == 1 for v in delivered], bool)
        out = {"shipment_id": np.asarray(unique, dtype=object), "known": known,
               "delivered": delivered, **pass_through(key_cols, known)}
        unknown = ~known
        any_unknown = bool(unknown.any())
        for f in vector_columns()[3 + len(PASS_THROUGH):]:
            values = cols.get(f)
            if values is None:  # not in the FeatureService: empty, as online_vectors leaves it
                values = np.full(n, np.nan)
            elif any_unknown:  # online_vectors reads nothing more for unknown shipments
                values = values.copy()
                values[unknown] = None if values.dtype == object else np.nan
            out[f] = values
        if n != len(ids):  # repeated ids: one row per id asked, in order
            at = pd.Index(unique).get_indexer(ids)
            out = {k: v[at] for k, v in out.items()}
        return out


def _factorize(values: np.ndarray) -> tuple[np.ndarray, list]:
    """`pd.factorize` of non-missing keys: codes and the distinct keys in order of appearance;
    by dictionary for a request's few keys (pandas' call costs ~25 us whatever the size)."""
    if len(values) > 512:
        codes, distinct = pd.factorize(values)
        return codes, list(distinct)
    index: dict = {}
    codes = [index.setdefault(v, len(index)) for v in values.tolist()]
    return np.array(codes, dtype=np.int64), list(index)


class _SqliteTables:
    """Feast's SQLite online tables, read-only: one statement per step for all its views.

    SQLite itself places each value: the statement returns (cell, value) pairs, the cell being
    the value's position in the flat grid of all views' (entity x feature) blocks."""

    def __init__(self, store: FeatureStore):
        import sqlite3

        from feast.infra.online_stores.sqlite import SqliteOnlineStore

        path = SqliteOnlineStore._get_db_path(store.config)
        self.con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False,
                                   timeout=5.0)
        self.lock = threading.Lock()

    track_mark = False  # read the online roll mark (`features.marks`) with the shipments' rows
    last_mark: int | None = None

    def read(self, wanted: list[tuple[ViewRead, list[str]]]) -> list[list[np.ndarray]]:
        """One array per feature of each read; a `STAMP` feature gets the rows' timestamps
        (Feast's `event_ts`, taken from the row of the read's first feature)."""
        parts, params, starts, text = [], [], [], []
        offset = 0
        for read, values in wanted:
            starts.append(offset)
            width = len(read.features)
            stamped = read.features[-1] == STAMP
            real = read.features[:-1] if stamped else read.features
            if values:
                cases = " ".join(f"WHEN ? THEN {j}" for j in range(len(real)))
                rows = ",".join(f"({i},?)" for i in range(len(values)))
                keys = _keys(read.join_key, values)
                parts.append(
                    f"SELECT {offset} + k.column1 * {width} + CASE t.feature_name {cases} "
                    f'ELSE NULL END AS cell, t.value FROM (VALUES {rows}) AS k JOIN "{read.table}"'
                    " AS t ON t.entity_key = k.column2")
                params += [*real, *keys]
                if stamped:  # the timestamp cell, negated: `event_ts` of the first feature's row
                    parts.append(
                        f"SELECT -1 - ({offset} + k.column1 * {width} + {width - 1}), t.event_ts "
                        f'FROM (VALUES {rows}) AS k JOIN "{read.table}" AS t '
                        "ON t.entity_key = k.column2 AND t.feature_name = ?")
                    params += [*keys, real[0]]
                text.append(np.tile([k == "str" for k in read.kinds], len(values)))
            offset += width * len(values)
        cells, blobs, stamp_at, stamps = np.zeros(0, np.int64), (), np.zeros(0, np.int64), []
        if parts:
            sql = f"SELECT cell, value FROM ({' UNION ALL '.join(parts)}) WHERE cell IS NOT NULL"
            with self.lock:
                if self.track_mark and any(r.join_key == SHIPMENT_KEY for r, _ in wanted):
                    self.last_mark = read_online_mark_us("sqlite", self.con)
                rows = self.con.execute(sql, params).fetchall()
            if rows:
                cells, blobs = zip(*rows)
                cells = np.fromiter(cells, np.int64, len(cells))
                is_stamp = cells < 0
                if is_stamp.any():
                    blobs = np.array(blobs, dtype=object)
                    stamp_at, stamps = -1 - cells[is_stamp], blobs[is_stamp].tolist()
                    cells, blobs = cells[~is_stamp], blobs[~is_stamp].tolist()
        text = np.concatenate(text) if text else np.zeros(0, bool)
        num, txt, exceptions = decode_cells(blobs, cells, text)
        num[stamp_at] = instant.from_sqlite(stamps)
        return [columns(num, txt, exceptions, start, len(values), read.kinds)
                for (read, values), start in zip(wanted, starts)]


class _RedisHashes:
    """Feast's Redis hashes: one HMGET per entity, every view of a step sent in one write.

    The commands are written in Redis's wire protocol here, the fields' part once per view
    (it is the same for every entity), and sent on one pooled connection as a pipeline sends
    them: packing 100 commands of ~26 arguments each through the client cost more interpreter
    time than the rest of the read. Replies are read with the client's own parser."""

    def __init__(self, store: FeatureStore):
        from feast.infra.online_stores.helpers import _mmh3

        from features.store import redis_client

        self.client = redis_client(store.config.online_store)
        self.project = store.config.project.encode()
        self.field = _mmh3
        self._fields: dict[tuple[str, tuple[str, ...]], tuple[bytes, bytes]] = {}

    def _command_parts(self, read: ViewRead) -> tuple[bytes, bytes]:
        """The protocol bytes before the key and after it, for HMGET of `read`'s fields."""
        parts = self._fields.get((read.table, read.features))
        if parts is None:
            fields = [f"_ts:{read.table}".encode() if f == STAMP else
                      self.field(f"{read.table}:{f}") for f in read.features]
            head = b"*%d\r\n$5\r\nHMGET\r\n" % (len(fields) + 2)
            tail = b"".join(b"$%d\r\n%s\r\n" % (len(f), f) for f in fields)
            parts = self._fields[(read.table, read.features)] = (head, tail)
        return parts

    def _send(self, payload: bytes, count: int) -> list:
        """Write `payload` (`count` commands) and read their replies (`features.redis_wire`)."""
        return exchange(self.client, payload, count)

    def read(self, wanted: list[tuple[ViewRead, list[str]]]) -> list[list[np.ndarray]]:
        starts, text, commands, offset = [], [], [], 0
        for read, values in wanted:
            starts.append(offset)
            head, tail = self._command_parts(read)
            commands += [b"%s$%d\r\n%s\r\n%s" % (head, len(key), key, tail)
                         for key in _keys(read.join_key, values, self.project)]
            text.append(np.tile([k == "str" for k in read.kinds], len(values)))
            offset += len(read.features) * len(values)
        if self.track_mark and commands and any(r.join_key == SHIPMENT_KEY for r, _ in wanted):
            commands.append(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(REDIS_KEY),
                                                                       REDIS_KEY))
            replies = self._send(b"".join(commands), len(commands))
            mark = replies.pop()
            self.last_mark = None if mark is None else int(mark)
        else:
            replies = self._send(b"".join(commands), len(commands)) if commands else []
        blobs = [b if b is not None else b"" for b in itertools.chain.from_iterable(replies)]
        text = np.concatenate(text) if text else np.zeros(0, bool)
        # the timestamps (`_ts:<view>`, protobuf Timestamps) are decoded apart from the values
        stamp_at = np.concatenate([
            start + np.arange(len(values)) * len(read.features) + len(read.features) - 1
            for (read, values), start in zip(wanted, starts) if read.features[-1] == STAMP
        ] or [np.zeros(0, np.int64)]).astype(np.int64)
        stamps = instant.from_proto([blobs[i] for i in stamp_at.tolist()])
        for i in stamp_at.tolist():
            blobs[i] = b""
        num, txt, exceptions = decode_cells(blobs, np.arange(len(blobs)), text)
        num[stamp_at] = stamps
        return [columns(num, txt, exceptions, start, len(values), read.kinds)
                for (read, values), start in zip(wanted, starts)]

    track_mark = False  # read the online roll mark (`features.marks`) with the shipments' rows
    last_mark: int | None = None
