"""When a shipment is looked at: the snapshot rule shared by training sets and the ceiling.

A shipment is scored at booking, again each time a milestone becomes known (the moment the
first scan of that milestone (event type, leg) is ingested), and at clock ticks in between:
serving is asked at any instant, often long after the last scan, so training must see such
silent moments too. Delivery ends the journey, so the delivered milestone, ticks at or after
delivery and anything known only after delivery make no snapshot.

Ticks (`TickRule`) fall on a fixed UTC clock grid, every `every_h` hours, shifted per shipment
by a seeded offset in [0, every_h) derived from its id (so ticks do not all land on the same
instants, and a shipment's ticks do not depend on which other shipments are in the frame).
Ticks fall strictly after booking and strictly before delivery; a shipment without a known
delivery gets none. At most `cap` ticks are kept per shipment, spread evenly over its journey.

Weights (column `weight`): booking and milestone snapshots weigh 1 each; a shipment's kept
ticks weigh min(1, `tick_weight` / n) each, so together they weigh as much as min(n,
`tick_weight`) snapshots. A long journey adds no more tick weight than a short one with
`tick_weight` ticks, so long journeys do not dominate what the model learns about silence.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd

MILESTONE_KEY = ["shipment_id", "event_type", "leg_index"]
TICK = "tick"  # the milestone label of a clock-tick snapshot
BOOKED = "booked"
SNAPSHOT_COLUMNS = ["shipment_id", "as_of", "milestone", "weight"]
_SECOND_NS = 1_000_000_000


@dataclass(frozen=True)
class TickRule:
    """Clock ticks while a shipment is in flight (see the module docstring)."""

    every_h: float = 12.0  # hours between ticks on the UTC clock
    cap: int = 24  # ticks kept per shipment at most, spread evenly
    tick_weight: float = 4.0  # a shipment's ticks weigh together at most this many snapshots
    seed: int = 0  # seeds each shipment's offset on the grid

    def __post_init__(self):
        if not self.every_h > 0 or self.cap < 0 or not self.tick_weight > 0:
            raise ValueError("ticks need every_h > 0, cap >= 0 and tick_weight > 0")


DEFAULT_TICKS = TickRule()  # training sets and the simulator's ceiling, at the same instants
NO_TICKS = TickRule(cap=0)


def tick_offsets_ns(shipment_ids: pd.Series, rule: TickRule) -> np.ndarray:
    """Each shipment's offset on the tick grid, in nanoseconds, whole seconds in [0, every_h)
    (whole seconds: every store keeps a tick's instant exactly, SQLite's online store too)."""
    period_s = _period_ns(rule) // _SECOND_NS
    key = f"shipdelay{rule.seed:07d}"[-16:].rjust(16, "0")
    hashed = pd.util.hash_pandas_object(pd.Series(shipment_ids, dtype=object).astype(str),
                                        index=False, hash_key=key).to_numpy(np.uint64)
    return (hashed % np.uint64(period_s)).astype(np.int64) * _SECOND_NS


def _period_ns(rule: TickRule) -> int:
    return max(1, round(rule.every_h * 3600)) * _SECOND_NS


def tick_times(shipment_ids, booked_at, delivered_at, rule: TickRule = DEFAULT_TICKS
               ) -> pd.DataFrame:
    """(shipment_id, as_of, milestone="tick", weight) rows of clock ticks, sorted by shipment
    and time. `booked_at` and `delivered_at` are UTC times aligned with `shipment_ids`; a
    missing delivery gives no ticks."""
    ids = pd.Series(shipment_ids).astype(str).reset_index(drop=True)
    booked = pd.to_datetime(pd.Series(booked_at), utc=True).reset_index(drop=True)
    delivered = pd.to_datetime(pd.Series(delivered_at), utc=True).reset_index(drop=True)
    known = booked.notna() & delivered.notna()
    period = _period_ns(rule)
    offset = tick_offsets_ns(ids, rule)
    b = booked.dt.as_unit("ns").to_numpy("datetime64[ns]").astype(np.int64)
    d = delivered.dt.as_unit("ns").to_numpy("datetime64[ns]").astype(np.int64)
    # grid instants k * period + offset: the first strictly after booking, the last strictly
    # before delivery
    first = np.floor_divide(b - offset, period) + 1
    last = -np.floor_divide(-(d - offset), period) - 1
    count = np.where(known.to_numpy(), np.maximum(last - first + 1, 0), 0)
    kept = np.minimum(count, rule.cap)
    rows = np.repeat(np.arange(len(ids)), kept)
    j = np.arange(len(rows)) - np.repeat(np.cumsum(kept) - kept, kept)
    # evenly spread when capped: the middle tick of each of `kept` equal parts
    step = np.where(count[rows] > kept[rows],
                    ((2 * j + 1) * count[rows]) // (2 * np.maximum(kept[rows], 1)), j)
    as_of = (first[rows] + step) * period + offset[rows]
    weight = np.minimum(1.0, rule.tick_weight / np.maximum(kept[rows], 1))
    return pd.DataFrame({
        "shipment_id": ids.to_numpy(object)[rows],
        "as_of": pd.to_datetime(as_of, utc=True),
        "milestone": np.full(len(rows), TICK, dtype=object),
        "weight": weight.astype(float)})


def snapshot_times(shipments: pd.DataFrame, events: pd.DataFrame,
                   outcomes: pd.DataFrame | None = None,
                   ticks: TickRule = DEFAULT_TICKS) -> pd.DataFrame:
    """(shipment_id, as_of, milestone, weight) rows: booking, the first ingestion of each
    milestone, and clock ticks between them (`ticks`; `NO_TICKS` for none), sorted by shipment,
    time and label, so the same lake always gives the same rows in the same order.

    `shipments` needs shipment_id, booked_at; `events` shipment_id, event_type, leg_index,
    ingested_at; `outcomes` (optional) shipment_id, delivered_at to drop snapshots at or after
    delivery (and to bound the ticks: without it there are none).
    """
    con = duckdb.connect()
    con.register("s", shipments[["shipment_id", "booked_at"]])
    con.register("e", events[["shipment_id", "event_type", "leg_index", "ingested_at"]])
    delivered = outcomes[["shipment_id", "delivered_at"]] if outcomes is not None else \
        pd.DataFrame({"shipment_id": pd.Series([], dtype="string"),
                      "delivered_at": pd.Series([], dtype="datetime64[ns, UTC]")})
    con.register("o", delivered)
    events_out = con.sql(f"""
        with m as (
            select shipment_id, min(ingested_at) as as_of,
                   event_type || ':' || coalesce(cast(leg_index as varchar), '') as milestone
            from e where event_type <> 'delivered'
            group by shipment_id, event_type, leg_index
        ), b as (select shipment_id, booked_at as as_of, '{BOOKED}' as milestone from s)
        select x.shipment_id, x.as_of, x.milestone
        from (select * from m union all select * from b) x
        join s using (shipment_id)
        left join o using (shipment_id)
        where x.as_of >= s.booked_at and (o.delivered_at is null or x.as_of < o.delivered_at)
    """).df()
    spans = con.sql("""
        select s.shipment_id, s.booked_at, o.delivered_at
        from s left join o using (shipment_id) order by s.shipment_id
    """).df()
    con.close()
    events_out["as_of"] = pd.to_datetime(events_out["as_of"], utc=True)
    events_out["weight"] = 1.0
    parts = [events_out.astype({"shipment_id": object, "milestone": object})]
    if ticks.cap > 0 and len(spans):
        parts.append(tick_times(spans["shipment_id"], spans["booked_at"], spans["delivered_at"],
                                ticks))
    out = pd.concat(parts, ignore_index=True)
    out["as_of"] = pd.to_datetime(out["as_of"], utc=True).dt.as_unit("ns")
    out = out.sort_values(["shipment_id", "as_of", "milestone"], kind="stable",
                          ignore_index=True)
    return out[SNAPSHOT_COLUMNS]


def snapshot_kind(milestone) -> np.ndarray:
    """"tick" for clock-tick snapshots, "milestone" for booking and milestone ones."""
    labels = pd.Series(milestone).astype("string").fillna("").to_numpy(object)
    return np.where(labels == TICK, TICK, "milestone").astype(object)
