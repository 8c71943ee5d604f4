"""`shipdelay stream`: keep every in-flight shipment's risk current from Kafka tracking events.

A consumer in the stream's group takes micro-batches (up to `stream_batch_max` events or
`stream_batch_ms` of waiting) and, for each one, in this order:
1. parses and validates (`serving.stream_parse`: whatever its bytes, each message becomes an
   event or a dead letter, so no message can stop the stream) and folds, scores and checks
   alerts (`serving.stream_batch`);
2. publishes dead letters and risk updates, then explains the alerts and publishes them, each
   time waiting for the brokers' acknowledgements;
3. writes the batch's predictions to the prediction log (`monitoring.prediction_log`, unless
   `prediction_log` is off), stages the new progress rows offline, commits the online rows with
   the batch's event ids and a token in one transaction, and publishes the staged rows
   (`serving.stream_offline`);
4. commits the consumer offsets.
A crash anywhere reprocesses the batch: events already in the online store are recognised by
their ids and skipped, so no state counts twice; outputs of the interrupted batch may be
published again (risk updates are keyed by shipment, alerts carry a stable `alert_id`, dead
letters their source partition and offset), so consumers de-duplicate them.
"""

from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.online_direct import open_direct
from features.store import get_store, offline_dir
from monitoring.prediction_log import log_now
from serving.kafka import Topics, consumer_config, producer_config
from serving.stream_batch import AlertRule, explain_risk, process
from serving.stream_metrics import StageClock, StreamMetrics
from serving.stream_offline import OfflineStager
from serving.stream_parse import dead_letter_records, parse_batch
from serving.stream_records import alert_records, risk_records
from serving.stream_roll import StreamRoller
from serving.stream_stats import WarmStats
from serving.stream_store import StreamStore
from shipdelay.settings import Settings

log = logging.getLogger("shipdelay.stream")


@dataclass
class StreamOptions:
    max_batch: int = 20_000
    batch_ms: int = 300
    idle_exit_s: float | None = None  # stop after this long without messages, counted from
    # the first message on (tests, demos, benchmarks)
    max_events: int | None = None  # stop after this many messages
    metrics_port: int | None = None
    summary_every: int = 20

    @classmethod
    def from_settings(cls, settings: Settings, **kw) -> StreamOptions:
        return cls(max_batch=settings.stream_batch_max, batch_ms=settings.stream_batch_ms, **kw)


class _Stop:
    def __init__(self):
        self.requested = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._set)

    def _set(self, *_):
        self.requested = True


def _champion(settings: Settings):
    from serving.model_holder import ModelHolder

    holder = ModelHolder(settings, refresh_seconds=60, store=get_store(settings))
    if holder.scorer is None:
        raise RuntimeError(f"no servable champion model: {holder.last_error}")
    return holder


def run_stream(settings: Settings, options: StreamOptions | None = None) -> dict:
    """Consume until stopped (SIGTERM/SIGINT, `idle_exit_s`, `max_events`); returns totals."""
    from confluent_kafka import Consumer, Producer

    options = options or StreamOptions.from_settings(settings)
    topics = Topics.from_settings(settings)
    rule = AlertRule(settings.stream_alert_threshold, settings.stream_alert_jump)
    store = StreamStore(open_direct(settings), lake_dir=settings.lake_dir)
    # statistics at each shipment's instant, kept warm across micro-batches
    store.stats = WarmStats(offline_dir(settings))
    roller = StreamRoller(settings)
    stager = OfflineStager(offline_dir(settings))
    published, deleted = stager.recover(store)
    if published or deleted:
        log.info("recovered offline parts of stopped processes: %d published, %d dropped",
                 published, deleted)
    holder = _champion(settings)
    metrics = StreamMetrics(options.metrics_port, options.summary_every)
    consumer = Consumer(consumer_config(settings))
    producer = Producer(producer_config(settings))
    # a cluster that creates topics on first use (the embedded one) creates the input topic now,
    # so the group gets its partitions before the first event is produced
    producer.list_topics(topics.events, timeout=10)
    assigned: list[int] = []
    consumer.subscribe([topics.events], on_assign=_track_partitions("assigned", assigned),
                       on_revoke=_track_partitions("revoked", assigned))
    stop, seen, idle_since, partitions = _Stop(), 0, time.monotonic(), set()
    first_at = last_at = 0.0  # first message consumed, last batch committed (monotonic)
    offset = time.time() - time.monotonic()  # the same moments on the wall clock, for totals
    try:
        while not stop.requested:
            if options.max_events is not None and seen >= options.max_events:
                break
            want = options.max_batch if options.max_events is None else min(
                options.max_batch, options.max_events - seen)
            messages = [m for m in consumer.consume(want, options.batch_ms / 1000)
                        if m.error() is None]
            if not messages:
                if not assigned or not seen:  # waiting for the group or the first event
                    idle_since = time.monotonic()
                elif options.idle_exit_s is not None and \
                        time.monotonic() - idle_since > options.idle_exit_s:
                    break
                continue
            idle_since = time.monotonic()
            holder.maybe_reload()
            seen += len(messages)
            partitions.update(m.partition() for m in messages)
            first_at = first_at or time.monotonic()
            _one_batch(messages, consumer, producer, store, stager, holder.scorer, topics, rule,
                       metrics, settings.stream_max_message_bytes, roller,
                       settings.predictions_dir if settings.prediction_log else None)
            last_at = time.monotonic()
            if metrics.batches % options.summary_every == 0:
                metrics.set_lag(_lag(consumer))
    finally:
        consumer.close()
        producer.flush(10)
        stager.close()
        roller.close()
        store.online.close()
    metrics.summary()
    # busy_from/busy_to (epoch seconds) let several consumers of a group be timed together
    return dict(metrics.totals, batches=metrics.batches, partitions=sorted(partitions),
                stage_s={k: round(v, 3) for k, v in metrics.stage_totals.items()},
                busy_s=round(last_at - first_at, 3), busy_from=round(first_at + offset, 3),
                busy_to=round(last_at + offset, 3))


def _track_partitions(what: str, assigned: list[int]):
    """A rebalance callback that logs and keeps `assigned` current."""
    def callback(_consumer, partitions) -> None:
        ids = sorted(p.partition for p in partitions)
        if what == "assigned":
            assigned[:] = ids
        else:
            assigned[:] = [p for p in assigned if p not in ids]
        log.info("partitions %s: %s", what, ids)
    return callback


def _one_batch(messages, consumer, producer, store, stager, scorer, topics, rule, metrics,
               max_bytes: int, roller: StreamRoller | None = None,
               log_to: Path | None = None) -> None:
    started = time.monotonic()
    clock = StageClock()
    values = [m.value() for m in messages]
    keys = [m.key() for m in messages]
    meta = pd.DataFrame({"partition": [m.partition() for m in messages],
                         "offset": [m.offset() for m in messages],
                         "produced_ms": [m.timestamp()[1] for m in messages]})
    parsed = parse_batch(values, keys, meta, max_bytes=max_bytes)
    clock.lap("parse")
    if roller is not None:  # the windows this batch's instants pass, rolled before it is scored
        roller.before(parsed.events)
        clock.lap("roll")
    result = process(store, scorer, parsed.events, rule)
    clock.lap("score")

    dead = parsed.dead
    if len(result.dead):
        row = pd.Series(np.arange(len(meta)), index=pd.MultiIndex.from_frame(
            meta[["partition", "offset"]]))
        at = row.loc[list(zip(result.dead["partition"], result.dead["offset"]))].to_numpy()
        dead = pd.concat([dead, result.dead.assign(key=[keys[i] for i in at],
                                                   raw=[values[i] for i in at])],
                         ignore_index=True)
    now = pd.Timestamp.now(tz="UTC")
    out = {"dead_letter": (topics.dead_letters,
                           *dead_letter_records(dead, topics.events, now, max_bytes)),
           "risk": (topics.risk, *risk_records(result.risk))}
    _publish(producer, out)
    clock.lap("publish")
    # reasons (TreeSHAP) only once the risk updates are out: they wait for nothing; the
    # alerts' and the high band's, kept online with the state (`serving.reasons_store`)
    out["alert"] = (topics.alerts, *alert_records(explain_risk(scorer, result), rule))
    clock.lap("reasons")
    _publish(producer, {"alert": out["alert"]})
    clock.lap("publish")

    if log_to is not None and result.vectors is not None:
        # before the online commit: once the events are in the online store a replay skips
        # them and would never score them again; a replay of a batch logged but not committed
        # logs the same predictions again, and readers keep one per key
        moving = result.risk[~result.risk["delivered"].to_numpy(bool)]
        log_now(log_to, "stream", moving, result.vectors, moving["as_of"], result.counts,
                notes=scorer.with_notes)
        clock.lap("prediction_log")
    if len(result.latest):
        token = stager.next_token()
        staged = stager.stage(result.states, token)
        clock.lap("offline_stage")
        store.commit(result.latest, result.state, token, result.reasons)
        clock.lap("online_commit")
        stager.publish(staged)
        store.forget(token)
        clock.lap("offline_publish")
    _commit(consumer, meta, topics.events)
    clock.lap("offset_commit")
    done_ms = time.time() * 1000
    counts = dict(result.counts, parse_dead=len(parsed.dead))
    metrics.batch(counts, dead["reason"].tolist(), time.monotonic() - started,
                  (done_ms - meta["produced_ms"].to_numpy(float)) / 1000,
                  {k: len(v[1]) for k, v in out.items()}, clock.laps)


class PublishFailed(RuntimeError):
    """The brokers did not acknowledge every output message: the batch is not committed."""


def _publish(producer, outputs: dict) -> None:
    errors = []

    def delivered(err, _msg):
        if err is not None:
            errors.append(err)

    for topic, records, keys in outputs.values():
        for value, key in zip(records, keys):
            while True:
                try:
                    producer.produce(topic, value, key=key, on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.05)
    left = producer.flush(60)
    if left or errors:
        raise PublishFailed(f"{left} message(s) unacknowledged, errors: {errors[:3]}")


def _commit(consumer, meta: pd.DataFrame, topic: str) -> None:
    from confluent_kafka import TopicPartition

    last = meta.groupby("partition")["offset"].max()
    consumer.commit(offsets=[TopicPartition(topic, int(p), int(o) + 1) for p, o in last.items()],
                    asynchronous=False)


def _lag(consumer) -> dict[int, int]:
    lags = {}
    try:
        for tp in consumer.position(consumer.assignment()):
            _, high = consumer.get_watermark_offsets(tp, timeout=2, cached=False)
            lags[tp.partition] = max(0, high - tp.offset) if tp.offset >= 0 else high
    except Exception as err:  # noqa: BLE001 - metrics never stop the stream
        log.warning("consumer lag unavailable: %s", err)
    return lags
