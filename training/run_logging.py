"""What a training run records in MLflow besides the model, named so that people can browse it.

- Parameters: every LightGBM parameter each booster was trained with (`classifier.*`, `p10.*`,
  `p50.*`, `p90.*`, the names `training.params` uses; with its tree count and best iteration), and the
  full list LightGBM resolved, defaults included, as `lightgbm_parameters.json`; the data window
  (`data.<train|valid|test>.booked_from|booked_to|snapshots_from|snapshots_to`, UTC); the
  features in matrix order (`features`, `categorical_features`).
- Tags: the git commit of the code (`mlflow.source.git.commit`, "unknown" outside a git
  checkout) and whether the checkout had uncommitted changes (`git.dirty`); the run description
  (`mlflow.note.content`, shown on the run's page).
- Metrics, grouped by their first path part (MLflow's charts group by it):
  `test/<metric>` the model on every test snapshot, `test/by_<slice>/<group>/<metric>` per main
  mode, journey stage and snapshot kind; `baseline/<name>/...` each baseline on the same rows;
  `ceiling/<scorer>/...` every scorer and the ceiling on the snapshots the ceiling covers,
  `ceiling/model_minus_ceiling/[by_<slice>/<group>/]<metric>/<diff|lo|hi>` and
  `ceiling/gap_closed/[by_<slice>/<group>/]vs_<baseline>`; `fit/seconds`; `note_model/...`.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd

from registry.pyfunc_model import epoch_seconds
from training.bundle import QUANTILES, Bundle
from training.split import Split

PROJECT_ROOT = Path(__file__).resolve().parents[1]
UNKNOWN = "unknown"
_PARAM_LIMIT = 6000  # MLflow's longest parameter value


def booster_names(bundle: Bundle) -> dict[str, object]:
    """The bundle's boosters by the name their parameters are logged under."""
    return {"classifier": bundle.classifier,
            **{f"p{round(q * 100)}": bundle.quantiles[q] for q in QUANTILES}}


def booster_params(bundle: Bundle) -> dict[str, str]:
    """Each booster's training parameters as given to LightGBM, with its size."""
    out = {}
    for name, booster in booster_names(bundle).items():
        for key, value in sorted((booster.params or {}).items()):
            text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
            out[f"{name}.{key}"] = text[:_PARAM_LIMIT]
        out[f"{name}.num_trees"] = str(booster.num_trees())
        out[f"{name}.best_iteration"] = str(booster.best_iteration)
    return out


def lightgbm_parameters(bundle: Bundle) -> dict[str, dict[str, str]]:
    """Every parameter LightGBM resolved for each booster, defaults included (the
    `parameters:` section of its text model)."""
    out = {}
    for name, booster in booster_names(bundle).items():
        text = booster.model_to_string(num_iteration=1)
        section = text[text.rfind("\nparameters:\n"):text.rfind("\nend of parameters")]
        params = {}
        for line in section.splitlines():
            if line.startswith("[") and ": " in line:
                key, value = line[1:].rstrip("]").split(": ", 1)
                params[key] = value
        out[name] = params
    return out


def _utc(seconds) -> str:
    return "" if pd.isna(seconds) else f"{pd.Timestamp(seconds, unit='s', tz='UTC'):%Y-%m-%d %H:%M}"


def data_window(split: Split) -> dict[str, str]:
    """The bookings and snapshot instants each window of the split holds (UTC)."""
    out = {}
    for name in ("train", "valid", "test"):
        rows = getattr(split, name)
        booked = rows["booked_at_s"] if "booked_at_s" in rows else pd.Series(dtype=float)
        instants = (pd.Series(epoch_seconds(rows["as_of"]))
                    if "as_of" in rows and len(rows) else pd.Series(dtype=float))
        out |= {f"data.{name}.booked_from": _utc(booked.min()),
                f"data.{name}.booked_to": _utc(booked.max()),
                f"data.{name}.snapshots_from": _utc(instants.min()),
                f"data.{name}.snapshots_to": _utc(instants.max())}
    return out


def feature_params(bundle: Bundle) -> dict[str, str]:
    spec = bundle.spec
    return {"features": ",".join(spec.features)[:_PARAM_LIMIT],
            "categorical_features": ",".join(spec.categorical)[:_PARAM_LIMIT]}


def git_commit(folder: Path = PROJECT_ROOT) -> tuple[str, str]:
    """(commit, dirty) of the code's git checkout: ("unknown", "unknown") outside one or
    without git; dirty is "true" when tracked files differ from the commit."""
    try:
        commit = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=10, check=False)
        if commit.returncode != 0:
            return UNKNOWN, UNKNOWN
        status = subprocess.run(["git", "-C", str(folder), "status", "--porcelain",
                                 "--untracked-files=no"], capture_output=True, text=True,
                                timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN, UNKNOWN
    dirty = UNKNOWN if status.returncode != 0 else str(bool(status.stdout.strip())).lower()
    return commit.stdout.strip(), dirty


def _name(*parts: str) -> str:
    return "/".join(str(p).replace(" ", "_") for p in parts if p)


def _slice(slice_: str, group: str) -> str:
    return "" if slice_ == "overall" else _name(f"by_{slice_}", group)


def metric_names(table: pd.DataFrame, gap: pd.DataFrame, ceiling_metrics: pd.DataFrame,
                 versus_ceiling: pd.DataFrame) -> dict[str, float]:
    """The evaluation's tables as MLflow metrics under the naming scheme of the module doc."""
    out = {}
    for r in table.itertuples():
        if pd.notna(r.value):
            section = "test" if r.model == "model" else _name("baseline", r.model)
            out[_name(section, _slice(r.slice, r.group), r.metric)] = float(r.value)
    for r in ceiling_metrics.itertuples():
        if pd.notna(r.value):
            out[_name("ceiling", r.model, _slice(r.slice, r.group), r.metric)] = float(r.value)
    for (slc, group), row in gap.iterrows():
        for baseline, value in row.items():
            if pd.notna(value):
                out[_name("ceiling/gap_closed", _slice(slc, group), f"vs_{baseline}")] = float(value)
    for r in versus_ceiling.itertuples():
        for part in ("diff", "lo", "hi"):
            value = getattr(r, part)
            if pd.notna(value):
                out[_name("ceiling/model_minus_ceiling", _slice(r.slice, r.group), r.metric,
                          part)] = float(value)
    return out


def grouped(metrics: dict[str, float], section: str) -> dict[str, float]:
    """Metrics named `<group>.<name>` (the note model's) as `<section>/<name>`."""
    return {_name(section, k.split(".", 1)[-1]): float(v) for k, v in metrics.items()}


def description(*, run_name: str, bundle: Bundle, split: Split, window: dict[str, str],
                commit: str, headline: dict[str, float], version: str | None,
                challenger: bool) -> str:
    """The run's description (Markdown): what was trained on what, how it did, where it went."""
    spec = bundle.spec
    if version is None:
        fate = "Not registered."
    elif challenger:
        fate = (f"Registered as version {version} with the alias `challenger`: "
                "`shipdelay promote` puts it to the gate.")
    else:
        fate = (f"Registered as version {version} without an alias: an experiment, never "
                "promoted by `shipdelay promote`.")
    scores = ", ".join(f"{k} {v:.4f}" for k, v in headline.items())
    bookings = (f"- bookings: train {window['data.train.booked_from']} to "
                f"{window['data.train.booked_to']}, validation "
                f"{window['data.valid.booked_from']} to {window['data.valid.booked_to']}, test "
                f"{window['data.test.booked_from']} to {window['data.test.booked_to']} (UTC); "
                f"rows {len(split.train):,} / {len(split.valid):,} / {len(split.test):,}")
    return "\n".join([
        (f"**{run_name}**: shipdelay's delay model, LightGBM P(late) calibrated on the "
         "validation window, P10/P50/P90 delay boosters, the note model; the registered model "
         "is the product's scorer (raw feature rows in, P(late), band, delay, ETA and reasons "
         "out)."),
        "",
        f"- FeatureService `{spec.service}`, {len(spec.features)} features",
        bookings,
        f"- test window: {scores}" if scores else "- test window: no metrics",
        f"- code: git commit `{commit}`",
        f"- {fate}",
    ])


def parameters_json(bundle: Bundle) -> str:
    return json.dumps(lightgbm_parameters(bundle), indent=1, sort_keys=True)


def log_model_facts(bundle: Bundle, split: Split) -> dict[str, str]:
    """Log to the active run the boosters' parameters, the data window, the features and the
    code's commit; returns the data window (for the description)."""
    import mlflow

    window = data_window(split)
    mlflow.log_params({**booster_params(bundle), **window, **feature_params(bundle)})
    mlflow.log_text(parameters_json(bundle), "lightgbm_parameters.json")
    commit, dirty = git_commit()
    mlflow.set_tags({"mlflow.source.git.commit": commit, "git.dirty": dirty})
    return window


def describe(**facts) -> None:
    """Set the active run's description (`description`'s arguments; commit read from the
    run's tag)."""
    import mlflow

    run = mlflow.active_run()
    commit = mlflow.get_run(run.info.run_id).data.tags.get("mlflow.source.git.commit", UNKNOWN)
    mlflow.set_tag("mlflow.note.content", description(commit=commit, **facts))
