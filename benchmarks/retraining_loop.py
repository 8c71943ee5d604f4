"""The retraining loop, night by night, on a world where a carrier degrades and on the same
world without the change (monitoring/loop_scenario.py).

Degrading world: 30,000 shipments booked over 480 days from 2024-05-01 (seed 5; the time split
needs about a year: its gaps are the label horizon, ~6 weeks with ocean), ocean carrier OCE-02's
departure slip and failure rate x3 from 2025-07-10. The first champion is trained on what was
known on 2025-06-26; the nightly pipeline (score-batch -> monitor -> retrain when a drift or
performance alarm asks) runs every `--every` nights from 2025-07-03 to `--last-night`; a
carrier's slice needs 300 predictions in the newest three days to be judged for drift. Printed:
each night's alarms and what the pipeline did, the first drift alarm on OCE-02's slice, and the
first and the last champion's log loss on the snapshots of the two weeks after the last
promotion. The stable world (no regime) runs the same nights: every night with an alarm there
is a false alarm.

    .venv/bin/python benchmarks/retraining_loop.py [--work DIR] [--stable-only | --degrade-only]
        [--first-night YYYY-MM-DD] [--last-night YYYY-MM-DD] [--every N] [--shipments N]
        [--params FILE]

`--params` trains every model with a parameters file (as `shipdelay train --params`), e.g.
smaller trees for a quicker run. The carrier's realized log loss as the monitor reported it is
printed for each night its slice had enough judged predictions.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CARRIER, CHANGE, TRAIN_UNTIL = "OCE-02", "2025-07-10", "2025-06-26"


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp)")
    args.add_argument("--shipments", type=int, default=30_000)
    args.add_argument("--last-night", default="2025-08-10")
    args.add_argument("--first-night", default="2025-07-03")
    args.add_argument("--every", type=int, default=1, help="nights between two runs")
    args.add_argument("--params", type=Path, default=None,
                      help="LightGBM parameters file every training uses")
    only = args.add_mutually_exclusive_group()
    only.add_argument("--stable-only", action="store_true")
    only.add_argument("--degrade-only", action="store_true")
    opts = args.parse_args()
    work = opts.work or Path(tempfile.mkdtemp(prefix="retraining-loop-"))
    os.environ.setdefault("SHIPDELAY_ENCRYPTION_KEY_FILE", str(work / "keys" / "master-keys.json"))
    warnings.filterwarnings("ignore")

    from monitoring.loop_scenario import run_scenario
    from shipdelay.world.regimes import Regime
    from shipdelay.world.simulate import SimConfig

    runs = [("degrade", (Regime("carrier_degrades", CARRIER, CHANGE, 3.0),)), ("stable", ())]
    runs = [r for r in runs if not (opts.stable_only and r[0] == "degrade")
            and not (opts.degrade_only and r[0] == "stable")]
    out = {}
    for name, regimes in runs:
        started = time.perf_counter()
        world = SimConfig(shipments=opts.shipments, start="2024-05-01", days=480, seed=5,
                          ceiling_shipments=0, chunk_size=20_000, regimes=regimes)
        result = run_scenario(work / name, world, TRAIN_UNTIL, opts.first_night,
                              opts.last_night, every_days=opts.every,
                              settings_overrides={"monitor_psi_min_rows": 300},
                              params=opts.params,
                              say=lambda s, n=name: print(f"[{n}] {s}", flush=True))
        out[name] = {
            "first_drift_on_carrier": result.first_alarm("drift", f"carrier={CARRIER}"),
            "first_performance_alarm": result.first_alarm("performance"),
            "nights": len(result.nights),
            "nights_with_alarms": result.nights_with_alarms,
            "carrier_log_loss_by_night": {n.day: round(n.log_loss[f"carrier={CARRIER}"], 4)
                                          for n in result.nights
                                          if f"carrier={CARRIER}" in n.log_loss},
            "retrained": [(n.day, n.retrained, n.promoted) for n in result.nights if n.retrained],
            "realized_log_loss_after_last_promotion": result.realized,
            "realized_rows": result.realized_rows,
            "seconds": {k: round(v) for k, v in result.seconds.items()},
            "wall_seconds": round(time.perf_counter() - started),
            "alarms_by_night": {n.day: n.alarms for n in result.nights if n.alarms},
        }
        print(json.dumps({name: out[name]}, indent=1, default=str), flush=True)
    print(f"work folder: {work}")


if __name__ == "__main__":
    main()
