"""One fit of the delay models on over five million training snapshots.

Target (issue: training): one fit on >= 5,000,000 snapshots in <= 10 minutes on 2 cores.

The world is built first and kept (not measured; its build times go into `details`):
`shipdelay simulate --shipments 1000000 --days 365 --seed 7 --workers 2 --ceiling-shipments 0`,
`shipdelay features build --no-online`, then the training set (`training.dataset`), split by
time with a 10% validation and a 5% test window (`time_split(valid_share=0.1, test_share=0.05)`:
the default 15%/15% would leave the 1M world's train window under five million rows, and a
larger world's training-set build does not fit in this machine's memory), saved as Parquet.

Measured: `training.model.fit_bundle` on that split in a fresh process (the classifier
early-stopped on validation log loss, its calibrator, the three quantile boosters and the
interval adjustment), its in-process seconds and the process's wall time and peak memory.
Same-run reference: the same fit on a 5% sample of the train window's shipments, showing
how the time grows with the rows.
"""

from __future__ import annotations

import json
import os
import sys

from harness import (
    GB,
    PROFILE_ENV,
    ROOT,
    SHIPDELAY,
    VENV_BIN,
    cached_world,
    check,
    measure_command,
    row,
    scratch_dir,
    simulate_command,
)

FULL = {"shipments": 1_000_000, "days": 365, "seed": 7, "workers": 2, "ceiling_shipments": 0,
        "ceiling_draws": 1, "valid_share": 0.1, "test_share": 0.05}
QUICK = {**FULL, "shipments": 50_000, "days": 240}
ROWS_TARGET = 5_000_000
TIME_TARGET_S = 600.0
REFERENCE_SHARE = 0.05
PYTHON = str(VENV_BIN / "python")

SPLIT_SCRIPT = """\
import sys, warnings
warnings.filterwarnings("ignore")
from features.store import offline_dir
from shipdelay.lake import Lake
from shipdelay.settings import get_settings
from training.dataset import build_training_set
from training.split import time_split
from training.tune import save_split
s = get_settings()
frame = build_training_set(Lake(s.lake_dir), offline_dir(s))
split = time_split(frame, valid_share=float(sys.argv[1]), test_share=float(sys.argv[2]))
del frame
save_split(split, s.data_dir / "split")
"""

FIT_SCRIPT = """\
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import numpy as np
from shipdelay.settings import get_settings
from training.model import fit_bundle
from training.tune import load_split
split = load_split(get_settings().data_dir / "split")
share = float(sys.argv[2])
if share < 1:
    ids = split.train["shipment_id"].unique()
    keep = np.random.default_rng(7).choice(ids, int(len(ids) * share), replace=False)
    split.train = split.train[split.train["shipment_id"].isin(keep)]
t0 = time.perf_counter()
bundle = fit_bundle(split)
seconds = time.perf_counter() - t0
trees = {"classifier": bundle.classifier.num_trees(),
         **{f"q{int(q * 100)}": b.num_trees() for q, b in bundle.quantiles.items()}}
json.dump({"train_rows": len(split.train), "valid_rows": len(split.valid), "seconds": seconds,
           "trees": trees}, open(sys.argv[1], "w"))
"""


def _fit(data, tmp, share: float) -> tuple[dict, object]:
    out = tmp / f"fit-{share}.json"
    cmd = [PYTHON, "-c", FIT_SCRIPT, str(out), str(share)]
    env = {**os.environ, **PROFILE_ENV, "SHIPDELAY_DATA_DIR": str(data), "PYTHONPATH": str(ROOT)}
    proc = measure_command(cmd, env=env, cwd=tmp)
    check(proc, cmd[:2] + ["FIT_SCRIPT", *cmd[3:]])
    return json.loads(out.read_text()), proc


def run(quick: bool, params: dict | None = None) -> list[dict]:
    """`params` sets another world size; targets are then shown but not judged."""
    params = params or (QUICK if quick else FULL)
    applies = params == FULL
    split = [PYTHON, "-c", SPLIT_SCRIPT, str(params["valid_share"]), str(params["test_share"])]
    sources = [ROOT / "features" / "schema.py", ROOT / "features" / "transforms.py",
               ROOT / "training" / "dataset.py", ROOT / "training" / "split.py"]
    data, world = cached_world("fit", params, [
        simulate_command(params), [SHIPDELAY, "features", "build", "--no-online"], split],
        sources, PROFILE_ENV)
    with scratch_dir("shipdelay-bench-fit-") as tmp:
        full, proc = _fit(data, tmp, 1.0)
        small, small_proc = _fit(data, tmp, REFERENCE_SHARE)
    shown = "SHIPDELAY_DATA_DIR=<cache>/fit python -c bench_fit.FIT_SCRIPT out.json 1.0"
    facts = {"world": params, "world_build": world, "trees": full["trees"],
             "valid_rows": full["valid_rows"], "process_wall_s": round(proc.wall_s, 1),
             "python": sys.version.split()[0]}
    ref = {"name": f"the same fit on {REFERENCE_SHARE:.0%} of the train window's shipments "
                   f"({small['train_rows']:,} rows, trees {small['trees']})",
           "value": round(small["seconds"], 1), "unit": "s",
           "ratio": round(full["seconds"] / small["seconds"], 1)}
    return [
        row("fit_train_rows", full["train_rows"], "rows", target=(">=", ROWS_TARGET),
            target_applies=applies, measured_command=shown, **facts),
        row("fit_seconds", round(full["seconds"], 1), "s", target=("<=", TIME_TARGET_S),
            target_applies=applies, reference=ref, measured_command=shown, **facts),
        row("fit_peak_memory", round(proc.peak_bytes / GB, 2), "GB", measured_command=shown,
            method=proc.memory_method, reference_peak_gb=round(small_proc.peak_bytes / GB, 2),
            **facts),
    ]
