"""The retraining loop: `shipdelay retrain` and the nightly pipeline.

`retrain` = an incremental feature build (from the day of the store's last build or roll; a full
build when there is no store yet), `train` on a split of recent windows (`retrain_split`;
registered as the challenger, tagged with why it was trained) and the promotion gate on the
challenger's test window, the newest holdout (calibration within `gate_ece_tolerance`); a promotion records its reason on the
model version (`registry.promote`).

`nightly` = score-batch -> monitor -> retrain and promote, the last only when monitoring asks
for it (a "drift" or "performance" alarm) or when told to (`retrain="always"`, the scheduled
run). Every step runs even when an earlier one failed where it can (monitoring never waits on
scoring), and the run ends in one summary and one exit code:

- 0: every step ran and no alarm is left unanswered (none fired, or a new champion answered
  the alarms that ask for a new model and no other alarm fired);
- 1: a step failed (its sentence says which and why);
- 3: alarms are left for people: a feed that stopped, stale features, or a retrain the gate
  refused (the champion stays).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal

import pandas as pd

from shipdelay.settings import Settings

log = logging.getLogger("shipdelay.pipeline")

OK, FAILED, SKIPPED = "ok", "failed", "skipped"
EXIT_OK, EXIT_FAILED, EXIT_ALARMS = 0, 1, 3
Retrain = Literal["auto", "always", "never"]
SCHEDULE = "schedule"
Step = Callable[[str], None]


@dataclass
class RetrainReport:
    """What a retrain did: the build, the new version and the gate's verdict."""

    reason: str
    build: str  # "full" or "incremental from YYYY-MM-DD"
    version: str | None = None
    promoted: bool = False
    gate: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def sentence(self) -> str:
        verdict = "promoted to champion" if self.promoted else "refused by the gate"
        return (f"version {self.version} {verdict} ({'; '.join(self.gate)}); features: "
                f"{self.build} build")


def incremental_since(settings: Settings) -> pd.Timestamp | None:
    """The day from which a build recomputes: the day of the store's last build or roll (its
    offline mark), None (a full build) when the store has none."""
    from features import marks
    from features.store import offline_dir

    try:
        mark = marks.offline_mark(offline_dir(settings))
    except (OSError, ValueError):
        return None
    return None if mark is None else mark.normalize()


def retrain_split(settings: Settings, now: pd.Timestamp):
    """The split of a retrain: the newest `retrain_window_days` of bookings for the test window,
    as many before them (and `retrain_gap_days`) for validation, and everything older to learn
    from, so that a new model learns from the recent weeks, not from a window that ended
    months ago as the default split's label-horizon gaps would have it."""
    from training.train import SplitOptions

    window = pd.Timedelta(days=settings.retrain_window_days)
    gap = pd.Timedelta(days=settings.retrain_gap_days)
    test_from = now - window
    return SplitOptions(test_from=test_from.isoformat(),
                        valid_from=(test_from - gap - window).isoformat(),
                        gap_days=settings.retrain_gap_days)


def retrain(settings: Settings, reason: str = SCHEDULE, *, full: bool = False,
            stage_margin: float = 0.01, online: bool = True,
            step: Step | None = None, tuned=None) -> RetrainReport:
    """Rebuild the features, train a challenger and put it to the gate; see the module doc.
    `online=False` leaves the online store as it is (training reads the offline store);
    `tuned` (`training.params.BoosterParams`) are the boosters' parameters, as `train --params`."""
    from features.build import build_features
    from registry.promote import promote
    from registry.store import MODEL_NAME, client
    from training.train import holdout_evaluator, train

    say = step or (lambda _: None)
    since = None if full else incremental_since(settings)
    report = RetrainReport(reason, "full" if since is None else f"incremental from {since:%Y-%m-%d}")
    t = time.perf_counter()
    say(f"features: {report.build} build")
    build_features(settings, since=since.date() if since is not None else None, online=online)
    report.seconds["features"] = time.perf_counter() - t

    t = time.perf_counter()
    from serving.batch import lake_now
    from shipdelay.lake import Lake

    options = retrain_split(settings, lake_now(Lake(settings.lake_dir)))
    trained = train(settings, on_step=lambda s: say(f"train: {s}"), run_name="retrain",
                    challenger=True, tuned=tuned, split_options=options)
    report.version = trained.version
    client(settings).set_model_version_tag(MODEL_NAME, trained.version, "retrain_reason",
                                           reason[:4000])
    report.seconds["train"] = time.perf_counter() - t

    t = time.perf_counter()
    say("promote: challenger and champion on the newest holdout")
    result = promote(settings, holdout_evaluator(settings), stage_margin=stage_margin,
                     reason=reason, ece_tolerance=settings.gate_ece_tolerance)
    report.promoted, report.gate = result.ok, list(result.reasons)
    report.seconds["promote"] = time.perf_counter() - t
    return report


@dataclass
class StepResult:
    name: str
    status: str  # ok | failed | skipped
    seconds: float
    detail: str


@dataclass
class NightlyReport:
    as_of: str | None
    steps: list[StepResult] = field(default_factory=list)
    alarms: list[dict] = field(default_factory=list)
    retrain_reason: str | None = None
    promoted_version: str | None = None
    exit_code: int = EXIT_OK
    json_path: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _alarm_reason(summary) -> str:
    """Why a retrain was asked for, as recorded on the model version: the alarms' messages."""
    reasons = list(summary.retrain_reasons)
    head = "; ".join(reasons[:3])
    return f"alarm: {head}" + (f" (+{len(reasons) - 3} more)" if len(reasons) > 3 else "")


def _run(report: NightlyReport, name: str, action: Callable[[], str]) -> bool:
    """Run one step; its failure becomes the step's sentence (the traceback goes to the log)."""
    t = time.perf_counter()
    try:
        detail = action()
    except Exception as err:  # one step's failure must not stop the others
        log.exception("nightly step %s failed", name)
        report.steps.append(StepResult(name, FAILED, time.perf_counter() - t,
                                       f"{type(err).__name__}: {err}".splitlines()[0][:300]))
        return False
    report.steps.append(StepResult(name, OK, time.perf_counter() - t, detail))
    return True


def nightly(settings: Settings, as_of=None, *, retrain_mode: Retrain = "auto",
            days: int | None = None, stage_margin: float = 0.01, build_features: bool = False,
            monitor: Callable | None = None, retrainer: Callable | None = None,
            scorer: Callable | None = None, step: Step | None = None) -> NightlyReport:
    """One nightly run (see the module doc). `monitor`, `retrainer` and `scorer` default to
    `monitoring.monitor.run_monitor`, `retrain` and `serving.batch.score_batch`."""
    say = step or (lambda _: None)
    if monitor is None:
        from monitoring.monitor import run_monitor as monitor
    retrainer = retrainer or retrain
    if scorer is None:
        from serving.batch import score_batch as scorer
    report = NightlyReport(as_of=None if as_of is None else str(pd.Timestamp(as_of)))

    if build_features:
        def build() -> str:
            from features.build import build_features as build_store

            since = incremental_since(settings)
            say("features: incremental build")
            built = build_store(settings, since=since.date() if since is not None else None,
                                as_of=as_of)
            return (f"{'full' if since is None else f'from {since:%Y-%m-%d}'} build as of "
                    f"{built.as_of:%Y-%m-%d %H:%M}")
        _run(report, "features", build)

    def score() -> str:
        say("score-batch: scoring every shipment in flight")
        result = scorer(settings, as_of)
        return (f"{result.scored:,} shipments scored with version {result.model_version} as of "
                f"{result.as_of:%Y-%m-%d %H:%M}")
    _run(report, "score-batch", score)

    summary = None

    def watch() -> str:
        nonlocal summary
        say("monitor: judging predictions, watching the inputs")
        summary = monitor(settings, as_of=as_of, days=days)
        report.alarms = [asdict(a) for a in summary.alarms]
        kinds = pd.Series([a.kind for a in summary.alarms], dtype=object).value_counts()
        fired = ", ".join(f"{n} {k}" for k, n in kinds.items()) or "no alarm"
        return f"{summary.judged:,} of {summary.logged:,} predictions judged; {fired}"
    monitored = _run(report, "monitor", watch)

    wanted = retrain_mode == "always" or (retrain_mode == "auto" and summary is not None
                                          and summary.should_retrain)
    answered = False
    if wanted:
        reason = _alarm_reason(summary) if summary is not None and summary.should_retrain \
            else SCHEDULE
        report.retrain_reason = reason
        outcome: dict = {}

        def mend() -> str:
            done = retrainer(settings, reason, stage_margin=stage_margin, step=say)
            outcome["report"] = done
            return done.sentence
        if _run(report, "retrain", mend):
            answered = outcome["report"].promoted
            report.promoted_version = outcome["report"].version if answered else None
    else:
        why = ("monitoring failed" if not monitored else "retraining is off" if
               retrain_mode == "never" else "monitoring asked for no new model")
        report.steps.append(StepResult("retrain", SKIPPED, 0.0, why))

    left = [a for a in (summary.alarms if summary is not None else [])
            if not (answered and a.kind in ("drift", "performance"))]
    if any(s.status == FAILED for s in report.steps):
        report.exit_code = EXIT_FAILED
    elif left:
        report.exit_code = EXIT_ALARMS
    report.json_path = str(_write(settings, report))
    return report


def _write(settings: Settings, report: NightlyReport):
    """The machine-readable summary, one file per run under reports/nightly."""
    folder = settings.reports_dir / "nightly"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = pd.Timestamp.now("UTC").strftime("%Y%m%dT%H%M%S")
    path = folder / f"nightly-{stamp}.json"
    path.write_text(json.dumps(report.to_dict(), indent=2, default=str))
    return path


def print_retrain(report: RetrainReport, console) -> None:
    """The retrain's result in plain lines."""
    console.print(f"retrain ({report.reason}): {report.sentence}; "
                  + ", ".join(f"{k} {v:.0f} s" for k, v in report.seconds.items()),
                  markup=False, highlight=False, soft_wrap=True)


def print_nightly(report: NightlyReport, console) -> None:
    """One table of the steps, the alarms, and one closing sentence with the exit code."""
    from rich.table import Table

    table = Table("step", "status", "seconds", "detail", title="nightly pipeline")
    for s in report.steps:
        table.add_row(s.name, s.status, f"{s.seconds:.0f}", s.detail)
    console.print(table)
    for a in report.alarms[:20]:
        console.print(f"alarm {a['kind']} on {a['slice']}: {a['message']}", markup=False,
                      highlight=False, soft_wrap=True)
    if len(report.alarms) > 20:
        console.print(f"... and {len(report.alarms) - 20} more alarms (see {report.json_path})")
    closing = {
        EXIT_OK: "nothing left to do",
        EXIT_FAILED: "a step failed: its detail above says why; the command log under the data "
                     "folder has the rest",
        EXIT_ALARMS: "alarms are left for people to look at (the champion is unchanged where "
                     "the gate refused)",
    }[report.exit_code]
    console.print(f"exit {report.exit_code}: {closing}; summary {report.json_path}",
                  markup=False, highlight=False, soft_wrap=True)
