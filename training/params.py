"""LightGBM parameters per booster: what `shipdelay tune` finds and `shipdelay train --params`
trains with.

A model has four boosters: `classifier` (P(late)) and `p10`, `p50`, `p90` (the delay-hour
quantiles). Parameters name them; in a file, `quantile` stands for all three quantile boosters
and a `pNN` entry overrides it for one. A JSON or YAML file such as

    classifier: {learning_rate: 0.04, num_leaves: 47}
    quantile: {min_data_in_leaf: 80}
    p90: {num_leaves: 15}

is read as is; a tuning run keeps its best parameters in the same shape (artifact
`best_params.json` of its MLflow parent run), so one can be downloaded, edited and given back.
Parameters not named keep the product's defaults (`training.model`); the objective, its alpha,
the metric and the monotone constraints belong to the product and cannot be set.

`resolve(settings, text)` turns what a person types (`best`, a tuning run id, a file) into
`BoosterParams`, or raises `ParamsError` with one sentence saying what is wrong.
"""

from __future__ import annotations

import difflib
import json
import re
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

QUANTILES = (0.1, 0.5, 0.9)  # the delay quantiles every bundle predicts
QUANTILE_BOOSTERS = {f"p{round(q * 100)}": q for q in QUANTILES}
BOOSTERS = ("classifier", *QUANTILE_BOOSTERS)
ALL_QUANTILES = "quantile"
BEST_ARTIFACT = "best_params.json"
TUNING_ROLE = "study"  # the `role` tag of a tuning parent run (training.tune)
# what each booster's objective fixes: a tuned or written value would change what it predicts
PRODUCT_OWNED = ("objective", "alpha", "metric", "monotone_constraints")
RUN_ID = re.compile(r"[0-9a-f]{32}")


class ParamsError(ValueError):
    """Parameters that cannot be used, said in one sentence."""


@dataclass(frozen=True)
class BoosterParams:
    """LightGBM parameters per booster name (`BOOSTERS`), and where they came from."""

    by_booster: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = ""

    @property
    def classifier(self) -> dict[str, Any]:
        return dict(self.by_booster.get("classifier", {}))

    @property
    def quantiles(self) -> dict[float, dict[str, Any]]:
        """Per quantile (0.1, 0.5, 0.9), as `training.model.fit_bundle` takes them."""
        return {q: dict(self.by_booster[name]) for name, q in QUANTILE_BOOSTERS.items()
                if name in self.by_booster}


def validate(mapping: Any, where: str) -> dict[str, dict[str, Any]]:
    """`mapping` (booster -> parameters) checked and with `quantile` spread over the quantile
    boosters; `where` names its origin in messages."""
    if not isinstance(mapping, dict) or not mapping:
        raise ParamsError(f"{where} must map booster names ({', '.join(BOOSTERS)} or "
                          f"{ALL_QUANTILES}) to LightGBM parameters")
    known = set(BOOSTERS) | {ALL_QUANTILES}
    for booster, params in mapping.items():
        if booster not in known:
            raise ParamsError(f"unknown booster '{booster}' in {where}: use "
                              f"{', '.join(BOOSTERS)} or {ALL_QUANTILES}")
        if not isinstance(params, dict):
            raise ParamsError(f"booster '{booster}' in {where} must hold name: value pairs")
        for name, value in params.items():
            _check(str(name), value, booster, where)
    shared = mapping.get(ALL_QUANTILES, {})
    out = {}
    if "classifier" in mapping:
        out["classifier"] = dict(mapping["classifier"])
    for name in QUANTILE_BOOSTERS:
        if name in mapping or shared:
            out[name] = {**shared, **mapping.get(name, {})}
    return out


def _check(name: str, value: Any, booster: str, where: str) -> None:
    names = _lightgbm_names()
    if names and name not in names:
        close = (difflib.get_close_matches(name, sorted(_aliases()), n=1)
                 or difflib.get_close_matches(name, sorted(names), n=1))
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ParamsError(f"unknown LightGBM parameter '{name}' for {booster} in {where}{hint}")
    if name in _owned_names():
        raise ParamsError(f"'{name}' for {booster} in {where} is set by shipdelay itself and "
                          "cannot be changed")
    if not isinstance(value, bool | int | float | str):
        raise ParamsError(f"'{name}' for {booster} in {where} must be a number, a word or "
                          f"true/false, not {value!r}")


@lru_cache(maxsize=1)
def _aliases() -> dict[str, list[str]]:
    """LightGBM's own table of parameters and their aliases (empty if it cannot tell)."""
    try:
        from lightgbm.basic import _ConfigAliases

        return {k: list(v) for k, v in _ConfigAliases._get_all_param_aliases().items()}
    except Exception:  # noqa: BLE001 - a LightGBM without the table: names go unchecked
        return {}


def _lightgbm_names() -> set[str]:
    return {n for name, aliases in _aliases().items() for n in (name, *aliases)}


def _owned_names() -> set[str]:
    table = _aliases()
    return {n for name in PRODUCT_OWNED for n in (name, *table.get(name, ()))}


# ----------------------------------------------------------------------------------- sources

def read_file(path: str | Path) -> BoosterParams:
    """Parameters from a JSON or YAML file."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"parameters file {path} does not exist")
    if path.is_dir():
        raise ParamsError(f"{path} is a folder, not a parameters file")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as err:  # noqa: BLE001 - json's ValueError, yaml's YAMLError
        raise ParamsError(f"{path} is not valid JSON or YAML ({_first_line(err)})") from None
    return BoosterParams(validate(data, str(path)), f"file {path}")


def from_run(settings: Any, run_id: str) -> BoosterParams:
    """The best parameters a tuning parent run stored."""
    from mlflow.exceptions import MlflowException

    from registry.store import client, safe_uri

    c = client(settings)
    try:
        run = c.get_run(run_id)
    except MlflowException:
        raise ParamsError(f"no MLflow run {run_id} in {safe_uri(settings.tracking_uri)}: give "
                          "`best`, the id of a `shipdelay tune` run or a parameters "
                          "file") from None
    if run.data.tags.get("role") != TUNING_ROLE:
        raise ParamsError(f"run {run_id} is not a tuning run: give the id `shipdelay tune` "
                          "printed, `best` or a parameters file")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = c.download_artifacts(run_id, BEST_ARTIFACT, tmp)
        except (MlflowException, OSError):
            raise ParamsError(f"tuning run {run_id} holds no best parameters (no trial "
                              "completed): tune again with more trials") from None
        data = json.loads(Path(local).read_text())
    return BoosterParams(validate(data, f"tuning run {run_id}"), f"tuning run {run_id}")


def newest(settings: Any) -> BoosterParams:
    """The best parameters of the newest finished tuning run that has some."""
    from registry.store import EXPERIMENT, client

    c = client(settings)
    experiment = c.get_experiment_by_name(EXPERIMENT)
    runs = [] if experiment is None else c.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.role = '{TUNING_ROLE}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=50)
    for run in runs:
        if any(a.path == BEST_ARTIFACT for a in c.list_artifacts(run.info.run_id)):
            return from_run(settings, run.info.run_id)
    raise ParamsError("no tuning run with best parameters yet: run `shipdelay tune` first")


def resolve(settings: Any, text: str) -> BoosterParams:
    """`best`, a tuning run id or a parameters file, as `shipdelay train --params` takes it."""
    text = text.strip()
    if text == "best":
        return newest(settings)
    path = Path(text).expanduser()
    if path.exists():
        return read_file(path)
    if RUN_ID.fullmatch(text):
        return from_run(settings, text)
    if path.suffix.lower() in (".json", ".yaml", ".yml") or "/" in text:
        raise ParamsError(f"parameters file {text} does not exist")
    raise ParamsError(f"'{text}' is neither `best`, a tuning run id (32 hex digits) nor a "
                      "parameters file")


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
