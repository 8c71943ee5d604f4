"""A cockpit world for the cockpit's tests: the session's small simulated lake, linked, and a
nightly scores table for its shipments in flight written by hand (P(late) and delay quantiles
drawn from a seeded generator, bands by the product's cut-offs), so the tests need no model;
and the Now list's callback as the browser calls it (`list_call`, `all_rows`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from shipdelay.lake import Lake, write_parquet_atomic
from shipdelay.settings import Settings

_TS = pa.timestamp("us", tz="UTC")
SCORES_SCHEMA = pa.schema([
    ("shipment_id", pa.string()), ("as_of", _TS), ("mode", pa.string()), ("lane", pa.string()),
    ("customer", pa.string()), ("carrier", pa.string()), ("p_late", pa.float64()),
    ("risk_band", pa.string()), ("delay_p50_h", pa.float64()), ("delay_p90_h", pa.float64()),
    ("eta", _TS), ("eta_p10", _TS), ("eta_p90", _TS), ("reasons", pa.list_(pa.string())),
    ("model_version", pa.string()),
])
REASON = "the shipment departed its last hub late"


def in_flight(lake: Lake) -> tuple[pd.DataFrame, pd.Timestamp]:
    """Shipments booked and not delivered at the lake's newest ingestion, with that instant."""
    events = lake.read("tracking_events", columns=["shipment_id", "event_type", "ingested_at"])
    now = events["ingested_at"].max()
    ships = lake.read("shipments", columns=["shipment_id", "customer_id", "origin_hub",
                                            "destination_hub", "booked_at", "promised_at"])
    delivered = events.loc[events["event_type"] == "delivered", "shipment_id"]
    moving = ships[(ships["booked_at"] <= now) & ~ships["shipment_id"].isin(delivered)]
    return moving.reset_index(drop=True), now


def write_scores(settings: Settings, lake: Lake, seed: int = 1) -> pd.DataFrame:
    """A scores partition for the lake's shipments in flight; returns the rows written."""
    moving, now = in_flight(lake)
    legs = lake.read("legs", columns=["shipment_id", "leg_index", "mode", "carrier_id"])
    first = legs.sort_values("leg_index").drop_duplicates("shipment_id")
    moving = moving.merge(first, on="shipment_id", how="left")
    rng = np.random.default_rng(seed)
    n = len(moving)
    p = rng.beta(1.2, 2.5, n)
    band = np.where(p >= 0.6, "high", np.where(p >= 0.3, "medium", "low"))
    p50 = rng.normal(-5, 20, n) + 40 * p
    p90 = p50 + rng.uniform(2, 30, n)
    promised = pd.to_datetime(moving["promised_at"], utc=True)
    scores = pd.DataFrame({
        "shipment_id": moving["shipment_id"].astype(str),
        "as_of": now, "mode": moving["mode"].astype(str),
        "lane": (moving["origin_hub"].astype(str) + "-" + moving["destination_hub"].astype(str)),
        "customer": moving["customer_id"].astype(str), "carrier": moving["carrier_id"].astype(str),
        "p_late": p, "risk_band": band, "delay_p50_h": p50, "delay_p90_h": p90,
        "eta": promised + pd.to_timedelta(p50, unit="h"),
        "eta_p10": promised + pd.to_timedelta(p50 - (p90 - p50), unit="h"),
        "eta_p90": promised + pd.to_timedelta(p90, unit="h"),
        "reasons": [[REASON] if b == "high" else [] for b in band],
        "model_version": "3",
    })
    for col in ("eta", "eta_p10", "eta_p90"):
        scores[col] = scores[col].dt.floor("us")
    folder = settings.scores_dir / f"run_date={now.date().isoformat()}"
    write_parquet_atomic(pa.Table.from_pandas(scores, schema=SCORES_SCHEMA,
                                              preserve_index=False), folder / "part-0.parquet")
    return scores


def cockpit_settings(root: Path, lake: Lake, **fields) -> Settings:
    """Settings whose data folder links the small world's lake, with a scores table written."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "lake").symlink_to(lake.root.resolve())
    settings = Settings(data_dir=root, **fields)
    write_scores(settings, lake)
    return settings


OUTPUTS = [("risk-table", "data"), ("risk-table", "page_count"), ("risk-table", "page_current"),
           ("band-counts", "children"), ("exposure-total", "children"),
           ("now-matched", "children"), ("now-service", "children")]


def list_call(client, page_no=0, sort_by=None, filter_query="", changed="page_current",
              clicks=None) -> dict:
    """The list callback's answer for one page, sort and filter (`changed`: what moved)."""
    body = {"output": ".." + "...".join(f"{i}.{p}" for i, p in OUTPUTS) + "..",
            "outputs": [{"id": i, "property": p} for i, p in OUTPUTS],
            "inputs": [{"id": "risk-table", "property": "page_current", "value": page_no},
                       {"id": "risk-table", "property": "sort_by", "value": sort_by or []},
                       {"id": "risk-table", "property": "filter_query", "value": filter_query},
                       {"id": "refresh-visible", "property": "n_clicks", "value": clicks}],
            "state": [{"id": "risk-table", "property": "page_size", "value": 25}],
            "changedPropIds": [changed if "." in changed else f"risk-table.{changed}"]}
    reply = client.post("/_dash-update-component", json=body)
    assert reply.status_code == 200, reply.data[:300]
    return reply.get_json()["response"]


def all_rows(client, sort_by=None, filter_query="") -> tuple[pd.DataFrame, dict]:
    """Every page of the list, in order, and the first page's answer."""
    first = list_call(client, 0, sort_by, filter_query, changed="filter_query")
    pages = first["risk-table"]["page_count"]
    rows = list(first["risk-table"]["data"])
    for n in range(1, pages):
        got = list_call(client, n, sort_by, filter_query)
        assert got["risk-table"]["page_current"] == n and len(got["risk-table"]["data"]) <= 25
        rows += got["risk-table"]["data"]
    return pd.DataFrame(rows), first
