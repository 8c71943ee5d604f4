"""The stream scorer's metrics: Prometheus (on an optional port) and a one-line log summary.

Counted: events consumed, applied, skipped as duplicates, dead-lettered (by reason class), risk
updates and alerts published, micro-batches and their latency (consume to commit), the latency
from an event's produce time to the commit of its risk update, and the consumer lag per
partition (high watermark minus committed position), and where a batch's time goes: seconds per
stage (parse, fold and score, publish, reasons, prediction log, online commit, offset commit),
as a histogram and as totals in the stream's return value (`stage_s`).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import prometheus_client as pc

log = logging.getLogger("shipdelay.stream")
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30)
STAGE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class StageClock:
    """Laps of one micro-batch: `lap(stage)` books the time since the previous lap."""

    def __init__(self):
        self.laps: dict[str, float] = {}
        self._at = time.monotonic()

    def lap(self, stage: str) -> None:
        now = time.monotonic()
        self.laps[stage] = self.laps.get(stage, 0.0) + now - self._at
        self._at = now


def reason_class(reason: str) -> str:
    """A dead letter's class, for a metric label: its first reason without the detail after
    ':' (reasons put what the message held only there, so the labels stay few)."""
    return reason.split("; ", 1)[0].split(":", 1)[0].strip()[:60] or "unnamed"


class StreamMetrics:
    def __init__(self, port: int | None = None, summary_every: int = 20):
        self.registry = r = pc.CollectorRegistry()
        self.events = pc.Counter("shipdelay_stream_events", "Tracking events by outcome "
                                 "(applied, duplicate, dead_letter)", ["outcome"], registry=r)
        self.dead = pc.Counter("shipdelay_stream_dead_letters", "Dead letters by the class of "
                               "their first reason", ["reason"], registry=r)
        self.published = pc.Counter("shipdelay_stream_published", "Messages published by topic "
                                    "kind (risk, alert, dead_letter)", ["kind"], registry=r)
        self.batch_seconds = pc.Histogram("shipdelay_stream_batch_seconds", "Micro-batch time "
                                          "from consume to offset commit", registry=r,
                                          buckets=LATENCY_BUCKETS)
        self.event_latency = pc.Histogram("shipdelay_stream_event_latency_seconds", "From an "
                                          "event's produce time to the commit of its batch",
                                          registry=r, buckets=LATENCY_BUCKETS)
        self.lag = pc.Gauge("shipdelay_stream_consumer_lag", "Messages not yet consumed, by "
                            "partition", ["partition"], registry=r)
        self.stage_seconds = pc.Histogram("shipdelay_stream_stage_seconds", "Seconds a "
                                          "micro-batch spends in each stage", ["stage"],
                                          registry=r, buckets=STAGE_BUCKETS)
        self.rate = pc.Gauge("shipdelay_stream_events_per_second", "Events per second over the "
                             "last summary interval", registry=r)
        if port:
            pc.start_http_server(port, registry=r)
        self.summary_every = summary_every
        self.batches = 0
        self.totals = {"events": 0, "applied": 0, "duplicates": 0, "dead": 0, "alerts": 0}
        self.stage_totals: dict[str, float] = {}
        self._window = {"t": time.monotonic(), "events": 0, "latencies": []}

    def batch(self, counts: dict, dead_reasons: list[str], seconds: float,
              event_latency_s: np.ndarray, published: dict[str, int],
              stages: dict[str, float] | None = None) -> None:
        self.batches += 1
        for stage, spent in (stages or {}).items():
            self.stage_seconds.labels(stage).observe(spent)
            self.stage_totals[stage] = self.stage_totals.get(stage, 0.0) + spent
        self.events.labels("applied").inc(counts.get("applied", 0))
        self.events.labels("duplicate").inc(counts.get("duplicates", 0))
        self.events.labels("dead_letter").inc(len(dead_reasons))
        for reason in dead_reasons:
            self.dead.labels(reason_class(reason)).inc()
        for kind, n in published.items():
            self.published.labels(kind).inc(n)
        self.batch_seconds.observe(seconds)
        for value in np.percentile(event_latency_s, [0, 50, 99, 100]) if len(event_latency_s) \
                else []:
            self.event_latency.observe(value)  # a bounded sample per batch keeps it cheap
        for k, v in (("events", counts.get("events", 0) + counts.get("parse_dead", 0)),
                     ("applied", counts.get("applied", 0)),
                     ("duplicates", counts.get("duplicates", 0)),
                     ("dead", len(dead_reasons)), ("alerts", counts.get("alerts", 0))):
            self.totals[k] += v
        w = self._window
        w["events"] += counts.get("events", 0) + counts.get("parse_dead", 0)
        w["latencies"].append(event_latency_s)
        if self.batches % self.summary_every == 0:
            self.summary()

    def set_lag(self, lags: dict[int, int]) -> None:
        for partition, value in lags.items():
            self.lag.labels(str(partition)).set(value)

    def summary(self) -> str:
        w, now = self._window, time.monotonic()
        rate = w["events"] / max(now - w["t"], 1e-9)
        lat = np.concatenate(w["latencies"]) if w["latencies"] else np.array([])
        p50, p99 = (np.percentile(lat, [50, 99]) if len(lat) else (np.nan, np.nan))
        self.rate.set(rate)
        line = (f"batches {self.batches}, events {self.totals['events']:,} ({rate:,.0f}/s), "
                f"applied {self.totals['applied']:,}, duplicates {self.totals['duplicates']:,}, "
                f"dead letters {self.totals['dead']:,}, alerts {self.totals['alerts']:,}, "
                f"latency p50 {p50:.2f} s p99 {p99:.2f} s")
        log.info(line)
        self._window = {"t": now, "events": 0, "latencies": []}
        return line
