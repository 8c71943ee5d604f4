"""`shipdelay monitor`: judge the logged predictions, watch the inputs, raise alarms.

One scan of the window (default: the `monitor_days` days up to the lake's now) of the prediction
log and of the outcomes (`monitoring.reader`): the predictions de-duplicated, joined to the
outcomes known at the cut-off and kept compact in DuckDB, then reduced there to what the report
needs (counts per day and door, drift bin counts per day and per slice, missing rates, the judged
rows' scores and slices, the P(late) of the rows not judged yet). Then realized metrics of every
day and slice group at once (`monitoring.judge`, `monitoring.grouped`), drift
(`monitoring.drift`), inputs (`monitoring.inputs`), alarms (`monitoring.alarms`) and the reports
(`monitoring.report`).

Bad input is counted, never fatal: days without predictions, predictions without outcomes yet,
outcomes without predictions, model versions the registry does not know, a missing reference.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date

import numpy as np
import pandas as pd

from monitoring import judge
from monitoring.drift import (
    DRIFT_SLICES,
    EXPECTED_DRIFT,
    PREDICTION,
    Reference,
    load_reference,
    noise_level,
    observations,
    psi,
    reference_from_training,
    reference_path,
    shifted,
)
from monitoring.inputs import (
    complete_days,
    source_volume,
    view_freshness,
)
from monitoring.reader import LogReader, log_days
from monitoring.summary import Alarm, MonitorSummary
from shipdelay.lake import Lake
from shipdelay.settings import Settings

__all__ = ["Alarm", "MonitorSummary", "run_monitor"]
log = logging.getLogger("shipdelay.monitoring")

RECENT_DAYS = 3  # drift and volume alarms judge the newest days of the window
Step = Callable[[str, int, int], None]


def cutoff(settings: Settings, as_of=None) -> pd.Timestamp:
    """`as_of` in UTC; default the lake's now (its newest ingestion), else the clock's."""
    if as_of is not None:
        t = pd.Timestamp(as_of)
        return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    try:
        from serving.batch import lake_now

        return lake_now(Lake(settings.lake_dir))
    except Exception:  # noqa: BLE001 - no lake yet: the clock
        return pd.Timestamp.now("UTC")


def run_monitor(settings: Settings, as_of=None, days: int | None = None, *,
                log_to_mlflow: bool = True, step: Step | None = None,
                reference: Reference | None = None) -> MonitorSummary:
    """Monitor the `days` (default `settings.monitor_days`) days up to `as_of`; write the JSON
    and HTML reports; return the summary with its alarms."""
    from monitoring import alarms, report

    step = step or (lambda name, done, total: None)
    t = cutoff(settings, as_of)
    days = int(days or settings.monitor_days)
    end = t.date()
    start = end - pd.Timedelta(days=days - 1)
    recent_from = end - pd.Timedelta(days=RECENT_DAYS - 1)
    counts = {"empty_days": 0, "duplicates_dropped": 0, "not_judged_yet": 0,
              "outcomes_without_predictions": 0, "unknown_model_version_rows": 0}
    logged_days = [d for d in log_days(settings.predictions_dir) if start <= d <= end]
    # the registry is asked only when there is something to compare
    ref = reference or (_reference(settings, counts) if logged_days else None)
    lake = Lake(settings.lake_dir)
    step("reading the prediction log", 0, 1)
    reader = LogReader(settings.predictions_dir, lake, t, start, end, ref)
    try:
        step("summing the window", 0, 1)
        by_day = reader.counts_by_day()
        by_day["day"] = pd.to_datetime(by_day["day"]).dt.date
        empty = sorted(set(pd.date_range(start, end, freq="D").date) - set(by_day["day"]))
        counts["empty_days"] = len(empty)
        by_day = pd.concat([by_day, pd.DataFrame({"day": empty, "path": "all", "logged": 0,
                                                  "judged": 0})], ignore_index=True)
        by_day = by_day.sort_values("day", kind="stable", ignore_index=True)
        estimates, pending = _estimates(reader.pending(), by_day)
        versions = reader.versions()
        missing = reader.missing_by_view()
        missing["day"] = pd.to_datetime(missing["day"]).dt.date
        drift_daily = reader.drift_by_day(ref) if ref else {}
        drift_slices = {(name, group): per for name, column in DRIFT_SLICES.items()
                        for group, per in (reader.drift_by_slice(ref, column, recent_from)
                                           if ref else {}).items()}
        samples = {(name, group): n for name, column in DRIFT_SLICES.items()
                   for group, n in reader.samples(recent_from, column).items()}
        samples[("overall", "")] = reader.samples(recent_from)["overall"]
        counts["duplicates_dropped"] = int(reader.duplicates)
        counts["outcomes_without_predictions"] = reader.outcomes_without_predictions(
            pd.Timestamp(start, tz="UTC"))
        step("computing metrics", 0, 1)
        judged = reader.judged()
    finally:
        reader.close()
    known = _registered_versions(settings, counts) if versions else None
    unknown = {v: n for v, n in versions.items() if known is not None and v not in known}
    counts["unknown_model_version_rows"] = int(sum(unknown.values()))

    judged = judged if len(judged) else None
    logged = int(by_day.loc[by_day["path"] != "all", "logged"].sum()) if len(by_day) else 0
    n_judged = len(judged) if judged is not None else 0
    counts["not_judged_yet"] = logged - n_judged
    tables = {
        "daily_counts": by_day,
        "realized_by_day": judge.by_day(judged) if judged is not None else pd.DataFrame(),
        "realized_by_slice": judge.by_slice(judged) if judged is not None else pd.DataFrame(),
        "reliability": judge.reliability(judged) if judged is not None else pd.DataFrame(),
        "hours_out": judge.hours_out(judged).reset_index(names="band")
        if judged is not None else pd.DataFrame(),
        "estimated_by_day": estimates,
        "missing_by_view": missing,
        "drift_by_day": _drift_by_day(drift_daily, ref),
        "drift_recent": _drift_recent(drift_daily, drift_slices, ref, recent_from,
                                      settings.monitor_psi_min_rows, samples),
    }
    step("checking the inputs", 0, 1)
    volume = source_volume(lake, start, t) if lake.exists("shipments") else pd.DataFrame(
        columns=["source", "day", "rows"])
    path_volume = by_day[by_day["path"] != "all"].rename(columns={"logged": "rows"}) \
        if len(by_day) else pd.DataFrame(columns=["path", "day", "rows"])
    volume = pd.concat([volume, path_volume.assign(source="predictions:" + path_volume["path"])
                        [["source", "day", "rows"]]], ignore_index=True)
    tables["volume"] = complete_days(volume, start, t)
    tables["freshness_h"] = _freshness(settings, t, counts)
    found = alarms.find(settings, tables, judged, ref, recent_from, unknown)
    summary = MonitorSummary(as_of=t.isoformat(), days=days, alarms=found, judged=n_judged,
                             logged=logged, counts=counts,
                             headline=_headline(tables, pending, found, logged, n_judged))
    step("writing the reports", 0, 1)
    report.write(settings, summary, tables, judged, ref, log_to_mlflow=log_to_mlflow)
    return summary


def _estimates(pending: pd.DataFrame, by_day: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """CBPE of the predictions not judged yet: per day and door and per day ("all") for each
    day and door with predictions, and over the whole window."""
    p = pending["p"].to_numpy(float)
    keys = pd.DataFrame({"day": pd.to_datetime(pending["day"]).dt.date,
                         "path": pending["path"].astype(str)})
    at = {k: idx for k, idx in keys.groupby(["day", "path"]).indices.items()}
    on = {k: idx for k, idx in keys.groupby("day").indices.items()}
    none = np.array([], int)
    out = []
    for day, today in by_day[by_day["path"] != "all"].groupby("day", sort=True):
        for path in sorted(today["path"]):
            out.append({"day": day, "path": path,
                        **judge.estimated(p[at.get((day, path), none)])})
        out.append({"day": day, "path": "all", **judge.estimated(p[on.get(day, none)])})
    return pd.DataFrame(out), judge.estimated(p)


def _drift_by_day(daily: dict, ref: Reference | None) -> pd.DataFrame:
    rows = [(day, n, psi(ref.binnings[n].shares, c), int(c.sum()))
            for day, per in daily.items() for n, c in per.items()] if ref else []
    return pd.DataFrame(rows, columns=["day", "feature", "psi", "rows"])


def _drift_recent(daily: dict, slices: dict, ref: Reference | None, recent_from: date,
                  min_rows: int, samples: dict | None = None) -> pd.DataFrame:
    """PSI over the recent days, overall against the whole reference and per slice group with
    at least `min_rows` rows against the same slice of the reference (a slice the reference
    does not hold is not judged). `noise` is the PSI chance alone could reach between the two
    samples and `shifted` whether the mean bin moved beyond chance (`drift.noise_level`,
    `drift.shifted`, on their independent observations: `samples`, the distinct values per
    slice group from `LogReader.samples`); `expected_drift` says why a feature's drift is no
    alarm (empty for the others)."""
    columns = ["slice", "feature", "psi", "rows", "noise", "shifted", "expected_drift"]
    if ref is None:
        return pd.DataFrame(columns=columns)
    samples = samples or {}
    total: dict[str, np.ndarray] = {}
    for day, per in daily.items():
        if day >= recent_from:
            for n, c in per.items():
                total[n] = total[n] + c if n in total else c

    def sample(label, feature, shares, counts, counted, n_ref):
        n = observations(feature, counted) if counted else int(counts.sum())
        return label, feature, shares, counts, n, n_ref

    overall = samples.get(("overall", ""))
    found = [sample("overall", n, ref.binnings[n].shares, c, overall, ref.observations(n))
             for n, c in total.items()]
    for (name, group), per in slices.items():
        label = f"{name}={group}"
        for n, c in per.items():
            shares, n_ref = ref.slice_shares(label, n)
            if shares is not None and c.sum() >= min_rows:
                found.append(sample(label, n, shares, c, samples.get((name, group)), n_ref))
    # two families of tests, each held to one in a thousand: P(late)'s (what alarms) and the
    # input features' (what explains an alarm)
    family = {True: sum(f == PREDICTION for _, f, *_ in found),
              False: sum(f != PREDICTION and f not in EXPECTED_DRIFT for _, f, *_ in found)}
    rows = [(label, f, psi(shares, c), int(c.sum()),
             noise_level(shares, n, n_ref, family[f == PREDICTION]),
             shifted(shares, c, n, n_ref, ref.binnings[f].edges is not None,
                     family[f == PREDICTION]))
            for label, f, shares, c, n, n_ref in found]
    out = pd.DataFrame(rows, columns=columns[:-1])
    out["expected_drift"] = out["feature"].map(EXPECTED_DRIFT).fillna("")
    return out


def _reference(settings: Settings, counts: dict) -> Reference | None:
    """The champion's reference, built from the training window the first time; without a
    champion (or a registry that answers), the newest reference saved."""
    try:
        from registry.loader import CHAMPION, alias_version

        version = alias_version(settings, CHAMPION)
    except Exception as err:  # noqa: BLE001 - a registry that does not answer
        log.warning("no champion to compare drift with: %s", err)
        version = None
    if version is None:
        saved = sorted(reference_path(settings.data_dir, "x").parent.glob("*.json"),
                       key=lambda f: f.stat().st_mtime)
        ref = load_reference(settings.data_dir, saved[-1].stem) if saved else None
        if ref is None:
            counts["no_reference"] = 1
        return ref
    ref = load_reference(settings.data_dir, version)
    if ref is None:
        try:
            ref = reference_from_training(settings, version)
        except Exception as err:  # noqa: BLE001 - reported, the rest of monitoring goes on
            log.warning("could not build the training reference of version %s: %s",
                        version, err)
            counts["no_reference"] = 1
    return ref


def _registered_versions(settings: Settings, counts: dict) -> set[str] | None:
    try:
        from registry.store import MODEL_NAME, client

        return {str(mv.version) for mv in
                client(settings).search_model_versions(f"name='{MODEL_NAME}'")}
    except Exception as err:  # noqa: BLE001 - unknown versions then go uncounted
        log.warning("registry unavailable, model versions not checked: %s", err)
        counts["registry_unavailable"] = 1
        return None


def _freshness(settings: Settings, t: pd.Timestamp, counts: dict) -> dict[str, float]:
    from features.store import offline_dir

    if not offline_dir(settings).exists():  # no feature store here: nothing to age
        counts["freshness_unavailable"] = 1
        return {}
    try:
        return view_freshness(settings, t)
    except Exception as err:  # noqa: BLE001 - no feature store: reported, not fatal
        log.warning("feature freshness unavailable: %s", err)
        counts["freshness_unavailable"] = 1
        return {}


def _headline(tables: dict, pending: dict, found: list[Alarm], logged: int,
              n_judged: int) -> dict[str, float]:
    out = {"logged": float(logged), "judged": float(n_judged),
           "judged_share": n_judged / logged if logged else float("nan"),
           "alarms": float(len(found)),
           "should_retrain": float(any(a.kind in ("drift", "performance") for a in found))}
    slices = tables["realized_by_slice"]
    if len(slices):  # every judged row, computed once by judge.by_slice
        whole = slices[slices["slice"] == "overall"]
        real = dict(zip(whole["metric"], whole["value"]))
        out |= {k: real[k] for k in ("roc_auc", "log_loss", "brier", "ece", "coverage_p10_p90",
                                     "eta_mae_h")}
    if pending["n"]:  # the window's predictions not judged yet, estimated together
        out |= {k: pending[k] for k in ("expected_roc_auc", "expected_log_loss",
                                        "expected_late_rate")}
    drift = tables["drift_recent"]
    overall = drift[drift["slice"] == "overall"] if len(drift) else drift
    if len(overall):
        features = overall[(overall["feature"] != PREDICTION)
                           & ~overall["feature"].isin(EXPECTED_DRIFT.keys())]
        out["max_feature_psi"] = float(features["psi"].max()) if len(features) else np.nan
        pred = overall[overall["feature"] == PREDICTION]["psi"]
        out["prediction_psi"] = float(pred.iloc[0]) if len(pred) else np.nan
    return out
