"""The served process and the load on it, for the service benchmark.

`Server` starts the service exactly as `shipdelay serve` does (`serving.serve.serve_command`) in
its own process group on 127.0.0.1. `load` measures one route at one concurrency from a
separate process: wrk (C; one thread driving every keep-alive connection, bodies taken in turn
by benchmarks/wrk_post.lua) when it is installed, else benchmarks/loadgen.py (asyncio). Each run
is bounded in time and in request count, after an untimed warm-up run.
"""

from __future__ import annotations

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

from service_world import API_KEY, BULK_IDS

HERE = Path(__file__).resolve().parent
RUN_S = {"full": 15.0, "quick": 4.0}
WARMUP_S = {"full": 2.0, "quick": 1.0}
MAX_REQUESTS = 100_000
READY_TIMEOUT_S = 300
WRK = shutil.which("wrk")  # Debian: apt-get install wrk; else the Python client


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
        env["SHIPDELAY_SERVE_NOOP"] = "1"  # /noop, the same-run reference, is served only so
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

    def cpu_by_process(self) -> dict[int, float] | None:
        """CPU seconds so far of each process of the server (arbiter and workers)."""
        try:
            import psutil
        except ImportError:
            return None
        try:
            procs = [psutil.Process(self.proc.pid)]
            procs += procs[0].children(recursive=True)
        except psutil.NoSuchProcess:
            return None
        out = {}
        for p in procs:
            try:
                t = p.cpu_times()
                out[p.pid] = t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return out

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
    """The fallback without wrk: benchmarks/loadgen.py (asyncio, its own HTTP/1.1) in its own
    process."""
    cmd = [sys.executable, str(HERE / "loadgen.py"), "--url", url, "--bodies", str(bodies),
           "--concurrency", str(concurrency), "--seconds", str(seconds), "--warmup-seconds",
           str(warmup), "--max-requests", str(max_requests), "--api-key", API_KEY]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False,
                          timeout=seconds + warmup + 300)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return {**out, "client": "loadgen.py",
            "loadgen_command": shlex.join(["python", "benchmarks/loadgen.py", *cmd[3:]])}


def load(server: Server, path: str, bodies: Path, concurrency: int, quick: bool,
         seconds: float | None = None) -> dict:
    """Warm up, then measure one (path, bodies, concurrency) run from a separate process
    (`seconds` long, default RUN_S)."""
    seconds = seconds or RUN_S["quick" if quick else "full"]
    warmup = WARMUP_S["quick" if quick else "full"]
    url = f"{server.base}{path}"
    if WRK:
        _wrk(url, bodies, concurrency, warmup, MAX_REQUESTS)  # warm-up, not counted
    load_before = os.getloadavg()[0]
    cpu0 = server.cpu_by_process()
    out = (_wrk(url, bodies, concurrency, seconds, MAX_REQUESTS) if WRK else
           _python_client(url, bodies, concurrency, seconds, warmup, MAX_REQUESTS))
    cpu1 = server.cpu_by_process()
    out.update({"load_avg_1m_before": round(load_before, 2),
                "load_avg_1m_after": round(os.getloadavg()[0], 2)})
    if cpu0 is not None and cpu1 is not None and out["requests"]:
        # wrk: the measured window only; the Python client: its warm-up requests too
        used = {pid: cpu1[pid] - cpu0.get(pid, 0.0) for pid in cpu1}
        out["server_cpu_ms_per_request"] = round(sum(used.values()) * 1e3 / out["requests"], 3)
        # how the work spread over the server's processes (busiest first): with several
        # workers, an even spread is what the extra cores buy
        out["server_cpu_s_by_process"] = sorted((round(v, 2) for v in used.values()),
                                                reverse=True)
    if out["ok"] < 0.99 * max(1, out["requests"]):
        print(f"   warning: {path} c={concurrency}: statuses {out['statuses']} {out['errors']}",
              flush=True)
    return out




def merged(parts: list[dict]) -> dict:
    """Runs of one (path, concurrency) taken in turns with another, as one run: counts and
    windows summed, the rate over the summed window; each turn's rate and latencies kept."""
    out = dict(parts[0])
    statuses: dict[str, int] = {}
    for p in parts:
        for k, v in p["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    window = sum(p["window_s"] for p in parts)
    requests, ok = sum(p["requests"] for p in parts), sum(p["ok"] for p in parts)
    out.update({"requests": requests, "ok": ok, "statuses": statuses,
                "window_s": round(window, 3), "rate_per_s": round(requests / window, 2),
                "ok_rate_per_s": round(ok / window, 2),
                "turns": [{k: p.get(k) for k in ("ok_rate_per_s", "p50_ms", "p99_ms",
                                                 "server_cpu_ms_per_request",
                                                 "server_cpu_s_by_process",
                                                 "load_avg_1m_before")} for p in parts]})
    if all("connections_opened" in p for p in parts):
        out["connections_opened"] = sum(p["connections_opened"] for p in parts)
    for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "client_cpu_ms_per_request",
              "server_cpu_ms_per_request"):
        values = [p[k] for p in parts if p.get(k) is not None]
        out[k] = round(float(sum(values) / len(values)), 3) if values else None
    out["max_ms"] = max((p.get("max_ms") or 0.0) for p in parts)
    return out
