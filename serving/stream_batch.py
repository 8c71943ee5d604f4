"""One micro-batch of valid tracking events -> new shipment states, risk updates and alerts.

Pure apart from reads of the online store: nothing is written here (the loop in
`serving.stream` publishes, commits and appends, in that order). Per batch, all vectorized:
1. read each shipment's profile (its plan), progress and stream state in one call per view;
2. dead-letter events of unknown shipments, at hubs the lake does not know, of a leg the
   shipment's plan does not know (a leg event without a leg_index gets the one leg its hub
   tells, `shipdelay.itinerary`), and events that arrive after the shipment's delivery (its
   delivered scan came earlier in the partition, in this batch or before);
3. drop event ids already folded in (a redelivery after a crash, a re-sent scan);
4. fold the rest with `advance_progress`, the function the backfill uses;
5. build the model's vectors from the new state (statistics and weather as of each
   shipment's latest ingestion moment, `features.stats_at`) and score them with the shared
   scorer at that moment, so that a reprocessed batch scores the same;
6. alert when P(late) crosses the threshold or rises by more than the jump since the
   shipment's previously published score.
`explain_risk` then computes the reasons of the shipments whose new risk is in the high band
(those /predict explains) and of the alerts, once, for the alerts and for the online store
(`serving.reasons_store`, written with the batch's state).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.online_direct import model_vectors
from features.schema import TIMESTAMP
from features.transforms import advance_progress, latest
from serving.scorer import Scorer
from serving.stream_store import StreamStore
from shipdelay.itinerary import event_legs, legs_of_plans

EVENT_COLUMNS = ["event_id", "shipment_id", "event_type", "leg_index", "event_time",
                 "ingested_at", "hub_id", "note"]
UNKNOWN, DELIVERED = "unknown shipment", "event after the shipment's delivery"
UNKNOWN_HUB = "unknown hub"
# Every parcel of a shipment is scanned "delivered"; re-scans follow within minutes. A scan that
# happened more than this after the shipment's first delivered scan cannot be real.
DELIVERY_GRACE = pd.Timedelta(hours=6)


@dataclass
class AlertRule:
    threshold: float = 0.6
    jump: float = 0.2


@dataclass
class BatchResult:
    states: pd.DataFrame  # every new progress row (offline)
    latest: pd.DataFrame  # the newest row per shipment (online)
    state: pd.DataFrame  # stream state per touched shipment
    risk: pd.DataFrame  # one risk update per shipment
    alerts: pd.DataFrame
    dead: pd.DataFrame  # partition, offset, reason (events refused for the shipment's state)
    counts: dict = field(default_factory=dict)
    alert_vectors: pd.DataFrame | None = None  # the alerting shipments' features, for reasons
    vectors: pd.DataFrame | None = None  # the scored (moving) shipments' features, in the
    # order of their rows in `risk`, for the prediction log
    reasons: list | None = None  # reasons to keep online (`explain_risk`)


def _key(sid: pd.Series, eid: pd.Series) -> pd.MultiIndex:
    """(shipment, event id) pairs: compared as pairs, no id's characters can make two equal."""
    return pd.MultiIndex.from_arrays([sid.astype(str).to_numpy(), eid.astype(str).to_numpy()])


def _delivered_before(events: pd.DataFrame, prior_s: pd.Series) -> np.ndarray:
    """Per event (sorted by partition and offset): the time of its shipment's first delivered
    scan among the prior state and the events before it in the partition (NaN: none)."""
    t = pd.DatetimeIndex(events["event_time"]).asi8 / 1e9
    own = np.where(events["event_type"].eq("delivered").to_numpy(bool), t, np.inf)
    sid = events["shipment_id"].astype(str)
    earlier = pd.Series(own).groupby(sid.to_numpy(), sort=False).cummin()
    earlier = earlier.groupby(sid.to_numpy(), sort=False).shift(1, fill_value=np.inf).to_numpy()
    before = np.minimum(earlier, sid.map(prior_s).fillna(np.inf).to_numpy(float))
    return np.where(np.isinf(before), np.nan, before)


def process(store: StreamStore, scorer: Scorer, events: pd.DataFrame,
            rule: AlertRule | None = None) -> BatchResult:
    rule = rule or AlertRule()
    if events.empty:
        empty = pd.DataFrame()
        return BatchResult(empty, empty, empty, empty, empty,
                           pd.DataFrame(columns=["partition", "offset", "reason"]),
                           {"events": 0, "applied": 0, "duplicates": 0, "shipments": 0})
    events = events.sort_values(["partition", "offset"], kind="stable").reset_index(drop=True)
    ids = events["shipment_id"].astype(str).unique().tolist()
    profile = store.profiles(ids)
    progress = store.online.read("shipment_progress", ids).set_index("shipment_id")
    state = store.read_state(ids).set_index("shipment_id")

    sid = events["shipment_id"].astype(str)
    unknown = ~sid.map(profile["found"]).fillna(False).to_numpy(bool)
    no_hub = ~store.known_hubs(events["hub_id"].astype(str))
    dead = pd.Series(np.where(unknown & no_hub, f"{UNKNOWN}; {UNKNOWN_HUB}",
                              np.where(unknown, UNKNOWN, np.where(no_hub, UNKNOWN_HUB, ""))),
                     index=events.index, dtype=object)
    # a leg the plan does not know: a leg event without one gets the leg its hub tells, any
    # other is refused with the reason (shipdelay.itinerary, as ingest does)
    planned = (dead == "").to_numpy()
    if planned.any():
        legs = legs_of_plans(profile.loc[sid[planned].unique()].reset_index())
        leg, why = event_legs(events[planned], legs)
        events["leg_index"] = events["leg_index"].astype("Int64")
        events.loc[planned, "leg_index"] = leg
        dead[planned] = why.to_numpy()

    # already folded in (earlier batch, or the same id earlier in this batch): skip silently
    applied = state["applied"].explode().dropna()
    seen = _key(pd.Series(applied.index), applied)
    key = _key(sid, events["event_id"])
    duplicate = (key.isin(seen) | key.duplicated()) & (dead == "").to_numpy()

    # after delivery: happened well after the shipment's first delivered scan (prior or earlier)
    delivered = progress["delivered"].eq(1).fillna(False).to_numpy(bool)
    prior_s = progress["furthest_time_s"].where(delivered).astype(float)
    t = pd.DatetimeIndex(events["event_time"]).asi8 / 1e9
    late = t > _delivered_before(events, prior_s) + DELIVERY_GRACE.total_seconds()
    dead[(dead == "").to_numpy() & ~duplicate & late] = DELIVERED

    keep = (dead == "").to_numpy() & ~duplicate
    fresh = events[keep]
    touched = fresh["shipment_id"].astype(str).unique().tolist()
    counts = {"events": len(events), "applied": len(fresh), "duplicates": int(duplicate.sum()),
              "shipments": len(touched)}
    dead_rows = events.loc[dead != "", ["partition", "offset"]].assign(reason=dead[dead != ""])
    if fresh.empty:
        empty = pd.DataFrame()
        return BatchResult(empty, empty, empty, empty, empty, dead_rows, counts)

    plans = profile.loc[touched].reset_index()
    prior = progress.loc[touched]
    prior = prior[prior["found"]].drop(columns="found").reset_index()
    prior[TIMESTAMP] = pd.Timestamp(0, tz="UTC")  # the fold reads values only
    states = advance_progress(prior if len(prior) else None, fresh[EVENT_COLUMNS], plans)
    now = latest(states).set_index("shipment_id").loc[touched].reset_index()

    # the new stream state: ids folded in so far, the score published last
    new_ids = fresh.groupby(fresh["shipment_id"].astype(str), sort=False)["event_id"].agg(
        list).loc[touched]
    old = state.loc[touched]
    joined = [was + new for was, new in zip(old["applied"], new_ids)]  # per shipment

    scored, alerts, alerting, vectors = _score(store, scorer, plans, now,
                                               old["p_late"].to_numpy(), rule)
    first_ms = fresh.groupby(fresh["shipment_id"].astype(str), sort=False)["produced_ms"].min()
    risk = scored.assign(events_applied=fresh["shipment_id"].astype(str).value_counts()
                         .loc[touched].to_numpy(),
                         first_produced_ms=first_ms.loc[touched].to_numpy())
    p_new = np.where(now["delivered"].to_numpy() == 1, old["p_late"].to_numpy(),
                     risk["p_late"].to_numpy(dtype=float))
    new_state = pd.DataFrame({"shipment_id": touched, "applied": pd.Series(joined, dtype=object),
                              "p_late": p_new})
    counts["alerts"] = len(alerts)
    return BatchResult(states, now, new_state, risk, alerts, dead_rows, counts, alerting,
                       vectors)


# what the scorer adds to each moving shipment's risk update
SCORED = ["p_late", "risk_band", "delay_p50_h", "delay_p90_h", "eta", "eta_p10", "eta_p90"]


def pick_alerts(p: np.ndarray, previous: np.ndarray, moving: np.ndarray,
                rule: AlertRule) -> tuple[np.ndarray, np.ndarray]:
    """Which shipments alert, and why: P(late) now at or above the threshold when the score
    published before was below it (or there was none), or risen by more than the jump since
    it. Delivered shipments never alert. Returns (mask, kind of each alert)."""
    crossed = moving & (p >= rule.threshold) & ~(previous >= rule.threshold)
    jumped = moving & (p - np.nan_to_num(previous, nan=np.inf) > rule.jump)
    hit = crossed | jumped
    kind = np.where(crossed[hit] & jumped[hit], "crossed threshold and jumped",
                    np.where(crossed[hit], "crossed threshold", "jumped"))
    return hit, kind


def explain_alerts(scorer: Scorer, result: BatchResult) -> pd.DataFrame:
    """The batch's alerts with their top three reasons (TreeSHAP, the costliest step per
    shipment: the stream runs it after the risk updates are out)."""
    alerts = result.alerts
    if alerts.empty or "reasons" in alerts:
        return alerts
    return alerts.assign(reasons=pd.Series(scorer.reasons_for(result.alert_vectors),
                                           index=alerts.index, dtype=object))


def explain_risk(scorer: Scorer, result: BatchResult) -> pd.DataFrame:
    """Reasons, computed once (TreeSHAP, the costliest step per shipment: the stream runs it
    after the risk updates are out), for the moving shipments whose risk changed (P(late) not
    the one published before) into the high band (P(late) >= the scorer's high threshold:
    those /predict explains) and for the alerts. Sets `result.reasons` (the records the
    online commit keeps) and returns the alerts with their reasons."""
    alerts = result.alerts
    if result.vectors is None or result.risk.empty:
        result.reasons = []
        return explain_alerts(scorer, result)
    moving = result.risk[~result.risk["delivered"].to_numpy(bool)]
    p = moving["p_late"].to_numpy(dtype=float)
    changed = p != moving["previous_p_late"].to_numpy(dtype=float)
    alerting = moving["shipment_id"].isin(alerts["shipment_id"]).to_numpy(bool)
    rows = np.flatnonzero(((p >= scorer.thresholds.high) & changed) | alerting)
    result.reasons = scorer.explain(result.vectors, rows)
    if alerts.empty:
        return alerts
    words = {r.shipment_id: list(r.words) for r in result.reasons}
    return alerts.assign(reasons=pd.Series([words[str(i)] for i in alerts["shipment_id"]],
                                           index=alerts.index, dtype=object))


def _score(store, scorer, plans, now, previous, rule
           ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None, pd.DataFrame | None]:
    """Risk updates for the shipments of `now` (delivered ones are reported, not scored), the
    alerts among them (without reasons), the alerting shipments' feature vectors and all the
    scored (moving) shipments' vectors."""
    as_of = now[TIMESTAMP]
    n = len(now)
    moving = now["delivered"].to_numpy() != 1
    columns = {c: np.full(n, np.nan) for c in ("p_late", "delay_p50_h", "delay_p90_h")}
    columns |= {"risk_band": np.full(n, None, dtype=object)}
    columns |= {c: pd.array(np.full(n, np.datetime64("NaT", "ns")), dtype="datetime64[ns]")
                .tz_localize("UTC") for c in ("eta", "eta_p10", "eta_p90")}
    vectors = None
    if moving.any():
        vectors = model_vectors(store.online, plans[moving].reset_index(drop=True),
                                now[moving].reset_index(drop=True),
                                pd.DatetimeIndex(as_of[moving]).asi8 / 1e9, stats=store.stats)
        out = scorer.score(vectors, reasons=False)
        for c in SCORED:
            columns[c][moving] = out[c].array
    base = pd.DataFrame({
        "shipment_id": now["shipment_id"].to_numpy(),
        "as_of": as_of.to_numpy(),
        "delivered": ~moving,
        "last_event_type": now["last_event_type"].to_numpy(),
        "current_hub": now["current_hub"].to_numpy(),
        "slip_h": now["slip_h"].to_numpy(),
        "previous_p_late": previous,
        **{c: columns[c] for c in SCORED},
        "model_version": scorer.version,
    })
    hit, kind = pick_alerts(base["p_late"].to_numpy(dtype=float), previous, moving, rule)
    alerts = base[hit].copy()
    alerts["kind"] = kind
    alerts["alert_id"] = alerts["shipment_id"] + "@" + pd.DatetimeIndex(
        alerts["as_of"]).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # hit implies moving: the alerting rows of the moving shipments' vectors
    alerting = vectors[hit[moving]].reset_index(drop=True) if hit.any() else None
    return base, alerts, alerting, vectors
