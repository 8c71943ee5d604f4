"""Optional attributes, categories beyond the simulator's lists and the local-time calendar, on
small hand-made frames: a feature built from a missing attribute is missing; service levels and
hub kinds accept any text, a mode outside the four is mapped with `--map-values` or rejected
with a reason naming it; hub time zones are checked; a booking's weekday, month and hour are
those of the origin hub's clock, as zoneinfo computes them, across daylight saving changes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.local_time import local_calendar
from features.tables import rolling_stats, shipment_profile
from shipdelay import contract
from shipdelay.cli import app
from shipdelay.ingest import ingest
from shipdelay.ingest_files import UsageError
from shipdelay.lake import Lake
from shipdelay.world.network import great_circle_km
from training.features import FeatureSpec

runner = CliRunner()
T0 = pd.Timestamp("2025-03-01T00:00:00Z")
H = pd.Timedelta(hours=1)


def _hubs(**changes) -> pd.DataFrame:
    hubs = pd.DataFrame({
        "hub_id": ["BER", "NYC", "SYD", "DEL", "XXX"],
        "name": None, "kind": None, "city": None,
        "country": ["DE", "US", "AU", "IN", None],
        "region": ["europe", "north_america", "oceania", "south_asia", None],
        "latitude": [52.52, 40.71, -33.87, 28.61, np.nan],
        "longitude": [13.40, -74.01, 151.21, 77.21, np.nan],
        "timezone": ["Europe/Berlin", "America/New_York", "Australia/Sydney", "Asia/Kolkata",
                     None]})
    for name, values in changes.items():
        hubs[name] = values
    return contract.validate("hubs", hubs)


def _plan(rows: list[tuple]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Shipments and legs from (shipment, booked_at, customer, [(from, to, carrier, hours)])."""
    ships, legs = [], []
    for sid, booked, customer, plan in rows:
        t = booked + H
        for i, (frm, to, carrier, hours) in enumerate(plan):
            legs.append({"shipment_id": sid, "leg_index": i, "mode": "truck",
                         "carrier_id": carrier, "from_hub": frm, "to_hub": to,
                         "planned_departure": t, "planned_arrival": t + hours * H})
            t += (hours + 1) * H
        ships.append({"shipment_id": sid, "customer_id": customer, "origin_hub": plan[0][0],
                      "destination_hub": plan[-1][1], "service_level": None,
                      "weight_kg": np.nan, "volume_m3": np.nan, "parcel_count": 1,
                      "booked_at": booked, "promised_at": t + 5 * H})
    return (contract.validate("shipments", pd.DataFrame(ships)),
            contract.validate("legs", pd.DataFrame(legs)))


# -- the profile: missing in, missing out --------------------------------------------------------
def test_profile_features_of_missing_attributes_are_missing():
    hubs = _hubs()
    ships, legs = _plan([
        ("S-FULL", T0, "C1", [("BER", "NYC", "AIR1", 9), ("NYC", "DEL", "AIR2", 16)]),
        ("S-NOCOORD", T0, None, [("BER", "NYC", "TRK1", 20), ("NYC", "XXX", "AIR1", 3)]),
        ("S-NOCARRIER", T0, "C1", [("SYD", "DEL", None, 12), ("DEL", "BER", "AIR9", 2)]),
    ])
    profile = shipment_profile(ships, legs, hubs).set_index("shipment_id")
    full, gap, nocarrier = (profile.loc[s] for s in ("S-FULL", "S-NOCOORD", "S-NOCARRIER"))
    # an independent great-circle sum where every hub has coordinates
    at = hubs.set_index("hub_id")
    km = sum(float(great_circle_km(at.latitude[a], at.longitude[a], at.latitude[b],
                                   at.longitude[b])) for a, b in (("BER", "NYC"), ("NYC", "DEL")))
    assert full["distance_km"] == pytest.approx(km, rel=1e-9)
    assert np.isnan(gap["distance_km"])  # one leg without coordinates: no partial sum
    assert full["international"] == 1.0 and np.isnan(gap["international"])  # XXX: no country
    assert pd.isna(gap["destination_region"]) and gap["origin_region"] == "europe"
    assert pd.isna(gap["customer_id"]) and full["customer_id"] == "C1"
    assert pd.isna(nocarrier["carrier_id"])  # the longest leg's carrier is unknown
    assert gap["carrier_id"] == "TRK1"
    for col in ("weight_kg", "volume_m3"):
        assert profile[col].isna().all()
    assert profile["service_level"].isna().all()


def test_a_missing_customer_is_no_customer_with_statistics():
    """The statistics of the known customers are the same with or without shipments whose
    customer is missing: those are not pooled into one customer of their own."""
    hubs = _hubs()
    rows = [(f"S{i}", T0 + i * 7 * H, "C1" if i % 3 == 0 else None,
             [("BER", "NYC", "AIR1", 9)]) for i in range(30)]
    ships, legs = _plan(rows)
    profile = shipment_profile(ships, legs, hubs)
    outcomes = pd.DataFrame({"shipment_id": ships["shipment_id"],
                             "delivered_at": ships["promised_at"] + (np.arange(30) % 4 - 1) * H,
                             "promised_at": ships["promised_at"]})
    outcomes["delay_hours"] = (outcomes["delivered_at"] - outcomes["promised_at"]) / H
    outcomes["is_late"] = outcomes["delay_hours"] > 0
    end = T0 + pd.Timedelta(days=12)
    with_nulls = rolling_stats("customer", outcomes, profile, T0, end)
    known = profile[profile["customer_id"].notna()]
    without = rolling_stats("customer", outcomes[outcomes["shipment_id"].isin(
        known["shipment_id"])], known, T0, end)
    assert set(with_nulls["customer_id"]) == {"C1"}
    pd.testing.assert_frame_equal(with_nulls, without)
    assert with_nulls["customer_volume_28d"].iloc[-1] == 10


# -- the calendar on the origin's clock ----------------------------------------------------------
# instants around daylight saving changes: Europe 2025-03-30 01:00Z and 2025-10-26 01:00Z,
# the US 2025-03-09 07:00Z, Sydney (southern summer time ends) 2025-04-05 16:00Z
INSTANTS = pd.DatetimeIndex([
    "2025-03-30T00:30Z", "2025-03-30T01:30Z", "2025-10-26T00:59Z", "2025-10-26T01:00Z",
    "2025-03-09T06:30Z", "2025-03-09T07:30Z", "2025-04-05T15:30Z", "2025-04-05T16:30Z",
    "2025-12-31T18:29Z", "2025-12-31T18:31Z", "2025-06-30T23:59Z"])


def _reference(instant: pd.Timestamp, zone: str | None) -> tuple[int, int, int]:
    """Weekday, month and hour by the standard library, one instant at a time."""
    utc = datetime.fromtimestamp(instant.value / 1e9, tz=UTC)
    local = utc.astimezone(ZoneInfo(zone)) if zone else utc
    return local.weekday(), local.month, local.hour


def test_local_calendar_equals_zoneinfo_across_daylight_saving_changes():
    zones = ["Europe/Berlin", "America/New_York", "Australia/Sydney", "Asia/Kolkata", None]
    booked = np.repeat(INSTANTS.as_unit("us").asi8, len(zones))
    names = np.tile(np.array(zones, dtype=object), len(INSTANTS))
    got = local_calendar(booked, names)
    expected = np.array([_reference(pd.Timestamp(b, unit="us", tz="UTC"), z)
                         for b, z in zip(booked, names, strict=True)])
    for j, name in enumerate(("booked_weekday", "booked_month", "booked_hour")):
        assert (got[name] == expected[:, j]).all(), name
    # the clocks moved: Berlin's hour 30 minutes before and after the spring change
    berlin = names == "Europe/Berlin"
    assert got["booked_hour"][berlin][:2].tolist() == [1, 3]


def test_profile_calendar_is_on_the_origin_hubs_clock():
    origins = ["BER", "NYC", "SYD", "DEL", "XXX"]  # XXX: no time zone, read in UTC
    rows = [(f"S{i}-{o}", t, "C1", [(o, "BER" if o != "BER" else "NYC", "A", 5)])
            for i, t in enumerate(INSTANTS) for o in origins]
    ships, legs = _plan(rows)
    profile = shipment_profile(ships, legs, _hubs()).set_index("shipment_id")
    zone = _hubs().set_index("hub_id")["timezone"]
    for sid, booked, _, plan in rows:
        want = _reference(booked, None if pd.isna(zone[plan[0][0]]) else zone[plan[0][0]])
        got = profile.loc[sid, ["booked_weekday", "booked_month", "booked_hour"]].tolist()
        assert got == list(want), sid


# -- categories beyond the simulator's lists -----------------------------------------------------
HUB_CSV = ("hub_id,kind,timezone\nW1,warehouse,Europe/Paris\nW2,,\nW3,depot,Mars/Base\n")
SHIP_CSV = ("shipment_id,origin_hub,destination_hub,service_level,parcel_count,booked_at,"
            "promised_at\nS1,W1,W2,premium,1,2025-03-01T10:00Z,2025-03-05T10:00Z\n"
            "S2,W2,W1,,1,2025-03-01T10:00Z,2025-03-05T10:00Z\n")
LEG_CSV = ("shipment_id,leg_index,mode,from_hub,to_hub,planned_departure,planned_arrival\n"
           "S1,0,barge,W1,W2,2025-03-01T12:00Z,2025-03-02T12:00Z\n"
           "S1,1,ferry,W2,W1,2025-03-02T14:00Z,2025-03-03T12:00Z\n"
           "S2,0,truck,W2,W1,2025-03-01T12:00Z,2025-03-02T12:00Z\n")


@pytest.fixture
def lake(tmp_path, data_dir) -> Lake:
    """Hubs W1, W2 (W3's time zone is no IANA name) and shipments S1, S2, through the CLI."""
    for kind, text in (("hubs", HUB_CSV), ("shipments", SHIP_CSV)):
        (tmp_path / f"{kind}.csv").write_text(text)
        result = runner.invoke(app, ["ingest", str(tmp_path / f"{kind}.csv"), "--kind", kind])
        assert result.exit_code == 0, result.output
    (tmp_path / "legs.csv").write_text(LEG_CSV)
    return Lake(data_dir / "lake")


def test_any_service_level_and_hub_kind_is_accepted_and_time_zones_are_checked(lake):
    hubs = lake.read("hubs").set_index("hub_id")
    assert hubs.loc["W1", "kind"] == "warehouse" and pd.isna(hubs.loc["W2", "kind"])
    assert "W3" not in hubs.index
    reasons = lake.read("rejects").set_index("row_number")["reason"]
    assert reasons[3] == "timezone: not an IANA time zone name such as Europe/Berlin (got " \
                         "'Mars/Base')"
    levels = lake.read("shipments").set_index("shipment_id")["service_level"]
    assert levels["S1"] == "premium" and pd.isna(levels["S2"])


def test_an_unknown_mode_is_rejected_naming_the_option_then_mapped(lake, tmp_path):
    report = ingest(tmp_path / "legs.csv", "legs", lake)
    assert report.accepted == 1 and report.rejected == 2
    reasons = report.rejects.set_index("row_number")["reason"]
    assert "mode: must be one of truck, rail, air, ocean" in reasons[1]
    assert "--map-values mode=VALUE:MODE" in reasons[1] and "(got 'barge')" in reasons[1]
    assert "(got 'ferry')" in reasons[2]
    result = runner.invoke(app, ["ingest", str(tmp_path / "legs.csv"), "--kind", "legs",
                                 "--map-values", "mode=barge:ocean,ferry:ocean"])
    assert result.exit_code == 0, result.output
    assert "2 accepted, 1 already present, 0 rejected" in result.output.replace("\n", " ")
    modes = lake.read("legs").set_index(["shipment_id", "leg_index"])["mode"]
    assert modes[("S1", 0)] == "ocean" and modes[("S1", 1)] == "ocean"
    assert modes[("S2", 0)] == "truck"


def test_a_value_mapping_file_maps_too(lake, tmp_path):
    (tmp_path / "values.json").write_text(json.dumps({"mode": {"barge": "rail",
                                                               "ferry": "ocean"}}))
    result = runner.invoke(app, ["ingest", str(tmp_path / "legs.csv"), "--kind", "legs",
                                 "--map-values", str(tmp_path / "values.json")])
    assert result.exit_code == 0, result.output
    modes = lake.read("legs").set_index(["shipment_id", "leg_index"])["mode"]
    assert modes[("S1", 0)] == "rail" and modes[("S1", 1)] == "ocean"


@pytest.mark.parametrize("spec, words", [
    (["mode=barge"], "is not of the form value:replacement"),
    (["barge:ocean,x"], "does not exist"),
    (["vessel=barge:ocean"], "'vessel' is not a column of table 'legs'"),
    (["leg_index=1:2"], "is not a text column"),
    (["mode=barge:boat"], "can only be mapped to one of truck, rail, air, ocean, not 'boat'"),
    (["mode=barge:ocean", "mode=barge:rail"], "mapped to both 'ocean' and 'rail'"),
])
def test_a_bad_value_mapping_is_a_usage_error_before_anything_is_written(lake, tmp_path, spec,
                                                                         words):
    args = ["ingest", str(tmp_path / "legs.csv"), "--kind", "legs"]
    for item in spec:
        args += ["--map-values", item]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.replace("│", " ").split())
    assert "--map-values" in text and words in text, text
    assert not lake.exists("legs")
    with pytest.raises(UsageError):
        ingest(tmp_path / "legs.csv", "legs", lake, values={"mode": {"barge": "boat"}})


def test_the_model_sees_a_new_category_as_its_own_level_or_as_missing():
    """A level seen in training (premium) has its own code; one never seen (gold) and a
    missing value take LightGBM's missing branch."""
    spec = FeatureSpec(features=["service_level"],
                       categories={"service_level": ["premium", "standard"]})
    codes = spec.matrix(pd.DataFrame({"service_level": ["premium", "gold", None, "standard"]}))
    assert codes["service_level"].iloc[0] == 0 and codes["service_level"].iloc[3] == 1
    assert codes["service_level"].iloc[1:3].isna().all()
