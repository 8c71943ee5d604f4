"""Run by bench_train in a subprocess on the current data dir, prints its figures as JSON:
`train_quality.py` trains one model; `train_quality.py study N` runs an N-trial Optuna study."""

from __future__ import annotations

import json
import sys
import time
import warnings

warnings.filterwarnings("ignore")


def main() -> None:
    from shipdelay.settings import get_settings
    from training.train import train

    report = train(get_settings(), run_name="benchmark")
    overall = report.metrics[(report.metrics["slice"] == "overall")]
    get = lambda model, metric: float(overall[(overall["model"] == model)
                                              & (overall["metric"] == metric)]["value"].iloc[0])
    cover = report.on_ceiling
    stage_gap = report.gap.xs("stage", level="slice") if len(report.gap) else None
    print(json.dumps({
        "rows": report.sizes,
        "fit_seconds": report.fit_seconds,
        "auc_model_on_ceiling_rows": float(cover.loc[("overall", "all"), "model"]),
        "auc_ceiling": float(cover.loc[("overall", "all"), "ceiling"]),
        "auc_behind_schedule_on_ceiling_rows": float(cover.loc[("overall", "all"), "behind_schedule"]),
        "gap_closed": {stage: float(stage_gap.loc[stage, "behind_schedule"])
                       for stage in stage_gap.index},
        "ece": get("model", "ece"),
        "log_loss": get("model", "log_loss"),
        "coverage_p10_p90": get("model", "coverage_p10_p90"),
    }))


def study(n_trials: int) -> None:
    from shipdelay.settings import get_settings
    from training.train import current_split
    from training.tune import tune

    split = current_split(get_settings())
    started = time.perf_counter()
    result = tune(split, n_trials, study_name="benchmark")
    seconds = time.perf_counter() - started
    states = [t.state.name for t in result.trials]
    print(json.dumps({
        "seconds": seconds, "trials": len(states), "complete": states.count("COMPLETE"),
        "pruned": states.count("PRUNED"), "failed": states.count("FAIL"),
        "best_valid_logloss": result.best_value, "best_params": result.best_params,
        "first_trial_valid_logloss": result.trials[0].value, "train_rows": len(split.train),
    }))


if __name__ == "__main__":
    study(int(sys.argv[2])) if sys.argv[1:2] == ["study"] else main()
