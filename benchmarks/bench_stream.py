"""The stream scorer end to end: sustained events/s and event-to-risk-update latency, SQLite and
Redis, with the naive path (one event -> one feature read -> one prediction) as the reference.

World: 40,000 shipments over 365 days (`make demo`'s bookings per day over half its history;
quick: 5,000 over 240 days), simulated, built, trained and promoted once. Per online store, a
scratch copy of the feature store is rewound to a cut (`serving.stream_setup.rewind`) and the
lake's events after it are streamed: the embedded Kafka cluster, `shipdelay stream` and
`shipdelay replay` each run in their own process on the same 2 cores.
1. Capacity: a block of events is replayed as fast as the producer can while the stream runs;
   events/s = events / the stream's busy time (first batch consumed to last offsets committed),
   once with one consumer, then, on the next block, with `CONSUMERS` in one group (Kafka's
   scale-out; busy time from the first batch any consumer took to the last commit of any).
2. At the target rate, with the group: the next events are replayed at `RATE` events/s;
   latency per event = the risk update's Kafka timestamp minus the produce time of the oldest
   event folded into that update (so every event is charged the worst latency of its group);
   p50/p99 over events.
Reference: the naive path, in-process, one event at a time through Feast (`apply_events`,
`online_vectors`, `Scorer.score`), on the same store after the stream run.
Redis is 127.0.0.1:6379 database 12 (flushed before and after); without it the Redis rows are
skipped with a note. The mock cluster keeps ~5 MB per partition, so blocks stay below that.
Encryption at rest: the world is built in plaintext (the benchmarks run with encryption off) and
the same phases run again on its encrypted twin (`encrypted_world`; every Parquet file encrypted,
so the stream's offline parts are written encrypted and the lake read decrypted), metric names
ending in `_encrypted`, each with the plaintext row of the same run as its reference.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
from encrypted_world import encrypted_twin, encryption
from harness import VENV_BIN, redis_problem, row, scratch_dir

ROOT = Path(__file__).resolve().parents[1]
# 130 days after the cut hold the three blocks (50,000 + 50,000 + 150,000 events)
FULL = {"world": ["--shipments", "40000", "--start", "2025-03-01", "--days", "365", "--seed", "7",
                  "--ceiling-shipments", "0"], "days": 130, "capacity": 50_000,
        "paced": 150_000, "naive": 150}
QUICK = {"world": ["--shipments", "5000", "--start", "2025-05-01", "--days", "240", "--seed",
                   "5", "--ceiling-shipments", "0"], "days": 30, "capacity": 5_000,
         "paced": 6_000, "naive": 40}
RATE = 10_000  # events/s at the target
# Targets on a slow host of the 2-core kind, two consumers: capacity per online store, and the
# p99 of event -> risk update at RATE offered.
CAPACITY_TARGETS = {"sqlite": 20_000, "redis": 40_000}
P99_S = 1.0
# Consumers in the stream's group for the capacity and paced phases (Kafka's own scale-out: the
# topic has 4 partitions); a first capacity phase runs one, for reference.
CONSUMERS = 2
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


def _store(source, tmp: Path, kind: str, cut: pd.Timestamp, name: str | None = None):
    from features.schema import VIEWS
    from features.store import get_store
    from serving.stream_setup import rewind, workspace

    extra = {"online_store": "redis", "redis_url": REDIS_URL} if kind == "redis" else {}
    ws = workspace(source, tmp / (name or kind), **extra)
    feast = get_store(ws)
    rewind(ws, cut)  # progress as of the cut, online and offline
    # the other views online around the cut, as `features build` loads them around its now (the
    # copied SQLite store holds the world's last 120 days only: shipments booked before them
    # and still moving at the cut would be dead-lettered as unknown)
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


def _run_stream_phase(ws, bootstrap, since, n, rate, log: Path, consumers: int = 1) -> dict:
    """Start `consumers` stream processes in the group, wait until each holds partitions,
    replay `n` events from `since`, wait for them to go idle; their totals together (busy time
    from the first batch consumed by any to the last offsets committed by any)."""
    logs = [log.with_name(f"{log.stem}-{i}{log.suffix}") for i in range(consumers)]
    marks = [lg.read_text().count("partitions assigned") if lg.exists() else 0 for lg in logs]
    procs = [_stream(ws, bootstrap, lg) for lg in logs]

    def settled() -> bool:  # every consumer holds partitions after the group's last rebalance
        texts = [lg.read_text() for lg in logs]
        return all(t.count("partitions assigned") > m for t, m in zip(texts, marks)) and all(
            t.rfind("partitions assigned") > t.rfind("partitions revoked") for t in texts)

    try:
        deadline = time.monotonic() + 300
        while not settled():
            if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                raise RuntimeError("stream did not start:\n" + logs[0].read_text()[-3000:])
            time.sleep(0.2)
        _replay(ws, bootstrap, since, n, rate, log)
        for p in procs:
            p.wait(timeout=900)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    totals = []
    for lg in logs:
        found = re.findall(r"stream totals: (\{.*\})", lg.read_text())
        if not found:
            raise RuntimeError("stream gave no totals:\n" + lg.read_text()[-3000:])
        totals.append(json.loads(found[-1]))
    out = {k: sum(t[k] for t in totals) for k in ("events", "applied", "dead", "batches")}
    busy = [t for t in totals if t["events"]]
    out["busy_s"] = round(max(t["busy_to"] for t in busy) - min(t["busy_from"] for t in busy), 3)
    out["per_consumer"] = [{k: t[k] for k in ("events", "batches", "busy_s", "partitions")}
                           for t in totals]
    # where the consumers' batch time went, summed over them (seconds per stage)
    stages: dict[str, float] = {}
    for t in totals:
        for stage, spent in t.get("stage_s", {}).items():
            stages[stage] = round(stages.get(stage, 0.0) + spent, 3)
    out["stage_s"] = stages
    return out


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


def _store_rows(kind: str, one: dict, cap: dict, paced: dict, lat: np.ndarray,
                ref: dict | None, rate: float, applies: bool, mode: str,
                plain: dict | None) -> list[dict]:
    """The rows of one store's run; `mode` "_encrypted" names the encrypted twin's rows, whose
    reference is the plaintext row of the same metric (`plain`: metric -> value)."""
    single = one["events"] / max(one["busy_s"], 1e-9)
    capacity = cap["events"] / max(cap["busy_s"], 1e-9)
    sustained = paced["events"] / max(paced["busy_s"], 1e-9)
    cmd = (f"{CONSUMERS} x shipdelay stream (one consumer group) + shipdelay replay "
           f"(--as-fast-as-possible, then --rate {rate}) on {kind}, mock Kafka"
           + (", every Parquet file encrypted" if mode else ""))
    p50, p99 = (np.percentile(lat, [50, 99]) if len(lat) else (np.nan, np.nan))
    common = {"measured_command": cmd, "target_applies": applies, "consumers": CONSUMERS,
              "encryption": bool(mode)}

    def against(metric: str, value: float, unit: str) -> dict | None:
        if plain is None:  # the plaintext run: the naive path is the reference
            return None if ref is None else {**ref, "ratio": round(value / ref["value"], 1)}
        base = plain.get(metric)
        return None if not base else {"name": f"{metric}, encryption off (same run)",
                                      "value": base, "unit": unit,
                                      "ratio": round(value / base, 3)}

    values = {
        f"{kind}_capacity_events_per_s": (round(capacity, 1), "events/s",
                                         (">=", CAPACITY_TARGETS[kind]),
                                         {"events": cap["events"], "busy_s": cap["busy_s"],
                                          "batches": cap["batches"], "dead": cap["dead"],
                                          "per_consumer": cap["per_consumer"],
                                          "stage_s": cap["stage_s"]}),
        f"{kind}_one_consumer_capacity_events_per_s": (
            round(single, 1), "events/s", None,
            {"events": one["events"], "busy_s": one["busy_s"], "batches": one["batches"],
             "dead": one["dead"], "consumers": 1}),
        f"{kind}_at_rate_events_per_s": (
            round(sustained, 1), "events/s", None,
            {"rate": rate, "events": paced["events"], "busy_s": paced["busy_s"],
             "batches": paced["batches"], "dead": paced["dead"],
             "per_consumer": paced["per_consumer"], "stage_s": paced["stage_s"]}),
        f"{kind}_latency_p50": (round(float(p50), 3), "s", None,
                                {"rate": rate, "events": len(lat)}),
        f"{kind}_latency_p99": (round(float(p99), 3), "s", ("<=", P99_S),
                                {"rate": rate, "events": len(lat)}),
    }
    rows = []
    for metric, (value, unit, target, details) in values.items():
        reference = against(metric, value, unit) if unit == "events/s" or plain else None
        rows.append(row(metric + mode, value, unit, target=target, reference=reference,
                        **{**common, **details}))
    return rows


def run(quick: bool) -> list[dict]:
    import warnings

    warnings.filterwarnings("ignore")
    from serving.kafka_mock import MockCluster
    from serving.replay import lake_events
    from shipdelay.settings import Settings

    params, rate = (QUICK, QUICK_RATE) if quick else (FULL, RATE)
    rows, applies = [], not quick
    with scratch_dir("bench-stream-") as tmp:
        with encryption(False):
            _world(tmp, params)
            events = lake_events(Settings(data_dir=tmp / "world"))
        cut = events["ingested_at"].max() - pd.Timedelta(days=params["days"])
        after = events[events["ingested_at"] >= cut]["ingested_at"]
        # three blocks of the stream: capacity with one consumer, capacity with the group, then
        # the paced phase with the group
        mid, split = (after.iloc[min(k * params["capacity"], len(after) - 1)] for k in (1, 2))
        twin, key_file = encrypted_twin(tmp / "world", tmp / "world-encrypted")
        redis_note = redis_problem(REDIS_URL, flush=True)
        plain: dict[str, float] = {}
        # per store, plaintext then encrypted right after: the pair sees the same machine
        for kind in ("sqlite", "redis"):
            if kind == "redis" and redis_note:
                print(f"redis rows skipped: {redis_note}")
                continue
            for mode, folder, key in (("", tmp / "world", None),
                                      ("_encrypted", twin, key_file)):
                with encryption(bool(mode), key):
                    if kind == "redis":
                        redis_problem(REDIS_URL, flush=True)
                    ws = _store(Settings(data_dir=folder), tmp, kind, cut, f"{kind}{mode}")
                    log = tmp / f"{kind}{mode}.log"
                    with MockCluster() as bootstrap:
                        one = _run_stream_phase(ws, bootstrap, cut, params["capacity"], None,
                                                log)
                        cap = _run_stream_phase(ws, bootstrap, mid, params["capacity"], None,
                                                log, CONSUMERS)
                        paced = _run_stream_phase(ws, bootstrap, split, params["paced"], rate,
                                                  log, CONSUMERS)
                        lat = _latencies(ws, bootstrap, split)
                    ref = None
                    if not mode:  # the naive reference once, on plaintext
                        naive = _naive(ws, split, params["naive"])
                        ref = {"name": "naive path: one event -> Feast update -> Feast read -> "
                                       "predict", "value": round(naive, 1), "unit": "events/s"}
                made = _store_rows(kind, one, cap, paced, lat, ref, rate, applies, mode,
                                   plain if mode else None)
                if not mode:
                    plain.update({r["metric"]: r["value"] for r in made})
                rows += made
        if not redis_note:
            redis_problem(REDIS_URL, flush=True)  # flush again
        kept = ROOT / "benchmarks" / "results" / f"stream-logs-{time.strftime('%Y%m%dT%H%M%S')}"
        kept.mkdir(parents=True, exist_ok=True)
        for log in tmp.glob("*.log"):  # the consumers' batch lines, for whoever reads a row
            shutil.copy2(log, kept / log.name)
    return rows
