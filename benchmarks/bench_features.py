"""The 1M-shipment world: `shipdelay features build`, then a training-set build.

Targets: the training-set build gives >= 5,000,000 snapshot rows in <= 300 s wall on 2 cores;
the feature build takes <= 300 s; each step peaks at <= 6 GB (the offline path's bounded memory
on one machine). Feature build + training set together are measured without a target.

A world is simulated first into a scratch SHIPDELAY_DATA_DIR (timed apart, in `details`). Both
measured steps run as subprocesses with that data directory and a scratch working directory (so
a project .env cannot redirect them): the feature build as the installed console script, the
training set as `.venv/bin/python -c TRAINING_SCRIPT`, which calls `build_training_set` and
writes its row count. Wall time and peak memory are those of the process tree (see harness).

Same-run reference: Feast's own `get_historical_features` through the FeatureService (the path
the DuckDB fast path replaces) on a 2,000-row sample of the training set just built, over the
same offline tables, in a subprocess. Its rows/s sets the fast path's rows/s in proportion.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness import GB, VENV_BIN, ProcessRun, check, measure_command, psutil, row, scratch_dir

FULL = {"shipments": 1_000_000, "days": 365, "seed": 7, "workers": 2}
QUICK = {**FULL, "shipments": 50_000, "days": 120}
ROWS_TARGET = 5_000_000
TIME_TARGET_S = 300.0
# the offline path's bounded memory on one machine (2 cores, 24 GB): the feature build in 5 min,
# each offline step within 6 GB
FEATURE_BUILD_S = 300.0
PEAK_GB = 6.0
SAMPLE_ROWS = 2_000
# the local profile's stores, whatever the caller's environment says
PROFILE_ENV = {"SHIPDELAY_PROFILE": "local", "SHIPDELAY_ONLINE_STORE": "sqlite"}
# Stop a measured step when the machine is this close to running out of memory, rather than
# let the kernel's OOM killer pick a victim (which may be another program on a shared box).
MIN_AVAILABLE_GB = 1.0

# Run in the measured subprocess: times the build inside the process too (without interpreter
# start-up and imports), then keeps a small sample for the Feast reference. The sample is drawn
# after the timer stops.
TRAINING_SCRIPT = """\
import json, sys, time
t0 = time.perf_counter()
from features.store import offline_dir
from shipdelay.lake import Lake
from shipdelay.settings import get_settings
from training.dataset import build_training_set
t1 = time.perf_counter()
s = get_settings()
ts = build_training_set(Lake(s.lake_dir), offline_dir(s))
t2 = time.perf_counter()
n = int(sys.argv[3])
ts.sample(min(n, len(ts)), random_state=7).to_parquet(sys.argv[2], index=False)
json.dump({"rows": len(ts), "columns": ts.shape[1], "shipments": int(ts["shipment_id"].nunique()),
           "frame_bytes": int(ts.memory_usage(deep=False).sum()),
           "import_s": t1 - t0, "build_s": t2 - t1}, open(sys.argv[1], "w"))
"""

# Feast's get_historical_features on the sample (timed from store creation to the frame).
FEAST_SCRIPT = """\
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import pandas as pd
from features.store import get_store
from shipdelay.settings import get_settings
from training.dataset import feast_features
sample = pd.read_parquet(sys.argv[2])
t0 = time.perf_counter()
out = feast_features(get_store(get_settings()), sample)
t1 = time.perf_counter()
json.dump({"rows": len(out), "seconds": t1 - t0}, open(sys.argv[1], "w"))
"""


class MemoryGuard(threading.Thread):
    """Kill this process's children (the measured tree) if available memory falls below
    `min_available_gb`; records that it did. Without psutil it does nothing."""

    def __init__(self, min_available_gb: float, interval: float = 0.1):
        super().__init__(daemon=True)
        self.min_bytes, self.interval = min_available_gb * GB, interval
        self.tripped: dict | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        me = psutil.Process()
        while not self.stop.wait(self.interval):
            available = psutil.virtual_memory().available
            if available >= self.min_bytes:
                continue
            children = me.children(recursive=True)
            rss = 0
            for child in children:
                try:
                    rss += child.memory_info().rss
                    child.send_signal(signal.SIGKILL)
                except psutil.NoSuchProcess:
                    pass
            self.tripped = {"available_gb": round(available / GB, 3),
                            "tree_rss_gb": round(rss / GB, 3)}
            return


@contextmanager
def memory_guard(min_available_gb: float = MIN_AVAILABLE_GB) -> Iterator[MemoryGuard | None]:
    guard = MemoryGuard(min_available_gb) if psutil is not None else None
    if guard:
        guard.start()
    try:
        yield guard
    finally:
        if guard:
            guard.stop.set()
            guard.join()


def _failure(proc: ProcessRun, guard: MemoryGuard | None) -> str:
    if guard is not None and guard.tripped:
        return (f"stopped by the benchmark's memory guard (SIGKILL) when available memory fell "
                f"to {guard.tripped['available_gb']} GB with the tree at "
                f"{guard.tripped['tree_rss_gb']} GB RSS: out of memory")
    if proc.returncode == -signal.SIGKILL:
        return "killed by SIGKILL (exit -9): the kernel's OOM killer, see dmesg"
    return f"exited with {proc.returncode}"


def simulate_command(params: dict) -> list[str]:
    return [str(VENV_BIN / "shipdelay"), "simulate", "--shipments", str(params["shipments"]),
            "--days", str(params["days"]), "--seed", str(params["seed"]),
            "--workers", str(params["workers"]), "--ceiling-shipments", "0"]


def _memory(proc: ProcessRun) -> dict:
    return {"method": proc.memory_method, "samples": proc.samples,
            "largest_process_gb": round(proc.largest_process_bytes / GB, 3)}


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _python(script: str, *args: object) -> list[str]:
    return [str(VENV_BIN / "python"), "-c", script, *map(str, args)]


ENV_SHOWN = "SHIPDELAY_DATA_DIR=<tmp> SHIPDELAY_PROFILE=local SHIPDELAY_ONLINE_STORE=sqlite"
FEAT_CMD = [str(VENV_BIN / "shipdelay"), "features", "build"]
FEAT_SHOWN = f"{ENV_SHOWN} {shlex.join(FEAT_CMD)}"
TS_SHOWN = (f"{ENV_SHOWN} {VENV_BIN / 'python'} -c 'build_training_set(Lake(settings.lake_dir), "
            "offline_dir(settings))' (bench_features.TRAINING_SCRIPT)")
FEAST_SHOWN = (f"{ENV_SHOWN} {VENV_BIN / 'python'} -c 'feast_features(get_store(settings), "
               "sample)' (bench_features.FEAST_SCRIPT)")
TARGET_SCOPE = "the training-set build alone (feature tables already built)"


def _world(params: dict, sim: ProcessRun, sim_cmd: list[str], lake_bytes: int) -> dict:
    return {**params, "ceiling_shipments": 0, "simulate_wall_s": round(sim.wall_s, 2),
            "simulate_peak_gb": round(sim.peak_bytes / GB, 3), "lake_bytes": lake_bytes,
            "simulate_command": f"SHIPDELAY_DATA_DIR=<tmp> {shlex.join(sim_cmd)}",
            "cwd": "<tmp>"}


def _feature_rows(world: dict, feat: ProcessRun, offline_bytes: int,
                  applies: bool) -> list[dict]:
    return [
        row("feature_build_wall_time", round(feat.wall_s, 2), "s", measured_command=FEAT_SHOWN,
            target=("<=", FEATURE_BUILD_S), target_applies=applies,
            offline_bytes=offline_bytes, **world),
        row("feature_build_peak_memory", round(feat.peak_bytes / GB, 3), "GB",
            target=("<=", PEAK_GB), target_applies=applies,
            measured_command=FEAT_SHOWN, **_memory(feat), **world),
    ]


def _training_failed(world: dict, train: ProcessRun, guard: MemoryGuard | None,
                     applies: bool) -> list[dict]:
    """The training-set build did not finish: the rows target fails (0 rows came out); the wall
    time up to the failure is kept without a target (it is not a build time)."""
    why = _failure(train, guard)
    print(f"   training-set build failed: {why}", file=sys.stderr, flush=True)
    facts = {**world, "failed": why, "output_tail": train.output_tail[-600:],
             "target_scope": TARGET_SCOPE}
    return [
        row("training_set_rows", 0, "rows", target=(">=", ROWS_TARGET), target_applies=applies,
            measured_command=TS_SHOWN, **facts),
        row("training_set_wall_time_until_failure", round(train.wall_s, 2), "s",
            measured_command=TS_SHOWN, **facts),
        row("training_set_peak_memory_until_failure", round(train.peak_bytes / GB, 3), "GB",
            measured_command=TS_SHOWN, **_memory(train), **facts),
    ]


def run(quick: bool, params: dict | None = None) -> list[dict]:
    """`params` overrides the size (e.g. to find a size that fits in memory); targets are then
    shown but not judged, as at quick size."""
    params = params or (QUICK if quick else FULL)
    applies = params == FULL
    sim_cmd = simulate_command(params)
    with scratch_dir("shipdelay-bench-features-") as tmp:
        data = tmp / "data"
        env = {**os.environ, **PROFILE_ENV, "SHIPDELAY_DATA_DIR": str(data)}
        sim = measure_command(sim_cmd, env=env, cwd=tmp)  # setup: reported in details only
        check(sim, sim_cmd)
        world = _world(params, sim, sim_cmd, _dir_bytes(data / "lake"))

        with memory_guard() as guard:
            feat = measure_command(FEAT_CMD, env=env, cwd=tmp)
        if feat.returncode != 0:
            raise RuntimeError(f"{shlex.join(FEAT_CMD)}: {_failure(feat, guard)}\n"
                               f"{feat.output_tail}")
        feature_rows = _feature_rows(world, feat, _dir_bytes(data / "feast" / "offline"),
                                     applies)

        ts_out, sample = tmp / "training.json", tmp / "sample.parquet"
        ts_cmd = _python(TRAINING_SCRIPT, ts_out, sample, SAMPLE_ROWS)
        with memory_guard() as guard:
            train = measure_command(ts_cmd, env=env, cwd=tmp)
        if train.returncode != 0:
            return _training_failed(world, train, guard, applies) + feature_rows
        ts = json.loads(ts_out.read_text())

        feast_out = tmp / "feast.json"
        feast_cmd = _python(FEAST_SCRIPT, feast_out, sample)
        feast = measure_command(feast_cmd, env=env, cwd=tmp)
        check(feast, feast_cmd)
        ref = json.loads(feast_out.read_text())

    feast_name = (f"Feast get_historical_features (FeatureService delay_model_v1) on a "
                  f"{ref['rows']:,}-row sample of this training set")
    feast_rps = ref["rows"] / ref["seconds"]
    fast_rps = ts["rows"] / ts["build_s"]
    ts_facts = {**world, "rows": ts["rows"], "columns": ts["columns"],
                "shipments_in_set": ts["shipments"], "frame_gb": round(ts["frame_bytes"] / GB, 3),
                "in_process_build_s": round(ts["build_s"], 2),
                "import_s": round(ts["import_s"], 2), "target_scope": TARGET_SCOPE}
    both = feat.wall_s + train.wall_s
    return [
        row("training_set_rows", ts["rows"], "rows", target=(">=", ROWS_TARGET),
            target_applies=applies, measured_command=TS_SHOWN, **ts_facts),
        row("training_set_wall_time", round(train.wall_s, 2), "s", target=("<=", TIME_TARGET_S),
            target_applies=applies, measured_command=TS_SHOWN, **ts_facts),
        row("training_set_peak_memory", round(train.peak_bytes / GB, 3), "GB",
            target=("<=", PEAK_GB), target_applies=applies,
            measured_command=TS_SHOWN, **_memory(train), **world),
        row("training_set_throughput", round(ts["rows"] / train.wall_s), "rows/s",
            reference={"name": feast_name, "value": round(feast_rps, 1), "unit": "rows/s",
                       "ratio": round(fast_rps / feast_rps, 1)},
            measured_command=TS_SHOWN, in_process_rows_per_s=round(fast_rps),
            ratio_basis="in-process rows/s of both (fast path incl. snapshot selection and "
                        "labels; Feast incl. store creation), interpreter start-up excluded",
            **ts_facts),
        *feature_rows,
        row("features_plus_training_wall_time", round(both, 2), "s",
            measured_command=f"{FEAT_SHOWN}; then the training-set build",
            feature_build_s=round(feat.wall_s, 2), training_set_s=round(train.wall_s, 2),
            within_300_s=both <= TIME_TARGET_S,
            note="no target of its own: the 300 s target is on the training-set build", **world),
        row("reference_feast_historical", round(ref["seconds"], 3), "s",
            measured_command=FEAST_SHOWN, rows=ref["rows"], rows_per_s=round(feast_rps, 1),
            process_wall_s=round(feast.wall_s, 2),
            process_peak_gb=round(feast.peak_bytes / GB, 3), **world),
    ]
