"""Delivered shipments the online store no longer holds, and when they were delivered.

The online store keeps the shipments in flight at the last feature build (and those delivered
since, by the stream); a shipment delivered before that is not there, and the online read alone
would call it unknown. The lake's outcomes table says it was delivered, and when. Only the ids
the online store does not know (or knows as delivered) are looked up, with one filtered scan of
the table, so a request about shipments in flight never pays for it; outcomes after the service
clock (`as_of`) are not known yet.
"""

from __future__ import annotations

import logging

import pandas as pd
import pyarrow.dataset as ds

from shipdelay.lake import Lake

log = logging.getLogger(__name__)


def delivered_at(lake_dir, ids: list[str], now: pd.Timestamp) -> dict[str, pd.Timestamp]:
    """{shipment id: delivery time} of those of `ids` the lake's outcomes show delivered at or
    before `now`; empty when the lake cannot be read (the answer stays "unknown")."""
    if not ids:
        return {}
    try:
        found = Lake(lake_dir).read("outcomes", columns=["shipment_id", "delivered_at"],
                                    filter=ds.field("shipment_id").isin(list(ids)))
    except Exception as err:  # noqa: BLE001 - a missing or unreadable lake: nothing known
        log.info("delivered shipments not looked up: %s", err)
        return {}
    times = pd.to_datetime(found["delivered_at"], utc=True)
    known = found[times.notna() & (times <= now)]
    return dict(zip(known["shipment_id"].astype(str), pd.to_datetime(known["delivered_at"],
                                                                       utc=True)))
