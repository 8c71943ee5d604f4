"""From journeys to parcel-level tracking events, with real-world messiness.

Every parcel of a shipment is scanned at every milestone (handling steps included, when the plan
has them; a shipment-level step, received or collected, has leg -1: no leg). Scans reach the
lake after an ingestion lag (usually minutes, sometimes hours when a handheld uploads in bulk),
so they arrive out of order; some scans are missing, some parcels are scanned twice, and a few
raw records are broken (those go to rejects with the reason, as the ingest path would do).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from shipdelay.world.journeys import ATTEMPT_HOURS, Journey, Plan
from shipdelay.world.network import Network
from shipdelay.world.notes import draw_notes


@dataclass(frozen=True)
class Messiness:
    """Rates of real-world mess in the tracking feed."""

    missing_scan: float = 0.03
    duplicate_scan: float = 0.02
    late_upload: float = 0.05  # scans uploaded in bulk hours later (out of order)
    malformed: float = 0.002


def milestones(plan: Plan, j: Journey, net: Network, region_names: list[str]) -> pd.DataFrame:
    """One row per shipment milestone (before the per-parcel fan-out), with its hidden cause."""
    n = len(plan.booked)
    rows = np.arange(n)
    last = plan.n_legs - 1
    dest = plan.to_hub[rows, last]
    kind_region = net.hubs["region"].to_numpy()
    parts: list[dict] = []

    def add(mask, time, etype, hub, leg, cause, lat=None, lon=None):
        m = mask & ~np.isnan(time)
        parts.append({"row": rows[m], "time": time[m], "event_type": np.full(m.sum(), etype),
                      "hub": hub[m], "leg": leg[m], "cause": cause[m],
                      "lat": None if lat is None else lat[m], "lon": None if lon is None else lon[m]})

    none = np.full(n, "", dtype=object)
    shipment_level = np.full(n, -1)  # leg -1: a shipment-level step (a null leg_index)
    add(np.ones(n, bool), j.pickup, "picked_up", plan.from_hub[:, 0], np.zeros(n, int), none)
    add(plan.steps, j.received, "received", plan.from_hub[:, 0], shipment_level, none)
    lat, lon = net.hubs["latitude"].to_numpy(), net.hubs["longitude"].to_numpy()
    for i in range(plan.mode.shape[1]):
        has = i < plan.n_legs
        frm = np.where(has, plan.from_hub[:, i], 0)
        to = np.where(has, plan.to_hub[:, i], 0)
        leg = np.full(n, i)
        mode = np.where(has, plan.mode[:, i], 0)
        region = kind_region[frm]
        wx_cause = np.where(region == "east_asia", "weather_east_asia",
                            np.where(np.isin(region, ["europe", "north_america"]), "weather_cold",
                                     "weather_other"))
        # a departure's note tells what was known when it left: the weather at the arrival
        # hub is still ahead then
        dep_cause = np.where(j.missed[:, i], "missed",
                             np.where(j.weather_dep[:, i] > 0.6, wx_cause,
                                      np.where(j.congestion[:, i] > 1.4, "congestion", "")))
        add(has & plan.steps, j.checked_in[:, i], "checked_in", frm, leg, none)
        add(has & plan.steps, j.handed_over[:, i], "handed_over", frm, leg, none)
        add(has, j.dep[:, i], "departed", frm, leg, dep_cause.astype(object))
        fail_cause = np.array(["failure_truck", "failure_rail", "failure_air", "failure_ocean"])[mode]
        # where along the leg it struck: a share of the planned leg, not of the actual one,
        # whose length (the repair included) is still ahead when the failure is reported
        share = np.clip((j.failure_at[:, i] - j.dep[:, i])
                        / (plan.planned_arr[:, i] - plan.planned_dep[:, i]), 0, 1)
        share = np.nan_to_num(share)
        add(j.failure[:, i], j.failure_at[:, i], "exception", frm, leg, fail_cause.astype(object),
            lat[frm] + share * (lat[to] - lat[frm]), lon[frm] + share * (lon[to] - lon[frm]))
        add(has, j.arr[:, i], "arrived", to, leg, none)
        add(has & j.hold & (plan.customs_leg == i), j.hold_start, "customs_hold", to, leg,
            np.full(n, "customs", dtype=object))
        add(has & j.hold & (plan.customs_leg == i), j.hold_end, "customs_released", to, leg, none)
    add(plan.steps & plan.collects, j.collected, "collected", dest, shipment_level, none)
    add(np.ones(n, bool), j.ofd, "out_for_delivery", dest, last, none)
    add(j.delivery_failed, j.ofd + ATTEMPT_HOURS, "exception", dest, last,
        np.full(n, "delivery_fail", dtype=object))
    add(np.ones(n, bool), j.delivered, "delivered", dest, last, none)

    frame = pd.DataFrame({k: np.concatenate([p[k] for p in parts]) for k in
                          ("row", "time", "event_type", "hub", "leg", "cause")})
    frame["lat"] = np.concatenate([p["lat"] if p["lat"] is not None else lat[p["hub"]] for p in parts])
    frame["lon"] = np.concatenate([p["lon"] if p["lon"] is not None else lon[p["hub"]] for p in parts])
    return frame


def parcel_scans(ms: pd.DataFrame, parcels: np.ndarray, mess: Messiness,
                 rng: np.random.Generator) -> pd.DataFrame:
    """Fan milestones out to every parcel, then add lag, gaps, re-scans and notes."""
    reps = parcels[ms["row"].to_numpy()]
    scans = ms.loc[ms.index.repeat(reps)].reset_index(drop=True)
    first = np.r_[0, np.cumsum(reps)[:-1]]
    scans["parcel"] = np.arange(len(scans)) - np.repeat(first, reps)
    n = len(scans)
    scans["time"] = scans["time"].to_numpy() + rng.uniform(0, 0.3, n) * (scans["parcel"] > 0)
    # the note is written once per milestone, on the first parcel's scan
    notes = draw_notes(ms["cause"].to_numpy(), rng)
    scans["note"] = np.where(scans["parcel"].to_numpy() == 0, np.repeat(notes, reps), None)
    keep = rng.random(n) >= mess.missing_scan
    scans = scans[keep]
    dup = scans[rng.random(len(scans)) < mess.duplicate_scan].copy()
    dup["time"] = dup["time"] + rng.uniform(0.02, 0.5, len(dup))
    scans = pd.concat([scans, dup], ignore_index=True)
    n = len(scans)
    lag = rng.lognormal(np.log(0.15), 0.8, n)
    bulk = rng.random(n) < mess.late_upload
    lag[bulk] += rng.uniform(1.0, 10.0, bulk.sum())
    scans["ingested"] = scans["time"].to_numpy() + lag
    return scans


def malformed_records(events: pd.DataFrame, rate: float, rng: np.random.Generator) -> pd.DataFrame:
    """Broken raw records as a feed would deliver them, with the reason each is rejected."""
    k = int(rng.binomial(len(events), rate)) if len(events) else 0
    if k == 0:
        return pd.DataFrame(columns=["raw", "reason", "at"])
    sample = events.iloc[rng.choice(len(events), k, replace=False)]
    records = sample[["event_id", "shipment_id", "event_type", "hub_id"]].astype(str).to_dict("records")
    times = sample["event_time"].dt.strftime("%Y-%m-%dT%H:%M:%SZ").tolist()
    kinds = rng.integers(0, 4, k)
    raws, reasons = [], []
    for rec, t, kind in zip(records, times, kinds):  # only the few broken records
        rec = dict(rec, event_time=t)
        if kind == 0:
            raws.append(json.dumps(rec)[: max(5, len(json.dumps(rec)) // 2)])
            reasons.append("malformed JSON")
        elif kind == 1:
            rec.pop("shipment_id")
            raws.append(json.dumps(rec))
            reasons.append("shipment_id: missing field")
        elif kind == 2:
            rec["event_time"] = "31/02/20xx 25:61"
            raws.append(json.dumps(rec))
            reasons.append("event_time: not a timestamp")
        else:
            rec["event_type"] = "teleported"
            raws.append(json.dumps(rec))
            reasons.append("event_type: not an allowed value")
    return pd.DataFrame({"raw": raws, "reason": reasons, "at": sample["ingested_at"].to_numpy()})
