"""Online feature reads through Feast: latency p50/p99 for 1 and 100 shipments, SQLite and Redis.

One 50,000-shipment world is simulated into a scratch directory; `shipdelay features build`
then builds and materializes its features once per online store kind (each kind has its own
data directory, the lake is shared through a symlink). Redis is the local server at
127.0.0.1:6379, database 12, flushed before the build and after the benchmark; without a
reachable Redis the Redis rows are skipped with a note.

Timed in this process, each call alone with `time.perf_counter`:
- `read_progress(store, ids)`: one feature view (shipment_progress), the streaming updater's read;
- `online_vectors(store, ids, now)`: the two reads the service does (the shipment's own views for
  its keys, then the whole FeatureService delay_model_v1 with five entity keys);
each 200 times for 1 id and 50 times for 100 ids, after 5 untimed warm-up calls. Ids are drawn
at random (seeded) per call from shipments the online store is known to hold.

Same-run reference, the floor under Feast: the same shipment_progress rows read raw, with
pre-serialized entity keys -- on SQLite one `SELECT ... WHERE entity_key IN (...)` on the
online.db file, on Redis one HMGET of the view's fields per key (a pipeline for 100 keys), which
is what Feast sends (Feast stores a hash per entity, so a plain GET does not apply).
"""

from __future__ import annotations

import os
import shlex
import sqlite3
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from harness import VENV_BIN, check, measure_command, redis_problem, row, scratch_dir

FULL = {"shipments": 50_000, "days": 120, "seed": 7, "workers": 2}
QUICK = {**FULL, "shipments": 5_000, "days": 60}
REPEATS = {1: 200, 100: 50}
QUICK_REPEATS = {1: 40, 100: 10}
WARMUP = 5
POOL = 2_000  # candidate ids checked against the online store
REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 12
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"
VIEW = "shipment_progress"


def _redis_client():
    import redis

    return redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB, socket_timeout=5)


def _entity_keys(ids: list[str]) -> list[bytes]:
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    return [serialize_entity_key(EntityKey(join_keys=["shipment_id"],
                                           entity_values=[Value(string_val=i)]), 3)
            for i in ids]


def _known_ids(store, offline: Path, rng: np.random.Generator) -> list[str]:
    """Shipments the online store holds: a random pool of the offline profile, kept if known."""
    from features import offline as off
    from features.online import online_vectors

    ids = off.read_view(offline, "shipment_profile")["shipment_id"].astype(str).unique()
    pool = rng.choice(ids, size=min(POOL, len(ids)), replace=False).tolist()
    now = pd.Timestamp.now(tz="UTC")
    known = []
    for lo in range(0, len(pool), 500):
        chunk = pool[lo:lo + 500]
        vectors = online_vectors(store, chunk, now)
        known += vectors.loc[vectors["known"] & vectors["milestones_done"].notna(),
                             "shipment_id"].tolist()
    if len(known) < 100:
        raise RuntimeError(f"only {len(known)} of {len(pool)} sampled shipments are online")
    return known


def _latencies(call: Callable[[list[str]], object], known: list[str], n: int, repeats: int,
               rng: np.random.Generator) -> np.ndarray:
    def draw() -> list[str]:
        return rng.choice(known, size=n, replace=False).tolist()

    for _ in range(WARMUP):
        call(draw())
    out = np.empty(repeats)
    for k in range(repeats):
        ids = draw()
        t = time.perf_counter()
        call(ids)
        out[k] = time.perf_counter() - t
    return out * 1e3


def _raw_reader(kind: str, settings) -> tuple[Callable, str, Callable]:
    """A raw read of the shipment_progress rows of `ids`, its name, and the key cache filler
    (keys are serialized before timing: the floor is the read alone)."""
    from features.schema import SHIPMENT_PROGRESS
    from features.store import PROJECT, feast_dir

    cache: dict[str, bytes] = {}

    def keys(ids: list[str]) -> list[bytes]:
        missing = [i for i in ids if i not in cache]
        cache.update(zip(missing, _entity_keys(missing)))
        return [cache[i] for i in ids]

    if kind == "sqlite":
        path = feast_dir(settings) / "online.db"
        con = sqlite3.connect(path, check_same_thread=False)
        table = f"{PROJECT}_{VIEW}"

        def read(ids: list[str]):
            ks = keys(ids)
            rows = con.execute(f'SELECT entity_key, feature_name, value, event_ts FROM "{table}" '
                               f"WHERE entity_key IN ({','.join('?' * len(ks))})", ks).fetchall()
            if not rows:
                raise RuntimeError("raw SQLite read found nothing: the key encoding changed?")
            return rows

        name = f"raw sqlite3 SELECT from {table} in online.db, entity_key IN (n keys)"
    else:
        from feast.infra.online_stores.helpers import _mmh3

        client = _redis_client()
        fields = [_mmh3(f"{VIEW}:{c}") for c in SHIPMENT_PROGRESS] + [f"_ts:{VIEW}"]
        project = PROJECT.encode()

        def read(ids: list[str]):
            ks = keys(ids)
            with client.pipeline(transaction=False) as pipe:
                for k in ks:
                    pipe.hmget(k + project, fields)
                values = pipe.execute()
            if values[0][0] is None:
                raise RuntimeError("raw Redis read found nothing: the key encoding changed?")
            return values

        name = f"raw redis-py HMGET of the {VIEW} fields, one per key, in one pipeline"

    return read, name, keys


def _measure_store(kind: str, settings, repeats: dict[int, int], seed: int) -> dict:
    from features.online import online_vectors, read_progress
    from features.store import get_store, offline_dir

    store = get_store(settings)
    rng = np.random.default_rng(seed)
    known = _known_ids(store, offline_dir(settings), rng)
    now = pd.Timestamp.now(tz="UTC")
    raw, raw_name, keys = _raw_reader(kind, settings)
    keys(known)  # every key serialized up front, so the raw timing is the read alone
    ops = {"read_progress": lambda ids: read_progress(store, ids),
           "online_vectors": lambda ids: online_vectors(store, ids, now),
           "raw": raw}
    out = {"known_pool": len(known), "raw_name": raw_name, "lat": {}}
    for op, call in ops.items():
        for n, reps in repeats.items():
            out["lat"][(op, n)] = _latencies(call, known, n, reps, rng)
    return out


def _build(data: Path, lake: Path, env: dict, kind: str, tmp: Path) -> dict:
    data.mkdir(parents=True)
    (data / "lake").symlink_to(lake)
    extra = {"SHIPDELAY_ONLINE_STORE": kind}
    if kind == "redis":
        extra["SHIPDELAY_REDIS_URL"] = REDIS_URL
    cmd = [str(VENV_BIN / "shipdelay"), "features", "build"]
    proc = measure_command(cmd, env={**env, **extra, "SHIPDELAY_DATA_DIR": str(data)}, cwd=tmp)
    check(proc, cmd)
    return {"features_build_s": round(proc.wall_s, 2)}


def run(quick: bool) -> list[dict]:
    from shipdelay.settings import Settings

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    params = QUICK if quick else FULL
    repeats = QUICK_REPEATS if quick else REPEATS
    sim_cmd = [str(VENV_BIN / "shipdelay"), "simulate", "--shipments", str(params["shipments"]),
               "--days", str(params["days"]), "--seed", str(params["seed"]),
               "--workers", str(params["workers"]), "--ceiling-shipments", "0"]
    redis_note = redis_problem(REDIS_URL)
    kinds = ["sqlite"] + ([] if redis_note else ["redis"])
    if redis_note:
        print(f"   Redis at {REDIS_URL} unreachable ({redis_note}): Redis rows skipped", flush=True)
    rows: list[dict] = []
    with scratch_dir("shipdelay-bench-online-") as tmp:
        env = {**os.environ, "SHIPDELAY_PROFILE": "local"}
        sim = measure_command(sim_cmd, env={**env, "SHIPDELAY_DATA_DIR": str(tmp / "world")},
                              cwd=tmp)
        check(sim, sim_cmd)
        lake = (tmp / "world" / "lake").resolve()
        results = {}
        for kind in kinds:
            if kind == "redis":
                _redis_client().flushdb()
            data = tmp / kind
            built = _build(data, lake, env, kind, tmp)
            settings = Settings(data_dir=data, online_store=kind,
                                redis_url=REDIS_URL if kind == "redis" else None)
            try:
                results[kind] = {**built, **_measure_store(kind, settings, repeats,
                                                           params["seed"])}
            finally:
                if kind == "redis":
                    _redis_client().flushdb()

    world = {**params, "ceiling_shipments": 0, "simulate_wall_s": round(sim.wall_s, 2),
             "simulate_command": f"SHIPDELAY_DATA_DIR=<tmp> {shlex.join(sim_cmd)}",
             "warmup_calls": WARMUP, "timer": "time.perf_counter around each call, in-process"}
    if redis_note:
        world["redis"] = f"skipped: {REDIS_URL} unreachable ({redis_note})"
    what = {"read_progress": "read_progress(store, ids): the shipment_progress view",
            "online_vectors": "online_vectors(store, ids, now): keys, then FeatureService "
                              "delay_model_v1"}
    for kind, res in results.items():
        store_facts = {**world, "online_store": kind, "features_build_s": res["features_build_s"],
                       "known_pool": res["known_pool"]}
        if kind == "redis":
            store_facts["redis_url"] = REDIS_URL
        for n in repeats:
            raw = res["lat"][("raw", n)]
            for op in ("read_progress", "online_vectors"):
                lat = res["lat"][(op, n)]
                for stat, q in (("p50", 50), ("p99", 99)):
                    value, ref = float(np.percentile(lat, q)), float(np.percentile(raw, q))
                    rows.append(row(
                        f"{kind}_{op}_{n}id_{stat}", round(value, 3), "ms",
                        reference={"name": f"{res['raw_name']} ({stat}, same ids count)",
                                   "value": round(ref, 4), "unit": "ms",
                                   "ratio": round(value / ref, 1) if ref else None},
                        measured_command=what[op], ids_per_call=n, calls=len(lat),
                        mean_ms=round(float(lat.mean()), 3), max_ms=round(float(lat.max()), 3),
                        **store_facts))
            for stat, q in (("p50", 50), ("p99", 99)):
                rows.append(row(f"{kind}_raw_{n}id_{stat}", round(float(np.percentile(raw, q)), 4),
                                "ms", measured_command=res["raw_name"], ids_per_call=n,
                                calls=len(raw), **store_facts))
    return rows
