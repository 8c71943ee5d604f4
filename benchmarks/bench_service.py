"""The prediction service over loopback HTTP: latency, throughput, and the same-run references.

The world (benchmarks/service_world.py): 50,000 shipments over 120 days (quick: 8,000), its
feature store built (SQLite online store, the local profile) and a trained model promoted to
champion, all with the CLI, kept with the other benchmark worlds (`harness.cached_world`). The
service (benchmarks/service_server.py) is started exactly as `shipdelay serve` starts it
(`serving.serve.serve_command`), one worker unless SHIPDELAY_BENCH_WORKERS says otherwise, on
127.0.0.1, with an API key and its clock at the world's "now"; SHIPDELAY_SERVE_BATCHING and
SHIPDELAY_ONLINE_READ pass through to it, and so does SHIPDELAY_SERVE_CPUS (the cores the
server's threads are pinned to; unset: any).

When Redis answers at 127.0.0.1:6379, the same plan runs twice more against the same world
served from Redis (the `scale` profile's online store; database 13, materialized once per Redis
lifetime by `features build`, see `service_world.in_redis`): with the same workers, and with one
worker per core (metric names end in `_redis` and `_redis_<n>w`). The benchmarks run with
encryption at rest off; the first setup runs once more on the world's encrypted twin
(`encrypted_world`: every Parquet file encrypted, the service started with encryption on; metric
names end in `_encrypted`).

The load generator is a separate process (wrk when installed, else benchmarks/loadgen.py):
closed-loop keep-alive connections, each run bounded in time and in request count after an
untimed warm-up. Requests ask about shipments in flight that the online store knows, drawn at
random (seeded). Runs:
- `/predict` with 1 id: concurrency 1 (latency p50/p99) and concurrency 32 (throughput);
- `/predict` with 100 distinct ids: concurrency 8, in shipments/s;
- `/predict` with 1 id at concurrency 1 again, right after that load (5 s): a lone question
  must not wait for what the batcher learned under load;
- references from the same server in the same run: `/noop` (served only with SHIPDELAY_SERVE_NOOP=1,
  which `service_server.Server` sets; same framework path, middleware
  and API key, no work) at concurrency 1 and 32;
- references without HTTP, in this process after the server stops: `Scorer.score` on the same
  kind of vectors (with and without reasons), and the online read, direct and through Feast.
Each row's details hold the server's CPU time per request (psutil, process tree) and each of its
processes' CPU seconds in the run (how evenly the workers shared it), the client's CPU time and
the connections it opened (the service closes a keep-alive connection after 100 answers), the
status counts and the 1-minute load average before and after the run: other work on the same
two cores shows up there.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict

import numpy as np
from encrypted_world import encrypted_twin, encryption
from harness import redis_problem, row, scratch_dir
from service_server import RUN_S, WRK, Server, check_answers, load, merged
from service_world import (
    BULK_IDS,
    REDIS_URL,
    bodies,
    in_redis,
    live_ids,
    settings_of,
    world,
)

# Targets on a slow host of the 2-core kind: one id at concurrency 1 within P99_MS; /predict at
# concurrency 32 at least C32_RATIO of /noop's rate; 100-id requests at these shipments/s per
# setup (one worker on either store; one worker per core on Redis, production's shape).
P99_MS = 5.0
C32_RATIO = 0.9
BULK_ONE_WORKER = 15_000
BULK_TARGETS: dict[str, float] = defaultdict(lambda: BULK_ONE_WORKER, _redis_2w=30_000)

FULL = {"shipments": 50_000, "days": 120, "seed": 7}
QUICK = {"shipments": 8_000, "days": 120, "seed": 7}
C_LATENCY, C_THROUGHPUT, C_BULK = 1, 32, 8
# the throughput pair runs in turns (noop, predict, noop, ...), so that a change in what else
# the machine does in the meantime falls on both alike: one long run of each differed by 30%
# between two runs of the same route minutes apart on this machine
TURNS = 3


def _timed(call, args: list, warmup: int = 5) -> np.ndarray:
    """Milliseconds of each call(arg), after a few untimed calls."""
    for a in args[:warmup]:
        call(a)
    out = np.empty(len(args))
    for j, a in enumerate(args):
        t = time.perf_counter()
        call(a)
        out[j] = time.perf_counter() - t
    return out * 1e3


def in_process(settings, live: list[str], now, rng: np.random.Generator, quick: bool) -> dict:
    """References without HTTP, in this process, after the server stopped:
    - Scorer.score on the vectors the service would read (read beforehand, untimed), with and
      without the reasons (LightGBM's TreeSHAP), 1 and 100 rows per call;
    - the service's own scoring call, `Scorer.score_columns` on the reader's arrays with reasons
      for the service's default band and no memory of earlier reasons (every shipment is new);
    - the online read, direct (`OnlineReader.vectors`) and through Feast (`online_vectors`),
      1 and 100 ids per call."""
    from features.online import online_vectors
    from features.online_fast import OnlineReader
    from features.store import get_store
    from registry.loader import load_by_alias
    from serving import compiled_trees
    from serving.compiled_trees import compile_bundle
    from serving.model_holder import limit_threads
    from serving.options import ServeOptions
    from serving.scorer import Scorer

    bundle = load_by_alias(settings)
    limit_threads(bundle, 1)
    if compiled_trees.enabled():  # as the service's model holder does
        compile_bundle(bundle, settings.data_dir / "compiled")
    scorer = Scorer(bundle)
    store = get_store(settings)
    reader = OnlineReader(store)
    ids = rng.choice(live, min(len(live), 1_000), replace=False).tolist()
    vectors = reader.vectors(ids, now).assign(request_time_s=now.timestamp())
    calls = {1: 100 if quick else 400, BULK_IDS: 20 if quick else 100}
    out = {}
    for n, k in calls.items():
        starts = rng.integers(0, len(vectors) - n + 1, k)
        parts = [vectors.iloc[lo:lo + n] for lo in starts]
        out[("score", n)] = _timed(scorer.score, parts)
        out[("score_no_reasons", n)] = _timed(lambda v: scorer.score(v, reasons=False), parts)
        arrays = [{c: v[c].to_numpy() for c in v.columns} for v in parts]
        out[("score_service", n)] = _timed(
            lambda v: scorer.score_columns(v, ServeOptions().reasons_from), arrays)
        draws = [rng.choice(live, n, replace=False).tolist() for _ in range(k // 4)]
        out[("read_direct", n)] = _timed(lambda i: reader.vectors(i, now), draws)
        out[("read_feast", n)] = _timed(lambda i: online_vectors(store, i, now), draws)
    return out


def served(settings, now, tmp, workers: int, files: dict, live: list[str], quick: bool) -> dict:
    """Start the service on `settings`' online store, run the plan against it, stop it."""
    runs: dict[str, dict] = {}
    server = Server(settings, now, tmp, workers)
    try:
        ready_s = server.wait_ready()
        checked = check_answers(server, live)
        turn_s = RUN_S["quick" if quick else "full"] / TURNS
        # (name, path, bodies, concurrency, seconds: None for the full run length)
        plan = [("noop_c1", "/noop", "noop", C_LATENCY, None),
                ("predict1_c1", "/predict", "single", C_LATENCY, None),
                *[(f"{name}#{turn}", path, body, C_THROUGHPUT, turn_s)
                  for turn in range(TURNS)
                  for name, path, body in (("noop_c32", "/noop", "noop"),
                                           ("predict1_c32", "/predict", "single"))],
                ("predict100_c8", "/predict", "bulk", C_BULK, None),
                # a dashboard's lone question right after the load (BentoML's batcher, left
                # alone, held such requests back for what it learned under load)
                ("predict1_c1_after", "/predict", "single", C_LATENCY, turn_s)]
        for name, path, body, c, seconds in plan:
            print(f"   {settings.online_store}, {workers} worker(s): {name}: POST {path} "
                  f"({body}), concurrency {c}", flush=True)
            runs[name] = load(server, path, files[body], c, quick, seconds)
        for name in ("noop_c32", "predict1_c32"):
            runs[name] = merged([runs.pop(f"{name}#{turn}") for turn in range(TURNS)])
    finally:
        server.stop()
    facts = {"online_store": settings.online_store, "workers": workers,
             "ready_s": round(ready_s, 1), **checked,
             "server_command": server.command.replace(str(settings.data_dir), "<world>")}
    return {"runs": runs, "facts": facts}


def run(quick: bool) -> list[dict]:
    from shipdelay.lake import Lake  # noqa: F401 - fail early if the package is not importable

    params = QUICK if quick else FULL
    workers = int(os.environ.get("SHIPDELAY_BENCH_WORKERS", "1"))
    data, built = world(params)
    settings = settings_of(data)
    rng = np.random.default_rng(params["seed"])
    live, now = live_ids(settings, rng)
    # (label, settings, workers): the local profile as `shipdelay serve` starts it, then the
    # scale profile's Redis online store with one worker and with one worker per core
    setups = [("", settings, workers)]
    why_not = redis_problem(REDIS_URL)
    if why_not is None:
        on_redis = in_redis(data, built.get("key") or str(data))
        setups.append(("_redis", on_redis, workers))
        cores = os.cpu_count() or 1
        if cores > workers:
            setups.append((f"_redis_{cores}w", on_redis, cores))
    else:
        print(f"   no Redis rows (the scale profile's online store): {why_not}", flush=True)
    with scratch_dir("shipdelay-bench-service-") as tmp:
        files = bodies(tmp, live, rng)
        results = {label: served(s, now, tmp, n, files, live, quick) for label, s, n in setups}
        # the same world with every Parquet file encrypted, served as the first setup
        twin, key_file = encrypted_twin(data, tmp / "world-encrypted")
        with encryption(True, key_file):
            results["_encrypted"] = served(settings_of(twin), now, tmp, workers, files, live,
                                           quick)
        results["_encrypted"]["facts"]["encryption"] = True
    ref = in_process(settings, live, now, rng, quick)

    applies = not quick
    facts = {"world": {k: built.get(k) for k in ("shipments", "days", "seed", "champion",
                                                 "cached", "build_wall_s", "prebuilt")},
             "live_ids": len(live), "as_of": now.isoformat(),
             "batching": os.environ.get("SHIPDELAY_SERVE_BATCHING", "1"),
             "online_read": os.environ.get("SHIPDELAY_ONLINE_READ", "direct"),
             "server_cpus": os.environ.get("SHIPDELAY_SERVE_CPUS") or "any",
             "load_generator": "wrk" if WRK else "benchmarks/loadgen.py"}

    def rate(key) -> float:  # shipments/s of the median call
        return round(key[1] * 1e3 / float(np.median(ref[key])), 1)

    def stats(key) -> dict:
        t = ref[key]
        return {"p50_ms": round(float(np.median(t)), 3),
                "p99_ms": round(float(np.percentile(t, 99)), 3), "calls": len(t)}

    scorer_rate = rate(("score_service", BULK_IDS))
    rows = []
    for label, result in results.items():
        rows += http_rows(result["runs"], {**facts, **result["facts"]}, scorer_rate, applies,
                          label)
    facts["online_store"] = "sqlite"
    for (what, n), label in (((k, n), k) for k in ("score", "score_no_reasons", "score_service")
                             for n in (1, BULK_IDS)):
        rows.append(row(f"{label}_{n}row_inprocess", rate((what, n)), "shipments/s",
                        measured_command=(
                            f"Scorer.score_columns({n} row(s), reasons from the high band)"
                            if what == "score_service" else f"Scorer.score({n} row(s)"
                            + (", reasons=False)" if what == "score_no_reasons" else ")")),
                        **stats((what, n)), **facts))
    for n in (1, BULK_IDS):
        direct, feast = stats(("read_direct", n)), stats(("read_feast", n))
        rows.append(row(f"online_read_direct_{n}id_p50", direct["p50_ms"], "ms",
                        measured_command=f"OnlineReader.vectors({n} id(s)) in process",
                        reference={"name": "Feast get_online_features (online_vectors), p50",
                                   "value": feast["p50_ms"], "unit": "ms",
                                   "ratio": _ratio(direct["p50_ms"], feast["p50_ms"])},
                        direct=direct, feast=feast, **facts))
    return rows


def http_rows(runs: dict, facts: dict, scorer_rate: float, applies: bool, suffix: str
              ) -> list[dict]:
    """The rows of one served run (metric names end in `suffix`: "" for SQLite)."""

    def summary(name: str) -> dict:
        r = runs[name]
        keep = ("concurrency", "requests", "statuses", "window_s", "rate_per_s", "p50_ms", "turns",
                "p90_ms", "p99_ms", "max_ms", "client_cpu_ms_per_request",
                "server_cpu_ms_per_request", "server_cpu_s_by_process", "connections_opened",
                "load_avg_1m_before", "load_avg_1m_after", "client", "loadgen_command")
        return {k: r.get(k) for k in keep}

    n1, n32, n100 = runs["noop_c1"], runs["noop_c32"], runs["predict100_c8"]
    p1, p32, after = runs["predict1_c1"], runs["predict1_c32"], runs["predict1_c1_after"]
    bulk_rate = round(n100["ok_rate_per_s"] * BULK_IDS, 1)
    ratio = p32["ok_rate_per_s"] / n32["ok_rate_per_s"] if n32["ok_rate_per_s"] else 0.0
    return [
        row(f"predict_1id_c1_p50{suffix}", p1.get("p50_ms"), "ms",
            measured_command="/predict 1 id, c=1",
            reference={"name": "/noop, concurrency 1, p50 (same server, same run)",
                       "value": n1.get("p50_ms"), "unit": "ms"},
            run=summary("predict1_c1"), **facts),
        row(f"predict_1id_c1_p99{suffix}", p1.get("p99_ms"), "ms", target=("<=", P99_MS),
            target_applies=applies, measured_command="/predict 1 id, c=1",
            reference={"name": "/noop, concurrency 1, p99", "value": n1.get("p99_ms"),
                       "unit": "ms", "ratio": _ratio(p1.get("p99_ms"), n1.get("p99_ms"))},
            run=summary("predict1_c1"), **facts),
        row(f"predict_1id_c1_p99_after_load{suffix}", after.get("p99_ms"), "ms",
            target=("<=", P99_MS), target_applies=applies,
            measured_command=f"/predict 1 id, c=1, right after the {BULK_IDS}-id run",
            reference={"name": "/predict 1 id, c=1, before any load (same server), p99",
                       "value": p1.get("p99_ms"), "unit": "ms",
                       "ratio": _ratio(after.get("p99_ms"), p1.get("p99_ms"))},
            p50_ms=after.get("p50_ms"), run=summary("predict1_c1_after"), **facts),
        row(f"predict_1id_c32_throughput{suffix}", p32["ok_rate_per_s"], "req/s",
            measured_command="/predict 1 id, c=32",
            reference={"name": "/noop, concurrency 32 (same server, same run)",
                       "value": n32["ok_rate_per_s"], "unit": "req/s", "ratio": round(ratio, 3)},
            run=summary("predict1_c32"), **facts),
        row(f"predict_vs_noop_throughput_c32{suffix}", round(ratio, 3), "x", target=(">=", C32_RATIO),
            target_applies=applies, measured_command="/predict 1 id vs /noop, c=32",
            reference={"name": "/noop, concurrency 32", "value": n32["ok_rate_per_s"],
                       "unit": "req/s"}, run=summary("predict1_c32"), **facts),
        row(f"predict_100ids_c8_shipments_per_s{suffix}", bulk_rate, "shipments/s",
            target=(">=", BULK_TARGETS[suffix]), target_applies=applies,
            measured_command=f"/predict {BULK_IDS} ids, c={C_BULK}",
            reference={"name": f"Scorer.score_columns in process as the service calls it, "
                               f"{BULK_IDS} rows per call (median)",
                       "value": scorer_rate, "unit": "shipments/s",
                       "ratio": round(bulk_rate / scorer_rate, 3) if scorer_rate else None},
            run=summary("predict100_c8"), **facts),
        row(f"noop_c1_p50{suffix}", n1.get("p50_ms"), "ms", measured_command="/noop, c=1",
            p99_ms=n1.get("p99_ms"), run=summary("noop_c1"), **facts),
        row(f"noop_c32_throughput{suffix}", n32["ok_rate_per_s"], "req/s",
            measured_command="/noop, c=32", run=summary("noop_c32"), **facts),
    ]


def _ratio(a, b):
    return round(a / b, 2) if a is not None and b else None
