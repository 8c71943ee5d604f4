"""Pure feature transforms over tracking events: milestone bits and ordinals, and the one
shipment-progress state function `advance_progress(prior, events, plans)` (its recent notes are
folded by `features.notes`).

The historical backfill calls `advance_progress(None, all_events, plans)`; the stream scorer calls
it with `prior = latest(state last written)` and one micro-batch. Every aggregate is a commutative,
idempotent fold (bit OR, max, min), so the result does not depend on event order or on how the
events are split into batches, and a re-scanned milestone never counts twice. Only `event_count`
is a plain count: across batches it relies on the caller dropping event ids already folded in.

Everything is vectorized: rows are sorted once by (shipment, ingestion moment, event id) and the
state after each moment comes from grouped cumulative aggregates, with the prior state broadcast
in as the starting value of each shipment's sequence.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.notes import RECENT_NOTES, fold_recent_notes, note_entries
from features.plan_graph import PlanGraph
from features.schema import SHIPMENT_PROGRESS, TIMESTAMP
from shipdelay.contract import EVENT_TYPES, STR, UTC

# Milestone bits: picked_up 0, departed 1+i, arrived 9+i, customs_hold 17+i, customs_released
# 25+i, exception 33+i, out_for_delivery 41, delivered 42, received 43, checked_in 44+i,
# handed_over 52+i, collected 60 (legs clamped to 0..7). A leg event without a leg (one the
# plan did not know: see shipdelay.itinerary) sets no bit and is no milestone.
MAX_BIT_LEGS = 8
BIT_BASE = np.array([0, 1, 9, 17, 25, 33, 41, 42, 43, 44, 52, 60], dtype=np.int64)  # EVENT_TYPES
BIT_PER_LEG = np.array([0, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 0], dtype=np.int64)
_LEG_BYTE = 0xFF
HOLD_SHIFT, RELEASE_SHIFT, EXCEPTION_SHIFT = 17, 25, 33
DELIVERED_BIT = 42
_TYPE_INDEX = pd.Index(EVENT_TYPES)
_DEPARTED, _ARRIVED = EVENT_TYPES.index("departed"), EVENT_TYPES.index("arrived")
_PICKED_UP, _OFD = EVENT_TYPES.index("picked_up"), EVENT_TYPES.index("out_for_delivery")
_DELIVERED = EVENT_TYPES.index("delivered")

_DTYPES = {"int": "int64", "float": "float64", "str": STR}
OUTPUT_COLUMNS = ["shipment_id", TIMESTAMP, *SHIPMENT_PROGRESS]


# ---------------------------------------------------------------------- milestone encoding

def _type_index(event_type) -> np.ndarray:
    """Index into EVENT_TYPES (-1 for anything else), via the distinct values only."""
    if not isinstance(event_type, pd.Series):
        event_type = pd.Series(np.atleast_1d(np.asarray(event_type, dtype=object)))
    codes, uniques = pd.factorize(event_type)
    lookup = np.append(_TYPE_INDEX.get_indexer(pd.Index(uniques, dtype=object)), -1)
    return lookup[codes].astype(np.int64)


def _legs(leg_index) -> np.ndarray:
    """Legs clamped to 0..7; -1 where there is none (never leg 0 by default)."""
    legs = pd.to_numeric(pd.Series(leg_index), errors="coerce").fillna(-1).to_numpy(np.float64)
    return np.where(legs < 0, -1, np.minimum(legs, MAX_BIT_LEGS - 1)).astype(np.int64)


def _bit_from(tix: np.ndarray, leg: np.ndarray) -> np.ndarray:
    safe = np.where(tix >= 0, tix, 0)
    ok = (tix >= 0) & ((BIT_PER_LEG[safe] == 0) | (leg >= 0))
    return np.where(ok, BIT_BASE[safe] + BIT_PER_LEG[safe] * leg, -1)


def _ord_from(tix: np.ndarray, leg: np.ndarray, n: np.ndarray) -> np.ndarray:
    in_plan = (leg >= 0) & (leg < n)
    return np.select(
        [tix == _PICKED_UP, (tix == _DEPARTED) & in_plan, (tix == _ARRIVED) & in_plan,
         tix == _OFD, tix == _DELIVERED],
        [0, 1 + 2 * leg, 2 + 2 * leg, 2 * n + 1, 2 * n + 2], -1).astype(np.int64)


def milestone_bit(event_type, leg_index) -> np.ndarray:
    """Bit index of each milestone in milestone_mask (-1 for an unknown event type)."""
    return _bit_from(_type_index(event_type), _legs(leg_index))


def milestone_ord(event_type, leg_index, n_legs) -> np.ndarray:
    """Core ordinal per features.schema (-1 for customs, exceptions, and legs outside the plan)."""
    n = np.broadcast_to(np.asarray(n_legs, dtype=np.int64), np.shape(_legs(leg_index)))
    return _ord_from(_type_index(event_type), _legs(leg_index), n)


def _core_bits_upto(n: np.ndarray, upto: np.ndarray) -> np.ndarray:
    """Bit mask of the core milestones of an n-leg plan whose ord is <= upto (-1: none)."""
    nb = np.minimum(n, MAX_BIT_LEGS)
    deps = np.clip(np.minimum(nb, (upto - 1) // 2 + 1), 0, None)
    arrs = np.clip(np.minimum(nb, (upto - 2) // 2 + 1), 0, None)
    one = np.int64(1)
    return ((upto >= 0).astype(np.int64)
            | (((one << deps) - 1) << 1)
            | (((one << arrs) - 1) << 9)
            | ((upto >= 2 * n + 1).astype(np.int64) << 41)
            | ((upto >= 2 * n + 2).astype(np.int64) << DELIVERED_BIT))


def _popcount(x: np.ndarray) -> np.ndarray:
    return np.bitwise_count(x).astype(np.int64)


# ------------------------------------------------------------------------------- helpers

def _ns(times: pd.Series) -> np.ndarray:
    """UTC epoch nanoseconds of a datetime column."""
    return pd.DatetimeIndex(pd.to_datetime(times, utc=True, cache=False)).as_unit("ns").asi8


def _flatten(col: pd.Series) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """A list column as (flat values, start of each row, length of each row)."""
    arr = pa.array(col.array if isinstance(col.dtype, pd.ArrowDtype) else col, from_pandas=True)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    lengths = pc.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False)
    lengths = lengths.astype(np.int64)
    return pc.list_flatten(arr), np.cumsum(lengths) - lengths, lengths


def _take(flat: pa.Array, starts: np.ndarray, lengths: np.ndarray, row: np.ndarray,
          pos: np.ndarray) -> pa.Array:
    """flat[row's list][pos], null where pos falls outside the list."""
    ok = (pos >= 0) & (pos < lengths[row])
    idx = pa.array(np.where(ok, starts[row] + pos, 0), mask=~ok)
    return flat.take(idx)


def _empty() -> pd.DataFrame:
    cols = {"shipment_id": pd.Series([], dtype=STR), TIMESTAMP: pd.Series([], dtype=UTC)}
    cols |= {c: pd.Series([], dtype=_DTYPES[t]) for c, t in SHIPMENT_PROGRESS.items()}
    return pd.DataFrame(cols)


def latest(states: pd.DataFrame) -> pd.DataFrame:
    """The last state row per shipment (by event_timestamp): what the online store holds."""
    if states is None or states.empty:
        return states
    order = np.lexsort((_ns(states[TIMESTAMP]),
                        pd.factorize(states["shipment_id"], sort=True)[0]))
    ordered = states.iloc[order]
    return ordered[~ordered["shipment_id"].duplicated(keep="last")].reset_index(drop=True)


def _prior_seeds(prior: pd.DataFrame | None, ids: pd.Index) -> dict[str, np.ndarray]:
    """Per shipment of `ids`: the folded values of the prior state (neutral when absent)."""
    k = len(ids)
    seeds = {"mask": np.zeros(k, np.int64), "ford": np.full(k, -1, np.int64),
             "ftime": np.full(k, np.nan), "dep0": np.full(k, np.inf),
             "last_s": np.full(k, -np.inf), "code": np.full(k, -1, np.int64),
             "count": np.zeros(k, np.int64), "notes": np.full(k, "", dtype=object),
             "last_ms": np.full(k, np.nan)}
    if prior is None or prior.empty:
        return seeds
    p = latest(prior)
    at = pd.Index(p["shipment_id"]).get_indexer(ids)
    has = at >= 0
    src = p.iloc[at[has]]

    def put(key, col, fill):
        seeds[key][has] = src[col].fillna(fill).to_numpy()

    put("mask", "milestone_mask", 0)
    put("ford", "furthest_ord", -1)
    put("ftime", "furthest_time_s", np.nan)
    put("dep0", "first_departure_s", np.inf)
    put("last_s", "last_event_s", -np.inf)
    put("code", "last_event_code", -1)
    put("count", "event_count", 0)
    put("notes", RECENT_NOTES, "")
    if "last_milestone_s" in src:  # a state written before the column existed has none
        put("last_ms", "last_milestone_s", np.nan)
    return seeds


# --------------------------------------------------------------------------- the state

def advance_progress(prior: pd.DataFrame | None, events: pd.DataFrame,
                     plans: pd.DataFrame) -> pd.DataFrame:
    """Fold `events` into `prior`: one state row per (shipment, distinct ingested_at in events).

    prior: None, or rows with shipment_id, event_timestamp and the SHIPMENT_PROGRESS columns (the
    last row per shipment is used). events: tracking events in any order, possibly with exact
    duplicates and re-scans. Duplicated event ids inside the batch count once, at their earliest
    ingestion. Across batches the caller drops event ids already folded in: every aggregate but
    `event_count` is idempotent anyway, `event_count` (a diagnostic) would count a replay again.
    plans: shipment_id, n_legs, plan_times_s, plan_hubs, plan_modes and (optional: a chain of
    legs, no planned handling steps) plan_feeds, plan_steps for every shipment of `events`
    (raises ValueError naming the missing ones). What remains of the plan (next_planned_s,
    planned_h_ahead, legs_ahead, missing_milestones) follows the plan's graph
    (`features.plan_graph`): every kind of milestone, per leg, along the critical path.
    Rows come out in ingestion order; event_timestamp is the ingestion moment.
    """
    if events.empty:
        return _empty()

    # order once: shipment, ingestion moment, event id; duplicated event ids count once
    sid_code, ids = pd.factorize(events["shipment_id"], sort=True)
    ing = _ns(events["ingested_at"])
    eid_code = pd.factorize(events["event_id"], sort=True)[0]
    order = np.lexsort((eid_code, ing, sid_code))
    first = ~pd.Series(eid_code[order]).duplicated().to_numpy()
    order = order[first]
    ev = events.iloc[order]
    g, ing = sid_code[order], ing[order]
    ids = pd.Index(ids, dtype=object)

    # the plan of each shipment in the batch
    plans = plans.drop_duplicates("shipment_id", keep="last")
    prow = pd.Index(plans["shipment_id"].astype(object)).get_indexer(ids)
    if (prow < 0).any():
        missing = list(ids[prow < 0][:5])
        raise ValueError(f"no plan for {int((prow < 0).sum())} shipment(s), e.g. {missing}")
    plan = plans.iloc[prow]
    n_legs = plan["n_legs"].to_numpy(np.int64)
    graph = PlanGraph.of(plan)

    # per event
    tix = _type_index(ev["event_type"])
    if (tix < 0).any():
        bad = ev["event_type"][tix < 0].unique()[:5]
        raise ValueError(f"unknown event_type values: {list(bad)}")
    leg = _legs(ev["leg_index"])
    bit = _bit_from(tix, leg)
    ords = _ord_from(tix, leg, n_legs[g])
    t_ns = _ns(ev["event_time"])
    t_s = t_ns / 1e9
    entries = (note_entries(ev["note"], t_ns) if "note" in ev
               else np.full(len(ev), None, dtype=object))

    seeds = _prior_seeds(prior, ids)
    # the seen milestone planned latest (any kind) and its first scan: max planned time, then
    # min scan time, as one int key over ranked values (exact, like the furthest milestone)
    planned = graph.planned_at(g, bit)
    seed_planned = graph.latest_seen(np.arange(len(ids)), seeds["mask"])
    seed_on = ~np.isnan(seed_planned) & ~np.isnan(seeds["last_ms"])
    on = ~np.isnan(planned)
    plan_values = np.unique(np.concatenate([planned[on], seed_planned[seed_on]]))
    scan_values = np.unique(np.concatenate([t_s[on], seeds["last_ms"][seed_on]]))
    m2 = np.int64(len(scan_values) + 1)

    def latest_key(p: np.ndarray, t: np.ndarray, ok: np.ndarray) -> np.ndarray:
        return np.where(ok, np.searchsorted(plan_values, p) * m2
                        + (m2 - 1 - np.searchsorted(scan_values, t)), -1)

    lkey = latest_key(planned, t_s, on)
    seed_lkey = latest_key(seed_planned, seeds["last_ms"], seed_on)

    # furthest milestone: max of ord, then min time, as one int key over ranked times (exact)
    seeded = seeds["ford"] >= 0
    times = np.unique(np.concatenate([t_s[ords >= 0], seeds["ftime"][seeded]]))
    m = np.int64(len(times) + 1)
    key = np.where(ords >= 0, ords * m + (m - 1 - np.searchsorted(times, t_s)), -1)
    seed_key = np.where(seeded, seeds["ford"] * m
                        + (m - 1 - np.searchsorted(times, seeds["ftime"])), -1)

    # milestone bits: each (shipment, bit) adds its value once, unless the prior had it
    pair_first = ~pd.Series(g * 64 + bit).duplicated().to_numpy() & (bit >= 0)
    new_bit = pair_first & (((seeds["mask"][g] >> np.maximum(bit, 0)) & 1) == 0)
    add = np.where(new_bit, np.int64(1) << np.maximum(bit, 0), 0)

    frame = pd.DataFrame({
        "key": key, "last_s": t_s, "code": (t_ns // 10**9) * 16 + tix,
        "dep0": np.where((tix == _DEPARTED) & (leg == 0), t_s, np.inf),
        "add": add, "one": np.ones(len(g), np.int64), "lkey": lkey,
    })
    grouped = frame.groupby(g, sort=False)
    cmax = grouped[["key", "last_s", "code", "lkey"]].cummax()
    csum = grouped[["add", "one"]].cumsum()
    cmin = grouped[["dep0"]].cummin()

    # keep the last row of every (shipment, ingestion moment)
    keep = np.r_[(g[1:] != g[:-1]) | (ing[1:] != ing[:-1]), True]
    gk = g[keep]
    n = n_legs[gk]
    mask = seeds["mask"][gk] | csum["add"].to_numpy()[keep]
    fkey = np.maximum(cmax["key"].to_numpy()[keep], seed_key[gk])
    ford = np.where(fkey >= 0, fkey // m, -1)
    rank = np.where(fkey >= 0, m - 1 - fkey % m, len(times))
    ftime = np.append(times, np.nan)[rank]  # the appended NaN answers "no milestone yet"
    dep0 = np.minimum(cmin["dep0"].to_numpy()[keep], seeds["dep0"][gk])
    dep0 = np.where(np.isinf(dep0), np.nan, dep0)
    last_s = np.maximum(cmax["last_s"].to_numpy()[keep], seeds["last_s"][gk])
    last_s = np.where(np.isinf(last_s), np.nan, last_s)
    code = np.maximum(cmax["code"].to_numpy()[keep], seeds["code"][gk])
    lk = np.maximum(cmax["lkey"].to_numpy()[keep], seed_lkey[gk])
    last_planned = np.append(plan_values, np.nan)[np.where(lk >= 0, lk // m2, len(plan_values))]
    last_ms = np.append(scan_values, np.nan)[np.where(lk >= 0, m2 - 1 - lk % m2,
                                                      len(scan_values))]
    types = np.array([*EVENT_TYPES, "none"], dtype=object)
    last_type = types[np.where(code >= 0, code % 16, len(EVENT_TYPES))]

    # from the plan at the furthest milestone
    pos = np.arange(len(ids))[gk]
    t_flat, t_start, t_len = _flatten(plan["plan_times_s"])
    h_flat, h_start, h_len = _flatten(plan["plan_hubs"])
    m_flat, m_start, m_len = _flatten(plan["plan_modes"])
    at = np.maximum(ford, 0)
    plan_t = _take(t_flat, t_start, t_len, pos, at).to_numpy(zero_copy_only=False)
    plan_t = np.asarray(plan_t, dtype=np.float64)
    plan_dep = np.asarray(_take(t_flat, t_start, t_len, pos, np.ones_like(at))
                          .to_numpy(zero_copy_only=False), dtype=np.float64)
    slip = np.where(ford >= 0, (ftime - plan_t) / 3600.0, 0.0)
    trend = np.where(np.isnan(dep0), 0.0, slip - (dep0 - plan_dep) / 3600.0)
    current_leg = np.where(ford <= 0, 0, np.where(ford <= 2 * n, (ford - 1) // 2, n - 1))
    # the route still ahead: what the shipment is still exposed to after its furthest milestone
    plan_end = np.asarray(_take(t_flat, t_start, t_len, pos, 2 * n + 2)
                          .to_numpy(zero_copy_only=False), dtype=np.float64)
    next_mode = _take(m_flat, m_start, m_len, pos, np.minimum(ford + 1, 2 * n + 2))
    # what remains: the earliest planned milestone not done; the critical path's position
    ahead = graph.remaining(pos, mask)
    position = np.where(np.isnan(ahead["position_s"]), plan_end, ahead["position_s"])

    hold = (mask >> HOLD_SHIFT) & _LEG_BYTE
    release = (mask >> RELEASE_SHIFT) & _LEG_BYTE

    out = pd.DataFrame({
        "shipment_id": pd.array(np.asarray(ids)[gk], dtype=STR),
        TIMESTAMP: pd.to_datetime(ing[keep], utc=True).astype(UTC),
        "milestone_mask": mask,
        "milestones_done": _popcount(mask),
        "milestones_planned": 2 * n + 3,
        "core_done": _popcount(mask & _core_bits_upto(n, 2 * n + 2)),
        "furthest_ord": ford,
        "furthest_time_s": ftime,
        "first_departure_s": dep0,
        "last_event_s": last_s,
        "last_event_code": code,
        "last_event_type": pd.array(last_type, dtype=STR),
        "current_leg": current_leg,
        "current_mode": pd.array(_take(m_flat, m_start, m_len, pos, at)
                                 .to_numpy(zero_copy_only=False), dtype=STR),
        "current_hub": pd.array(_take(h_flat, h_start, h_len, pos, at)
                                .to_numpy(zero_copy_only=False), dtype=STR),
        "slip_h": slip,
        "slip_trend_h": trend,
        "last_slip_h": (last_ms - last_planned) / 3600.0,
        "last_milestone_s": last_ms,
        "planned_h_ahead": (plan_end - position) / 3600.0,
        "next_planned_s": ahead["next_planned_s"],
        "legs_ahead": ahead["legs_ahead"],
        "next_mode": pd.array(next_mode.to_numpy(zero_copy_only=False), dtype=STR),
        "customs_holds": _popcount(hold),
        "customs_open": ((hold & ~release) != 0).astype(np.int64),
        "exceptions": _popcount((mask >> EXCEPTION_SHIFT) & _LEG_BYTE),
        "missing_milestones": ahead["passed_unseen"],
        RECENT_NOTES: fold_recent_notes(g, ing, entries, seeds["notes"], gk, ing[keep]),
        "delivered": (mask >> DELIVERED_BIT) & 1,
        "event_count": seeds["count"][gk] + csum["one"].to_numpy()[keep],
    })
    out = out.iloc[np.lexsort((gk, ing[keep]))].reset_index(drop=True)
    return out.astype({c: _DTYPES[t] for c, t in SHIPMENT_PROGRESS.items()})[OUTPUT_COLUMNS]
