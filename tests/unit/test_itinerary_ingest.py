"""Itineraries at import: a consolidation's feeds_leg is checked per shipment, a tracking event
whose leg the plan does not know is rejected with its row number and reason, a leg event
without a leg_index gets the leg its hub tells, and milestone plans import with their keys
(a shipment-level step's empty leg_index included) once, however often the file comes."""

from __future__ import annotations

import pandas as pd

from shipdelay.ingest import ingest
from shipdelay.lake import open_lake

NOW = pd.Timestamp("2025-04-01", tz="UTC")
HUBS = ("hub_id,name,kind,city,country,region,latitude,longitude\n"
        "A,Hub A,airport,Aville,NL,europe,51.9,4.1\nB,Hub B,airport,Bville,DE,europe,50.1,8.6\n"
        "C,Hub C,airport,Cville,FR,europe,49.0,2.5\nD,Hub D,airport,Dville,US,americas,40.6,"
        "-73.8\n")
SHIPMENTS = ("shipment_id,customer_id,origin_hub,destination_hub,service_level,weight_kg,"
             "volume_m3,parcel_count,booked_at,promised_at\n"
             "S1,C1,A,D,standard,10,0.1,1,2025-03-01T00:00:00Z,2025-03-10T00:00:00Z\n"
             "S2,C1,A,D,standard,10,0.1,1,2025-03-01T00:00:00Z,2025-03-10T00:00:00Z\n")
# S1: legs 0 (A->C) and 1 (B->C) merge into leg 2 (C->D); S2 names a leg it does not have
LEGS = ("shipment_id,leg_index,mode,carrier_id,from_hub,to_hub,planned_departure,"
        "planned_arrival,feeds_leg\n"
        "S1,0,air,K,A,C,2025-03-02T00:00:00Z,2025-03-02T06:00:00Z,2\n"
        "S1,1,truck,K,B,C,2025-03-02T00:00:00Z,2025-03-02T09:00:00Z,\n"
        "S1,2,air,K,C,D,2025-03-03T00:00:00Z,2025-03-03T10:00:00Z,\n"
        "S2,0,air,K,A,C,2025-03-02T00:00:00Z,2025-03-02T06:00:00Z,4\n"
        "S2,1,air,K,C,D,2025-03-03T00:00:00Z,2025-03-03T10:00:00Z,\n")
EVENTS = ("event_id,shipment_id,parcel_id,event_time,ingested_at,event_type,hub_id,leg_index\n"
          "E1,S1,P1,2025-03-02T01:00:00Z,2025-03-02T01:10:00Z,departed,B,\n"   # -> leg 1
          "E2,S1,P1,2025-03-02T07:00:00Z,2025-03-02T07:10:00Z,arrived,C,\n"    # two legs end at C
          "E3,S1,P1,2025-03-03T01:00:00Z,2025-03-03T01:10:00Z,departed,C,\n"   # -> leg 2
          "E4,S1,P1,2025-03-02T01:00:00Z,2025-03-02T01:10:00Z,departed,A,7\n"  # no leg 7
          "E5,S1,P1,2025-03-01T20:00:00Z,2025-03-01T20:10:00Z,received,A,\n"   # shipment level
          "E6,S1,P1,2025-03-02T02:00:00Z,2025-03-02T02:10:00Z,exception,D,\n"  # leg 2 ends at D
          "E7,S1,P1,2025-03-03T02:00:00Z,2025-03-03T02:10:00Z,customs_hold,D,\n"
          "E8,S1,P1,2025-03-02T02:00:00Z,2025-03-02T02:10:00Z,exception,A,\n"  # leg 0 starts at A
          "E9,S2,P1,2025-03-02T02:00:00Z,2025-03-02T02:10:00Z,exception,B,\n")  # S2 never at B
PLANS = ("shipment_id,event_type,leg_index,planned_at\n"
         "S1,received,,2025-03-01T20:00:00Z\nS1,checked_in,0,2025-03-01T22:00:00Z\n"
         "S1,checked_in,1,2025-03-01T21:00:00Z\nS1,collected,,2025-03-03T14:00:00Z\n"
         "S1,departed,0,2025-03-02T00:00:00Z\nS1,checked_in,,2025-03-01T22:00:00Z\n"
         "S1,handed_over,3,2025-03-02T23:00:00Z\n")


def _import(tmp_path, kind: str, text: str):
    path = tmp_path / f"{kind}.csv"
    path.write_text(text)
    return ingest(path, kind, LAKE[0], now=NOW)


LAKE: list = []


def test_consolidation_unknown_legs_and_plans(tmp_path):
    LAKE[:] = [open_lake(tmp_path / "lake")]
    lake = LAKE[0]
    for kind, text in (("hubs", HUBS), ("shipments", SHIPMENTS)):
        assert _import(tmp_path, kind, text).rejected == 0

    legs = _import(tmp_path, "legs", LEGS)
    assert (legs.accepted, legs.rejected) == (4, 1)
    assert legs.rejects["row_number"].tolist() == [4]
    assert legs.rejects["reason"].iloc[0] == "feeds_leg: shipment 'S2' has no leg 4 (its legs: 0..1)"
    stored = lake.read("legs").sort_values(["shipment_id", "leg_index"])
    assert stored["feeds_leg"].astype("Float64").fillna(-1).tolist() == [2, -1, -1, -1]

    events = _import(tmp_path, "events", EVENTS)
    reasons = dict(zip(events.rejects["row_number"], events.rejects["reason"], strict=True))
    assert reasons == {
        2: "leg_index: missing, and 2 legs of shipment 'S1' arrive at hub 'C'",
        4: "leg_index: shipment 'S1' has no leg 7 (its plan has legs 0..2)",
        9: "leg_index: missing, and no single leg of shipment 'S2' arrives at or leaves from "
           "hub 'B'",
    }
    got = lake.read("tracking_events").set_index("event_id")["leg_index"]
    assert (got["E1"], got["E3"], got["E6"], got["E7"], got["E8"]) == (1, 2, 2, 2, 0)
    assert pd.isna(got["E5"])  # a shipment-level step keeps no leg
    assert "E4" not in got.index and "E2" not in got.index

    plans = _import(tmp_path, "milestone_plans", PLANS)
    assert (plans.accepted, plans.rejected) == (4, 3)
    assert plans.rejects["row_number"].tolist() == [5, 6, 7]
    assert "must be a planned step" in plans.rejects["reason"].iloc[0]
    assert "leg_index is required" in plans.rejects["reason"].iloc[1]
    assert plans.rejects["reason"].iloc[2] == ("leg_index: shipment 'S1' has no leg 3 (its plan "
                                               "has legs 0..2)")
    again = _import(tmp_path, "milestone_plans", PLANS)
    assert (again.accepted, again.duplicates) == (0, 4)
    assert len(lake.read("milestone_plans")) == 4
