"""Model quality on the default world (the one `make demo` builds), against the ceiling.

Targets (issue: training): AUC >= ceiling - 0.03 on the ceiling's snapshots; >= 70% of the
behind-schedule-to-ceiling AUC gap closed at mid-journey; expected calibration error <= 0.02;
P10-P90 interval coverage 80% +- 3%. The same-run reference is the behind-schedule rule on the
same snapshots. Quick mode uses a smaller world (not judged).

Then, on the same world, a 50-trial Optuna study of the classifier (TPE, median pruning; each
trial an MLflow run): target <= 45 minutes from process start to the end of the last trial.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from harness import measure_command, row, scratch_dir

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
FULL = ["--shipments", "80000", "--start", "2024-03-01", "--days", "730", "--seed", "7",
        "--ceiling-shipments", "6000"]
QUICK = ["--shipments", "8000", "--start", "2025-03-01", "--days", "300", "--seed", "7",
         "--ceiling-shipments", "400"]
TRIALS, QUICK_TRIALS = 50, 5
STUDY_TARGET_S = 45 * 60


def run(quick: bool) -> list[dict]:
    world = QUICK if quick else FULL
    with scratch_dir("bench-train-") as tmp:
        env = {**os.environ, "SHIPDELAY_DATA_DIR": str(tmp / "data")}
        subprocess.run([str(BIN / "shipdelay"), "simulate", *world], env=env, check=True,
                       capture_output=True)
        subprocess.run([str(BIN / "shipdelay"), "features", "build"], env=env, check=True,
                       capture_output=True)
        log = tmp / "train.log"
        measured = measure_command([sys.executable, str(ROOT / "benchmarks" / "train_quality.py")],
                                   env={**env, "PYTHONPATH": str(ROOT)}, cwd=ROOT, log=log)
        if measured.returncode != 0:
            raise RuntimeError(f"training failed:\n{measured.output_tail}")
        figures = json.loads(log.read_text().strip().splitlines()[-1])
        study_log = tmp / "study.log"
        trials = QUICK_TRIALS if quick else TRIALS
        study_run = measure_command([sys.executable, str(ROOT / "benchmarks" / "train_quality.py"),
                                     "study", str(trials)], env={**env, "PYTHONPATH": str(ROOT)},
                                    cwd=ROOT, log=study_log)
        if study_run.returncode != 0:
            raise RuntimeError(f"the study failed:\n{study_run.output_tail}")
        study = json.loads(study_log.read_text().strip().splitlines()[-1])
    applies = not quick
    cmd = f"shipdelay simulate {' '.join(world)} && shipdelay features build && train"
    ref = {"name": "behind_schedule AUC (same snapshots)",
           "value": figures["auc_behind_schedule_on_ceiling_rows"], "unit": "AUC"}
    gap_mid = figures["gap_closed"].get("mid", float("nan"))
    return [
        row("auc_minus_ceiling", figures["auc_model_on_ceiling_rows"] - figures["auc_ceiling"],
            "AUC", target=(">=", -0.03), target_applies=applies, reference=ref,
            measured_command=cmd, model=figures["auc_model_on_ceiling_rows"],
            ceiling=figures["auc_ceiling"]),
        row("gap_closed_mid_journey", gap_mid, "share", target=(">=", 0.70),
            target_applies=applies, reference=ref, measured_command=cmd,
            by_stage=figures["gap_closed"]),
        row("ece", figures["ece"], "", target=("<=", 0.02), target_applies=applies,
            measured_command=cmd),
        row("interval_coverage_error", abs(figures["coverage_p10_p90"] - 0.8), "share",
            target=("<=", 0.03), target_applies=applies, measured_command=cmd,
            coverage=figures["coverage_p10_p90"]),
        row("fit_seconds", figures["fit_seconds"], "s", measured_command=cmd,
            rows=figures["rows"], peak_memory_gb=measured.peak_bytes / 1e9),
        row("study_wall_time", round(study_run.wall_s, 1), "s", target=("<=", STUDY_TARGET_S),
            target_applies=applies and trials == TRIALS,
            measured_command=f"{cmd} && shipdelay tune --trials {trials} (as train_quality.py study)",
            reference={"name": "one train + evaluate + register run (all four boosters)",
                       "value": round(measured.wall_s, 1), "unit": "s"},
            **study, peak_memory_gb=study_run.peak_bytes / 1e9),
    ]
