"""The retraining loop shown on a simulated world: a carrier degrades, monitoring sees it, the
nightly pipeline retrains, and the new champion is checked against the old on the weeks after.

Time passes night by night. The live data folder holds the whole simulated lake with its
feature store; every read of it is at the night's instant (the batch's point-in-time join, the
monitor's outcomes known by then), so it sees no later row. Training cannot: a training set
takes every known outcome, so each retrain runs in a second data folder whose lake is the live
lake as it stood that night (`shipdelay.world.timeline.lake_until`), with an incremental feature
build; both folders share one model registry, so a promotion there is the champion here.

`run_scenario` returns, night by night, the alarms, the realized log loss the monitor reported
(overall and per carrier, lane and mode group) and what the pipeline did, and at the end
each champion's realized log loss on the snapshots of the weeks after the last promotion (the
same rows for both models, all judged by the world's end). benchmarks/retraining_loop.py runs
it at full size with and without the degradation; tests/model/test_retraining_loop.py a small
version.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from monitoring.pipeline import RetrainReport, nightly, retrain
from shipdelay.lake import Lake
from shipdelay.settings import Settings
from shipdelay.world.simulate import SimConfig, simulate
from shipdelay.world.timeline import lake_until

NIGHTLY_AT = pd.Timedelta(hours=2)  # the nightly run's cut-off after midnight, as in cron


@dataclass
class Night:
    day: str
    alarms: list[tuple[str, str, str]]  # (kind, slice, metric)
    exit_code: int
    retrained: str | None = None  # the version trained that night, if any
    promoted: bool = False
    champion: str | None = None
    judged: int = 0  # predictions of the monitor's window whose outcome was known that night
    # the monitor's realized log loss over its window: "overall" and "carrier=OCE-02" etc.
    log_loss: dict[str, float] = field(default_factory=dict)


@dataclass
class ScenarioResult:
    nights: list[Night] = field(default_factory=list)
    initial: str | None = None  # the first champion
    realized: dict[str, float] = field(default_factory=dict)  # version -> log loss, weeks after
    realized_rows: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def first_alarm(self, kind: str, slice_: str | None = None) -> str | None:
        """The first night with an alarm of `kind` (on `slice_`, if given)."""
        for night in self.nights:
            if any(k == kind and (slice_ is None or s == slice_) for k, s, _ in night.alarms):
                return night.day
        return None

    @property
    def nights_with_alarms(self) -> int:
        return sum(bool(n.alarms) for n in self.nights)


def _realized_by_group(summary) -> dict[str, float]:
    """The realized log loss of the monitor's report, overall and per slice group."""
    import json

    if summary is None or summary.json_path is None:
        return {}
    rows = json.loads(Path(summary.json_path).read_text())["tables"]["realized_by_slice"]
    return {("overall" if r["slice"] == "overall" else f"{r['slice']}={r['group']}"):
            float(r["value"]) for r in rows if r["metric"] == "log_loss"}


def _share_reference(source: Settings, target: Settings, version: str) -> None:
    """The drift reference `version` saved when it was trained (in the trainer's folder), for
    the live folder's monitor."""
    from monitoring.drift import reference_from_training, reference_path

    if not reference_path(source.data_dir, version).exists():
        reference_from_training(source, version)
    path = reference_path(target.data_dir, version)
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(reference_path(source.data_dir, version), path)


def _realized(live: Settings, versions: list[str], since: pd.Timestamp,
              until: pd.Timestamp) -> tuple[dict[str, float], int]:
    """Each version's log loss on the snapshots taken from `since` to `until` (features at
    each snapshot's instant, outcomes known by the world's end)."""
    from features.store import offline_dir
    from registry.loader import bundle_folder
    from registry.store import MODEL_NAME, client
    from training.bundle import Bundle
    from training.dataset import build_training_set
    from training.evaluate import classification_metrics
    from training.train import score_frame

    rows = build_training_set(Lake(live.lake_dir), offline_dir(live))
    rows = rows[(rows["as_of"] >= since) & (rows["as_of"] < until)].reset_index(drop=True)
    y = rows["is_late"].to_numpy(float)
    c, out = client(live), {}
    for v in versions:
        bundle = Bundle.load(bundle_folder(live, c, c.get_model_version(MODEL_NAME, v)),
                             version=v)
        p, _ = score_frame(bundle, rows)
        out[v] = float(classification_metrics(y, np.asarray(p, float))["log_loss"])
    return out, len(rows)


def run_scenario(work: Path, world: SimConfig, train_until: str, first_night: str,
                 last_night: str, *, every_days: int = 1, settings_overrides: dict | None = None,
                 compare_days: int = 14, params: str | Path | None = None,
                 say: Callable[[str], None] = print) -> ScenarioResult:
    """Simulate `world`, train the first champion on what was known at `train_until`, run the
    nightly pipeline every night from `first_night` to `last_night` (YYYY-MM-DD), then compare
    the first and the last champion on the `compare_days` after the last promotion. `params`:
    a parameters file every training uses (`shipdelay train --params`; e.g. smaller trees)."""
    import time

    from features.build import build_features
    from monitoring.monitor import run_monitor
    from training.params import read_file

    tuned = read_file(params) if params is not None else None
    work = Path(work)
    registry = {"mlflow_tracking_uri": f"sqlite:///{(work / 'mlflow.db').resolve()}"}
    live = Settings(data_dir=work / "live", **registry, **(settings_overrides or {}))
    trainer = Settings(data_dir=work / "trainer", **registry, **(settings_overrides or {}))
    result, t = ScenarioResult(), time.perf_counter()

    say(f"simulating {world.shipments:,} shipments from {world.start} for {world.days} days")
    simulate(world, live.lake_dir)
    full = Lake(live.lake_dir.resolve())
    result.seconds["simulate"] = time.perf_counter() - t

    t = time.perf_counter()
    say(f"the first champion: trained on the lake as of {train_until}")
    lake_until(full, trainer.lake_dir, pd.Timestamp(train_until, tz="UTC"))
    first = retrain(trainer, "initial model", full=True, online=False, tuned=tuned)
    result.initial = first.version
    _share_reference(trainer, live, first.version)
    build_features(live, online=False)
    result.seconds["first model"] = time.perf_counter() - t

    def retrain_that_night(when: pd.Timestamp):
        def retrainer(settings, reason, stage_margin=0.01, step=None) -> RetrainReport:
            lake_until(full, trainer.lake_dir, when)
            done = retrain(trainer, reason, stage_margin=stage_margin, online=False, step=step,
                           tuned=tuned)
            if done.promoted:
                _share_reference(trainer, live, done.version)
            return done
        return retrainer

    seen = {}

    def monitor(settings, as_of=None, days=None):
        seen["summary"] = run_monitor(settings, as_of=as_of, days=days, log_to_mlflow=False)
        return seen["summary"]

    t = time.perf_counter()
    champion, promoted_at = first.version, None
    for day in pd.date_range(first_night, last_night, freq=f"{every_days}D", tz="UTC"):
        when = day + NIGHTLY_AT
        seen.clear()
        report = nightly(live, when, monitor=monitor, retrainer=retrain_that_night(when))
        retrained = next((s for s in report.steps if s.name == "retrain" and s.status == "ok"),
                         None)
        night = Night(f"{day:%Y-%m-%d}",
                      [(a["kind"], a["slice"], a["metric"]) for a in report.alarms],
                      report.exit_code, champion=champion)
        if seen.get("summary") is not None:
            night.judged = seen["summary"].judged
            night.log_loss = _realized_by_group(seen["summary"])
        if retrained is not None:
            night.retrained = retrained.detail.split()[1]
            night.promoted = report.promoted_version is not None
        if report.promoted_version:
            champion, promoted_at = report.promoted_version, when
        failed = [f"{s.name}: {s.detail}" for s in report.steps if s.status == "failed"]
        shown = sorted({f"{k} {s}" for k, s, _ in night.alarms})
        say(f"{night.day}: exit {night.exit_code}, alarms {shown[:8] or 'none'}"
            + (f" (+{len(shown) - 8})" if len(shown) > 8 else "")
            + (f", retrained {night.retrained} ({'promoted' if night.promoted else 'refused'})"
               if night.retrained else "") + (f", failed {failed}" if failed else ""))
        result.nights.append(night)
    result.seconds["nights"] = time.perf_counter() - t

    if promoted_at is not None:
        t = time.perf_counter()
        until = promoted_at + pd.Timedelta(days=compare_days)
        result.realized, result.realized_rows = _realized(
            live, [first.version, champion], promoted_at, until)
        say(f"log loss on {result.realized_rows:,} snapshots from {promoted_at:%Y-%m-%d} to "
            f"{until:%Y-%m-%d}: " + ", ".join(f"version {v} {ll:.4f}"
                                              for v, ll in result.realized.items()))
        result.seconds["compare"] = time.perf_counter() - t
    return result
