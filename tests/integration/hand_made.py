"""A small hand-made delivery in contract files, for end-to-end tests of data shapes the
simulator never writes: hubs known by their id alone, shipments without customer, service level,
weight or volume, legs without a carrier.

About 300 shipments over seven weeks, one or two legs each, scanned at pick-up, departure,
arrival and delivery, ingested five minutes after each scan; a departure slip (half of the
shipments leave on time, the others late by an exponential number of hours) decides lateness, so
a model has something to learn from the scans. The 24 newest bookings, half an hour apart,
are mostly still in flight at the lake's now.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

HUB_IDS = ["H-NORTH", "H-SOUTH", "H-EAST", "H-WEST"]
START = pd.Timestamp("2025-01-06T00:00:00Z")
H = pd.Timedelta(hours=1)


def delivery(folder: Path, shipments: int = 300, days: int = 49, seed: int = 3,
             hubs: pd.DataFrame | None = None) -> dict[str, Path]:
    """Write hubs.csv, shipments.csv, legs.csv, events.csv and outcomes.csv (only the contract's
    required columns, unless `hubs` gives the hubs' rows) and return their paths by kind."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    ids = [f"S{i:04d}" for i in range(shipments)]
    hours = np.sort(rng.uniform(0, days * 24, shipments))
    hours[-24:] = days * 24 + np.arange(24) / 2  # a busy last half day: in flight at the end
    booked = START + pd.to_timedelta(hours, unit="h")
    origin = rng.integers(0, len(HUB_IDS), shipments)
    dest = (origin + rng.integers(1, len(HUB_IDS), shipments)) % len(HUB_IDS)
    two_legs = rng.random(shipments) < 0.4
    via = (dest + 1) % len(HUB_IDS)
    via = np.where(via == origin, (dest + 2) % len(HUB_IDS), via)
    slip = np.where(rng.random(shipments) < 0.5, 0.0, rng.exponential(5.0, shipments))

    legs, events = [], []
    last_arrival = []
    for i, sid in enumerate(ids):  # a few hundred rows of test data, written once
        stops = [origin[i], via[i], dest[i]] if two_legs[i] else [origin[i], dest[i]]
        departure = booked[i] + 2 * H
        picked = booked[i] + H
        events.append((sid, "picked_up", None, stops[0], picked))
        late_by = slip[i] * H
        for leg in range(len(stops) - 1):
            arrival = departure + 8 * H
            legs.append({"shipment_id": sid, "leg_index": leg,
                         "mode": "truck" if leg == 0 else "air",
                         "from_hub": HUB_IDS[stops[leg]], "to_hub": HUB_IDS[stops[leg + 1]],
                         "planned_departure": departure, "planned_arrival": arrival})
            events.append((sid, "departed", leg, stops[leg], departure + late_by))
            events.append((sid, "arrived", leg, stops[leg + 1], arrival + late_by))
            departure = arrival + 3 * H
        delivered = arrival + late_by + 2 * H
        events.append((sid, "delivered", len(stops) - 2, stops[-1], delivered))
        last_arrival.append(arrival)

    promised = pd.DatetimeIndex(last_arrival) + 4 * H
    ships = pd.DataFrame({"shipment_id": ids, "origin_hub": [HUB_IDS[o] for o in origin],
                          "destination_hub": [HUB_IDS[d] for d in dest],
                          "parcel_count": 1, "booked_at": booked, "promised_at": promised})
    scans = pd.DataFrame(events, columns=["shipment_id", "event_type", "leg_index", "hub",
                                          "event_time"])
    scans["hub_id"] = [HUB_IDS[h] for h in scans.pop("hub")]
    scans["leg_index"] = scans["leg_index"].astype("Int64")
    scans["parcel_id"] = scans["shipment_id"] + "-P1"
    scans["event_id"] = "E" + pd.Series(np.arange(len(scans))).astype(str).str.zfill(6)
    scans["ingested_at"] = scans["event_time"] + pd.Timedelta(minutes=5)
    # the lake's now: 3 hours after the last booking, so the newest shipments are in flight
    now = booked[-1] + 3 * H
    scans = scans[scans["ingested_at"] <= now]
    done = scans[scans["event_type"] == "delivered"].set_index("shipment_id")["event_time"]
    outcomes = pd.DataFrame({"shipment_id": done.index, "delivered_at": done.to_numpy()})
    outcomes["promised_at"] = ships.set_index("shipment_id").loc[done.index, "promised_at"
                                                                 ].to_numpy()
    outcomes["delay_hours"] = (outcomes["delivered_at"] - outcomes["promised_at"]) / H
    outcomes["is_late"] = outcomes["delivered_at"] > outcomes["promised_at"]
    hubs = pd.DataFrame({"hub_id": HUB_IDS}) if hubs is None else hubs
    frames = {"hubs": hubs, "shipments": ships, "legs": pd.DataFrame(legs), "events": scans,
              "outcomes": outcomes}
    paths = {}
    for kind, frame in frames.items():
        paths[kind] = folder / f"{kind}.csv"
        _iso(frame).to_csv(paths[kind], index=False)
    return paths


def _iso(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for name in out.columns:
        if isinstance(out[name].dtype, pd.DatetimeTZDtype):
            out[name] = out[name].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return out
