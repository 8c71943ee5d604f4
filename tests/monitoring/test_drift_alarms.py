"""Drift alarms as people read them, on small synthetic logs written by hand (no outcomes needed:
drift is judged before the labels): calendar and clock features that move raise no alarm but
keep their PSI in the report; an input that moves while P(late) holds raises none either; a
shift of the input P(late) reads raises one alarm on P(late), not one per slice or feature,
naming the input; one carrier's shift raises exactly one alarm naming that carrier; and a
reference too thin to judge against gives one "data" alarm instead of drift alarms."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from monitoring import monitor as mon
from monitoring import synthetic
from monitoring.drift import EXPECTED_DRIFT, Reference
from monitoring.prediction_log import prediction_table, write_predictions
from shipdelay.lake import open_lake
from shipdelay.settings import Settings

DAYS = 3
FIRST = pd.Timestamp("2026-03-02T00:00Z")
AS_OF = FIRST + pd.Timedelta(days=DAYS - 1, hours=23)
ROWS_PER_DAY = 5_000
CARRIERS = [f"C{i:02d}" for i in range(10)]
LANES = [f"L{i:02d}" for i in range(20)]
BAD_CARRIER = "C03"
SHIFTED = synthetic.SHIFTED  # an input P(late) does not read
DRIVER = synthetic.DRIVER  # the input P(late) reads


def write_world(root, change: str, seed: int = 5) -> Settings:
    """`DAYS` days of batch predictions from the synthetic reference's distribution, then one
    change: "calendar" (calendar and clock features move), "carrier" (one carrier's `DRIVER`
    moves), "overall" (`DRIVER` moves for everyone), "inert" (`SHIFTED` moves for everyone) or
    "none". P(late) is computed from the vectors as written."""
    settings = Settings(data_dir=root / "data")
    open_lake(settings.lake_dir)
    rng = np.random.default_rng(seed)
    for d in range(DAYS):
        day = FIRST + pd.Timedelta(days=d)
        n = ROWS_PER_DAY
        vectors = synthetic._features(rng, n, np.zeros(n, bool))
        carrier = np.asarray(CARRIERS, dtype=object)[rng.integers(0, len(CARRIERS), n)]
        if change == "calendar":
            vectors["booked_month"] = np.full(n, float(day.month))
            vectors["booked_weekday"] = np.full(n, float(day.weekday()))
            vectors["booked_hour"] = rng.integers(8, 10, n).astype(float)
            vectors["hours_to_promised"] = vectors["hours_to_promised"] + 5.0
        elif change == "carrier":
            vectors[DRIVER] = np.where(carrier == BAD_CARRIER, vectors[DRIVER] + 4.0,
                                       vectors[DRIVER])
        elif change == "overall":
            vectors[DRIVER] = vectors[DRIVER] + 3.0
        elif change == "inert":
            vectors[SHIFTED] = vectors[SHIFTED] + 3.0
        ids = np.array([f"S{d}{i:06d}" for i in range(n)], dtype=object)
        vectors |= {"shipment_id": ids, "carrier_id": carrier, "customer_id": carrier,
                    "lane_id": np.asarray(LANES, dtype=object)[rng.integers(0, len(LANES), n)]}
        eta = pd.DatetimeIndex([day + pd.Timedelta(days=2)] * n)
        scored = {"shipment_id": ids, "p_late": synthetic.p_late_of(vectors[synthetic.DRIVER]),
                  "delay_p50_h": np.zeros(n), "delay_p90_h": np.full(n, 12.0),
                  "model_version": np.full(n, "1", dtype=object), "eta": eta,
                  "eta_p10": eta - pd.Timedelta(hours=12), "eta_p90": eta + pd.Timedelta(hours=12)}
        write_predictions(settings.predictions_dir, prediction_table("batch", scored, vectors,
                                                                     day))
    return settings


@pytest.fixture(scope="module")
def reference() -> Reference:
    return synthetic.reference(rows=20_000, carriers=CARRIERS, lanes=LANES)


@pytest.fixture(scope="module")
def run(tmp_path_factory, reference):
    """Monitor one world; results cached by the change and the reference's size."""
    done: dict = {}

    def monitor(change: str, ref: Reference | None = None):
        key = (change,) + ((ref.rows, ref.window_days) if ref else ())
        if key not in done:
            root = tmp_path_factory.mktemp(change)
            settings = write_world(root, change)
            patch = pytest.MonkeyPatch()
            patch.setattr(mon, "_registered_versions", lambda settings, counts: {"1"})
            try:
                done[key] = mon.run_monitor(settings, as_of=AS_OF, days=DAYS,
                                            log_to_mlflow=False, reference=ref or reference)
            finally:
                patch.undo()
        return done[key]

    return monitor


def _drift(summary):
    return [a for a in summary.alarms if a.kind == "drift"]


def _psi_table(summary) -> pd.DataFrame:
    return pd.DataFrame(json.loads(summary.json_path.read_text())["tables"]["drift_recent"])


def test_calendar_and_clock_features_that_move_raise_no_drift_alarm(run):
    summary = run("calendar")
    assert _drift(summary) == [] and not summary.should_retrain
    # their drift is real and still reported for people, with the reason it is no alarm
    table = _psi_table(summary)
    overall = table[table["slice"] == "overall"].set_index("feature")
    for feature in ("booked_month", "booked_weekday", "booked_hour", "hours_to_promised"):
        assert overall.loc[feature, "psi"] > 1.0
        assert overall.loc[feature, "expected_drift"] == EXPECTED_DRIFT[feature]
    assert summary.headline["max_feature_psi"] < 0.25


def test_a_stable_world_raises_no_drift_alarm(run):
    assert _drift(run("none")) == []


def test_an_input_that_moves_while_p_late_holds_raises_no_alarm_but_is_reported(run):
    summary = run("inert")
    assert _drift(summary) == [] and not summary.should_retrain
    table = _psi_table(summary)
    crossed = table[(table["feature"] == SHIFTED) & (table["psi"] > 0.25)]
    assert "overall" in set(crossed["slice"]) and len(crossed) > 10
    p_late = table[(table["feature"] == "p_late") & (table["slice"] == "overall")]["psi"]
    assert p_late.iloc[0] < 0.05


def test_an_input_shifted_everywhere_is_one_p_late_alarm_naming_slices_and_input(run):
    summary = run("overall")
    table = _psi_table(summary)
    crossed = table[(table["feature"] == "p_late") & (table["psi"] > 0.25)]
    assert len(crossed) > 10  # overall, every carrier, lane and mode
    drift = _drift(summary)
    assert [(a.slice, a.metric) for a in drift] == [("overall", "psi:p_late")]
    whole = crossed[crossed["slice"] == "overall"]["psi"].iloc[0]
    assert drift[0].value == pytest.approx(whole)
    worst = crossed[crossed["slice"] != "overall"].nlargest(1, "psi")["slice"].iloc[0]
    assert f"PSI {whole:.2f} overall" in drift[0].message and worst in drift[0].message
    assert f"inputs that moved there: {DRIVER}" in drift[0].message
    assert SHIFTED not in drift[0].message


def test_one_carrier_shifted_is_exactly_one_alarm_naming_that_carrier(run):
    summary = run("carrier")
    table = _psi_table(summary)
    whole = table[(table["slice"] == "overall") & (table["feature"] == "p_late")]["psi"].iloc[0]
    assert whole < 0.25  # diluted overall: only the slice localizes it
    drift = _drift(summary)
    assert len(drift) == 1, [a.message for a in drift]
    alarm = drift[0]
    assert alarm.slice == f"carrier={BAD_CARRIER}" and alarm.metric == "psi:p_late"
    assert BAD_CARRIER in alarm.message and DRIVER in alarm.message and summary.should_retrain


@pytest.mark.parametrize("rows, window_days", [(20_000, 7.0), (400, 90.0)])
def test_a_thin_reference_gives_a_data_alarm_instead_of_drift_alarms(run, reference, rows,
                                                                     window_days):
    thin = Reference(reference.version, reference.binnings, reference.log_loss, rows,
                     reference.source, window_days)
    summary = run("overall", thin)
    assert _drift(summary) == [] and not summary.should_retrain
    data = [a for a in summary.alarms if a.kind == "data" and a.slice == "reference"]
    assert len(data) == 1
    assert (data[0].metric, data[0].value) == (("reference_rows", rows) if rows < 1_000
                                               else ("reference_days", window_days))
    assert f"{rows} training row(s) over {window_days:.0f} day(s)" in data[0].message
    # the PSI is still measured and reported
    table = _psi_table(summary)
    assert table[(table["slice"] == "overall") & (table["feature"] == DRIVER)]["psi"].iloc[0] \
        > 0.25
