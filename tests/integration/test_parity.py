"""One answer at every instant, on every door, in a world whose "now" is mid-day.

The trained world's lake cut at a mid-day instant (what its lake held then, plus hourly weather
observations at every hub) is built into a feature store. Then, compared with the offline
point-in-time join at the same instant, feature by feature:
1. right after the build, the online store (the service's reader and Feast's own read);
2. after `shipdelay stream` consumed 18 more hours of tracking events (ingested into the lake
   as they happen): the online store at the stream's clock, and every risk update the stream
   published against the champion's score of the batch join at that update's instant;
3. after the clock passed a midnight and weather hours without any event (`features roll`), and
   again hours later without a roll, when the weather has aged past its TTL.
The build's and the rolls' statistics rows equal the rows a build of the whole world gives for
the same windows, and `check-parity` passes, then fails once one online statistic is altered.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features import offline as off
from features.build import build_features
from features.online import online_vectors
from features.online_direct import open_direct
from features.online_fast import OnlineReader
from features.roll import roll
from features.schema import TIMESTAMP, model_feature_names
from features.store import get_store, offline_dir
from registry.loader import CHAMPION, alias_version, load_by_alias
from registry.store import MODEL_NAME, client
from serving.batch import in_flight
from serving.kafka import Topics, producer_config, read_all
from serving.kafka_mock import MockCluster
from serving.parity import check_parity
from serving.replay import publish, to_messages
from serving.scorer import Scorer
from shipdelay.lake import Lake
from shipdelay.settings import Settings
from tests.integration.stream.checks import warm_keys
from training.dataset import point_in_time

warnings.filterwarnings("ignore", category=DeprecationWarning)
ROOT = Path(__file__).resolve().parents[2]
SHIPDELAY = str(ROOT / ".venv" / "bin" / "shipdelay")
STATS = ("lane_stats", "carrier_stats", "customer_stats", "hub_stats")
# availability column of each lake table: what the lake held at an instant
AVAILABLE = {"shipments": "booked_at", "tracking_events": "ingested_at",
             "outcomes": "delivered_at", "hub_weather": "ingested_at"}


@dataclass
class Midday:
    settings: Settings
    world: Settings  # the whole world, built at its end
    weather: pd.DataFrame  # every synthetic observation, ingested or not yet
    as_of: pd.Timestamp  # the build's instant: the cut lake's newest ingestion


def _weather(hubs: pd.Series, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """Hourly observations at every hub, uploaded 2-50 minutes after, some hours late."""
    rng = np.random.default_rng(3)
    hours = pd.date_range(start.floor("h"), end, freq="h", tz="UTC")
    hub, at = np.meshgrid(hubs.to_numpy(), hours, indexing="ij")
    n = hub.size
    lag = rng.integers(2 * 60, 50 * 60, n) + np.where(rng.random(n) < 0.05, 3 * 3600, 0)
    observed = pd.DatetimeIndex(at.ravel())
    return pd.DataFrame({
        "hub_id": hub.ravel(), "observed_at": observed,
        "ingested_at": observed + pd.to_timedelta(lag, unit="s") + pd.to_timedelta(
            rng.integers(0, 10**6, n), unit="us"),
        "temperature_c": rng.normal(12, 9, n).round(1), "humidity_pct": rng.uniform(20, 100, n),
        "wind_speed_kmh": rng.gamma(2, 8, n), "wind_gust_kmh": rng.gamma(3, 10, n),
        "precipitation_mm": rng.exponential(0.5, n), "pressure_hpa": rng.normal(1013, 8, n),
        "visibility_km": rng.uniform(0.5, 30, n)})


def _ingest(lake: Lake, world: Lake, weather: pd.DataFrame, lo, hi,
            tables=tuple(AVAILABLE)) -> None:
    """Append to `lake` what the world's lake received in (lo, hi], as `shipdelay ingest` would."""
    for table in tables:
        source = weather if table == "hub_weather" else world.read(table)
        col = AVAILABLE[table]
        rows = source[(source[col] > lo) & (source[col] <= hi)]
        if table == "shipments" and len(rows):
            legs = world.read("legs")
            lake.append("legs", legs[legs["shipment_id"].isin(rows["shipment_id"])])
        if len(rows):
            lake.append(table, rows)


@pytest.fixture(scope="module")
def midday(trained, tmp_path_factory) -> Midday:
    world, _, _ = trained
    source = Lake(world.lake_dir)
    end = source.read("tracking_events", columns=["ingested_at"])["ingested_at"].max()
    cut = (end - pd.Timedelta(days=20)).floor("D") + pd.Timedelta("13:37:21.25")
    hubs = source.read("hubs")["hub_id"]
    weather = _weather(hubs, cut - pd.Timedelta(days=4), cut + pd.Timedelta(days=3))
    root = tmp_path_factory.mktemp("midday") / "data"
    with Lake.rewrite(root / "lake") as lake:
        lake.append("hubs", source.read("hubs"))
        _ingest(lake, source, weather, pd.Timestamp(0, tz="UTC"), cut)
    for name in ("mlflow.db",):  # the trained model, champion of this copy
        shutil.copy2(world.data_dir / name, root / name)
    if (world.data_dir / "models").exists():
        shutil.copytree(world.data_dir / "models", root / "models")
    settings = Settings(data_dir=root)
    if alias_version(settings, CHAMPION) is None:
        versions = client(settings).search_model_versions(f"name='{MODEL_NAME}'")
        client(settings).set_registered_model_alias(
            MODEL_NAME, CHAMPION, str(max(int(v.version) for v in versions)))
    report = build_features(settings)
    assert report.as_of.floor("D") + pd.Timedelta(hours=12) < report.as_of <= cut
    return Midday(settings, world, weather, report.as_of)


# ------------------------------------------------------------------ comparisons
def _same(a: pd.Series, b: pd.Series) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(a) or pd.api.types.is_numeric_dtype(b):
        return np.isclose(pd.to_numeric(a).astype(float), pd.to_numeric(b).astype(float),
                          rtol=1e-9, atol=1e-9, equal_nan=True)
    na, nb = a.isna().to_numpy(), b.isna().to_numpy()
    return (na & nb) | (~na & ~nb & (a.astype(str).to_numpy() == b.astype(str).to_numpy()))


def assert_one_answer(settings: Settings, now: pd.Timestamp) -> pd.DataFrame:
    """Every in-flight shipment's online vector (the service's reader and Feast's read) equals
    the offline point-in-time join at `now`, every feature; returns the join."""
    warm_keys(settings)
    snaps = in_flight(Lake(settings.lake_dir), now)
    joined = point_in_time(offline_dir(settings), snaps).set_index("shipment_id")
    known = joined.index[joined["booked_at_s"].notna()].tolist()
    assert len(known) > 100, len(known)
    store = get_store(settings)
    ids = snaps["shipment_id"].tolist()
    for name, online in (("reader", OnlineReader(store, cache_seconds=60).vectors(ids, now)),
                         ("feast", online_vectors(store, ids, now))):
        online = online.set_index("shipment_id")
        assert online.loc[ids, "known"].tolist() == joined.loc[ids, "booked_at_s"].notna(
            ).tolist(), name
        for col in model_feature_names():
            same = _same(online.loc[known, col], joined.loc[known, col])
            assert same.all(), (name, col, online.loc[known, col][~same].head(3).tolist(),
                                joined.loc[known, col][~same].head(3).tolist())
    return joined.loc[known]


def assert_rows_as_the_whole_world(mid: Midday, lo: pd.Timestamp, hi: pd.Timestamp) -> None:
    """The statistics rows stamped in (lo, hi] equal those of the whole world's build: a row
    uses only what was known by its instant, and its entities are those known by then."""
    for view in STATS:
        key = {"lane_stats": "lane_id", "carrier_stats": "carrier_id",
               "customer_stats": "customer_id", "hub_stats": "hub_id"}[view]
        here, there = (off.read_view(offline_dir(s), view, f"{TIMESTAMP} > '{lo.isoformat()}' "
                                     f"and {TIMESTAMP} <= '{hi.isoformat()}'")
                       .sort_values([key, TIMESTAMP], ignore_index=True)
                       for s in (mid.settings, mid.world))
        assert len(here) > 0 and len(here) == len(there), (view, len(here), len(there))
        for col in here.columns:
            assert _same(here[col], there[col]).all(), (view, col)


# ------------------------------------------------------------------ the tests
def test_after_a_mid_day_build_online_is_the_point_in_time_join(midday):
    joined = assert_one_answer(midday.settings, midday.as_of)
    assert joined["weather_temperature_c"].notna().mean() > 0.5
    assert joined["hub_departures_24h"].notna().all() and joined["lane_volume_28d"].notna().any()
    # no statistics row of a window still open at the build; the same rows as the whole world's
    lanes = off.read_view(offline_dir(midday.settings), "lane_stats")
    hubs = off.read_view(offline_dir(midday.settings), "hub_stats")
    assert lanes[TIMESTAMP].max() == midday.as_of.floor("D")
    assert hubs[TIMESTAMP].max() == midday.as_of.floor("h")
    assert_rows_as_the_whole_world(midday, midday.as_of - pd.Timedelta(days=3), midday.as_of)


def test_the_stream_keeps_one_answer_hour_after_hour(midday, tmp_path):
    s = midday.settings
    t1 = midday.as_of + pd.Timedelta(hours=18)  # past a midnight, into the next morning
    world, lake = Lake(midday.world.lake_dir), Lake(s.lake_dir)
    _ingest(lake, world, midday.weather, midday.as_of, t1)  # the lake receives them too
    events = world.read("tracking_events")
    events = events[(events["ingested_at"] > midday.as_of) & (events["ingested_at"] <= t1)]
    events = events.sort_values(["ingested_at", "event_id"])
    assert len(events) > 200
    with MockCluster() as bootstrap:
        settings = Settings(data_dir=s.data_dir, kafka_bootstrap=bootstrap)
        from confluent_kafka import Producer

        values, keys = to_messages(events)
        publish(Producer(producer_config(settings)), Topics.from_settings(settings).events,
                values, keys, np.zeros(len(values)))
        env = {**os.environ, "SHIPDELAY_DATA_DIR": str(s.data_dir),
               "SHIPDELAY_KAFKA_BOOTSTRAP": bootstrap, "SHIPDELAY_COMPILED_TREES": "0",
               "PYTHONWARNINGS": "ignore"}
        log = tmp_path / "stream.log"
        with open(log, "ab") as out:
            proc = subprocess.run([SHIPDELAY, "stream", "--max-batch", "200", "--batch-ms",
                                   "100", "--idle-exit", "5"], env=env, cwd=ROOT, stdout=out,
                                  stderr=subprocess.STDOUT, timeout=600, check=False)
        assert proc.returncode == 0, log.read_text()[-3000:]
        updates = [json.loads(m.value()) for m in read_all(
            settings, Topics.from_settings(settings).risk, 4.0, 120)]
    clock = events["ingested_at"].max()
    # every risk update is the champion's score of the batch join at its instant
    risk = pd.DataFrame(updates)
    risk = risk[~risk["delivered"]].drop_duplicates(["shipment_id", "as_of"], keep="last")
    assert len(risk) > 50
    snaps = pd.DataFrame({"shipment_id": risk["shipment_id"].to_numpy(),
                          "as_of": pd.to_datetime(risk["as_of"], utc=True).to_numpy()})
    snaps["as_of"] = pd.to_datetime(snaps["as_of"], utc=True)
    warm_keys(s)
    joined = point_in_time(offline_dir(s), snaps)
    batch = Scorer(load_by_alias(s)).score(joined, reasons=False)
    expected = dict(zip(zip(joined["shipment_id"], joined["as_of"]), batch["p_late"]))
    got = np.array([expected[(sid, t)] for sid, t in zip(snaps["shipment_id"], snaps["as_of"])])
    assert np.abs(got - risk["p_late"].to_numpy(float)).max() < 2e-6  # 6 decimals in messages
    # online, at the stream's clock, after the windows it passed were rolled
    assert_one_answer(s, clock)
    assert_rows_as_the_whole_world(midday, midday.as_of, clock)
    report = check_parity(s, sample=150, as_of=clock)
    assert report.ok and report.compared > 100, report.features.head()


def test_windows_and_weather_roll_without_events_and_age_out(midday):
    s = midday.settings
    online = open_direct(s)
    try:
        from features.marks import online_mark
        clock = online_mark(online)
    finally:
        online.close()
    t2 = (clock + pd.Timedelta(days=1)).floor("D") + pd.Timedelta("01:30:00.5")
    lake = Lake(s.lake_dir)
    _ingest(lake, Lake(midday.world.lake_dir), midday.weather, clock, t2, ("hub_weather",))
    report = roll(s, t2)  # as `shipdelay features roll` on its schedule
    assert report.offline_rows["lane_stats"] > 0 and report.offline_rows["hub_stats"] > 0
    assert report.offline_rows["hub_weather"] > 0
    joined = assert_one_answer(s, t2)
    assert joined["weather_temperature_c"].notna().mean() > 0.5
    hubs = off.read_view(offline_dir(s), "hub_stats")
    assert hubs[TIMESTAMP].max() == t2.floor("h")
    # hours later, nothing rolled nor ingested: the weather is past its TTL on both doors
    t3 = t2 + pd.Timedelta(hours=4)
    joined = assert_one_answer(s, t3)
    assert joined["weather_temperature_c"].isna().all()
    assert joined["hub_departures_24h"].notna().all()


def test_check_parity_fails_on_a_skewed_statistic(midday, monkeypatch):
    from features.marks import online_mark
    from shipdelay.cli import app
    from shipdelay.settings import get_settings

    s = midday.settings
    monkeypatch.setenv("SHIPDELAY_DATA_DIR", str(s.data_dir))
    get_settings.cache_clear()
    said = lambda result: " ".join(result.output.split())  # rich wraps lines
    runner, online = CliRunner(), open_direct(s)
    try:
        at = online_mark(online)
        snaps = in_flight(Lake(s.lake_dir), at)
        lanes = point_in_time(offline_dir(s), snaps)["lane_id"].dropna().unique().tolist()
        row = online.read("lane_stats", lanes[:1])
        assert row["found"].all()
        args = ["check-parity", "--sample", "5000", "--as-of", at.isoformat()]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "one answer on both doors" in said(result)
        skewed = row.assign(lane_late_rate_28d=row["lane_late_rate_28d"].fillna(0) + 0.25,
                            event_timestamp=pd.to_datetime(row["event_ts_us"], unit="us",
                                                           utc=True))
        online.write("lane_stats", skewed)  # one statistic of one lane, as a skewed load would
        result = runner.invoke(app, args)
        assert result.exit_code == 1, result.output
        assert "lane_late_rate_28d" in said(result) and "SKEW" in said(result)
        bad = runner.invoke(app, ["check-parity", "--as-of", "yesterday-ish"])
        assert bad.exit_code == 2 and "--as-of" in said(bad)
        early = runner.invoke(app, ["check-parity", "--as-of",
                                    (at - pd.Timedelta(days=1)).isoformat()])
        assert early.exit_code == 1 and "at or after" in said(early)
    finally:
        online.close()
        get_settings.cache_clear()
