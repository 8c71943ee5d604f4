"""Alarms: the thresholds of `Settings` (`monitor_*`) applied to one monitoring run's tables.

Kinds, and what each asks for:
- "drift": a feature's or P(late)'s PSI over the newest days, overall or in a carrier, lane or
  mode, above `monitor_psi` (slices need `monitor_psi_min_rows` rows). Asks for a new model.
- "performance": realized log loss on at least `monitor_min_judged` judged predictions above
  the model's validation log loss by `monitor_log_loss_rise` (overall), or, in a carrier, lane
  or mode (their largest groups), above what the model itself expected on the same rows (the
  mean entropy of its P(late)) by that share, which is fair to slices harder than the average.
  Asks for a new model.
- "calibration": realized ECE above `monitor_ece`.
- "volume": a source's day (lake tables, predictions per door) in the newest days below
  `monitor_volume_drop` of its median day: a feed that stops is an incident.
- "freshness": a feature view's newest row older than its cadence plus `monitor_freshness_h`.
- "data": predictions from model versions the registry does not know.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from monitoring.drift import PREDICTION, Reference
from monitoring.inputs import volume_drops
from monitoring.summary import Alarm

PERFORMANCE_SLICES = {"carrier": "carrier_id", "lane": "lane_id", "mode": "main_mode"}
CADENCE_H = {"shipment_progress": 0.0, "lane_stats": 24.0, "carrier_stats": 24.0,
             "customer_stats": 24.0, "hub_stats": 1.0}


def find(settings, tables: dict, judged: pd.DataFrame | None, ref: Reference | None,
         recent_from: date, unknown_versions: dict[str, int]) -> list[Alarm]:
    out = _drift(settings, tables["drift_recent"])
    out += _performance(settings, judged, ref, tables["realized_by_slice"])
    out += _volume(settings, tables["volume"], recent_from)
    out += _freshness(settings, tables["freshness_h"])
    for version, rows in sorted(unknown_versions.items()):
        out.append(Alarm("data", f"model_version={version}", "rows", float(rows), 0.0,
                         f"{rows} logged prediction(s) name model version {version}, which "
                         "the registry does not know: check which deployment wrote them"))
    return out


def _drift(settings, drift: pd.DataFrame) -> list[Alarm]:
    limit = settings.monitor_psi
    hits = drift[(drift["psi"] > limit)] if len(drift) else drift
    out = []
    for r in hits.sort_values("psi", ascending=False).itertuples():
        what = "P(late)" if r.feature == PREDICTION else f"feature {r.feature}"
        out.append(Alarm("drift", r.slice, f"psi:{r.feature}", float(r.psi), limit,
                         f"{what} drifted from the training window in {r.slice} "
                         f"(PSI {r.psi:.2f} > {limit:g} over {r.rows} predictions)"))
    return out


def _performance(settings, judged: pd.DataFrame | None, ref: Reference | None,
                 slices: pd.DataFrame) -> list[Alarm]:
    """Overall against the validation log loss; carriers, lanes and modes (their largest
    groups, `judge.by_slice`) against what the model expected on the same rows."""
    if judged is None or len(judged) < settings.monitor_min_judged:
        return []
    rise, out = settings.monitor_log_loss_rise, []
    whole = slices[slices["slice"] == "overall"]
    overall = dict(zip(whole["metric"], whole["value"]))
    if ref is not None and np.isfinite(ref.log_loss):
        limit = ref.log_loss * (1 + rise)
        if overall["log_loss"] > limit:
            out.append(Alarm("performance", "overall", "log_loss", overall["log_loss"], limit,
                             f"realized log loss {overall['log_loss']:.3f} on "
                             f"{len(judged)} judged predictions is above the validation "
                             f"{ref.log_loss:.3f} by more than {rise:.0%}"))
    if overall["ece"] > settings.monitor_ece:
        out.append(Alarm("calibration", "overall", "ece", overall["ece"], settings.monitor_ece,
                         f"realized calibration error {overall['ece']:.3f} is above "
                         f"{settings.monitor_ece:g}: P(late) no longer means what it says"))
    if len(slices) == 0:
        return out
    wide = slices.pivot_table(index=["slice", "group"], columns="metric", values="value")
    for (name, group), r in wide.iterrows():
        if name not in PERFORMANCE_SLICES or r["n"] < settings.monitor_min_judged:
            continue
        real, expected = r["log_loss"], r["expected_log_loss"]
        limit = expected * (1 + rise)
        if real > limit:
            out.append(Alarm("performance", f"{name}={group}", "log_loss", real, limit,
                             f"realized log loss {real:.3f} in {name} {group} is above "
                             f"what the model expected there ({expected:.3f}) by more "
                             f"than {rise:.0%} ({int(r['n'])} judged predictions)"))
    return out


def _volume(settings, daily: pd.DataFrame, recent_from: date) -> list[Alarm]:
    drops = volume_drops(daily, settings.monitor_volume_drop)
    drops = drops[drops["day"] >= recent_from] if len(drops) else drops
    return [Alarm("volume", f"source={r.source}", "rows", float(r.rows),
                  settings.monitor_volume_drop * float(r.median),
                  f"{r.source} brought {r.rows} row(s) on {r.day}, below "
                  f"{settings.monitor_volume_drop:.0%} of its median day ({r.median:g}): "
                  "check the feed") for r in drops.itertuples()]


def _freshness(settings, ages: dict[str, float]) -> list[Alarm]:
    out = []
    for view, age in ages.items():
        limit = CADENCE_H.get(view, 0.0) + settings.monitor_freshness_h
        if not np.isfinite(age) or age > limit:
            shown = "has no row" if not np.isfinite(age) else f"is {age:.1f} h old"
            out.append(Alarm("freshness", f"view={view}", "age_h",
                             float(age) if np.isfinite(age) else float("inf"), limit,
                             f"feature view {view} {shown} at the cut-off (limit {limit:g} h):"
                             " run `shipdelay features roll` or check the stream"))
    return out
