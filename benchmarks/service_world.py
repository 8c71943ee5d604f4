"""The service benchmark's world: built with the CLI once, cached, and the shipments to ask about.

`world(params)` simulates a world, builds its feature store (SQLite online store, the local
profile), trains a model and promotes it (`shipdelay simulate`, `features build`, `train`,
`promote`) with `harness.cached_world`, which keeps it under the benchmarks' world cache keyed by
its size and a hash of the code that builds it, so later runs reuse it. Then the nightly batch
runs once at the world's "now" on each online store the benchmark serves from (`nightly_batch`),
as it does in production before the service is asked: it keeps the reasons of the riskiest
shipments in flight in the online store, which /predict serves instead of computing them.
SHIPDELAY_BENCH_WORLD=<data dir> serves a world built elsewhere instead.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from harness import ROOT, SHIPDELAY, cached_world, check, measure_command, simulate_command

API_KEY = "bench-key-0123456789"
BULK_IDS = 100
REDIS_URL = "redis://127.0.0.1:6379/13"  # the service benchmark's own database (flushed)
REDIS_MARK = "shipdelay-bench:world"
BATCH_MARK = "nightly-batch-{store}.done"  # next to the world's data directory
# the code that builds the world (not the online read path or the service, which are measured)
SOURCES = ("shipdelay/world", "shipdelay/lake.py", "shipdelay/contract.py", "features/repo",
           "features/schema.py", "features/tables.py", "features/transforms.py",
           "features/build.py", "features/offline.py", "features/store.py",
           "features/request_time.py", "training", "registry")
SIMULATE = {"workers": 2, "ceiling_shipments": 300, "ceiling_draws": 40}
PROFILE_ENV = {"SHIPDELAY_PROFILE": "local", "SHIPDELAY_ONLINE_STORE": "sqlite",
               "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def _sources() -> list[Path]:
    """The files of SOURCES, in a fixed order."""
    files = []
    for name in SOURCES:
        top = ROOT / name
        files += sorted(top.rglob("*.py")) if top.is_dir() else [top]
    return files


def settings_of(data: Path):
    from shipdelay.settings import Settings

    return Settings(data_dir=data, profile="local", online_store="sqlite", api_key=API_KEY)


def world(params: dict) -> tuple[Path, dict]:
    """The cached world's data directory (built on first use) and how it was built (its
    champion and `key`, which names it in Redis).

    SHIPDELAY_BENCH_WORLD=<data dir> serves a world built elsewhere instead (it must hold the
    lake, the SQLite feature store and a champion); its size is then whatever it is."""
    from registry.loader import CHAMPION, alias_version

    prebuilt = os.environ.get("SHIPDELAY_BENCH_WORLD")
    if prebuilt:
        data = Path(prebuilt).resolve()
        built = {"shipments": None, "days": None, "seed": params["seed"], "cached": True,
                 "build_wall_s": None, "prebuilt": str(data)}
    else:
        steps = [simulate_command({**params, **SIMULATE}),
                 [SHIPDELAY, "features", "build"],
                 # 120 days cannot hold the default split's label-horizon gaps (~6 weeks);
                 # the benchmark measures serving, not the model's evaluation
                 [SHIPDELAY, "train", "--gap-days", "7"], [SHIPDELAY, "promote"]]
        data, facts = cached_world("service", params, steps, _sources(), PROFILE_ENV)
        built = {**params, "cached": facts["cached"],
                 "build_wall_s": {name: step["wall_s"] for name, step in facts["steps"].items()}}
    champion = alias_version(settings_of(data), CHAMPION)
    if champion is None:
        raise RuntimeError(f"the benchmark world {data} has no champion")
    built["nightly_batch_s"] = nightly_batch(data, {**PROFILE_ENV, "SHIPDELAY_DATA_DIR": str(data)},
                                             "sqlite")
    return data, {**built, "champion": champion, "key": data.parent.name}


def nightly_batch(data: Path, env: dict[str, str], store: str) -> float | None:
    """Run `shipdelay score-batch` (the nightly job, default options: cut-off at the lake's
    "now", reasons for the riskiest in flight kept online) once on the world's `store`; a
    marker next to the data directory says it ran. Returns its wall seconds (None: it had)."""
    marker = data.parent / BATCH_MARK.format(store=store)
    if marker.exists():
        return None
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPDELAY_")}
    run_env.update({"SHIPDELAY_ENCRYPTION": "false", **env})
    print(f"   the nightly batch on the {store} online store", flush=True)
    cmd = [SHIPDELAY, "score-batch"]
    proc = measure_command(cmd, env=run_env, cwd=data.parent,
                           log=data.parent / f"score-batch-{store}.log")
    check(proc, cmd)
    marker.write_text(f"{proc.wall_s:.1f}\n")
    return round(proc.wall_s, 1)


def in_redis(data: Path, key: str):
    """Settings serving the world from Redis (the `scale` profile's online store): the world's
    online rows materialized into database REDIS_DB once per Redis lifetime (Redis here keeps
    nothing on disk) by `features build` on the world's own lake, which writes the same offline
    tables again (~1 min); a marker key names the world the database holds."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=30)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPDELAY_")}
    env.update({"SHIPDELAY_DATA_DIR": str(data), "SHIPDELAY_PROFILE": "local",
                "SHIPDELAY_ONLINE_STORE": "redis", "SHIPDELAY_REDIS_URL": REDIS_URL,
                "SHIPDELAY_ENCRYPTION": "false",  # the world is plaintext (run.py)
                "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"})
    if client.get(REDIS_MARK) != key.encode():
        client.flushdb()
        print(f"   materializing the world into {REDIS_URL}", flush=True)
        cmd = [SHIPDELAY, "features", "build"]
        check(measure_command(cmd, env=env, cwd=data.parent,
                              log=data.parent / "build-features-redis.log"), cmd)
        (data.parent / BATCH_MARK.format(store="redis")).unlink(missing_ok=True)
        client.set(REDIS_MARK, key)
    nightly_batch(data, {k: v for k, v in env.items() if k.startswith("SHIPDELAY_")}, "redis")
    return settings_of(data).model_copy(update={"online_store": "redis",
                                                "redis_url": REDIS_URL})


def live_ids(settings, rng: np.random.Generator, limit: int = 4_000) -> tuple[list[str], object]:
    """Shipments in flight at the world's now that the online store knows and has not delivered
    (read with the direct reader: the same answer as Feast's, proven in the tests, and quick)."""
    from features.online_fast import OnlineReader
    from features.store import get_store
    from serving.demo import in_flight

    moving, now = in_flight(settings, 10**9)
    moving = rng.permutation(np.asarray(moving, dtype=object))[:limit].tolist()
    reader = OnlineReader(get_store(settings))
    live = []
    for lo in range(0, len(moving), 500):
        v = reader.vectors(moving[lo:lo + 500], now)
        live += v.loc[v["known"] & ~v["delivered"], "shipment_id"].tolist()
    if len(live) < 2 * BULK_IDS:
        raise RuntimeError(f"only {len(live)} live shipments in the benchmark world")
    return live, now


def bodies(folder: Path, live: list[str], rng: np.random.Generator) -> dict[str, Path]:
    files = {"single": folder / "single.jsonl", "bulk": folder / "bulk.jsonl",
             "noop": folder / "noop.jsonl"}
    files["single"].write_text("".join(json.dumps({"shipment_ids": [i]}) + "\n"
                                       for i in rng.permutation(np.asarray(live, object))))
    files["bulk"].write_text("".join(
        json.dumps({"shipment_ids": rng.choice(live, BULK_IDS, replace=False).tolist()}) + "\n"
        for _ in range(300)))
    files["noop"].write_text("{}\n")
    return files


