"""`shipdelay monitor` over 30 days of logged predictions of a 1M-shipment world.

Target (full size): <= 60 s wall and <= 4 GB peak memory on 2 cores.

The log is synthesised, not simulated (`monitoring.synthetic`): 1,000,000 shipments booked
over 30 days, each in flight 1-6 days, predicted by the batch at every midnight it is in flight
and once by the stream at booking, every row with the model's 85 features, and the outcomes of
the shipments delivered by the cut-off in the lake; a feature shifted over the last days (the
drift the monitor must flag) and a reference JSON for the model version (the training window's
bins, `monitoring.drift`). No registry holds that version, so the run also counts every row as
of an unknown version: the registry is asked as in production. Encryption follows
SHIPDELAY_ENCRYPTION (the runner sets it off unless it is set, as for the other benchmarks; with
SHIPDELAY_ENCRYPTION=true every Parquet file is written and read encrypted, a world of its own in
the cache). The world is built once and kept
under `~/.cache/shipdelay-bench/` (SHIPDELAY_BENCH_CACHE), keyed by its parameters and the code
that writes it; SHIPDELAY_BENCH_REBUILD=1 builds it again.

Measured: `shipdelay monitor --as-of <the window's end> --days 30` as a subprocess of the
installed console script (its MLflow run included): wall time and the process tree's peak
memory (see harness).
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shlex
import shutil
from pathlib import Path

from harness import (
    GB,
    PROFILE_ENV,
    ROOT,
    SHIPDELAY,
    VENV_BIN,
    cache_root,
    check,
    measure_command,
    row,
    scratch_dir,
)

FULL = {"shipments": 1_000_000, "days": 30, "start": "2026-01-01", "seed": 7, "shift_days": 3}
QUICK = {**FULL, "shipments": 50_000}
TIME_TARGET_S, MEMORY_TARGET_GB = 60.0, 4.0

BUILD = """\
import json, sys
import pandas as pd
from monitoring import synthetic
from monitoring.drift import save_reference
from shipdelay.lake import open_lake
from shipdelay.settings import get_settings
p = json.loads(sys.argv[1])
s = get_settings()
start = pd.Timestamp(p["start"], tz="UTC")
end = start + pd.Timedelta(days=p["days"])
made = synthetic.write_log(s.predictions_dir, open_lake(s.lake_dir), p["shipments"], p["start"],
                           p["days"], seed=p["seed"], as_of=end,
                           shift_from=end - pd.Timedelta(days=p["shift_days"]))
save_reference(s.data_dir, synthetic.reference())
json.dump({"predictions": made.predictions, "delivered": made.delivered,
           "as_of": end.isoformat()}, open(sys.argv[2], "w"))
"""


def _encrypted() -> bool:
    return os.environ.get("SHIPDELAY_ENCRYPTION", "true").strip().lower() in ("1", "true",
                                                                            "yes", "on")


def _world(params: dict) -> tuple[Path, dict]:
    sources = [ROOT / "monitoring" / n for n in ("synthetic.py", "prediction_log.py")]
    keyed = {**params, "encrypted": _encrypted()}  # a world is read as it was written
    digest = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()
                            + b"".join(p.read_bytes() for p in sources)).hexdigest()
    folder = cache_root() / f"monitor-{digest[:12]}"
    done = folder / "built.json"
    if done.exists() and os.environ.get("SHIPDELAY_BENCH_REBUILD") != "1":
        return folder / "data", {**json.loads(done.read_text()), "cached": True}
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    env = {**os.environ, **PROFILE_ENV, "SHIPDELAY_DATA_DIR": str(folder / "data")}
    print(f"   building the monitor world: {params['shipments']:,} shipments", flush=True)
    cmd = [str(VENV_BIN / "python"), "-c", BUILD, json.dumps(params), str(folder / "made.json")]
    proc = measure_command(cmd, env=env, cwd=folder)
    check(proc, cmd)
    facts = {**json.loads((folder / "made.json").read_text()), "params": params,
             "build_wall_s": round(proc.wall_s, 1), "build_peak_gb": round(proc.peak_bytes / GB, 2)}
    done.write_text(json.dumps(facts))
    return folder / "data", {**facts, "cached": False}


def run(quick: bool, params: dict | None = None) -> list[dict]:
    params = params or (QUICK if quick else FULL)
    applies = params == FULL
    data, facts = _world(params)
    cmd = [SHIPDELAY, "monitor", "--as-of", facts["as_of"], "--days", str(params["days"])]
    env = {**os.environ, **PROFILE_ENV, "SHIPDELAY_DATA_DIR": str(data)}
    with scratch_dir("shipdelay-bench-monitor-") as tmp:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = measure_command(cmd, env=env, cwd=tmp)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        check(proc, cmd)
    # CPU seconds of the measured process tree (its waited-for processes): on a shared, loaded
    # machine the wall time says more about the neighbours than about the monitor
    cpu_s = round((after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), 1)
    summary = json.loads((data / "reports" / "monitor" / "latest.json").read_text())
    drift = sorted({a["metric"] for a in summary["alarms"] if a["kind"] == "drift"})
    shown = f"SHIPDELAY_DATA_DIR=<cache>/monitor {shlex.join(cmd)}"
    details = {"world": params, "world_build": facts, "logged": summary["logged"],
               "judged": summary["judged"], "counts": summary["counts"],
               "drift_alarms": drift, "alarms": len(summary["alarms"]),
               "cpu_s": cpu_s, "memory_method": proc.memory_method,
               "encryption": "on" if _encrypted() else "off"}
    return [
        row("wall_time", round(proc.wall_s, 2), "s", target=("<=", TIME_TARGET_S),
            target_applies=applies, measured_command=shown, **details),
        row("peak_memory", round(proc.peak_bytes / GB, 2), "GB",
            target=("<=", MEMORY_TARGET_GB), target_applies=applies, measured_command=shown,
            **details),
        row("logged_predictions", summary["logged"], "rows", measured_command=shown, **details),
    ]
