"""Helpers shared by the benchmark modules: measure one command, make a result row.

A benchmark module (`bench_<name>.py`) exposes `run(quick: bool) -> list[dict]`; each dict is
made with `row(...)`. The runner (`run.py`) adds the machine, the date, the command and
pass/fail, so the modules only measure.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
GB = 1e9  # decimal gigabyte: the stricter reading of a "6 GB" target
SHIPDELAY = str(VENV_BIN / "shipdelay")
PROFILE_ENV = {"SHIPDELAY_PROFILE": "local", "SHIPDELAY_ONLINE_STORE": "sqlite"}

try:
    import psutil
except ImportError:  # the fallback below still gives the largest single process
    psutil = None


def row(metric: str, value: float, unit: str, *, target: tuple[str, float] | None = None,
        target_applies: bool = True, reference: dict | None = None,
        measured_command: str | None = None, **details: object) -> dict:
    """One result. `target` is (op, value) with op in <=, >=, <, >; `reference` names the
    same-run reference workload (name, value, unit, ratio). With `target_applies=False` the
    target is shown but not judged (e.g. a quick run at a smaller size than the target's)."""
    return {"metric": metric, "value": value, "unit": unit,
            "target": None if target is None else {"op": target[0], "value": target[1]},
            "target_applies": target_applies, "reference": reference,
            "measured_command": measured_command, "details": details}


@dataclass
class ProcessRun:
    wall_s: float
    returncode: int
    peak_bytes: int  # see `memory_method`
    memory_method: str
    largest_process_bytes: int  # ru_maxrss of the biggest process in the tree (from wait4)
    sampled_peak_bytes: int  # the psutil tree samples alone (0 without psutil)
    samples: int
    output_tail: str


class _TreeSampler(threading.Thread):
    """Sum the RSS of a process and all its descendants every `interval` seconds, keep the max.

    Summed RSS counts pages shared between forked workers once per process, so it overstates
    the real footprint: conservative against a memory ceiling.
    """

    def __init__(self, pid: int, interval: float):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak, self.samples = 0, 0
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            top = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self.stop.is_set():
            total = 0
            try:
                procs = [top, *top.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for p in procs:
                try:
                    total += p.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            self.peak, self.samples = max(self.peak, total), self.samples + 1
            self.stop.wait(self.interval)


def measure_command(cmd: Sequence[str], *, env: dict[str, str] | None = None,
                    cwd: Path | None = None, interval: float = 0.2,
                    log: Path | None = None) -> ProcessRun:
    """Run `cmd` to completion: wall time, peak memory of its process tree, exit code.

    The command runs in its own session so an interrupted benchmark can stop it and its
    workers. Output goes to `log` (or a temporary file); its tail is kept for error messages.
    """
    with tempfile.TemporaryDirectory(prefix="bench-log-") as tmp:
        log_path = log or Path(tmp) / "output.log"
        with open(log_path, "wb") as out:
            start = time.perf_counter()
            proc = subprocess.Popen(list(cmd), env=env, cwd=cwd, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            sampler = _TreeSampler(proc.pid, interval) if psutil is not None else None
            if sampler:
                sampler.start()
            try:
                # wait4 (not Popen.wait) also returns the child's rusage: its ru_maxrss is the
                # largest RSS of any single process in the tree that was waited for.
                _, status, usage = os.wait4(proc.pid, 0)
            except BaseException:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait()
                raise
            finally:
                if sampler:
                    sampler.stop.set()
            wall = time.perf_counter() - start
            proc.returncode = os.waitstatus_to_exitcode(status)
        if sampler:
            sampler.join()
        tail = log_path.read_bytes()[-4000:].decode(errors="replace")
    largest = usage.ru_maxrss * 1024  # KiB on Linux
    if sampler is not None and sampler.samples:
        peak = max(sampler.peak, largest)
        method = (f"psutil: summed RSS of the process tree, sampled every {interval} s "
                  "(never below the largest single process)")
    else:
        peak, method = largest, "ru_maxrss: largest single process of the tree (psutil missing)"
    return ProcessRun(wall, proc.returncode, peak, method, largest,
                      sampler.peak if sampler else 0, sampler.samples if sampler else 0, tail)


def check(run: ProcessRun, cmd: Sequence[str]) -> None:
    """Raise with the command's last output if it failed."""
    if run.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} exited with {run.returncode}:\n{run.output_tail}")


def redis_problem(url: str, flush: bool = False) -> str | None:
    """Why the Redis database at `url` cannot be used by a benchmark (None: it can); `flush`
    empties it on the way (a benchmark's own database only)."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=5)
        client.flushdb() if flush else client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means: no Redis rows
        return f"{type(exc).__name__}: {exc}"
    return None


@contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A temporary directory (under $TMPDIR) that is deleted afterwards, even on error."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


def cache_root() -> Path:
    """Where built worlds are kept between runs (SHIPDELAY_BENCH_CACHE overrides)."""
    return Path(os.environ.get("SHIPDELAY_BENCH_CACHE",
                               Path.home() / ".cache" / "shipdelay-bench"))


def cached_world(name: str, params: dict, steps: list[list[str]], sources: Sequence[Path],
                 env: dict[str, str]) -> tuple[Path, dict]:
    """The data directory of a world built by `steps` (commands run with SHIPDELAY_DATA_DIR set
    to it), built when missing and kept: building a large world takes many minutes. The cache
    key covers `params` and the contents of `sources` (the code that shapes the world);
    SHIPDELAY_BENCH_REBUILD=1 builds it again. Returns the directory and the build's facts."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()
                            + b"".join(p.read_bytes() for p in sources)).hexdigest()
    folder = cache_root() / f"{name}-{digest[:12]}"
    done = folder / "built.json"
    if done.exists() and os.environ.get("SHIPDELAY_BENCH_REBUILD") != "1":
        return folder / "data", {**json.loads(done.read_text()), "cached": True}
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    run_env = {**os.environ, **env, "SHIPDELAY_DATA_DIR": str(folder / "data")}
    facts = {"params": params, "steps": {}}
    for cmd in steps:
        print(f"   building the {name} world: {shlex.join(cmd[1:3])[:60]}", flush=True)
        proc = measure_command(cmd, env=run_env, cwd=folder)
        check(proc, cmd)
        facts["steps"][shlex.join(cmd[1:])[:200]] = {"wall_s": round(proc.wall_s, 1),
                                               "peak_gb": round(proc.peak_bytes / 1e9, 2)}
    done.write_text(json.dumps(facts))
    return folder / "data", {**facts, "cached": False}


def simulate_command(params: dict) -> list[str]:
    """`shipdelay simulate` for a world's parameters (shipments, days, seed, workers, ceiling)."""
    return [SHIPDELAY, "simulate", "--shipments", str(params["shipments"]), "--days",
            str(params["days"]), "--seed", str(params["seed"]), "--workers",
            str(params["workers"]), "--ceiling-shipments", str(params["ceiling_shipments"]),
            "--ceiling-draws", str(params["ceiling_draws"])]
