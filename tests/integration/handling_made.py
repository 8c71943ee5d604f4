"""A small hand-made delivery whose plans are milestones, not only legs, and branch: handling
steps with planned times (received, checked in, handed over, collected) in `milestone_plans`,
and consolidations (two inbound legs merging into one outbound leg, `legs.feeds_leg`).

About 320 shipments over six weeks; 40% are consolidations. The seeded signal is in a handling
step: 45% of the shipments are handed over to the final leg's carrier 6-12 h late (the loading
waits), and everything after it slips by as much, so they are all late; the others are late
only when an unforeseeable delay at the final arrival (exponential, 2 h mean) eats the slack.
Every scan is ingested five minutes after it happens; the 24 newest bookings are still in
flight at the lake's now. Two rows test the leg rules: one consolidation's second inbound
departure comes without its leg_index (its hub tells it), and one arrival names a leg the plan
does not have (rejected).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

HUB_IDS = ["H-AMS", "H-FRA", "H-CDG", "H-MAD", "H-MXP"]
START = pd.Timestamp("2025-01-06T00:00:00Z")
H = pd.Timedelta(hours=1)
UNKNOWN_LEG_EVENT = "E-UNKNOWN-LEG"


def _iso(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for name in out.columns:
        if isinstance(out[name].dtype, pd.DatetimeTZDtype):
            out[name] = out[name].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return out


def delivery(folder: Path, shipments: int = 320, days: int = 42, seed: int = 5
             ) -> dict[str, Path]:
    """Write the contract files (hubs, shipments, legs, milestone_plans, events, outcomes) and
    return their paths by ingest kind; also `truth.csv`: each shipment's hand-over delay."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    ids = np.array([f"S{i:04d}" for i in range(shipments)])
    hours = np.sort(rng.uniform(0, days * 24, shipments))
    hours[-24:] = days * 24 + np.arange(24) / 2  # in flight at the lake's now
    booked = START + pd.to_timedelta(hours, unit="h")
    consol = rng.random(shipments) < 0.4
    o = rng.integers(0, len(HUB_IDS), shipments)
    hub = np.array(HUB_IDS)
    origin, second, via, dest = hub[o], hub[(o + 1) % 5], hub[(o + 2) % 5], hub[(o + 3) % 5]

    # legs: a chain origin->via->dest, or origin->via and second->via merging into via->dest
    rows = np.arange(shipments)
    chain = rows[~consol]
    cons = rows[consol]
    legs = pd.concat([
        pd.DataFrame({"row": chain, "leg_index": 0, "from_hub": origin[chain],
                      "to_hub": via[chain], "dep": 3.0, "arr": 11.0, "feeds_leg": pd.NA}),
        pd.DataFrame({"row": chain, "leg_index": 1, "from_hub": via[chain],
                      "to_hub": dest[chain], "dep": 14.0, "arr": 24.0, "feeds_leg": pd.NA}),
        pd.DataFrame({"row": cons, "leg_index": 0, "from_hub": origin[cons], "to_hub": via[cons],
                      "dep": 3.0, "arr": 8.0, "feeds_leg": 2}),
        pd.DataFrame({"row": cons, "leg_index": 1, "from_hub": second[cons], "to_hub": via[cons],
                      "dep": 2.0, "arr": 9.0, "feeds_leg": pd.NA}),
        pd.DataFrame({"row": cons, "leg_index": 2, "from_hub": via[cons], "to_hub": dest[cons],
                      "dep": 14.0, "arr": 24.0, "feeds_leg": pd.NA}),
    ], ignore_index=True).sort_values(["row", "leg_index"], ignore_index=True)
    legs["feeds_leg"] = legs["feeds_leg"].astype("Int64")
    final = np.where(consol, 2, 1)
    legs["final"] = legs["leg_index"].to_numpy() == final[legs["row"]]
    at = booked[legs["row"]]
    legs["shipment_id"] = ids[legs["row"]]
    legs["planned_departure"] = at + pd.to_timedelta(legs["dep"].to_numpy(), unit="h")
    legs["planned_arrival"] = at + pd.to_timedelta(legs["arr"].to_numpy(), unit="h")
    legs["mode"] = np.where(legs["final"], "air", "truck")
    legs["carrier_id"] = np.where(legs["final"], "K-AIR", "K-ROAD")

    # the seeded signal: the hand-over to the final leg's carrier, and all after it, late
    delay = np.where(rng.random(shipments) < 0.45, rng.uniform(6, 12, shipments), 0.0)
    surprise = rng.exponential(2.0, shipments)
    last_arr = booked + 24 * H
    promised = last_arr + 6 * H

    def noise(n: int) -> pd.TimedeltaIndex:
        return pd.to_timedelta(rng.normal(0, 0.2, n), unit="h")

    plans, scans = [], []
    r = legs["row"].to_numpy()
    late = np.where(legs["final"], delay[r], 0.0)
    for kind, hours_before, slips in (("checked_in", 2.0, 0.0), ("handed_over", 1.0, 1.0),
                                      ("departed", 0.0, 1.0)):
        planned = legs["planned_departure"] - hours_before * H
        if kind != "departed":
            plans.append(pd.DataFrame({"shipment_id": legs["shipment_id"], "event_type": kind,
                                       "leg_index": legs["leg_index"], "planned_at": planned}))
        scans.append(pd.DataFrame({
            "shipment_id": legs["shipment_id"], "event_type": kind,
            "leg_index": legs["leg_index"].astype("Int64"), "hub_id": legs["from_hub"],
            "event_time": planned + pd.to_timedelta(slips * late, unit="h") + noise(len(legs))}))
    arrive_late = late + np.where(legs["final"], surprise[r], 0.0)
    scans.append(pd.DataFrame({
        "shipment_id": legs["shipment_id"], "event_type": "arrived",
        "leg_index": legs["leg_index"].astype("Int64"), "hub_id": legs["to_hub"],
        "event_time": legs["planned_arrival"] + pd.to_timedelta(arrive_late, unit="h")
        + noise(len(legs))}))
    end = last_arr + pd.to_timedelta(delay + surprise, unit="h")
    for kind, planned, actual, where, leg in (
            ("picked_up", None, booked + H, origin, pd.NA),
            ("received", booked + 1.5 * H, booked + 1.5 * H, origin, pd.NA),
            ("collected", last_arr + 3 * H, end + 3 * H, dest, pd.NA),
            ("delivered", None, end + 3.5 * H, dest, final)):
        if planned is not None:
            plans.append(pd.DataFrame({"shipment_id": ids, "event_type": kind,
                                       "leg_index": pd.NA, "planned_at": planned}))
        scans.append(pd.DataFrame({"shipment_id": ids, "event_type": kind,
                                   "leg_index": pd.array(np.broadcast_to(leg, shipments),
                                                         dtype="Int64"),
                                   "hub_id": where, "event_time": actual + noise(shipments)}))
    scans = pd.concat(scans, ignore_index=True)
    scans["event_id"] = "E" + pd.Series(np.arange(len(scans))).astype(str).str.zfill(6)
    # one consolidation's second inbound departure without its leg; an arrival of no leg
    first = ids[cons[0]]
    unlabelled = ((scans["shipment_id"] == first) & (scans["event_type"] == "departed")
                  & (scans["leg_index"] == 1))
    scans.loc[unlabelled, "leg_index"] = pd.NA
    bogus = scans.iloc[[0]].assign(event_id=UNKNOWN_LEG_EVENT, event_type="arrived",
                                   leg_index=pd.array([5], dtype="Int64"))
    scans = pd.concat([scans, bogus], ignore_index=True)
    scans["leg_index"] = scans["leg_index"].astype("Int64")
    scans["parcel_id"] = scans["shipment_id"] + "-P1"
    scans["ingested_at"] = scans["event_time"] + pd.Timedelta(minutes=5)
    now = booked[-1] + 3 * H
    scans = scans[scans["ingested_at"] <= now].sort_values("ingested_at", kind="stable")

    done = scans[scans["event_type"] == "delivered"].set_index("shipment_id")["event_time"]
    promised_by_id = pd.Series(promised, index=ids)
    outcomes = pd.DataFrame({"shipment_id": done.index, "delivered_at": done.to_numpy(),
                             "promised_at": promised_by_id.loc[done.index].to_numpy()})
    outcomes["delay_hours"] = (outcomes["delivered_at"] - outcomes["promised_at"]) / H
    outcomes["is_late"] = outcomes["delivered_at"] > outcomes["promised_at"]
    frames = {
        "hubs": pd.DataFrame({"hub_id": HUB_IDS, "name": HUB_IDS, "kind": "airport",
                              "city": ["Amsterdam", "Frankfurt", "Paris", "Madrid", "Milan"],
                              "country": ["NL", "DE", "FR", "ES", "IT"], "region": "europe",
                              "latitude": [52.3, 50.0, 49.0, 40.5, 45.6],
                              "longitude": [4.8, 8.6, 2.5, -3.6, 8.7]}),
        "shipments": pd.DataFrame({"shipment_id": ids, "customer_id": "C1",
                                   "origin_hub": origin, "destination_hub": dest,
                                   "service_level": "standard", "weight_kg": 100.0,
                                   "volume_m3": 1.0, "parcel_count": 1, "booked_at": booked,
                                   "promised_at": promised}),
        "legs": legs[["shipment_id", "leg_index", "mode", "carrier_id", "from_hub", "to_hub",
                      "planned_departure", "planned_arrival", "feeds_leg"]],
        "milestone_plans": pd.concat(plans, ignore_index=True).astype({"leg_index": "Int64"}),
        "events": scans[["event_id", "shipment_id", "parcel_id", "event_time", "ingested_at",
                         "event_type", "hub_id", "leg_index"]],
        "outcomes": outcomes,
        "truth": pd.DataFrame({"shipment_id": ids, "handover_delay_h": delay,
                               "consolidation": consol}),
    }
    paths = {}
    for kind, frame in frames.items():
        paths[kind] = folder / f"{kind}.csv"
        _iso(frame).to_csv(paths[kind], index=False)
    return paths
