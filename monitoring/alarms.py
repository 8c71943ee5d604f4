"""Alarms: the thresholds of `Settings` (`monitor_*`) applied to one monitoring run's tables.

Kinds, and what each asks for:
- "drift": P(late)'s PSI over the newest days above `monitor_psi`, and a change chance alone
  would not give on samples that small (`drift.noise_level`, `drift.shifted`): one alarm,
  overall (naming its worst slices), or, when only slices cross the threshold, in its worst
  carrier, lane or mode (slices need `monitor_psi_min_rows` rows): that is what localizes a
  degrading carrier. The alarm names the input features that moved most where it fired; input
  features alone raise none (`drift_alarms` says why; their PSI is in the reports). Asks for a
  new model.
- "performance": realized log loss on at least `monitor_min_judged` judged predictions above
  the model's validation log loss by `monitor_log_loss_rise` (overall), or, in a carrier, lane
  or mode (their largest groups), above what the model itself expected on the same rows (the
  mean entropy of its P(late)) by that share, which is fair to slices harder than the average,
  and beyond what chance gives a calibrated model on that many shipments (one in a thousand
  over the groups judged; `grouped._log_loss_se`).
  Asks for a new model.
- "calibration": realized ECE above `monitor_ece`.
- "volume": a source's day (lake tables, predictions per door) in the newest days below
  `monitor_volume_drop` of its usual day (its weekday's median): a feed that stops is an
  incident.
- "freshness": a feature view's newest row older than its cadence plus `monitor_freshness_h`.
- "data": predictions from model versions the registry does not know; a drift reference too
  thin to judge against (`drift.thin_reference`), which replaces the drift alarms.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
from scipy.stats import norm

from monitoring.drift import (
    EXPECTED_DRIFT,
    MIN_REFERENCE_ROWS,
    PREDICTION,
    Reference,
    thin_reference,
)
from monitoring.inputs import volume_drops
from monitoring.summary import Alarm

PERFORMANCE_SLICES = {"carrier": "carrier_id", "lane": "lane_id", "mode": "main_mode"}
WORST_SLICES = 3  # slices a drift alarm names
CADENCE_H = {"shipment_progress": 0.0, "lane_stats": 24.0, "carrier_stats": 24.0,
             "customer_stats": 24.0, "hub_stats": 1.0}


def find(settings, tables: dict, judged: pd.DataFrame | None, ref: Reference | None,
         recent_from: date, unknown_versions: dict[str, int]) -> list[Alarm]:
    thin = thin_reference(ref, settings.monitor_reference_min_days) if ref else None
    if thin:
        few_rows = ref.rows < MIN_REFERENCE_ROWS
        out = [Alarm("data", "reference", "reference_rows" if few_rows else "reference_days",
                     float(ref.rows if few_rows else ref.window_days),
                     float(MIN_REFERENCE_ROWS if few_rows
                           else settings.monitor_reference_min_days), thin)]
    else:
        out = drift_alarms(settings, tables["drift_recent"])
    out += _performance(settings, judged, ref, tables["realized_by_slice"])
    out += _volume(settings, tables["volume"], recent_from)
    out += _freshness(settings, tables["freshness_h"])
    for version, rows in sorted(unknown_versions.items()):
        out.append(Alarm("data", f"model_version={version}", "rows", float(rows), 0.0,
                         f"{rows} logged prediction(s) name model version {version}, which "
                         "the registry does not know: check which deployment wrote them"))
    return out


def moved(settings, drift: pd.DataFrame) -> pd.DataFrame:
    """The rows of the drift table (feature x slice) that moved: PSI above `monitor_psi` and
    beyond what chance alone gives on samples this small (`drift.noise_level`,
    `drift.shifted`); features of `EXPECTED_DRIFT` left out."""
    if not len(drift):
        return drift
    above = drift["psi"] > settings.monitor_psi
    if "noise" in drift:
        above &= (drift["psi"] > drift["noise"].fillna(0.0)) | drift["shifted"].astype(bool)
    return drift[~drift["feature"].isin(EXPECTED_DRIFT.keys()) & above]


def drift_alarms(settings, drift: pd.DataFrame) -> list[Alarm]:
    """One alarm when P(late) moved (`moved`): overall, naming its worst slices; else in its
    worst slice. Each names the inputs that moved most where it fired.

    Input features that move while P(late) holds raise no alarm: the model's answer is the
    same, so a new one is not needed (their PSI stays in the reports, where the inputs behind an
    alarm are read). Statistics shared by every shipment of a hub or customer move together
    from one day to the next, which no per-shipment chance level captures, so alarming on them
    would call stable nights drifts; P(late) is where a change that matters shows."""
    limit = settings.monitor_psi
    changed = moved(settings, drift)
    rows = changed[changed["feature"] == PREDICTION]
    if not len(rows):
        return []
    whole = rows[rows["slice"] == "overall"]
    parts = rows[rows["slice"] != "overall"].sort_values("psi", ascending=False)
    worst = ", ".join(f"{r.slice} ({r.psi:.2f})" for r in parts.head(WORST_SLICES).itertuples())
    if len(whole):
        top = whole.iloc[0]
        message = (f"P(late) drifted from the training window: PSI {top.psi:.2f} overall "
                   f"(> {limit:g} over {top.rows} predictions)"
                   + (f"; worst slices {worst}" if worst else ""))
    else:
        top = parts.iloc[0]
        overall = drift[(drift["slice"] == "overall") & (drift["feature"] == PREDICTION)]["psi"]
        level = f"overall {overall.iloc[0]:.2f}" if len(overall) else "overall not measured"
        message = (f"P(late) drifted in {top.slice}: PSI {top.psi:.2f} (> {limit:g} over "
                   f"{top.rows} predictions; {level})"
                   + (f"; worst slices {worst}" if len(parts) > 1 else ""))
    inputs = changed[(changed["slice"] == top.slice) & (changed["feature"] != PREDICTION)]
    inputs = inputs.sort_values("psi", ascending=False).head(WORST_SLICES)
    if len(inputs):
        message += "; inputs that moved there: " + ", ".join(
            f"{r.feature} ({r.psi:.2f})" for r in inputs.itertuples())
    return [Alarm("drift", str(top.slice), f"psi:{PREDICTION}", float(top.psi), limit, message)]


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
    names = wide.index.get_level_values("slice")
    judged_groups = wide[names.isin(list(PERFORMANCE_SLICES)) &
                         (wide["n"] >= settings.monitor_min_judged).to_numpy()]
    # beyond chance too: one in a thousand over the groups judged (Bonferroni)
    z = float(norm.isf(0.001 / max(len(judged_groups), 1)))
    for (name, group), r in judged_groups.iterrows():
        real, expected = r["log_loss"], r["expected_log_loss"]
        limit = expected * (1 + rise)
        se = r.get("log_loss_se", 0.0)
        if real > limit and not real - expected <= z * (se if np.isfinite(se) else 0.0):
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
                  f"{settings.monitor_volume_drop:.0%} of its usual day ({r.median:g}): "
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
