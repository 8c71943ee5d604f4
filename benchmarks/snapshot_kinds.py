"""How good the model is at each kind of snapshot: taken when something happened (booking, a
milestone) and at clock ticks between them (silence), by journey stage, with and without tick
snapshots in the training rows.

Trains as `shipdelay train` does (without registering) on the data folder SHIPDELAY_DATA_DIR
points at (a built world: `simulate`, `features build --no-online`). With `--no-train-ticks`
the tick snapshots are dropped from the training and validation rows only, so the test rows
(both kinds) stay the same and the two runs are compared on identical rows. Prints one JSON
object: AUC, log loss, ECE, n and late rate of the model per slice (overall, kind,
stage_milestone, stage_tick, and stage when the code has no kinds), the same for the ceiling and
the model on the snapshots the ceiling covers, and the model minus the ceiling per slice with
90% paired bootstrap intervals (shipments resampled whole).

    SHIPDELAY_DATA_DIR=DIR .venv/bin/python benchmarks/snapshot_kinds.py [--no-train-ticks]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

warnings.filterwarnings("ignore")

METRICS = ("roc_auc", "log_loss", "ece", "n", "late_rate")
SLICES = ("overall", "kind", "stage", "stage_milestone", "stage_tick")


def _table(metrics, model: str) -> dict:
    """{slice: {group: {metric: value}}} of one scorer."""
    rows = metrics[(metrics["model"] == model) & metrics["slice"].isin(SLICES)
                   & metrics["metric"].isin(METRICS)]
    out: dict = {}
    for r in rows.itertuples():
        out.setdefault(r.slice, {}).setdefault(r.group, {})[r.metric] = round(float(r.value), 5)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-train-ticks", action="store_true",
                        help="drop tick snapshots from the training and validation rows")
    args = parser.parse_args()
    from shipdelay.settings import get_settings
    from training.train import current_split, train

    settings = get_settings()
    started = time.perf_counter()
    split = current_split(settings)
    dropped = {}
    if args.no_train_ticks:
        for part in ("train", "valid"):
            frame = getattr(split, part)
            keep = frame["milestone"].astype("string").fillna("") != "tick"
            dropped[part] = int((~keep).sum())
            setattr(split, part, frame[keep.to_numpy()].reset_index(drop=True))
    kinds = {}
    for part in ("train", "valid", "test"):
        frame = getattr(split, part)
        if "milestone" in frame:
            kinds[part] = int((frame["milestone"].astype("string") == "tick").sum())
    report = train(settings, split=split, register_model=False,
                   run_name="snapshot-kinds" + ("-no-ticks" if args.no_train_ticks else ""))
    versus = {}
    for r in report.versus_ceiling.itertuples():
        if r.slice in SLICES:
            versus.setdefault(r.slice, {}).setdefault(r.group, {})[r.metric] = {
                "diff": round(float(r.diff), 4), "lo": round(float(r.lo), 4),
                "hi": round(float(r.hi), 4), "n": int(r.n)}
    cm = report.ceiling_metrics
    print(json.dumps({
        "data_dir": str(settings.data_dir), "no_train_ticks": args.no_train_ticks,
        "seconds": round(time.perf_counter() - started, 1), "rows": report.sizes,
        "tick_rows": kinds, "ticks_dropped": dropped,
        "model": _table(report.metrics, "model"),
        "on_ceiling_rows": {"model": _table(cm, "model"), "ceiling": _table(cm, "ceiling")}
        if len(cm) else {},
        "model_minus_ceiling": versus,
    }))


if __name__ == "__main__":
    main()
