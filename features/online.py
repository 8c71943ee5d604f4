"""Online reads and the streaming update, through Feast's online store.

`online_vectors` answers "what are this shipment's features now?" in two steps: the shipment's
own views give its lane, carrier, customer and current hub (`FIRST_READ`, `join_key_values`),
then the FeatureService is read with all five keys. It is the reference for the direct reader
in `features.online_fast`, which returns the same frame without `get_online_features`.
`apply_events` is the streaming updater's core: prior state and plans from the online store,
`advance_progress`, the new state back online and appended offline.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from feast import FeatureStore
from feast.data_source import PushMode

from features import instant
from features import offline as off
from features.repo.views import PUSH_SOURCE
from features.request_time import REQUEST_INPUTS, REQUEST_TIME, request_features
from features.schema import (
    ENTITY_KEYS,
    FEATURE_SERVICE,
    ON_DEMAND,
    SHIPMENT_PROGRESS,
    TIMESTAMP,
    VIEWS,
    model_feature_names,
)
from features.transforms import advance_progress, latest

PLAN_FIELDS = ["n_legs", "booked_at_s", "plan_times_s", "plan_hubs", "plan_modes", "plan_feeds",
               "plan_steps"]
KEY_FIELDS = ["lane_id", "carrier_id", "customer_id", "origin_hub"]
# The first read of `online_vectors`: what gives a shipment's other entity keys and its flags.
FIRST_READ = {"shipment_profile": KEY_FIELDS,
              "shipment_progress": ["current_hub", "delivered"]}
# Read with the keys and passed through to the answers as they are (None when not known): the
# shipment's lane and the hub it is at now, no extra read.
PASS_THROUGH = ["lane_id", "current_hub"]
# Join key -> the shipment field that holds it (the hub: the current one, else the origin).
KEY_SOURCES = {"lane_id": "lane_id", "carrier_id": "carrier_id", "customer_id": "customer_id",
               "hub_id": "current_hub"}


class FeatureServiceMismatch(RuntimeError):
    """The FeatureService lacks features a model needs: serving must not guess them."""


def require_features(store: FeatureStore, needed: list[str],
                     service_name: str = FEATURE_SERVICE) -> None:
    """Fail loudly when `service_name` does not provide every feature in `needed`."""
    service = store.get_feature_service(service_name)
    provided = {f.name for proj in service.feature_view_projections for f in proj.features}
    missing = [f for f in needed if f not in provided]
    if missing:
        raise FeatureServiceMismatch(
            f"FeatureService '{service_name}' lacks {len(missing)} feature(s) the model needs: "
            + ", ".join(missing))


def _read(store: FeatureStore, refs: list[str], ids: list[str]) -> pd.DataFrame:
    rows = [{"shipment_id": s} for s in ids]
    return store.get_online_features(features=refs, entity_rows=rows).to_df()


def read_plans(store: FeatureStore, ids: list[str]) -> pd.DataFrame:
    """Plans of the shipments the online store knows (others are left out)."""
    frame = _read(store, [f"shipment_profile:{c}" for c in PLAN_FIELDS], ids)
    return frame[frame["n_legs"].notna()].astype({"n_legs": "int64"})


def read_progress(store: FeatureStore, ids: list[str]) -> pd.DataFrame:
    """The latest progress state of each shipment that has one."""
    frame = _read(store, [f"shipment_progress:{c}" for c in SHIPMENT_PROGRESS], ids)
    return frame[frame["milestones_done"].notna()].reset_index(drop=True)


def apply_events(store: FeatureStore, offline: Path, events: pd.DataFrame) -> pd.DataFrame:
    """Fold one micro-batch of (deduplicated) events into the online and offline stores.

    Returns every new state row (one per shipment and ingestion moment in the batch).
    """
    ids = events["shipment_id"].astype(str).unique().tolist()
    plans = read_plans(store, ids)
    prior = read_progress(store, ids)
    if not prior.empty:
        prior[TIMESTAMP] = pd.Timestamp(0, tz="UTC")  # not used by the fold, required by shape
    states = advance_progress(prior if len(prior) else None,
                              events[events["shipment_id"].isin(plans["shipment_id"])], plans)
    if len(states):
        store.push(PUSH_SOURCE, latest(states), to=PushMode.ONLINE)
        off.append_parts(offline, "shipment_progress", states)
    return states


def join_key_values(first) -> dict[str, np.ndarray]:
    """Each shipment's value of every other entity's join key (object arrays, None/NaN when
    missing), from the first read's columns (`FIRST_READ`, a frame or a dict of arrays): lane,
    carrier and customer from its profile; the hub it is at (its origin before the first
    scan)."""
    keys = {key: np.asarray(first[field], dtype=object) for key, field in KEY_SOURCES.items()}
    keys["hub_id"] = np.where(pd.notna(keys["hub_id"]), keys["hub_id"],
                              np.asarray(first["origin_hub"], dtype=object))
    return keys


def vector_columns() -> list[str]:
    """The columns of an online vector frame, in order."""
    return ["shipment_id", "known", "delivered", *PASS_THROUGH, *model_feature_names()]


def pass_through(keyed, known: np.ndarray) -> dict[str, np.ndarray]:
    """`PASS_THROUGH` of each shipment from the first read's key columns (object arrays, None
    where missing or the shipment is not known)."""
    return {c: np.where(pd.notna(v) & known, v, None).astype(object)
            for c in PASS_THROUGH for v in [np.asarray(keyed[c], dtype=object)]}


def _stamped(store: FeatureStore, features, rows: list[dict]) -> tuple[pd.DataFrame, dict]:
    """`get_online_features` as a frame, and each view's row timestamps (epoch microseconds,
    NaN where the entity has no row) from the response itself."""
    response = store.get_online_features(features=features, entity_rows=rows)
    frame = response.to_df()
    names = list(response.proto.metadata.feature_names.val)
    stamps: dict[str, np.ndarray] = {}
    for view, cols in _VIEW_OF.items():
        at = next((i for i, name in enumerate(names) if name in cols), None)
        if at is None:
            continue
        ts = response.proto.results[at].event_timestamps
        us = np.array([t.seconds * 1e6 + t.nanos // 1000 for t in ts], dtype=float)
        stamps[view] = np.where(us > 0, us, np.nan)
    return frame, stamps


# each view's columns (a join key in a response is the request's, without a timestamp)
_VIEW_OF = {view: set(cols) - set(ENTITY_KEYS.values()) for view, cols in VIEWS.items()}


def online_vectors(store: FeatureStore, ids: list[str], request_time: pd.Timestamp) -> pd.DataFrame:
    """The model's features for each shipment as the online store has them at `request_time`.

    Unknown shipments come back with `known = False` and empty features; so do features the
    store's FeatureService lacks (a model that needs one is refused before it serves). A value
    counts as the offline point-in-time join counts it (`features.instant`): rows stamped after
    `request_time` are not there yet, rows older than their view's TTL give nothing (the entity
    keys still come from them, as in the join), and the on-demand features are computed from
    what is left.
    """
    now_us = instant.micros(request_time)
    first, stamps = _stamped(store, [f"{view}:{c}" for view, cols in _FIRST.items()
                                     for c in cols], [{"shipment_id": s} for s in ids])
    there = {v: instant.present(stamps.get(v, np.full(len(ids), np.nan)), now_us) for v in _FIRST}
    fresh = {v: instant.fresh(v, stamps.get(v, np.full(len(ids), np.nan)), now_us)
             for v in _FIRST}
    keyed = {c: instant.blank(first[c].to_numpy(dtype=object), there[v])
             for v, cols in FIRST_READ.items() for c in cols}
    known = pd.notna(instant.blank(first["lane_id"].to_numpy(dtype=object),
                                   fresh["shipment_profile"]))
    # Feast cannot look a missing key up (a shipment without customer or carrier); no entity
    # has the empty key, so its features read as missing, as in the offline join
    keys = {k: np.where(pd.notna(v), v, "") for k, v in join_key_values(keyed).items()}
    rows = pd.DataFrame({"shipment_id": ids, **keys,
                         REQUEST_TIME: request_time.timestamp()})[known]
    delivered = instant.blank(first["delivered"].to_numpy(dtype=object),
                              fresh["shipment_progress"])
    out = pd.DataFrame({"shipment_id": ids, "known": known,
                        "delivered": [v == 1 for v in delivered],
                        **pass_through(keyed, known)})
    if known.any():
        vectors, got = _stamped(store, store.get_feature_service(FEATURE_SERVICE),
                                rows.to_dict("records"))
        for view, cols in _VIEW_OF.items():
            if view in got:
                keep = instant.fresh(view, got[view], now_us)
                for c in cols & set(vectors.columns):
                    vectors[c] = instant.blank(vectors[c].to_numpy(), keep)
        inputs = {c: instant.blank(first[c].to_numpy(dtype=float), fresh[v])
                  for v, cols in _ON_DEMAND_INPUTS.items() for c in cols}
        stale = ~(fresh["shipment_profile"] & fresh["shipment_progress"])[known]
        if stale.any() and set(ON_DEMAND) <= set(vectors.columns):  # Feast saw stale inputs
            again = request_features(*(inputs[c][known] for c in _ON_DEMAND_ORDER),
                                     np.full(int(known.sum()), request_time.timestamp()))
            for c in ON_DEMAND:
                vectors[c] = np.where(stale, again[c], vectors[c].to_numpy(dtype=float))
        vectors.index = np.flatnonzero(known)
        out = out.join(vectors[[c for c in model_feature_names() if c in vectors]])
    return out.reindex(columns=vector_columns())


_ON_DEMAND_ORDER = list(REQUEST_INPUTS)
_ON_DEMAND_INPUTS = {"shipment_profile": _ON_DEMAND_ORDER[:3],
                     "shipment_progress": _ON_DEMAND_ORDER[3:]}
_FIRST = {v: list(dict.fromkeys([*FIRST_READ[v], *_ON_DEMAND_INPUTS[v]])) for v in FIRST_READ}
