"""Whether the online store holds this project's feature rows, for the service's readiness.

A store that answers but was never materialized for this project (a new Redis database, a
wrong `redis_url` database number, a flushed store) would make the service answer "unknown
shipment" for every id while it says it is ready. `RowsProbe.check` raises `OnlineStoreEmpty`
then, and the store's own error when it does not answer. It is cheap enough for every probe:
SQLite reads one row of the shipments' table; Redis looks for one shipment hash of the project
(a bounded SCAN the first time) and afterwards only asks whether that hash still exists.
"""

from __future__ import annotations

import threading

from feast import FeatureStore

from features.online_direct import entity_keys
from features.store import redis_client

VIEW = "shipment_profile"  # written for every shipment a feature build knows
SCAN_COUNT = 1_000  # keys Redis looks at per SCAN call
SCAN_CALLS = 20  # at most 20,000 keys looked at per probe when nothing is remembered
_GLOB = {ord(c): "\\" + c for c in "*?[]\\"}


class OnlineStoreEmpty(RuntimeError):
    """The online store answers but holds no feature rows of this project."""


class RowsProbe:
    """`check()` raises unless the online store of `store` answers and holds this project's
    shipment rows (SQLite and Redis; other stores are only asked to answer by the caller)."""

    def __init__(self, store: FeatureStore, view: str = VIEW):
        from feast.infra.online_stores.helpers import compute_table_id

        config = store.config
        self.kind = config.online_store.type
        self.project = config.project
        fv = store.get_feature_view(view)
        self.view = view
        self.join_key = fv.entity_columns[0].name
        self._lock = threading.Lock()
        self._con = None
        self._client = None
        self._known_key: bytes | None = None
        self._cursor = 0
        if self.kind == "sqlite":
            from feast.infra.online_stores.sqlite import SqliteOnlineStore

            versioning = config.registry.enable_online_feature_view_versioning
            self.table = compute_table_id(config.project, fv, versioning)
            self.path = SqliteOnlineStore._get_db_path(config)
        elif self.kind == "redis":
            self._client = redis_client(config.online_store)

    def check(self) -> None:
        with self._lock:
            if self.kind == "sqlite":
                self._check_sqlite()
            elif self.kind == "redis":
                self._check_redis()

    def _empty(self) -> OnlineStoreEmpty:
        return OnlineStoreEmpty(f"the online store holds no shipment rows of project "
                                f"{self.project!r}: run `shipdelay features build` against it")

    def _check_sqlite(self) -> None:
        import sqlite3

        if self._con is None:
            self._con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=1.0,
                                        check_same_thread=False)
        try:
            row = self._con.execute(f'SELECT 1 FROM "{self.table}" LIMIT 1').fetchone()
        except sqlite3.OperationalError as err:
            if "no such table" in str(err):
                raise self._empty() from None
            raise
        if row is None:
            raise self._empty()

    def _check_redis(self) -> None:
        client = self._client
        if self._known_key is not None and client.exists(self._known_key):
            return
        self._known_key = None
        # a shipment's hash key: its serialized entity key (fixed head, then the id) + project
        head = entity_keys(self.join_key, [""])[0][:-4]  # without the id's length and bytes
        pattern = (head.decode("latin-1").translate(_GLOB) + "*"
                   + self.project.translate(_GLOB)).encode("latin-1")
        for _ in range(SCAN_CALLS):  # a large database is searched over several probes
            self._cursor, keys = client.scan(self._cursor, match=pattern, count=SCAN_COUNT)
            if keys:
                self._known_key = keys[0]
                return
            if self._cursor == 0:
                break
        raise self._empty()
