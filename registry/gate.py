"""The promotion gate: may a challenger replace the champion? Pure: dicts in, decision out.

Both models are scored on the same (newest) holdout by the caller. The challenger must
- have a lower overall log loss (strictly: a tie is not worth a change of model),
- be no worse calibrated: ECE at most the champion's plus `ece_tolerance`,
- not buy its overall gain by getting worse on one journey stage: no stage's log loss may exceed
  the champion's by more than `stage_margin` (absolute, in log-loss units).
Stages scored for only one of the two models cannot be compared; they appear in the table and are
named in the reasons, but do not block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class GateResult:
    ok: bool
    reasons: list[str]
    table: pd.DataFrame  # one row per check: challenger, champion, delta, limit, passed


def _row(check: str, challenger: float, champion: float, limit: float, passed: bool) -> dict:
    return {"check": check, "challenger": challenger, "champion": champion,
            "delta": challenger - champion, "limit": limit, "passed": passed}


def decide(challenger: dict, champion: dict, stage_margin: float = 0.01,
           ece_tolerance: float = 0.0) -> GateResult:
    """Compare two evaluations {"log_loss": float, "ece": float, "stages": {stage: log_loss}}."""
    rows, passed, failed = [], [], []

    ll_new, ll_old = float(challenger["log_loss"]), float(champion["log_loss"])
    ok = ll_new < ll_old
    rows.append(_row("log_loss", ll_new, ll_old, ll_old, ok))
    (passed if ok else failed).append(
        f"log loss {'improved' if ok else 'did not improve'}: challenger {ll_new:.4f} vs "
        f"champion {ll_old:.4f} ({ll_new - ll_old:+.4f})")

    ece_new, ece_old = float(challenger["ece"]), float(champion["ece"])
    ece_limit = ece_old + ece_tolerance
    ok = ece_new <= ece_limit
    rows.append(_row("ece", ece_new, ece_old, ece_limit, ok))
    (passed if ok else failed).append(
        f"calibration (ECE) {'holds' if ok else 'is worse'}: challenger {ece_new:.4f} vs "
        f"allowed {ece_limit:.4f} (champion {ece_old:.4f} + tolerance {ece_tolerance:.4f})")

    new_stages, old_stages = challenger.get("stages", {}), champion.get("stages", {})
    worse, worst = [], None
    for stage in sorted(set(new_stages) | set(old_stages)):
        new, old = new_stages.get(stage, np.nan), old_stages.get(stage, np.nan)
        if stage not in new_stages or stage not in old_stages:
            rows.append(_row(f"stage:{stage}", new, old, np.nan, True))
            passed.append(f"stage {stage} scored for only one model: not compared")
            continue
        new, old = float(new), float(old)
        ok = new <= old + stage_margin
        rows.append(_row(f"stage:{stage}", new, old, old + stage_margin, ok))
        if not ok:
            worse.append(f"{stage} {new:.4f} vs champion {old:.4f} ({new - old:+.4f})")
        if worst is None or new - old > worst[1]:
            worst = (stage, new - old)
    if worse:
        failed.append(f"log loss worse by more than the stage margin {stage_margin:.4f} on: "
                      + "; ".join(worse))
    elif worst is not None:
        passed.append(f"no stage worse by more than {stage_margin:.4f} "
                      f"(largest change: {worst[0]} {worst[1]:+.4f})")

    table = pd.DataFrame(rows).set_index("check")
    return GateResult(ok=not failed, reasons=failed or passed, table=table)
