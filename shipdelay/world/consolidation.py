"""Consolidations: parallel inbound legs that merge into one outbound leg.

A consolidated shipment's freight starts at two or three depots of one country: besides its own
first truck leg into the hub where its main transport begins, one or two more trucks bring the
rest of it into that hub from nearby depots. The merged leg leaves that hub only once every
inbound truck has arrived (and the freight was handled), so its timing follows the critical
path. In the plan the extra inbound legs take the leg indexes right after the first leg, and
every inbound leg feeds the merged one (the contract's `legs.feeds_leg`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shipdelay.world.network import TRUCK, great_circle_km

MAX_INBOUND_EXTRA = 2  # extra inbound legs at most (three inbound trucks)
THIRD_TRUCK_SHARE = 0.3  # of consolidated shipments, the share with three inbound trucks
NEAR_DEPOTS = 4  # depots considered around a hub


def nearest_depots(hubs: pd.DataFrame, k: int = NEAR_DEPOTS) -> np.ndarray:
    """hubs x k: the k nearest depots of each hub's country, itself excluded (-1 = none)."""
    depot = np.flatnonzero(hubs["kind"].to_numpy() == "depot")
    lat, lon = hubs["latitude"].to_numpy(float), hubs["longitude"].to_numpy(float)
    country = hubs["country"].to_numpy()
    km = great_circle_km(lat[:, None], lon[:, None], lat[depot][None, :], lon[depot][None, :])
    allowed = (country[:, None] == country[depot][None, :]) & \
        (depot[None, :] != np.arange(len(hubs))[:, None])
    km = np.where(allowed, km, np.inf)
    order = np.argsort(km, axis=1, kind="stable")[:, :k]
    near = depot[order]
    return np.where(np.isfinite(np.take_along_axis(km, order, axis=1)), near, -1)


def consolidate(hubs: pd.DataFrame, from_hub: np.ndarray, to_hub: np.ndarray, modes: np.ndarray,
                customs_leg: np.ndarray, n_legs: np.ndarray, share: float,
                rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Give about `share` of the shipments extra inbound truck legs.

    Takes chains padded to L legs (hub and mode -1 where none) and returns them padded to
    L + MAX_INBOUND_EXTRA, with `feeds` (leg each leg continues on, -1 for the final leg),
    the customs leg and the leg counts moved to the new indexes. A shipment qualifies when it
    starts with a truck leg into a hub it leaves again from, without customs on that leg, and
    that hub's country has depots besides the first leg's."""
    n, L = modes.shape
    width = L + MAX_INBOUND_EXTRA
    hub = to_hub[:, 0]
    near = nearest_depots(hubs)[np.maximum(hub, 0)]
    near = np.where(near == from_hub[:, [0]], -1, near)
    # depots in random order, the valid ones first
    order = np.argsort(rng.random(near.shape) + 2 * (near < 0), axis=1, kind="stable")
    near = np.take_along_axis(near, order, axis=1)
    valid = (near >= 0).sum(axis=1)
    eligible = (modes[:, 0] == TRUCK) & (n_legs >= 2) & (customs_leg != 0) & (valid >= 1)
    rate = min(1.0, share / max(eligible.mean(), 1e-9))
    chosen = eligible & (rng.random(n) < rate)
    extra = np.where(chosen, 1 + (rng.random(n) < THIRD_TRUCK_SHARE), 0)
    extra = np.minimum(extra, valid)

    new_from, new_to = np.full((n, width), -1), np.full((n, width), -1)
    new_mode = np.full((n, width), -1)
    rows = np.arange(n)
    for j in range(L):
        pos = np.where(j == 0, 0, j + extra)
        new_from[rows, pos], new_to[rows, pos] = from_hub[:, j], to_hub[:, j]
        new_mode[rows, pos] = modes[:, j]
    for e in range(MAX_INBOUND_EXTRA):
        on = extra > e
        new_from[on, 1 + e], new_to[on, 1 + e] = near[on, e], hub[on]
        new_mode[on, 1 + e] = TRUCK
    legs = n_legs + extra
    index = np.arange(width)[None, :]
    feeds = np.where(index + 1 < legs[:, None], index + 1, -1)
    inbound = index <= extra[:, None]  # the first leg and the extra ones all feed the merge
    feeds = np.where(chosen[:, None] & inbound, (extra + 1)[:, None], feeds)
    customs = np.where(chosen & (customs_leg >= 1), customs_leg + extra, customs_leg)
    return new_from, new_to, new_mode, feeds, customs, legs
