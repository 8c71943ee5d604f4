"""The nightly pipeline's branching: when it retrains, why, and its one exit code.

Scoring, monitoring and retraining are stand-ins here (their own tests cover them); the
end-to-end run with the real ones is tests/model/test_retraining_loop.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from monitoring.pipeline import EXIT_ALARMS, EXIT_FAILED, EXIT_OK, RetrainReport, nightly
from monitoring.summary import Alarm, MonitorSummary
from shipdelay.settings import Settings

DRIFT = Alarm("drift", "carrier=TRU-02", "psi:carrier_late_rate_7d", 0.61, 0.25,
              "carrier=TRU-02: carrier_late_rate_7d drifted (PSI 0.61 > 0.25)")
VOLUME = Alarm("volume", "hub=P-CNSHA", "scans", 0.0, 0.5, "hub P-CNSHA: no scans for a day")


class Calls:
    """Stand-ins that remember how they were called."""

    def __init__(self, alarms=(), promoted=True, score_fails=False, monitor_fails=False):
        self.alarms, self.promoted = list(alarms), promoted
        self.score_fails, self.monitor_fails = score_fails, monitor_fails
        self.retrained: list[str] = []
        self.monitored = 0

    def scorer(self, settings, as_of):
        if self.score_fails:
            raise RuntimeError("no champion: train and promote a model first")
        return SimpleNamespace(scored=120, model_version="1", as_of=pd.Timestamp("2026-01-05"))

    def monitor(self, settings, as_of=None, days=None):
        self.monitored += 1
        if self.monitor_fails:
            raise OSError("prediction log unreadable")
        return MonitorSummary(as_of="2026-01-05", days=30, alarms=self.alarms, judged=900,
                              logged=1500)

    def retrainer(self, settings, reason, stage_margin=0.01, step=None):
        self.retrained.append(reason)
        return RetrainReport(reason, "incremental from 2026-01-04", "2", self.promoted,
                             ["log loss improved"])


def _run(tmp_path, calls: Calls, **options):
    settings = Settings(data_dir=tmp_path / "data")
    return nightly(settings, monitor=calls.monitor, retrainer=calls.retrainer,
                   scorer=calls.scorer, **options)


def test_no_alarm_no_retrain(tmp_path):
    calls = Calls()
    report = _run(tmp_path, calls)
    assert calls.retrained == [] and report.exit_code == EXIT_OK
    assert [s.status for s in report.steps] == ["ok", "ok", "skipped"]
    saved = json.loads(Path(report.json_path).read_text())
    assert saved["exit_code"] == EXIT_OK and saved["steps"][0]["name"] == "score-batch"


def test_drift_alarm_retrains_and_records_the_alarm_as_the_reason(tmp_path):
    calls = Calls([DRIFT])
    report = _run(tmp_path, calls)
    assert calls.retrained == [f"alarm: {DRIFT.message}"]
    assert report.exit_code == EXIT_OK and report.promoted_version == "2"


def test_refused_retrain_leaves_the_alarm_standing(tmp_path):
    report = _run(tmp_path, Calls([DRIFT], promoted=False))
    assert report.exit_code == EXIT_ALARMS and report.promoted_version is None


def test_a_silent_feed_is_for_people_not_for_training(tmp_path):
    calls = Calls([VOLUME])
    report = _run(tmp_path, calls)
    assert calls.retrained == [] and report.exit_code == EXIT_ALARMS
    # a promotion answers the drift alarm, not the feed that stopped
    calls = Calls([DRIFT, VOLUME])
    assert _run(tmp_path, calls).exit_code == EXIT_ALARMS and len(calls.retrained) == 1


@pytest.mark.parametrize("mode, alarms, expected", [
    ("always", [], ["schedule"]), ("never", [DRIFT], []), ("auto", [], [])])
def test_retrain_modes(tmp_path, mode, alarms, expected):
    calls = Calls(alarms)
    _run(tmp_path, calls, retrain_mode=mode)
    assert calls.retrained == expected


def test_failed_scoring_does_not_stop_monitoring(tmp_path):
    calls = Calls([DRIFT], score_fails=True)
    report = _run(tmp_path, calls)
    assert calls.monitored == 1 and len(calls.retrained) == 1
    assert report.exit_code == EXIT_FAILED
    assert "no champion" in report.steps[0].detail and "Traceback" not in report.steps[0].detail


def test_failed_monitoring_skips_the_automatic_retrain(tmp_path):
    calls = Calls(monitor_fails=True)
    report = _run(tmp_path, calls)
    assert calls.retrained == [] and report.exit_code == EXIT_FAILED
    assert report.steps[-1].detail == "monitoring failed"


@pytest.mark.parametrize("args, hint", [
    (["nightly", "--retrain", "sometimes"], "--retrain"),
    (["nightly", "--as-of", "yesterday-ish"], "--as-of"),
    (["simulate", "--regime", "carrier_degrades:TRU-99:2025-11-01"], "--regime"),
])
def test_bad_options_exit_2_naming_the_option(data_dir, args, hint):
    from typer.testing import CliRunner

    from shipdelay.cli import app

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and hint in result.output
    assert "Traceback" not in result.output
