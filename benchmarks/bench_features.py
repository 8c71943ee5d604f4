"""The 1M-shipment world: `shipdelay features build`, then a training-set build.

Target (on the training-set build only): >= 5,000,000 snapshot rows in <= 300 s wall on 2
cores. The feature build is measured too, and feature build + training set together, without a
target of their own.

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
from pathlib import Path

from harness import GB, VENV_BIN, ProcessRun, check, measure_command, row, scratch_dir

FULL = {"shipments": 1_000_000, "days": 365, "seed": 7, "workers": 2}
QUICK = {**FULL, "shipments": 50_000, "days": 120}
ROWS_TARGET = 5_000_000
TIME_TARGET_S = 300.0
SAMPLE_ROWS = 2_000
# the local profile's stores, whatever the caller's environment says
PROFILE_ENV = {"SHIPDELAY_PROFILE": "local", "SHIPDELAY_ONLINE_STORE": "sqlite"}

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


def run(quick: bool) -> list[dict]:
    params = QUICK if quick else FULL
    applies = params == FULL
    sim_cmd = simulate_command(params)
    feat_cmd = [str(VENV_BIN / "shipdelay"), "features", "build"]
    with scratch_dir("shipdelay-bench-features-") as tmp:
        data = tmp / "data"
        env = {**os.environ, **PROFILE_ENV, "SHIPDELAY_DATA_DIR": str(data)}
        sim = measure_command(sim_cmd, env=env, cwd=tmp)  # setup: reported in details only
        check(sim, sim_cmd)
        lake_bytes = _dir_bytes(data / "lake")

        feat = measure_command(feat_cmd, env=env, cwd=tmp)
        check(feat, feat_cmd)
        offline_bytes = _dir_bytes(data / "feast" / "offline")

        ts_out, sample = tmp / "training.json", tmp / "sample.parquet"
        ts_cmd = _python(TRAINING_SCRIPT, ts_out, sample, SAMPLE_ROWS)
        train = measure_command(ts_cmd, env=env, cwd=tmp)
        check(train, ts_cmd)
        ts = json.loads(ts_out.read_text())

        feast_out = tmp / "feast.json"
        feast_cmd = _python(FEAST_SCRIPT, feast_out, sample)
        feast = measure_command(feast_cmd, env=env, cwd=tmp)
        check(feast, feast_cmd)
        ref = json.loads(feast_out.read_text())

    env_shown = "SHIPDELAY_DATA_DIR=<tmp> SHIPDELAY_PROFILE=local SHIPDELAY_ONLINE_STORE=sqlite"
    feat_shown = f"{env_shown} {shlex.join(feat_cmd)}"
    ts_shown = (f"{env_shown} {VENV_BIN / 'python'} -c 'build_training_set(Lake(settings.lake_dir),"
                " offline_dir(settings))' (bench_features.TRAINING_SCRIPT)")
    feast_name = (f"Feast get_historical_features (FeatureService delay_model_v1) on a "
                  f"{ref['rows']:,}-row sample of this training set")
    feast_rps = ref["rows"] / ref["seconds"]
    fast_rps = ts["rows"] / ts["build_s"]
    world = {**params, "ceiling_shipments": 0, "simulate_wall_s": round(sim.wall_s, 2),
             "simulate_peak_gb": round(sim.peak_bytes / GB, 3), "lake_bytes": lake_bytes,
             "simulate_command": f"SHIPDELAY_DATA_DIR=<tmp> {shlex.join(sim_cmd)}",
             "cwd": "<tmp>"}
    ts_facts = {**world, "rows": ts["rows"], "columns": ts["columns"],
                "shipments_in_set": ts["shipments"], "frame_gb": round(ts["frame_bytes"] / GB, 3),
                "in_process_build_s": round(ts["build_s"], 2),
                "import_s": round(ts["import_s"], 2),
                "target_scope": "the training-set build alone (feature tables already built)"}
    both = feat.wall_s + train.wall_s
    rows = [
        row("training_set_rows", ts["rows"], "rows", target=(">=", ROWS_TARGET),
            target_applies=applies, measured_command=ts_shown, **ts_facts),
        row("training_set_wall_time", round(train.wall_s, 2), "s", target=("<=", TIME_TARGET_S),
            target_applies=applies, measured_command=ts_shown, **ts_facts),
        row("training_set_peak_memory", round(train.peak_bytes / GB, 3), "GB",
            measured_command=ts_shown, **_memory(train), **world),
        row("training_set_throughput", round(ts["rows"] / train.wall_s), "rows/s",
            reference={"name": feast_name, "value": round(feast_rps, 1), "unit": "rows/s",
                       "ratio": round(fast_rps / feast_rps, 1)},
            measured_command=ts_shown, in_process_rows_per_s=round(fast_rps),
            ratio_basis="in-process rows/s of both (fast path incl. snapshot selection and "
                        "labels; Feast incl. store creation), interpreter start-up excluded",
            **ts_facts),
        row("feature_build_wall_time", round(feat.wall_s, 2), "s", measured_command=feat_shown,
            offline_bytes=offline_bytes, **world),
        row("feature_build_peak_memory", round(feat.peak_bytes / GB, 3), "GB",
            measured_command=feat_shown, **_memory(feat), **world),
        row("features_plus_training_wall_time", round(both, 2), "s",
            measured_command=f"{feat_shown}; then the training-set build",
            feature_build_s=round(feat.wall_s, 2), training_set_s=round(train.wall_s, 2),
            within_300_s=both <= TIME_TARGET_S,
            note="no target of its own: the 300 s target is on the training-set build", **world),
        row("reference_feast_historical", round(ref["seconds"], 3), "s",
            measured_command=f"{env_shown} {VENV_BIN / 'python'} -c "
                             "'feast_features(get_store(settings), sample)' "
                             "(bench_features.FEAST_SCRIPT)",
            rows=ref["rows"], rows_per_s=round(feast_rps, 1),
            process_wall_s=round(feast.wall_s, 2),
            process_peak_gb=round(feast.peak_bytes / GB, 3), **world),
    ]
    return rows
