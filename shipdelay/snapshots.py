"""When a shipment is looked at: the snapshot rule shared by training sets and the ceiling.

A shipment is scored at booking, and again each time a milestone becomes known: the moment the
first scan of that milestone (event type, leg) is ingested. Delivery ends the journey, so the
delivered milestone and anything known only after delivery make no snapshot.
"""

from __future__ import annotations

import duckdb
import pandas as pd

MILESTONE_KEY = ["shipment_id", "event_type", "leg_index"]


def snapshot_times(shipments: pd.DataFrame, events: pd.DataFrame,
                   outcomes: pd.DataFrame | None = None) -> pd.DataFrame:
    """(shipment_id, as_of, milestone) rows: booking plus the first ingestion of each milestone.

    `shipments` needs shipment_id, booked_at; `events` shipment_id, event_type, leg_index,
    ingested_at; `outcomes` (optional) shipment_id, delivered_at to drop snapshots at or after
    delivery.
    """
    con = duckdb.connect()
    con.register("s", shipments[["shipment_id", "booked_at"]])
    con.register("e", events[["shipment_id", "event_type", "leg_index", "ingested_at"]])
    delivered = outcomes[["shipment_id", "delivered_at"]] if outcomes is not None else \
        pd.DataFrame({"shipment_id": pd.Series([], dtype="string"),
                      "delivered_at": pd.Series([], dtype="datetime64[ns, UTC]")})
    con.register("o", delivered)
    out = con.sql("""
        with m as (
            select shipment_id, min(ingested_at) as as_of,
                   event_type || ':' || coalesce(cast(leg_index as varchar), '') as milestone
            from e where event_type <> 'delivered'
            group by shipment_id, event_type, leg_index
        ), b as (select shipment_id, booked_at as as_of, 'booked' as milestone from s)
        select x.shipment_id, x.as_of, x.milestone
        from (select * from m union all select * from b) x
        join s using (shipment_id)
        left join o using (shipment_id)
        where x.as_of >= s.booked_at and (o.delivered_at is null or x.as_of < o.delivered_at)
        order by x.shipment_id, x.as_of, x.milestone
    """).df()
    con.close()
    out["as_of"] = pd.to_datetime(out["as_of"], utc=True)
    return out
