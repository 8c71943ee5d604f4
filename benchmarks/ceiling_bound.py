"""Does the model beat the ceiling anywhere on the default world? It must not: the ceiling knows
everything that had happened by each snapshot.

Builds `make demo`'s world (80,000 shipments over 730 days from 2024-03-01, seed 7, 6,000 of the
newest shipments with the ceiling) in a scratch data folder, builds the features (offline only),
trains as `shipdelay train` does (without registering) and prints the model minus the ceiling per
journey stage on the ceiling's snapshots (AUC and log loss, 90% paired bootstrap interval over
shipments), the stages where the model is better beyond that noise (there should be none), and a
Markdown row for the results table of benchmarks/README.md. About 10 minutes on 2 quiet cores.

    .venv/bin/python benchmarks/ceiling_bound.py [--data DIR]   # DIR kept, reused if built
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
WORLD = ["--shipments", "80000", "--start", "2024-03-01", "--days", "730", "--seed", "7",
         "--ceiling-shipments", "6000"]
COMMAND = "shipdelay simulate " + " ".join(WORLD) + " && shipdelay features build --no-online " \
    "&& training.train.train(register_model=False)"


def build(data: Path) -> None:
    env = {**os.environ, "SHIPDELAY_DATA_DIR": str(data)}
    if not (data / "feast").exists():
        for step in (["simulate", *WORLD], ["features", "build", "--no-online"]):
            subprocess.run([str(BIN / "shipdelay"), *step], env=env, check=True,
                           capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="data folder to build in (and keep)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from run import git_version, machine

    context = {"machine": machine(), "git": git_version(),
               "date": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime())}
    with tempfile.TemporaryDirectory(prefix="ceiling-bound-") as tmp:
        data = args.data or Path(tmp) / "data"
        started = time.perf_counter()
        build(data)
        os.environ["SHIPDELAY_DATA_DIR"] = str(data)
        warnings.filterwarnings("ignore")
        from shipdelay.settings import Settings
        from training.evaluate import beats
        from training.train import train

        report = train(Settings(data_dir=data), register_model=False, run_name="ceiling-bound")
        seconds = time.perf_counter() - started
    versus = report.versus_ceiling
    won = beats(versus)
    print(versus.round(4).to_string())
    print(json.dumps({**context, "seconds": round(seconds, 1), "ceiling_rows": report.ceiling_rows,
                      "test_rows": report.sizes.get("test"),
                      "model_beats_ceiling": won[["group", "metric"]].values.tolist()}))
    stage = versus[versus["slice"] == "stage"]
    cells = "; ".join(
        f"{g} {r.loc['roc_auc', 'diff']:+.3f} [{r.loc['roc_auc', 'lo']:+.3f}, "
        f"{r.loc['roc_auc', 'hi']:+.3f}] / {r.loc['log_loss', 'diff']:+.3f} "
        f"[{r.loc['log_loss', 'lo']:+.3f}, {r.loc['log_loss', 'hi']:+.3f}]"
        for g, r in ((g, grp.set_index("metric")) for g, grp in stage.groupby("group", sort=False)))
    verdict = "none (pass)" if won.empty else ", ".join(f"{g} {m}" for g, m in
                                                        won[["group", "metric"]].values)
    m = context["machine"]
    print(f"| ceiling bound | model minus ceiling per stage on the ceiling's {report.ceiling_rows:,}"
          f" test snapshots, AUC / log loss with 90% intervals: {cells} | stages the model "
          f"beats beyond noise: {verdict} | no stage (judged) | {context['date']}, "
          f"load {m.get('load_avg_1m_before')} | `.venv/bin/python benchmarks/ceiling_bound.py` "
          f"({COMMAND}; {seconds:.0f} s) | |")


if __name__ == "__main__":
    main()
