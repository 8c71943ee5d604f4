"""A shipment's itinerary as the contract defines it: legs that may branch and merge, and the leg
each tracking event belongs to.

- Where cargo goes next: `legs.feeds_leg`, empty meaning leg_index + 1 (and the end of the journey
  for the highest leg). Two or more legs feeding one leg are a consolidation. `feeds_problems`
  checks it per shipment (a leg it names must exist).
- Which leg an event belongs to: a leg event (`contract.LEG_EVENTS`) without a leg_index is
  mapped to the plan's only leg that departs from its hub (departed, checked_in, handed_over)
  or arrives at it (arrived; for customs and exceptions the arrival hub first, then the
  departure hub). An event whose leg cannot be told this way, or whose leg_index is not a leg of
  the plan, is refused with a reason: ingest writes it to `rejects`, the stream to its dead
  letters. An event is never folded into a leg it does not name. The legs are those known
  when the event comes (import legs before events): the events of a shipment without any leg
  yet cannot be checked and are kept as they are.

Both functions are vectorized over whole frames (merges and group counts, no per-row loop), and
the stream and ingest call the same `event_legs`, so they refuse and map exactly alike.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from shipdelay.contract import FROM_HUB_EVENTS, LEG_EVENTS


def _show(value: object) -> str:
    return repr(str(value))


def leg_counts(legs: pd.DataFrame) -> pd.Series:
    """Legs per shipment: highest leg_index + 1 (the plan's legs are numbered from 0)."""
    if legs.empty:
        return pd.Series(dtype="int64")
    return (legs.groupby(legs["shipment_id"].astype(str))["leg_index"].max().astype("int64")
            + 1)


def next_legs(legs: pd.DataFrame) -> np.ndarray:
    """Per leg row: the leg its cargo continues on (-1: the end of the journey)."""
    n = legs["shipment_id"].astype(str).map(leg_counts(legs)).to_numpy(np.int64)
    index = legs["leg_index"].to_numpy(np.int64)
    feeds = (legs["feeds_leg"] if "feeds_leg" in legs
             else pd.Series(pd.NA, index=legs.index, dtype="Int64"))
    default = np.where(index + 1 < n, index + 1, -1)
    return np.where(feeds.isna().to_numpy(), default,
                    pd.to_numeric(feeds, errors="coerce").fillna(-1).to_numpy(np.int64))


def feeds_problems(legs: pd.DataFrame, known: pd.DataFrame | None = None) -> pd.Series:
    """Per leg row: why its feeds_leg is wrong ('' where it is right). `known`: the legs of the
    same shipments already in the lake, counted with `legs` for the number of legs."""
    reason = pd.Series("", index=legs.index, dtype=object)
    if "feeds_leg" not in legs or legs["feeds_leg"].isna().all():
        return reason
    every = legs if known is None or known.empty else pd.concat(
        [legs[["shipment_id", "leg_index"]], known[["shipment_id", "leg_index"]]])
    n = legs["shipment_id"].astype(str).map(leg_counts(every[["shipment_id", "leg_index"]].dropna())).to_numpy(np.int64)
    feeds = pd.to_numeric(legs["feeds_leg"], errors="coerce")
    bad = (feeds.notna() & (feeds >= n)).to_numpy(bool)
    reason[bad] = [f"feeds_leg: shipment {_show(s)} has no leg {int(f)} (its legs: 0..{k - 1})"
                   for s, f, k in zip(legs["shipment_id"][bad], feeds[bad], n[bad], strict=True)]
    return reason


def event_legs(events: pd.DataFrame, legs: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Each event's leg by the contract's rule, and why it is refused ('' where it is not).

    events: shipment_id, event_type, hub_id, leg_index. legs: shipment_id, leg_index, from_hub,
    to_hub of (at least) the events' shipments. Returns (leg_index as Int64, reason), aligned
    with `events`; a refused event keeps its own leg_index."""
    sid = events["shipment_id"].astype(str)
    leg = pd.to_numeric(events["leg_index"], errors="coerce").astype("Int64")
    reason = pd.Series("", index=events.index, dtype=object)
    n = sid.map(leg_counts(legs)).fillna(0).astype("int64")

    # a shipment without legs (yet) has no plan to check against: its events stay as they are
    planned = (n > 0).to_numpy(bool)
    beyond = (leg.notna() & (leg >= n)).to_numpy(bool) & planned
    if beyond.any():
        reason[beyond] = [f"leg_index: shipment {_show(s)} has no leg {int(i)} (its plan has "
                          f"legs 0..{k - 1})"
                          for s, i, k in zip(sid[beyond], leg[beyond], n[beyond], strict=True)]

    kind = events["event_type"].astype(str)
    unlabelled = (leg.isna() & kind.isin(LEG_EVENTS)).to_numpy(bool) & planned
    if not unlabelled.any():
        return leg, reason
    asks = pd.DataFrame({"row": np.flatnonzero(unlabelled), "shipment_id": sid[unlabelled]
                         .to_numpy(), "hub": events["hub_id"].astype(str)[unlabelled].to_numpy(),
                         "departs": kind[unlabelled].isin(FROM_HUB_EVENTS).to_numpy()})
    plan = pd.DataFrame({"shipment_id": legs["shipment_id"].astype(str).to_numpy(),
                         "leg": legs["leg_index"].to_numpy(np.int64),
                         "from_hub": legs["from_hub"].astype(str).to_numpy(),
                         "to_hub": legs["to_hub"].astype(str).to_numpy()})
    pairs = asks.merge(plan, on="shipment_id", how="inner")
    at_from = (pairs["from_hub"] == pairs["hub"]).to_numpy()
    at_to = (pairs["to_hub"] == pairs["hub"]).to_numpy()
    found = pd.DataFrame({"row": pairs["row"], "leg": pairs["leg"],
                          "from": at_from, "to": at_to}).groupby("row")
    count_from, count_to = found["from"].sum(), found["to"].sum()
    first_from = pairs["leg"].where(at_from).groupby(pairs["row"]).min()
    first_to = pairs["leg"].where(at_to).groupby(pairs["row"]).min()
    rows = asks.set_index("row")
    cf = count_from.reindex(rows.index, fill_value=0).to_numpy()
    ct = count_to.reindex(rows.index, fill_value=0).to_numpy()
    ff, ft = first_from.reindex(rows.index).to_numpy(), first_to.reindex(rows.index).to_numpy()
    departs = rows["departs"].to_numpy(bool)
    arrives = events["event_type"].astype(str).to_numpy()[rows.index] == "arrived"
    # departures by their from_hub; arrivals by their to_hub; customs and exceptions by the
    # to_hub, or by the from_hub when no leg arrives there
    chosen = np.where(departs, np.where(cf == 1, ff, np.nan),
                      np.where(ct == 1, ft, np.where(~arrives & (ct == 0) & (cf == 1), ff,
                                                     np.nan)))
    ok = ~np.isnan(chosen)
    at = events.index[rows.index.to_numpy()]
    leg[at[ok]] = chosen[ok].astype(np.int64)
    for i in np.flatnonzero(~ok):  # refused events only: rare
        count, where = ((cf[i], "leave from") if departs[i] else (ct[i], "arrive at")
                        if arrives[i] or ct[i] else (0, "arrive at or leave from"))
        many = f"{int(count)} legs" if count > 1 else "no single leg"
        where = where if count > 1 else where.replace("arrive", "arrives").replace("leave",
                                                                                  "leaves")
        reason[at[i]] = (f"leg_index: missing, and {many} of shipment "
                         f"{_show(rows['shipment_id'].iloc[i])} {where} hub "
                         f"{_show(rows['hub'].iloc[i])}")
    return leg, reason


def legs_of_plans(plans: pd.DataFrame) -> pd.DataFrame:
    """The legs (shipment_id, leg_index, from_hub, to_hub) of shipment profiles' plans, whose
    `plan_hubs` list, by ord, holds leg i's from_hub at 1 + 2i and its to_hub at 2 + 2i."""
    hubs = pa.array(list(plans["plan_hubs"]), type=pa.list_(pa.string()), from_pandas=True)
    sizes = pc.list_value_length(hubs).fill_null(0).to_numpy(zero_copy_only=False)
    sizes = sizes.astype(np.int64)
    flat = pc.list_flatten(hubs).to_numpy(zero_copy_only=False)
    n = np.minimum(plans["n_legs"].fillna(0).to_numpy(np.int64), np.maximum((sizes - 1) // 2, 0))
    start = np.repeat(np.cumsum(sizes) - sizes, n)
    leg = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    return pd.DataFrame({"shipment_id": np.repeat(plans["shipment_id"].astype(str).to_numpy(), n),
                         "leg_index": leg, "from_hub": flat[start + 1 + 2 * leg],
                         "to_hub": flat[start + 2 + 2 * leg]})
