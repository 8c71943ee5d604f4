"""The prediction service over loopback HTTP: latency, throughput, and the same-run references.

The world: a simulated world (50,000 shipments over 120 days; quick: 8,000) with its feature
store built (SQLite online store, the local profile) and a trained model promoted to champion,
built with the CLI (`shipdelay simulate`, `features build`, `train`, `promote`) and cached
under benchmarks/results/worlds/ (git-ignored), keyed by its size and a hash of the code that
builds it, so a second run reuses it. The service is started exactly as `shipdelay serve` starts
it (`serving.serve.serve_command`: `python -m bentoml serve serving.service:ShipDelay`, one
worker unless SHIPDELAY_BENCH_WORKERS says otherwise) on 127.0.0.1, with an API key, its clock
set to the world's "now".

The load generator (`benchmarks/loadgen.py`) is a separate process: closed-loop httpx clients
on keep-alive connections, each run bounded in time and in request count. Requests ask about
shipments in flight that the online store knows, drawn at random (seeded). Runs:
- `/predict` with 1 id: concurrency 1 (latency p50/p99) and concurrency 32 (throughput);
- `/predict` with 100 distinct ids: concurrency 8, in shipments/s;
- references from the same server in the same run: `/noop` (same framework path, middleware
  and API key, no work) at concurrency 1 and 32;
- reference without HTTP, after the server stops: `Scorer.score` in this process on the same
  vectors (read beforehand, not timed), 1 row and 100 rows per call, single-threaded LightGBM as
  in the service.
Each row's details hold the server's CPU time per request (psutil, process tree), the client's,
the status counts and the 1-minute load average before and after the run: other work on the
same two cores shows up there.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from harness import ROOT, VENV_BIN, row, scratch_dir

HERE = Path(__file__).resolve().parent
WORLDS = HERE / "results" / "worlds"
FULL = {"shipments": 50_000, "days": 120, "seed": 7}
QUICK = {"shipments": 8_000, "days": 120, "seed": 7}
RUN_S = {"full": 15.0, "quick": 4.0}
WARMUP_S = {"full": 2.0, "quick": 1.0}
MAX_REQUESTS = 100_000
C_LATENCY, C_THROUGHPUT, C_BULK, BULK_IDS = 1, 32, 8, 100
API_KEY = "bench-key-0123456789"
READY_TIMEOUT_S = 300
WRK = shutil.which("wrk")  # Debian: apt-get install wrk; else the Python client
# the code that builds the world (not the online read path or the service, which are measured)
SOURCES = ("shipdelay/world", "shipdelay/lake.py", "shipdelay/contract.py", "features/repo",
           "features/schema.py", "features/tables.py", "features/transforms.py",
           "features/build.py", "features/offline.py", "features/store.py",
           "features/request_time.py", "training", "registry")


def _source_hash() -> str:
    h = hashlib.sha256()
    for name in SOURCES:
        top = ROOT / name
        for path in sorted(top.rglob("*.py") if top.is_dir() else [top]):
            h.update(path.relative_to(ROOT).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:10]


def _settings(data: Path):
    from shipdelay.settings import Settings

    return Settings(data_dir=data, profile="local", online_store="sqlite", api_key=API_KEY)


def world(params: dict) -> tuple[Path, dict]:
    """The cached world's data directory (built on first use) and how it was built.

    SHIPDELAY_BENCH_WORLD=<data dir> serves a world built elsewhere instead (it must hold the
    lake, the SQLite feature store and a champion); its size is then whatever it is."""
    prebuilt = os.environ.get("SHIPDELAY_BENCH_WORLD")
    if prebuilt:
        from registry.loader import CHAMPION, alias_version

        data = Path(prebuilt).resolve()
        champion = alias_version(_settings(data), CHAMPION)
        if champion is None:
            raise RuntimeError(f"SHIPDELAY_BENCH_WORLD={data} has no champion")
        return data, {"shipments": None, "days": None, "seed": params["seed"],
                      "champion": champion, "cached": True, "build_wall_s": None,
                      "prebuilt": str(data)}
    key = f"service-{params['shipments']}-{params['days']}-{params['seed']}-{_source_hash()}"
    folder = WORLDS / key
    marker = folder / "built.json"
    if marker.exists():
        return folder / "data", {**json.loads(marker.read_text()), "cached": True}
    if folder.exists():  # an interrupted build: start again
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPDELAY_")}
    env.update({"SHIPDELAY_DATA_DIR": str(folder / "data"), "SHIPDELAY_PROFILE": "local",
                "SHIPDELAY_ONLINE_STORE": "sqlite", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"})
    steps = [["simulate", "--shipments", str(params["shipments"]), "--days", str(params["days"]),
              "--seed", str(params["seed"]), "--workers", "2", "--ceiling-shipments", "300",
              "--ceiling-draws", "40"],
             ["features", "build"], ["train"], ["promote"]]
    walls = {}
    for step in steps:
        cmd = [str(VENV_BIN / "shipdelay"), *step]
        print(f"   building the world: {shlex.join(cmd[1:])}", flush=True)
        t = time.perf_counter()
        with open(folder / "build.log", "ab") as log:
            done = subprocess.run(cmd, env=env, cwd=folder, stdout=log, stderr=subprocess.STDOUT,
                                  check=False)
        if done.returncode != 0:
            tail = (folder / "build.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{shlex.join(cmd)} exited with {done.returncode}:\n{tail}")
        walls[step[0] if step[0] != "features" else "features_build"] = round(
            time.perf_counter() - t, 1)
    from registry.loader import CHAMPION, alias_version

    champion = alias_version(_settings(folder / "data"), CHAMPION)
    if champion is None:
        raise RuntimeError("`shipdelay promote` left no champion in the benchmark world")
    facts = {**params, "build_wall_s": walls, "champion": champion, "key": key}
    marker.write_text(json.dumps(facts))
    return folder / "data", {**facts, "cached": False}


def live_ids(settings, rng: np.random.Generator, limit: int = 4_000) -> tuple[list[str], object]:
    """Shipments in flight at the world's now that the online store knows and has not delivered."""
    from features.online import online_vectors
    from features.store import get_store
    from serving.demo import in_flight

    moving, now = in_flight(settings, 10**9)
    moving = rng.permutation(np.asarray(moving, dtype=object))[:limit].tolist()
    store = get_store(settings)
    live = []
    for lo in range(0, len(moving), 500):
        v = online_vectors(store, moving[lo:lo + 500], now)
        live += v.loc[v["known"] & ~v["delivered"], "shipment_id"].tolist()
    if len(live) < 2 * BULK_IDS:
        raise RuntimeError(f"only {len(live)} live shipments in the benchmark world")
    return live, now


def _bodies(folder: Path, live: list[str], rng: np.random.Generator) -> dict[str, Path]:
    files = {"single": folder / "single.jsonl", "bulk": folder / "bulk.jsonl",
             "noop": folder / "noop.jsonl"}
    files["single"].write_text("".join(json.dumps({"shipment_ids": [i]}) + "\n"
                                       for i in rng.permutation(np.asarray(live, object))))
    files["bulk"].write_text("".join(
        json.dumps({"shipment_ids": rng.choice(live, BULK_IDS, replace=False).tolist()}) + "\n"
        for _ in range(300)))
    files["noop"].write_text("{}\n")
    return files


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The service as `shipdelay serve` starts it, in its own process group."""

    def __init__(self, settings, as_of, folder: Path, workers: int):
        from serving.serve import serve_command

        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        argv, env = serve_command(settings, "127.0.0.1", self.port, workers=workers,
                                  refresh_seconds=3600, as_of=as_of.isoformat())
        env["BENTOML_HOME"] = str(folder / "bentoml")
        self.command = shlex.join(argv)
        self.log = folder / "server.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=folder,
                                         start_new_session=True)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def wait_ready(self) -> float:
        import httpx

        t = time.perf_counter()
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the service exited with {self.proc.returncode}:\n"
                                   f"{self.tail()}")
            if time.perf_counter() - t > READY_TIMEOUT_S:
                raise TimeoutError(f"not ready in {READY_TIMEOUT_S} s:\n{self.tail()}")
            try:
                if httpx.get(f"{self.base}/readyz", timeout=5).status_code == 200:
                    return time.perf_counter() - t
            except httpx.TransportError:
                pass
            time.sleep(0.5)

    def cpu_seconds(self) -> float | None:
        try:
            import psutil
        except ImportError:
            return None
        try:
            procs = [psutil.Process(self.proc.pid)]
            procs += procs[0].children(recursive=True)
        except psutil.NoSuchProcess:
            return None
        total = 0.0
        for p in procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
            except ProcessLookupError:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def check_answers(server: Server, live: list[str]) -> dict:
    """One real answer before timing anything: a fast wrong answer must not pass for speed."""
    import httpx

    ids = live[:BULK_IDS]
    r = httpx.post(f"{server.base}/predict", json={"shipment_ids": ids},
                   headers={"x-api-key": API_KEY}, timeout=60)
    r.raise_for_status()
    items = r.json()
    bad = [i for i in items if not i["ok"]]
    if len(items) != len(ids) or bad:
        raise RuntimeError(f"/predict did not score every live shipment: {bad[:3]}")
    return {"checked_ids": len(ids), "model_version": items[0]["model_version"]}


def _wrk(url: str, bodies: Path, concurrency: int, seconds: float, max_requests: int) -> dict:
    """One wrk run (C, one thread driving `concurrency` keep-alive connections)."""
    cmd = [WRK, "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
           "-s", str(HERE / "wrk_post.lua"), url, "--", str(bodies), str(max_requests), API_KEY]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{out[-2000:]}")
    r = json.loads(lines[-1])
    window = r["duration_us"] / 1e6
    bad = r["non_2xx_3xx"] + sum(r["socket_errors"].values())
    lat = {k: v / 1e3 for k, v in r["latency_us"].items()}
    return {"client": "wrk", "concurrency": concurrency, "requests": r["requests"],
            "ok": r["requests"] - r["non_2xx_3xx"],
            "statuses": {"2xx": r["requests"] - r["non_2xx_3xx"], "other": r["non_2xx_3xx"]},
            "errors": r["socket_errors"] if bad else [], "window_s": round(window, 3),
            "rate_per_s": round(r["requests"] / window, 2),
            "ok_rate_per_s": round((r["requests"] - r["non_2xx_3xx"]) / window, 2),
            "p50_ms": lat["p50"], "p90_ms": lat["p90"], "p99_ms": lat["p99"],
            "max_ms": lat["max"], "mean_ms": round(lat["mean"], 3),
            "client_cpu_ms_per_request": round(
                (usage.ru_utime + usage.ru_stime) * 1e3 / max(1, r["requests"]), 4),
            "loadgen_command": shlex.join(["wrk", *cmd[1:]])}


def _python_client(url: str, bodies: Path, concurrency: int, seconds: float, warmup: float,
                   max_requests: int) -> dict:
    """The fallback without wrk: benchmarks/loadgen.py (httpx, asyncio) in its own process."""
    cmd = [sys.executable, str(HERE / "loadgen.py"), "--url", url, "--bodies", str(bodies),
           "--concurrency", str(concurrency), "--seconds", str(seconds), "--warmup-seconds",
           str(warmup), "--max-requests", str(max_requests), "--api-key", API_KEY]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False,
                          timeout=seconds + warmup + 300)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return {**out, "client": "loadgen.py (httpx)",
            "loadgen_command": shlex.join(["python", "benchmarks/loadgen.py", *cmd[3:]])}


def load(server: Server, path: str, bodies: Path, concurrency: int, quick: bool) -> dict:
    """Warm up, then measure one (path, bodies, concurrency) run from a separate process."""
    seconds = RUN_S["quick" if quick else "full"]
    warmup = WARMUP_S["quick" if quick else "full"]
    url = f"{server.base}{path}"
    if WRK:
        _wrk(url, bodies, concurrency, warmup, MAX_REQUESTS)  # warm-up, not counted
    load_before = os.getloadavg()[0]
    cpu0 = server.cpu_seconds()
    out = (_wrk(url, bodies, concurrency, seconds, MAX_REQUESTS) if WRK else
           _python_client(url, bodies, concurrency, seconds, warmup, MAX_REQUESTS))
    cpu1 = server.cpu_seconds()
    out.update({"load_avg_1m_before": round(load_before, 2),
                "load_avg_1m_after": round(os.getloadavg()[0], 2)})
    if cpu0 is not None and cpu1 is not None and out["requests"]:
        # wrk: the measured window only; the Python client: its warm-up requests too
        out["server_cpu_ms_per_request"] = round((cpu1 - cpu0) * 1e3 / out["requests"], 3)
    if out["ok"] < 0.99 * max(1, out["requests"]):
        print(f"   warning: {path} c={concurrency}: statuses {out['statuses']} {out['errors']}",
              flush=True)
    return out


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
    - the online read, direct (`OnlineReader.vectors`) and through Feast (`online_vectors`),
      1 and 100 ids per call."""
    from features.online import online_vectors
    from features.online_fast import OnlineReader
    from features.store import get_store
    from registry.loader import load_by_alias
    from serving.model_holder import limit_threads
    from serving.scorer import Scorer

    bundle = load_by_alias(settings)
    limit_threads(bundle, 1)
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
        draws = [rng.choice(live, n, replace=False).tolist() for _ in range(k // 4)]
        out[("read_direct", n)] = _timed(lambda i: reader.vectors(i, now), draws)
        out[("read_feast", n)] = _timed(lambda i: online_vectors(store, i, now), draws)
    return out


def run(quick: bool) -> list[dict]:
    from shipdelay.lake import Lake  # noqa: F401 - fail early if the package is not importable

    params = QUICK if quick else FULL
    workers = int(os.environ.get("SHIPDELAY_BENCH_WORKERS", "1"))
    data, built = world(params)
    settings = _settings(data)
    rng = np.random.default_rng(params["seed"])
    live, now = live_ids(settings, rng)
    runs: dict[str, dict] = {}
    with scratch_dir("shipdelay-bench-service-") as tmp:
        bodies = _bodies(tmp, live, rng)
        server = Server(settings, now, tmp, workers)
        try:
            ready_s = server.wait_ready()
            checked = check_answers(server, live)
            plan = [("noop_c1", "/noop", "noop", C_LATENCY),
                    ("predict1_c1", "/predict", "single", C_LATENCY),
                    ("noop_c32", "/noop", "noop", C_THROUGHPUT),
                    ("predict1_c32", "/predict", "single", C_THROUGHPUT),
                    ("predict100_c8", "/predict", "bulk", C_BULK)]
            for name, path, body, c in plan:
                print(f"   {name}: POST {path} ({body}), concurrency {c}", flush=True)
                runs[name] = load(server, path, bodies[body], c, quick)
        finally:
            server.stop()
        server_command = server.command.replace(str(data), "<world>")
    ref = in_process(settings, live, now, rng, quick)

    applies = not quick
    facts = {"world": {k: built.get(k) for k in ("shipments", "days", "seed", "champion",
                                                 "cached", "build_wall_s", "prebuilt")},
             "online_store": "sqlite", "workers": workers, "live_ids": len(live),
             "as_of": now.isoformat(), "server_command": server_command,
             "ready_s": round(ready_s, 1), **checked,
             "batching": os.environ.get("SHIPDELAY_SERVE_BATCHING", "1")}

    def summary(name: str) -> dict:
        r = runs[name]
        keep = ("concurrency", "requests", "statuses", "window_s", "rate_per_s", "p50_ms",
                "p90_ms", "p99_ms", "max_ms", "client_cpu_ms_per_request",
                "server_cpu_ms_per_request", "load_avg_1m_before", "load_avg_1m_after",
                "client", "loadgen_command")
        return {k: r.get(k) for k in keep}

    n1, n32, n100 = runs["noop_c1"], runs["noop_c32"], runs["predict100_c8"]
    p1, p32 = runs["predict1_c1"], runs["predict1_c32"]

    def rate(key) -> float:  # shipments/s of the median call
        return round(key[1] * 1e3 / float(np.median(ref[key])), 1)

    def stats(key) -> dict:
        t = ref[key]
        return {"p50_ms": round(float(np.median(t)), 3),
                "p99_ms": round(float(np.percentile(t, 99)), 3), "calls": len(t)}

    scorer_rate = rate(("score", BULK_IDS))
    bulk_rate = round(n100["ok_rate_per_s"] * BULK_IDS, 1)
    ratio = p32["ok_rate_per_s"] / n32["ok_rate_per_s"] if n32["ok_rate_per_s"] else 0.0
    rows = [
        row("predict_1id_c1_p50", p1.get("p50_ms"), "ms", measured_command="/predict 1 id, c=1",
            reference={"name": "/noop, concurrency 1, p50 (same server, same run)",
                       "value": n1.get("p50_ms"), "unit": "ms"},
            run=summary("predict1_c1"), **facts),
        row("predict_1id_c1_p99", p1.get("p99_ms"), "ms", target=("<=", 15.0),
            target_applies=applies, measured_command="/predict 1 id, c=1",
            reference={"name": "/noop, concurrency 1, p99", "value": n1.get("p99_ms"),
                       "unit": "ms", "ratio": _ratio(p1.get("p99_ms"), n1.get("p99_ms"))},
            run=summary("predict1_c1"), **facts),
        row("predict_1id_c32_throughput", p32["ok_rate_per_s"], "req/s",
            measured_command="/predict 1 id, c=32",
            reference={"name": "/noop, concurrency 32 (same server, same run)",
                       "value": n32["ok_rate_per_s"], "unit": "req/s", "ratio": round(ratio, 3)},
            run=summary("predict1_c32"), **facts),
        row("predict_vs_noop_throughput_c32", round(ratio, 3), "x", target=(">=", 0.7),
            target_applies=applies, measured_command="/predict 1 id vs /noop, c=32",
            reference={"name": "/noop, concurrency 32", "value": n32["ok_rate_per_s"],
                       "unit": "req/s"}, run=summary("predict1_c32"), **facts),
        row("predict_100ids_c8_shipments_per_s", bulk_rate, "shipments/s",
            target=(">=", 20_000), target_applies=applies,
            measured_command=f"/predict {BULK_IDS} ids, c={C_BULK}",
            reference={"name": f"Scorer.score in process, {BULK_IDS} rows per call (median)",
                       "value": scorer_rate, "unit": "shipments/s",
                       "ratio": round(bulk_rate / scorer_rate, 3) if scorer_rate else None},
            run=summary("predict100_c8"), **facts),
        row("noop_c1_p50", n1.get("p50_ms"), "ms", measured_command="/noop, c=1",
            p99_ms=n1.get("p99_ms"), run=summary("noop_c1"), **facts),
        row("noop_c32_throughput", n32["ok_rate_per_s"], "req/s", measured_command="/noop, c=32",
            run=summary("noop_c32"), **facts),
    ]
    for (what, n), label in (((k, n), k) for k in ("score", "score_no_reasons")
                             for n in (1, BULK_IDS)):
        rows.append(row(f"{label}_{n}row_inprocess", rate((what, n)), "shipments/s",
                        measured_command=f"Scorer.score({n} row(s)"
                        + (", reasons=False)" if what == "score_no_reasons" else ")"),
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


def _ratio(a, b):
    return round(a / b, 2) if a is not None and b else None
