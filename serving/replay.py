"""`shipdelay replay`: publish the lake's tracking events to Kafka, in ingestion order, for demos
and load tests.

Events go to the input topic keyed by shipment id (so each shipment's events share a partition,
in order) from an idempotent producer. Pacing: `speedup` (simulated time runs that many times
faster than the clock), `rate` (events per second), or neither (as fast as possible). The JSON
of all events is made by one vectorized call; only the producer calls go one message at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow.dataset as ds

from serving.kafka import Topics, producer_config
from shipdelay.lake import Lake
from shipdelay.settings import Settings

COLUMNS = ["event_id", "shipment_id", "parcel_id", "event_time", "ingested_at", "event_type",
           "hub_id", "leg_index", "latitude", "longitude", "note"]
CHUNK = 2_000  # messages between pacing checks


@dataclass
class ReplayReport:
    events: int
    seconds: float
    first_ingested: pd.Timestamp | None
    last_ingested: pd.Timestamp | None

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("nan")


def lake_events(settings: Settings, since: pd.Timestamp | None = None,
                max_events: int | None = None) -> pd.DataFrame:
    """Tracking events of the lake ingested at or after `since`, in ingestion order."""
    flt = None if since is None else ds.field("ingested_at") >= since.to_pydatetime()
    events = Lake(settings.lake_dir).read("tracking_events", columns=COLUMNS, filter=flt)
    events = events.sort_values(["ingested_at", "event_id"], ignore_index=True)
    return events if max_events is None else events.head(max_events)


def to_messages(events: pd.DataFrame) -> tuple[list[bytes], list[bytes]]:
    """(JSON values, keys) of events, with times as ISO-8601 UTC."""
    frame = events[COLUMNS].copy()
    for c in ("event_time", "ingested_at"):
        frame[c] = pd.to_datetime(frame[c], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    text = frame.to_json(orient="records", lines=True, double_precision=6)
    values = [line for line in text.encode().split(b"\n") if line]
    return values, frame["shipment_id"].astype(str).str.encode("utf-8").tolist()


def due_offsets(events: pd.DataFrame, speedup: float | None, rate: float | None) -> np.ndarray:
    """Seconds after the start at which each event is due (zeros: as fast as possible)."""
    if rate:
        return np.arange(len(events)) / float(rate)
    if speedup:
        ing = pd.DatetimeIndex(pd.to_datetime(events["ingested_at"], utc=True)).asi8
        return (ing - ing[0]) / 1e9 / float(speedup) if len(ing) else np.zeros(0)
    return np.zeros(len(events))


def publish(producer, topic: str, values: list[bytes], keys: list[bytes], due: np.ndarray,
            on_chunk: Callable[[int], None] | None = None) -> float:
    """Produce every message at (or after) its due time; returns seconds taken."""
    start = time.monotonic()
    for lo in range(0, len(values), CHUNK):
        wait = start + due[lo] - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        for value, key in zip(values[lo:lo + CHUNK], keys[lo:lo + CHUNK]):
            while True:
                try:
                    producer.produce(topic, value, key=key)
                    break
                except BufferError:
                    producer.poll(0.05)
        producer.poll(0)
        if on_chunk:
            on_chunk(min(lo + CHUNK, len(values)))
    left = producer.flush(120)
    if left:
        raise RuntimeError(f"{left} message(s) were not acknowledged by the brokers")
    return time.monotonic() - start


def replay(settings: Settings, *, speedup: float | None = None, rate: float | None = None,
           since: pd.Timestamp | None = None, max_events: int | None = None,
           events: pd.DataFrame | None = None,
           on_chunk: Callable[[int], None] | None = None) -> ReplayReport:
    """Publish the lake's events (or `events`) to the input topic."""
    from confluent_kafka import Producer

    if speedup and rate:
        raise ValueError("give a speed-up or a rate, not both")
    events = lake_events(settings, since, max_events) if events is None else events
    values, keys = to_messages(events)
    producer = Producer(producer_config(settings, **{"linger.ms": 20}))
    seconds = publish(producer, Topics.from_settings(settings).events, values, keys,
                      due_offsets(events, speedup, rate), on_chunk)
    first = events["ingested_at"].iloc[0] if len(events) else None
    last = events["ingested_at"].iloc[-1] if len(events) else None
    return ReplayReport(len(values), seconds, first, last)
