"""Kafka client settings and topic names for the stream scorer and the replay, from Settings.

With `SHIPDELAY_KAFKA_BOOTSTRAP` set, clients talk to that cluster and every entry of
`kafka_security` (e.g. `security.protocol`, `ssl.ca.location`, `sasl.mechanism`,
`sasl.username`, `sasl.password`) is passed to librdkafka unchanged. Without it, they use the
embedded mock cluster that `shipdelay kafka-mock` hosts: its bootstrap address is read from
`<data_dir>/kafka/bootstrap` (the file that command writes).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from shipdelay.settings import Settings


class NoKafka(RuntimeError):
    """Neither a Kafka cluster is configured nor an embedded mock cluster is running."""


@dataclass(frozen=True)
class Topics:
    events: str  # tracking events in, keyed by shipment id
    risk: str  # risk updates out, keyed by shipment id
    alerts: str  # alert events out, keyed by shipment id
    dead_letters: str  # invalid events with their raw payload and the reason

    @classmethod
    def from_settings(cls, settings: Settings) -> Topics:
        p = settings.kafka_topic_prefix
        return cls(f"{p}tracking-events", f"{p}risk-updates", f"{p}risk-alerts",
                   f"{p}dead-letters")


def bootstrap_file(settings: Settings) -> Path:
    """Where `shipdelay kafka-mock` writes the embedded cluster's bootstrap address."""
    return settings.data_dir / "kafka" / "bootstrap"


def bootstrap(settings: Settings) -> str:
    if settings.kafka_bootstrap:
        return settings.kafka_bootstrap
    path = bootstrap_file(settings)
    if path.exists() and path.read_text().strip():
        return path.read_text().strip()
    raise NoKafka(f"no Kafka: set SHIPDELAY_KAFKA_BOOTSTRAP, or start the embedded cluster with "
                  f"`shipdelay kafka-mock` (it writes {path})")


def _base(settings: Settings) -> dict:
    conf = {"bootstrap.servers": bootstrap(settings), "log_level": 3}
    if settings.kafka_bootstrap:  # security settings belong to a real cluster only
        conf |= dict(settings.kafka_security)
    return conf


def producer_config(settings: Settings, **extra) -> dict:
    """An idempotent producer (no duplicates or reordering from its own retries)."""
    return _base(settings) | {"enable.idempotence": True, "acks": "all", "linger.ms": 5,
                              "compression.type": "lz4"} | extra


def consumer_config(settings: Settings, **extra) -> dict:
    """A consumer of the stream's group that commits offsets only when told to."""
    return _base(settings) | {
        "group.id": settings.kafka_group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "fetch.wait.max.ms": 50,
        # a consumer that died hands its partitions over after 6 s, not Kafka's default 45 s
        "session.timeout.ms": 6_000,
        "heartbeat.interval.ms": 1_500,
    } | extra


def read_all(settings: Settings, topic: str, idle_s: float = 3.0, timeout_s: float = 120.0,
             on_message=None) -> list:
    """Every message of `topic` from its beginning, read by partition (no group to join),
    until nothing arrived for `idle_s`; `on_message` may filter or convert (None drops)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(consumer_config(settings, **{"group.id": "shipdelay-reader"}))
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
        out, start, last = [], time.monotonic(), time.monotonic()
        while time.monotonic() - last < idle_s and time.monotonic() - start < timeout_s:
            got = [m for m in consumer.consume(5000, 0.5) if m.error() is None]
            if got:
                last = time.monotonic()
                out += [x for x in map(on_message or (lambda m: m), got) if x is not None]
        return out
    finally:
        consumer.close()
