"""Promotion and rollback: the only code that moves the "champion" alias.

`promote` scores challenger and champion with the caller's `evaluate` (training code scores a
Bundle on the newest holdout) and lets `registry.gate.decide` judge. Scoring paths follow the
alias, so moving it is the deployment. Each replaced champion is appended to the registered
model's `champion_history` tag (JSON list, newest last), which is what `rollback` pops.
One operator at a time: two concurrent promotions could interleave their alias and tag writes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

from registry.gate import GateResult, decide
from registry.loader import CHAMPION, NoChampionError, alias_version, load_by_alias
from registry.register import CHALLENGER
from registry.store import MODEL_NAME, client
from shipdelay.settings import Settings
from training.bundle import Bundle

log = logging.getLogger(__name__)

HISTORY_TAG = "champion_history"
REASON_TAG = "promotion_reason"  # why the version was trained and promoted: an alarm, "schedule"
_TAG_LIMIT = 4000  # model version tag values are limited in length by the tracking stores


class NoChallengerError(LookupError):
    """Nothing to promote: no version carries the "challenger" alias."""


class NoPreviousChampionError(LookupError):
    """Nothing to roll back to: `champion_history` is empty."""


def champion_history(c: MlflowClient) -> list[str]:
    """Earlier champion versions, newest last (empty if the model or the tag is absent)."""
    try:
        raw = c.get_registered_model(MODEL_NAME).tags.get(HISTORY_TAG)
    except MlflowException as err:
        if err.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):  # nothing registered yet
            return []
        raise
    return [str(v) for v in json.loads(raw)] if raw else []


def _save_history(c: MlflowClient, history: list[str]) -> None:
    c.set_registered_model_tag(MODEL_NAME, HISTORY_TAG, json.dumps(history))


def _record(c: MlflowClient, version: str, outcome: str, reasons: list[str]) -> None:
    """Leave the gate's verdict on the challenger version, for whoever looks at it later."""
    c.set_model_version_tag(MODEL_NAME, version, "gate", outcome)
    c.set_model_version_tag(MODEL_NAME, version, "gate_reasons", " | ".join(reasons)[:_TAG_LIMIT])


def _only_challenger(evaluation: dict) -> pd.DataFrame:
    rows = {"log_loss": evaluation["log_loss"], "ece": evaluation["ece"],
            **{f"stage:{k}": v for k, v in evaluation.get("stages", {}).items()}}
    return pd.DataFrame({"challenger": pd.Series(rows, dtype=float)}).rename_axis("check")


def promote(settings: Settings, evaluate: Callable[[Bundle], dict], stage_margin: float = 0.01,
            force: bool = False, ece_tolerance: float = 0.0,
            reason: str | None = None) -> GateResult:
    """Make the challenger the champion if the gate passes (or if there is no champion yet, or
    `force`). Returns the gate's result; `ok` is True exactly when the champion alias moved.
    `reason` (the alarm that asked for a new model, or "schedule") is recorded on the version
    that becomes champion: tag `promotion_reason` and its description."""
    c = client(settings)
    if alias_version(settings, CHALLENGER) is None:
        raise NoChallengerError(f"no version of {MODEL_NAME!r} has the alias {CHALLENGER!r}: "
                                "train and register a model first")
    challenger = load_by_alias(settings, CHALLENGER)
    try:
        champion: Bundle | None = load_by_alias(settings, CHAMPION)
    except NoChampionError:
        champion = None

    if champion is not None and champion.version == challenger.version:
        result = GateResult(True, [f"version {challenger.version} already is the champion"],
                            pd.DataFrame())
        c.delete_registered_model_alias(MODEL_NAME, CHALLENGER)
        return result

    challenger_eval = evaluate(challenger)
    if champion is None:
        result = GateResult(True, ["no champion yet"], _only_challenger(challenger_eval))
    else:
        result = decide(challenger_eval, evaluate(champion), stage_margin, ece_tolerance)

    if not result.ok and not force:
        _record(c, challenger.version, "refused", result.reasons)
        log.info("version %s refused: %s", challenger.version, "; ".join(result.reasons))
        return result
    forced = not result.ok
    if forced:
        result = GateResult(True, ["forced past the gate, which said:", *result.reasons],
                            result.table)

    if champion is not None:
        # History first: if the alias move then fails, rollback merely skips a duplicate entry.
        _save_history(c, [*champion_history(c), champion.version])
    c.set_registered_model_alias(MODEL_NAME, CHAMPION, challenger.version)
    c.delete_registered_model_alias(MODEL_NAME, CHALLENGER)
    _record(c, challenger.version, "forced" if forced else "promoted", result.reasons)
    if reason:
        c.set_model_version_tag(MODEL_NAME, challenger.version, REASON_TAG, reason[:_TAG_LIMIT])
        c.update_model_version(MODEL_NAME, challenger.version,
                               description=f"champion because of {reason}"[:_TAG_LIMIT])
    log.info("version %s is the champion (was %s)", challenger.version,
             champion.version if champion else None)
    return result


def rollback(settings: Settings) -> tuple[str | None, str]:
    """Give the "champion" alias back to the previous champion; returns (from, to) versions."""
    c = client(settings)
    current = alias_version(settings, CHAMPION)
    history = champion_history(c)
    while history and history[-1] == current:  # left by an interrupted promotion
        history.pop()
    if not history:
        raise NoPreviousChampionError(
            f"no earlier champion of {MODEL_NAME!r} is recorded ({HISTORY_TAG} is empty): "
            "nothing to roll back to")
    previous = history.pop()
    c.set_registered_model_alias(MODEL_NAME, CHAMPION, previous)
    _save_history(c, history)
    if current is not None:
        c.set_model_version_tag(MODEL_NAME, current, "rolled_back", f"replaced by {previous}")
    log.info("rolled back champion from version %s to %s", current, previous)
    return current, previous
