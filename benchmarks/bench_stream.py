"""The stream scorer end to end: sustained events/s and event-to-risk-update latency, SQLite and
Redis, with the naive path (one event -> one feature read -> one prediction) as the reference.

World: `make demo`'s (40,000 shipments over 365 days; quick: 5,000 over 240 days), simulated,
built, trained and promoted once. Per online store, a scratch copy of the feature store is
rewound to a cut (`serving.stream_setup.rewind`) and the lake's events after it are streamed:
the embedded Kafka cluster, `shipdelay stream` and `shipdelay replay` each run in their own
process on the same 2 cores.
1. Capacity: a block of events is replayed as fast as the producer can while the stream runs;
   events/s = events / the stream's busy time (first batch consumed to last offsets committed).
2. At the target rate: the next events are replayed at `RATE` events/s; latency per event = the
   risk update's Kafka timestamp minus the produce time of the oldest event folded into that
   update (so every event is charged the worst latency of its group); p50/p99 over events.
Reference: the naive path, in-process, one event at a time through Feast (`apply_events`,
`online_vectors`, `Scorer.score`), on the same store after the stream run.
Redis is 127.0.0.1:6379 database 12 (flushed before and after); without it the Redis rows are
skipped with a note. The mock cluster keeps ~5 MB per partition, so blocks stay below that.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
from harness import VENV_BIN, row, scratch_dir

ROOT = Path(__file__).resolve().parents[1]
FULL = {"world": ["--shipments", "40000", "--start", "2025-03-01", "--days", "365", "--seed", "7",
                  "--ceiling-shipments", "0"], "days": 100, "capacity": 50_000,
        "paced": 150_000, "naive": 150}
QUICK = {"world": ["--shipments", "5000", "--start", "2025-05-01", "--days", "240", "--seed",
                   "5", "--ceiling-shipments", "0"], "days": 30, "capacity": 5_000,
         "paced": 6_000, "naive": 40}
RATE = 10_000  # events/s at the target
QUICK_RATE = 2_000
REDIS_URL = "redis://127.0.0.1:6379/12"


def _sh(args: list[str], env: dict, log: Path) -> None:
    with open(log, "ab") as out:
        subprocess.run([str(VENV_BIN / "shipdelay"), *args], env=env, check=True, stdout=out,
                       stderr=subprocess.STDOUT, cwd=ROOT)


def _world(tmp: Path, params: dict) -> dict:
    env = {**os.environ, "SHIPDELAY_DATA_DIR": str(tmp / "world"), "PYTHONWARNINGS": "ignore"}
    log = tmp / "world.log"
    for args in (["simulate", *params["world"]], ["features", "build"], ["train"], ["promote"]):
        _sh(args, env, log)
    return env


def _redis_problem() -> str | None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=3).flushdb()
    except Exception as exc:  # noqa: BLE001 - any failure means: no Redis rows
        return f"{type(exc).__name__}: {exc}"
    return None


def _store(source, tmp: Path, kind: str, cut: pd.Timestamp):
    from features.store import get_store
    from serving.stream_setup import rewind, workspace

    extra = {"online_store": "redis", "redis_url": REDIS_URL} if kind == "redis" else {}
    ws = workspace(source, tmp / kind, **extra)
    if kind == "redis":
        feast = get_store(ws)
    rewind(ws, cut)  # progress as of the cut, online and offline
    if kind == "redis":  # the other views into Redis as `features build` loads them
        from features.schema import VIEWS

        feast.materialize(start_date=(cut - pd.Timedelta(days=400)).to_pydatetime(),
                          end_date=(cut + pd.Timedelta(days=400)).to_pydatetime(),
                          feature_views=[v for v in VIEWS if v != "shipment_progress"])
    return ws


def _stream(ws, bootstrap: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "SHIPDELAY_DATA_DIR": str(ws.data_dir), "PYTHONWARNINGS": "ignore",
           "SHIPDELAY_KAFKA_BOOTSTRAP": bootstrap, "SHIPDELAY_ONLINE_STORE": ws.online_store}
    if ws.redis_url:
        env["SHIPDELAY_REDIS_URL"] = ws.redis_url
    out = open(log, "ab")  # noqa: SIM115 - owned by the child
    return subprocess.Popen([str(VENV_BIN / "shipdelay"), "stream", "--idle-exit", "6",
                             "--summary-every", "10"], env=env, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)


def _replay(ws, bootstrap: str, since: pd.Timestamp, n: int, rate: float | None,
            log: Path) -> None:
    env = {**os.environ, "SHIPDELAY_DATA_DIR": str(ws.data_dir), "PYTHONWARNINGS": "ignore",
           "SHIPDELAY_KAFKA_BOOTSTRAP": bootstrap}
    pace = ["--rate", str(rate)] if rate else ["--as-fast-as-possible"]
    _sh(["replay", "--since", since.isoformat(), "--max-events", str(n), *pace], env, log)


def _run_stream_phase(ws, bootstrap, since, n, rate, log) -> dict:
    proc = _stream(ws, bootstrap, log)
    try:
        deadline = time.monotonic() + 300
        while "partitions assigned" not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("stream did not start:\n" + log.read_text()[-3000:])
            time.sleep(0.2)
        _replay(ws, bootstrap, since, n, rate, log)
        proc.wait(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    totals = re.findall(r"stream totals: (\{.*\})", log.read_text())
    if not totals:
        raise RuntimeError("stream gave no totals:\n" + log.read_text()[-3000:])
    return json.loads(totals[-1])


def _latencies(ws, bootstrap: str, since: pd.Timestamp) -> np.ndarray:
    """Seconds from each event's produce time to its risk update (per event, conservative),
    for updates of states from `since` on (the paced phase)."""
    from serving.kafka import Topics, read_all

    live = ws.model_copy(update={"kafka_bootstrap": bootstrap})

    def latency(m):
        update = json.loads(m.value())
        if pd.Timestamp(update["as_of"]) < since:
            return None
        return (m.timestamp()[1] - update["first_produced_ms"]) / 1000, update["events_applied"]

    got = read_all(live, Topics.from_settings(live).risk, idle_s=4, on_message=latency)
    if not got:
        return np.array([])
    lat, counts = zip(*got)
    return np.repeat(np.asarray(lat), np.asarray(counts, dtype=int))


def _naive(ws, since: pd.Timestamp, n: int) -> float:
    """Events/s of one event -> Feast update -> Feast feature read -> one prediction."""
    from features.online import apply_events, online_vectors
    from features.store import get_store, offline_dir
    from registry.loader import load_by_alias
    from serving.replay import lake_events
    from serving.scorer import Scorer

    store, scorer = get_store(ws), Scorer(load_by_alias(ws))
    events = lake_events(ws, since=since, max_events=n)
    events = events[["event_id", "shipment_id", "event_type", "leg_index", "event_time",
                     "ingested_at", "hub_id", "note"]]
    start = time.perf_counter()
    for i in range(len(events)):
        one = events.iloc[i:i + 1]
        apply_events(store, offline_dir(ws), one)
        vec = online_vectors(store, [str(one["shipment_id"].iloc[0])], one["ingested_at"].iloc[0])
        if vec["known"].iloc[0]:
            scorer.score(vec.assign(request_time_s=one["ingested_at"].iloc[0].timestamp()),
                         reasons=False)
    return len(events) / (time.perf_counter() - start)


def run(quick: bool) -> list[dict]:
    import warnings

    warnings.filterwarnings("ignore")
    from serving.kafka_mock import MockCluster
    from serving.replay import lake_events
    from shipdelay.settings import Settings

    params, rate = (QUICK, QUICK_RATE) if quick else (FULL, RATE)
    rows, applies = [], not quick
    with scratch_dir("bench-stream-") as tmp:
        _world(tmp, params)
        source = Settings(data_dir=tmp / "world")
        events = lake_events(source)
        cut = events["ingested_at"].max() - pd.Timedelta(days=params["days"])
        after = events[events["ingested_at"] >= cut]["ingested_at"]
        split = after.iloc[min(params["capacity"], len(after) - 1)]
        redis_problem = _redis_problem()
        for kind in ("sqlite", "redis"):
            if kind == "redis" and redis_problem:
                print(f"redis rows skipped: {redis_problem}")
                continue
            ws = _store(source, tmp, kind, cut)
            log = tmp / f"{kind}.log"
            with MockCluster() as bootstrap:
                cap = _run_stream_phase(ws, bootstrap, cut, params["capacity"], None, log)
                paced = _run_stream_phase(ws, bootstrap, split, params["paced"], rate, log)
                lat = _latencies(ws, bootstrap, split)
            naive = _naive(ws, split, params["naive"])
            capacity = cap["events"] / max(cap["busy_s"], 1e-9)
            sustained = paced["events"] / max(paced["busy_s"], 1e-9)
            ref = {"name": "naive path: one event -> Feast update -> Feast read -> predict",
                   "value": round(naive, 1), "unit": "events/s",
                   "ratio": round(capacity / naive, 1)}
            cmd = (f"shipdelay stream + shipdelay replay (--as-fast-as-possible, then --rate "
                   f"{rate}) on {kind}, mock Kafka")
            p50, p99 = (np.percentile(lat, [50, 99]) if len(lat) else (np.nan, np.nan))
            common = {"measured_command": cmd, "target_applies": applies}
            rows += [
                row(f"{kind}_capacity_events_per_s", round(capacity, 1), "events/s",
                    target=(">=", 10_000), reference=ref, events=cap["events"],
                    busy_s=cap["busy_s"], batches=cap["batches"], dead=cap["dead"], **common),
                row(f"{kind}_at_rate_events_per_s", round(sustained, 1), "events/s",
                    reference={**ref, "ratio": round(sustained / naive, 1)}, rate=rate,
                    events=paced["events"], busy_s=paced["busy_s"], batches=paced["batches"],
                    **common),
                row(f"{kind}_latency_p50", round(float(p50), 3), "s", rate=rate,
                    events=len(lat), **common),
                row(f"{kind}_latency_p99", round(float(p99), 3), "s", target=("<=", 2.0),
                    rate=rate, events=len(lat), **common),
            ]
        if not redis_problem:
            _redis_problem()  # flush again
    return rows
