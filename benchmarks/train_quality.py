"""Run by bench_train in a subprocess: train on the current data dir, print the figures as JSON."""

from __future__ import annotations

import json
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


if __name__ == "__main__":
    main()
