"""Nightly batch scoring on the local engine: in-flight selection at the boundaries, nothing after
the cut-off used, the scores table and report, idempotent reruns, a crash that keeps the previous
partition, backfill, and the command line's refusals (no champion, stale features).
"""

from __future__ import annotations

import json
import shutil
from datetime import date

import mlflow
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.build import build_features
from features.store import offline_dir
from registry.loader import NoChampionError
from serving import partitions
from serving.batch import (
    SCORE_COLUMNS,
    StaleFeaturesError,
    in_flight,
    in_flight_at,
    read_scores,
    score_batch,
    select_in_flight,
    utc,
)
from serving.batch_report import EXPERIMENT
from shipdelay.lake import Lake
from shipdelay.parquet_io import read_frame
from shipdelay.settings import Settings, get_settings
from tests.integration.batch_world import CUTOFF, copy_world
from training.dataset import point_in_time

US = pd.Timedelta(microseconds=1)


@pytest.fixture(scope="module")
def world(trained, tmp_path_factory) -> Settings:
    return copy_world(trained[0], tmp_path_factory.mktemp("batch") / "data")


@pytest.fixture(scope="module")
def first(world):
    """The run every read-only test looks at (logged to MLflow, as the command does)."""
    return score_batch(world, CUTOFF, top=15)


# ------------------------------------------------------------------ in flight at the cut-off
def _frames(rows: dict[str, list]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    ts = lambda values: pd.to_datetime(values, utc=True)
    shipments = pd.DataFrame({"shipment_id": rows["shipments"][0],
                              "booked_at": ts(rows["shipments"][1])})
    events = pd.DataFrame({"shipment_id": rows["events"][0], "event_type": rows["events"][1],
                           "ingested_at": ts(rows["events"][2])})
    outcomes = pd.DataFrame({"shipment_id": rows["outcomes"][0],
                             "delivered_at": ts(rows["outcomes"][1])})
    return shipments, events, outcomes


def test_in_flight_boundaries():
    t = pd.Timestamp("2025-11-03 02:15", tz="UTC")
    shipments, events, outcomes = _frames({
        "shipments": (["at", "after", "scan_at", "scan_after", "lost_scans", "outcome_after",
                       "moving", "scan_only"],
                      [t, t + US, t - pd.Timedelta("3D"), t - pd.Timedelta("3D"),
                       t - pd.Timedelta("9D"), t - pd.Timedelta("2D"), t - pd.Timedelta("1D"),
                       t - pd.Timedelta("4D")]),
        "events": (["scan_at", "scan_after", "outcome_after", "moving", "scan_only", "after"],
                   ["delivered", "delivered", "delivered", "out_for_delivery", "delivered",
                    "picked_up"],
                   [t, t + US, t + pd.Timedelta("2h"), t - pd.Timedelta("1h"),
                    t - pd.Timedelta("1h"), t + US]),
        # delivered just before the cut-off, every delivered scan lost: not in flight; the
        # delivered scan of "outcome_after" was uploaded after the cut-off: in flight
        "outcomes": (["scan_at", "scan_after", "lost_scans", "outcome_after"],
                     [t - pd.Timedelta("5min"), t + US, t - US, t + US]),
    })
    got = select_in_flight(shipments, events, outcomes, t)
    # booked exactly at the cut-off: in; a microsecond later: out. A delivered scan ingested
    # exactly at the cut-off: out; a microsecond later (delivered then): in.
    assert got["shipment_id"].tolist() == ["at", "moving", "outcome_after", "scan_after"]
    assert (got["as_of"] == t).all()
    # two microseconds earlier "at" is not booked yet and "lost_scans" is still moving
    earlier = select_in_flight(shipments, events, outcomes, t - 2 * US)
    assert earlier["shipment_id"].tolist() == ["lost_scans", "moving", "outcome_after",
                                               "scan_after"]


def test_in_flight_on_the_lake_matches_the_rule(world):
    lake = Lake(world.lake_dir)
    shipments = lake.read("shipments", columns=["shipment_id", "booked_at"])
    outcomes = lake.read("outcomes", columns=["shipment_id", "delivered_at"])
    events = lake.read("tracking_events", columns=["shipment_id", "event_type", "ingested_at"])
    scans = events[events["event_type"] == "delivered"].groupby("shipment_id")["ingested_at"].min()
    known = pd.concat([scans, outcomes.set_index("shipment_id")["delivered_at"]]).groupby(
        level=0).min()

    def expected(t):
        done = known[known <= t].index
        s = shipments[(shipments["booked_at"] <= t) & ~shipments["shipment_id"].isin(done)]
        return sorted(s["shipment_id"].astype(str))

    d = outcomes.merge(shipments, on="shipment_id").sort_values("delivered_at").iloc[len(outcomes) // 2]
    cutoffs = [CUTOFF, d["booked_at"], d["booked_at"] - US, d["delivered_at"],
               d["delivered_at"] - US]
    for t in cutoffs:
        assert in_flight(lake, t)["shipment_id"].tolist() == expected(t), t
    ids = {t: set(in_flight(lake, t)["shipment_id"]) for t in cutoffs[1:]}
    sid = d["shipment_id"]
    assert sid in ids[d["booked_at"]] and sid not in ids[d["booked_at"] - US]
    assert sid not in ids[d["delivered_at"]] and sid in ids[d["delivered_at"] - US]
    # every cut-off at once (the drift reference's nightly cut-offs): the same rows, in order
    together = in_flight_at(lake, cutoffs[::-1])
    for t in sorted(cutoffs):
        assert together.loc[together["as_of"] == t, "shipment_id"].tolist() == expected(t), t
    assert together["as_of"].is_monotonic_increasing


# ------------------------------------------------------------------ the scores table and report
def test_scores_table_holds_every_known_shipment_in_flight(world, first):
    lake = Lake(world.lake_dir)
    flying = in_flight(lake, CUTOFF)
    scores = read_scores(world, CUTOFF.date())
    assert first.scored == len(scores) > 100
    assert sorted(scores["shipment_id"]) == sorted(set(flying["shipment_id"]) - set(first.missing))
    assert list(scores.columns) == [*SCORE_COLUMNS, "run_date"]
    assert (scores["as_of"] == CUTOFF).all() and (scores["run_date"] == CUTOFF.date().isoformat()).all()
    assert scores["p_late"].between(0, 1).all()
    expected_band = np.where(scores["p_late"] >= 0.6, "high",
                             np.where(scores["p_late"] >= 0.3, "medium", "low"))
    assert (scores["risk_band"] == expected_band).all()
    assert (scores["eta_p10"] <= scores["eta"]).all() and (scores["eta"] <= scores["eta_p90"]).all()
    assert (scores["delay_p50_h"] <= scores["delay_p90_h"]).all()
    assert scores[["mode", "lane", "customer", "carrier"]].notna().all().all()
    # reasons for the high-risk shipments (the default), none for the others
    assert (first.reasons.from_p, first.reasons.most) == (0.6, 2_000)
    explained = scores["p_late"] >= first.reasons.from_p
    assert scores.loc[explained, "reasons"].map(
        lambda r: 1 <= len(r) <= 3 and all(isinstance(x, str) for x in r)).all()
    assert (scores.loc[~explained, "reasons"].map(len) == 0).all()
    assert set(scores["model_version"]) == {first.model_version}
    # the features were those known at the cut-off: nothing scored is known delivered then
    # (no progress yet, NaN, for shipments without a scan)
    vectors = point_in_time(offline_dir(world), flying)
    delivered = vectors.loc[vectors["shipment_id"].isin(scores["shipment_id"]), "delivered"]
    assert (delivered.fillna(0) == 0).all() and delivered.notna().sum() > 100
    # the whole table reads from its root, with run_date from the partition folder
    assert len(read_frame(world.scores_dir)) == len(scores)


def test_report_files_and_mlflow_run(world, first):
    folder = first.report_dir
    by_band = pd.read_csv(folder / "by_band.csv")
    assert by_band["risk_band"].tolist() == ["high", "medium", "low"]
    assert by_band["shipments"].sum() == first.scored == sum(first.bands.values())
    for name in ("by_mode", "by_lane", "by_customer"):
        assert pd.read_csv(folder / f"{name}.csv")["shipments"].sum() == first.scored
    top = pd.read_csv(folder / "top_risk.csv")
    scores = read_scores(world, CUTOFF.date())
    assert len(top) == 15 and top["p_late"].is_monotonic_decreasing
    assert top["p_late"].iloc[0] == pytest.approx(scores["p_late"].max())
    page = (folder / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and top["shipment_id"].iloc[0] in page
    assert json.loads((folder / "summary.json").read_text())["scored"] == first.scored
    run = mlflow.MlflowClient(world.tracking_uri).get_run(first.run_id)
    assert run.data.metrics["scored"] == first.scored
    assert run.data.params["as_of"] == CUTOFF.isoformat()
    assert run.data.tags["run_date"] == CUTOFF.date().isoformat()
    experiment = mlflow.MlflowClient(world.tracking_uri).get_experiment(run.info.experiment_id)
    assert experiment.name == EXPERIMENT
    artifacts = {a.path for a in mlflow.MlflowClient(world.tracking_uri).list_artifacts(
        first.run_id, "report")}
    assert {"report/report.html", "report/top_risk.csv", "report/by_lane.csv"} <= artifacts


# ------------------------------------------------------------------ reruns and crashes
def test_reasons_go_to_the_riskiest_up_to_the_cap(world, first):
    scores = read_scores(world, CUTOFF.date())
    capped = score_batch(world, CUTOFF, log_run=False, reasons_from=0.0, reasons_most=25)
    got = read_scores(world, CUTOFF.date())
    ranked = got.sort_values(["p_late", "shipment_id"], ascending=[False, True])
    explained = ranked["reasons"].map(len).gt(0).to_numpy()
    assert explained[:25].all() and not explained[25:].any()
    assert capped.reasons.most == 25
    # the same words as the scorer gives those shipments, the rest unchanged
    pd.testing.assert_frame_equal(got.drop(columns="reasons"), scores.drop(columns="reasons"))
    high = scores["reasons"].map(len).gt(0)
    same = got.set_index("shipment_id").loc[scores.loc[high, "shipment_id"], "reasons"]
    top = set(ranked["shipment_id"].iloc[:25])
    for sid, words in same.items():
        if sid in top:
            assert list(words) == list(scores.set_index("shipment_id").loc[sid, "reasons"])
    score_batch(world, CUTOFF, log_run=False)  # the default table back for the other tests


def test_rerun_is_idempotent(world, first):
    before = read_scores(world, CUTOFF.date())
    again = score_batch(world, CUTOFF, log_run=False, rows_per_file=100)  # written in 3 files
    assert len(list(again.partition.glob("*.parquet"))) == -(-first.scored // 100) > 1
    pd.testing.assert_frame_equal(read_scores(world, CUTOFF.date()), before)
    assert again.scored == first.scored and again.bands == first.bands
    versions = list((world.scores_dir / partitions.VERSIONS).glob(f"run_date={CUTOFF.date()}-*"))
    assert len(versions) == 1  # the replaced version is gone


def test_crash_mid_write_keeps_the_previous_partition(world, first, monkeypatch):
    before = read_scores(world, CUTOFF.date())
    written = []
    real = partitions.write_part

    def failing(table, folder, index):
        if written:
            raise OSError("disk full")
        written.append(real(table, folder, index))

    monkeypatch.setattr(partitions, "write_part", failing)
    later = CUTOFF + pd.Timedelta(hours=6)  # same run date, other shipments in flight
    with pytest.raises(OSError, match="disk full"):
        score_batch(world, later, log_run=False, rows_per_file=40)
    assert written and not written[0].exists()  # the half-written folder is gone
    pd.testing.assert_frame_equal(read_scores(world, CUTOFF.date()), before)
    versions = list((world.scores_dir / partitions.VERSIONS).glob(f"run_date={CUTOFF.date()}-*"))
    assert len(versions) == 1


# ------------------------------------------------------------------ nothing after the cut-off
def _altered_lake(source: Lake, link, t: pd.Timestamp) -> None:
    """The same world up to t; after it a different one: later bookings gone, one in three later
    scans dropped, the others and later deliveries moved 36 h later with alarming notes."""
    shift = pd.Timedelta(hours=36)
    with Lake.rewrite(link) as lake:
        lake.append("hubs", source.read("hubs"), validated=True)
        shipments = source.read("shipments")
        shipments = shipments[shipments["booked_at"] <= t]
        keep = lambda f: f[f["shipment_id"].isin(shipments["shipment_id"])]
        lake.append("shipments", shipments, validated=True)
        lake.append("legs", keep(source.read("legs")), validated=True)
        events = keep(source.read("tracking_events"))
        late = events["ingested_at"] > t
        moved = events[late].iloc[np.arange(late.sum()) % 3 != 0].copy()
        moved[["event_time", "ingested_at"]] += shift
        moved["note"] = "typhoon; port congestion; customs exam"
        lake.append("tracking_events", pd.concat([events[~late], moved]), validated=True)
        outcomes = keep(source.read("outcomes"))
        late = outcomes["delivered_at"] > t
        outcomes.loc[late, "delivered_at"] += shift
        outcomes["delay_hours"] = (outcomes["delivered_at"] - outcomes["promised_at"]) / pd.Timedelta("1h")
        outcomes["is_late"] = outcomes["delivered_at"] > outcomes["promised_at"]
        lake.append("outcomes", outcomes, validated=True)


def test_nothing_after_the_cut_off_is_used(world, first, tmp_path):
    other = copy_world(world, tmp_path / "data")
    (other.data_dir / "lake").unlink()
    (other.data_dir / "feast" / "offline").unlink()
    _altered_lake(Lake(world.lake_dir), other.lake_dir, CUTOFF)
    build_features(other)
    result = score_batch(other, CUTOFF, log_run=False)
    pd.testing.assert_frame_equal(read_scores(other, CUTOFF.date()),
                                  read_scores(world, CUTOFF.date()))
    assert result.missing == first.missing
    # the change after the cut-off is real: two days later the same shipments look different
    later = CUTOFF + pd.Timedelta(days=2)
    both = sorted(set(in_flight(Lake(world.lake_dir), later)["shipment_id"])
                  & set(in_flight(Lake(other.lake_dir), later)["shipment_id"]))
    snaps = pd.DataFrame({"shipment_id": both, "as_of": later})
    a, b = (point_in_time(offline_dir(s), snaps).set_index("shipment_id").sort_index()
            for s in (world, other))
    assert (a["recent_notes"].fillna("") != b["recent_notes"].fillna("")).any()
    assert (a["slip_h"] != b["slip_h"]).any()


# ------------------------------------------------------------------ backfill and refusals
def test_stale_features_are_refused(world, tmp_path):
    too_late = utc(Lake(world.lake_dir).read("tracking_events", columns=["ingested_at"])
                   ["ingested_at"].max()) + pd.Timedelta(days=3)
    with pytest.raises(StaleFeaturesError, match=r"shipment_progress lags 7\d\.\d h"):
        score_batch(world, too_late, log_run=False)
    assert too_late.date() not in partitions.partition_days(world.scores_dir)
    # a store whose lane statistics stopped three days before the cut-off
    other = copy_world(world, tmp_path / "data")
    offline = other.data_dir / "feast" / "offline"
    offline.unlink()
    source = offline_dir(world)
    for view in source.iterdir():
        if view.name.startswith("."):
            continue
        if view.name != "lane_stats":
            (offline / view.name).parent.mkdir(parents=True, exist_ok=True)
            (offline / view.name).symlink_to(view.resolve())
            continue
        for day in view.iterdir():
            if date.fromisoformat(day.name) <= (CUTOFF - pd.Timedelta(days=3)).date():
                shutil.copytree(day, offline / view.name / day.name)
    with pytest.raises(StaleFeaturesError, match=r"lane_stats lags 72\.0 h") as err:
        score_batch(other, CUTOFF, log_run=False)
    assert "carrier_stats" not in str(err.value)
    assert not other.scores_dir.exists() or not partitions.partition_days(other.scores_dir)


@pytest.fixture
def cli_env(world, monkeypatch):
    def use(settings: Settings):
        monkeypatch.setenv("SHIPDELAY_DATA_DIR", str(settings.data_dir))
        get_settings.cache_clear()
    yield use
    get_settings.cache_clear()


def test_cli_scores_backfills_and_refuses(world, cli_env, tmp_path):
    from shipdelay.cli import app

    cli_env(world)
    runner = CliRunner()
    said = lambda result: " ".join(result.output.split())
    days = [CUTOFF.normalize() - pd.Timedelta(days=d) for d in (2, 1)]
    out = runner.invoke(app, ["score-batch", "--from", f"{days[0]:%Y-%m-%d}", "--to",
                              f"{days[1]:%Y-%m-%d}", "--at", "06:30", "--top", "5"])
    assert out.exit_code == 0, out.output
    assert "backfill: 2 day(s)" in said(out)
    table = read_scores(world)
    for day in days:  # one partition per day, each with its own cut-off and shipments
        part = table[table["run_date"].astype(str) == f"{day:%Y-%m-%d}"]
        cutoff = day + pd.Timedelta(hours=6, minutes=30)
        assert (part["as_of"] == cutoff).all()
        flying = set(in_flight(Lake(world.lake_dir), cutoff)["shipment_id"])
        assert set(part["shipment_id"]) <= flying and len(part) > 0.9 * len(flying)
    assert {d.date() for d in days} <= set(partitions.partition_days(world.scores_dir))
    stale = runner.invoke(app, ["score-batch", "--as-of", "2030-01-01T00:00:00Z"])
    assert stale.exit_code == 1 and "older than 24 h" in said(stale)
    assert date(2030, 1, 1) not in partitions.partition_days(world.scores_dir)
    bad = runner.invoke(app, ["score-batch", "--as-of", "yesterday-ish"])
    assert bad.exit_code == 2 and "--as-of" in said(bad)
    cli_env(copy_world(world, tmp_path / "data", champion=False))
    with pytest.raises(NoChampionError):
        score_batch(get_settings(), CUTOFF)
    none = runner.invoke(app, ["score-batch", "--as-of", CUTOFF.isoformat()])
    assert none.exit_code == 1 and "alias 'champion'" in said(none)
