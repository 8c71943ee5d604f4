"""`shipdelay simulate`: draw a world, move its shipments, and write the lake.

Shipments are simulated in chunks of consecutive bookings (memory stays flat at any size); each
chunk is validated against the contract and appended to a new lake that replaces the current one
atomically at the end. The world ends at `start + days` ("now"): shipments still moving then are
in flight, their later scans do not exist yet and they have no outcome.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from shipdelay import contract
from shipdelay.contract import MODES, SERVICE_LEVELS
from shipdelay.lake import Lake
from shipdelay.snapshots import snapshot_times
from shipdelay.world.ceiling import estimate_ceiling
from shipdelay.world.disruptions import build_world
from shipdelay.world.events import Messiness, malformed_records, milestones, parcel_scans
from shipdelay.world.journeys import simulate_journeys
from shipdelay.world.network import build_network
from shipdelay.world.plan_tables import feeds_leg, milestone_plans, scan_legs
from shipdelay.world.plans import ItineraryTable, booking_times, sample_plans
from shipdelay.world.regimes import Regime, close_new_lanes, open_new_lanes, scales, silence_feeds

STR = contract.STR


@dataclass(frozen=True)
class SimConfig:
    shipments: int = 20_000
    start: str = "2026-01-05"
    days: int = 120
    seed: int = 7
    messiness: Messiness = field(default_factory=Messiness)
    ceiling_shipments: int = 1_500
    ceiling_draws: int = 100
    ceiling_window: float = 0.2  # newest share of the booking period sampled for the ceiling
    chunk_size: int = 50_000
    consolidation_share: float = 0.0  # shipments with parallel inbound legs (consolidation.py)
    handling_steps: bool = False  # plan and scan handling steps (handling.py)
    regimes: tuple[Regime, ...] = ()  # changes of the world from a date (world/regimes.py)


@dataclass
class SimSummary:
    shipments: int = 0
    legs: int = 0
    events: int = 0
    rejects: int = 0
    delivered: int = 0
    in_flight: int = 0
    ceiling_snapshots: int = 0
    late_by_mode: dict = field(default_factory=dict)  # mode -> [late, delivered]
    late_by_level: dict = field(default_factory=dict)
    now: pd.Timestamp | None = None

    def add(self, table: dict, key: np.ndarray, late: np.ndarray) -> None:
        for k in np.unique(key):
            m = key == k
            cur = table.setdefault(str(k), [0, 0])
            cur[0] += int(late[m].sum())
            cur[1] += int(m.sum())

    def merge(self, other: SimSummary) -> None:
        for name in ("shipments", "legs", "events", "rejects", "delivered", "in_flight",
                     "ceiling_snapshots"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for mine, theirs in ((self.late_by_mode, other.late_by_mode),
                             (self.late_by_level, other.late_by_level)):
            for k, (late, total) in theirs.items():
                cur = mine.setdefault(k, [0, 0])
                cur[0] += late
                cur[1] += total

    @property
    def late_rate(self) -> float:
        late = sum(v[0] for v in self.late_by_mode.values())
        return late / max(1, self.delivered)


def _ids(prefix: str, numbers: np.ndarray, width: int) -> pd.Series:
    digits = pc.utf8_lpad(pc.cast(pa.array(numbers), pa.string()), width, "0")
    return pd.Series(pd.arrays.ArrowStringArray(
        pa.chunked_array([pc.binary_join_element_wise(pa.scalar(prefix), digits, "")])))


def _strs(values: np.ndarray) -> pd.Series:
    return pd.Series(pd.array(values, dtype=STR))


class _Clock:
    def __init__(self, start: pd.Timestamp):
        self.start_ns = start.value

    def ts(self, hours: np.ndarray) -> pd.Series:
        ns = self.start_ns + np.round(np.asarray(hours) * 3.6e12).astype("int64")
        return pd.Series(pd.to_datetime(ns, utc=True))


def main_mode(plan) -> np.ndarray:
    """The mode of the longest planned leg: what a shipment 'is' for reporting."""
    length = np.nan_to_num(plan.planned_arr - plan.planned_dep, nan=-1)
    return np.take_along_axis(plan.mode, length.argmax(axis=1)[:, None], axis=1)[:, 0]


@dataclass(frozen=True)
class _Setup:
    """Everything fixed by the config before shipments move (rebuilt identically per process)."""

    start: pd.Timestamp
    now_h: float
    net: object
    world: object
    table: ItineraryTable
    booked: np.ndarray
    window_start: float
    ceiling_p: float


@lru_cache(maxsize=2)
def _setup(cfg: SimConfig) -> _Setup:
    start = pd.Timestamp(cfg.start, tz="UTC")
    now_h = cfg.days * 24.0
    net = close_new_lanes(build_network(cfg.seed), cfg.regimes)
    world = build_world(net.hubs, start, cfg.days, cfg.seed)
    world.regime = scales(cfg.regimes, net, world)
    booked = booking_times(cfg.shipments, cfg.days, start, np.random.default_rng([cfg.seed, 4]))
    window_start = now_h * (1 - cfg.ceiling_window)
    in_window = int((booked >= window_start).sum())
    return _Setup(start, now_h, net, world, ItineraryTable(net), booked, window_start,
                  min(1.0, cfg.ceiling_shipments / max(1, in_window)))


def _chunk(cfg: SimConfig, c: int, lake_root: str) -> SimSummary:
    """Simulate shipments [c * chunk_size, ...) and append them to the lake at `lake_root`."""
    st = _setup(cfg)
    net, world, clock, now_h = st.net, st.world, _Clock(st.start), st.now_h
    lake = Lake(lake_root)
    hub_ids = net.hub_ids
    carrier_ids = net.carriers["carrier_id"].to_numpy()
    customer_ids = net.customers["customer_id"].to_numpy()
    rng = np.random.default_rng([cfg.seed, 100, c])
    lo, hi = c * cfg.chunk_size, min(cfg.shipments, (c + 1) * cfg.chunk_size)
    numbers = np.arange(lo, hi)
    plan, book = sample_plans(net, st.table, st.booked[lo:hi], numbers, world.customs_rate, rng,
                              consolidation_share=cfg.consolidation_share,
                              handling_steps=cfg.handling_steps)
    # a new lane's bookings are drawn with the world's shape options too (same leg width)
    plan, book = open_new_lanes(plan, book, net, st.table, cfg.regimes, world, world.customs_rate,
                                np.random.default_rng([cfg.seed, 300, c]),
                                partial(sample_plans, consolidation_share=cfg.consolidation_share,
                                        handling_steps=cfg.handling_steps))
    journey = simulate_journeys(plan, world, net.carriers, rng)
    n = hi - lo
    sid = _ids("SH", numbers, 8)
    shipments = pd.DataFrame({
        "shipment_id": sid, "customer_id": _strs(customer_ids[book.customer]),
        "origin_hub": _strs(hub_ids[book.origin_hub]),
        "destination_hub": _strs(hub_ids[book.destination_hub]),
        "service_level": _strs(np.array(SERVICE_LEVELS)[book.level]),
        "weight_kg": book.weight_kg, "volume_m3": book.volume_m3,
        "parcel_count": book.parcels.astype("int64"),
        "booked_at": clock.ts(plan.booked), "promised_at": clock.ts(book.promised)})
    r, leg = np.nonzero(plan.mode >= 0)
    legs = pd.DataFrame({
        "shipment_id": sid.iloc[r].reset_index(drop=True), "leg_index": leg.astype("int64"),
        "mode": _strs(np.array(MODES)[plan.mode[r, leg]]),
        "carrier_id": _strs(carrier_ids[plan.carrier[r, leg]]),
        "from_hub": _strs(hub_ids[plan.from_hub[r, leg]]),
        "to_hub": _strs(hub_ids[plan.to_hub[r, leg]]),
        "planned_departure": clock.ts(plan.planned_dep[r, leg]),
        "planned_arrival": clock.ts(plan.planned_arr[r, leg])})
    if cfg.consolidation_share > 0:
        legs["feeds_leg"] = feeds_leg(plan, r, leg)

    scans = parcel_scans(milestones(plan, journey, net, world.regions), book.parcels,
                         cfg.messiness, rng)
    scans = silence_feeds(scans, plan, net, cfg.regimes, world)
    scans = scans[scans["ingested"] <= now_h].reset_index(drop=True)
    k = len(scans)
    srow = scans["row"].to_numpy()
    events = pd.DataFrame({
        "event_id": _ids("EV", c * 10**10 + np.arange(k), 12),
        "shipment_id": sid.iloc[srow].reset_index(drop=True),
        "parcel_id": _ids("", numbers[srow] * 100 + scans["parcel"].to_numpy() + 1, 10),
        "event_time": clock.ts(scans["time"]), "ingested_at": clock.ts(scans["ingested"]),
        "event_type": _strs(scans["event_type"].to_numpy()),
        "hub_id": _strs(hub_ids[scans["hub"].to_numpy()]),
        "leg_index": scan_legs(scans["leg"].to_numpy()),
        "latitude": scans["lat"].to_numpy(), "longitude": scans["lon"].to_numpy(),
        "note": _strs(scans["note"].to_numpy())})
    events["parcel_id"] = _ids("", numbers[srow], 8).radd("SH") + "-P" + \
        _ids("", scans["parcel"].to_numpy() + 1, 2)

    done = journey.delivered <= now_h
    promised_ts = shipments["promised_at"][done].reset_index(drop=True)
    delivered_ts = clock.ts(journey.delivered[done])
    outcomes = pd.DataFrame({
        "shipment_id": sid[done].reset_index(drop=True), "delivered_at": delivered_ts,
        "promised_at": promised_ts,
        "delay_hours": (delivered_ts - promised_ts).dt.total_seconds() / 3600,
        "is_late": (delivered_ts > promised_ts).to_numpy()})

    bad = malformed_records(events, cfg.messiness.malformed, rng)
    rejects = pd.DataFrame({
        "table": _strs(np.full(len(bad), "tracking_events")),
        "source": _strs(np.full(len(bad), "simulator")),
        "row_number": np.arange(len(bad), dtype="int64") + c * 10**9,
        "reason": _strs(bad["reason"].to_numpy()), "raw": _strs(bad["raw"].to_numpy()),
        "rejected_at": pd.Series(pd.to_datetime(bad["at"].to_numpy(), utc=True))})

    if cfg.handling_steps:
        lake.append("milestone_plans", milestone_plans(plan, sid, clock))
    for name, frame in (("shipments", shipments), ("legs", legs),
                        ("tracking_events", events), ("outcomes", outcomes),
                        ("rejects", rejects)):
        lake.append(name, frame)

    chosen = done & (plan.booked >= st.window_start) & \
        (np.random.default_rng([cfg.seed, 200, c]).random(n) < st.ceiling_p)
    out = SimSummary()
    if chosen.any():
        snaps = snapshot_times(shipments[chosen], events, outcomes)
        rows = snaps["shipment_id"].str.slice(2).astype(int).to_numpy() - lo
        as_of_h = (snaps["as_of"] - st.start).dt.total_seconds().to_numpy() / 3600
        p = estimate_ceiling(plan, journey, book.promised, rows, as_of_h, world,
                             net.carriers, cfg.ceiling_draws, rng)
        lake.append("ceiling", pd.DataFrame({
            "shipment_id": snaps["shipment_id"], "as_of": snaps["as_of"], "p_late": p,
            "draws": np.full(len(p), cfg.ceiling_draws, dtype="int64")}))
        out.ceiling_snapshots += len(p)

    mode = np.array(MODES)[main_mode(plan)]
    late = journey.delivered > book.promised
    out.add(out.late_by_mode, mode[done], late[done])
    out.add(out.late_by_level, np.array(SERVICE_LEVELS)[book.level][done], late[done])
    out.shipments += n
    out.legs += len(legs)
    out.events += k
    out.rejects += len(rejects)
    out.delivered += int(done.sum())
    out.in_flight += int((~done).sum())
    return out


def simulate(cfg: SimConfig, lake_link: Path, workers: int = 1,
             on_chunk: Callable[[int, int], None] | None = None) -> SimSummary:
    """Simulate the world of `cfg` and swap it in as the lake behind `lake_link`.

    Chunks are independent given the world, so `workers` processes share them; the result is
    the same for any number of workers.
    """
    st = _setup(cfg)
    summary = SimSummary(now=st.start + pd.Timedelta(hours=st.now_h))
    n_chunks = max(1, -(-cfg.shipments // cfg.chunk_size))
    with Lake.rewrite(lake_link) as lake:
        lake.append("hubs", st.net.hubs[contract.columns("hubs")])
        if workers > 1 and n_chunks > 1:
            ctx = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                futures = [pool.submit(_chunk, cfg, c, str(lake.root)) for c in range(n_chunks)]
                for done, fut in enumerate(as_completed(futures), 1):
                    summary.merge(fut.result())
                    if on_chunk:
                        on_chunk(done, n_chunks)
        else:
            for c in range(n_chunks):
                summary.merge(_chunk(cfg, c, str(lake.root)))
                if on_chunk:
                    on_chunk(c + 1, n_chunks)
    return summary
