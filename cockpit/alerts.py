"""The alert inbox: the stream scorer's alerts topic, followed from its beginning by a background
consumer (no consumer group: the cockpit never moves the stream's offsets), kept newest first.

`merge_alerts` is the pure part tests call: alerts carry a stable `alert_id` and the stream may
publish one twice after a crash, so the inbox keeps one of each.
"""

from __future__ import annotations

import json
import logging
import threading

import pandas as pd

from shipdelay.settings import Settings

log = logging.getLogger("shipdelay.cockpit")
INBOX_SIZE = 500
ALERT_COLUMNS = ["alert_id", "shipment_id", "kind", "p_late", "previous_p_late", "risk_band",
                 "eta", "reasons", "as_of", "model_version"]


def parse(values: list[bytes]) -> list[dict]:
    """Alert messages (JSON) as dicts; unreadable ones are skipped and logged."""
    out = []
    for raw in values:
        try:
            item = json.loads(raw)
        except (ValueError, TypeError):
            log.warning("an alert message is not JSON; skipped")
            continue
        if isinstance(item, dict) and item.get("alert_id"):
            out.append(item)
    return out


def merge_alerts(inbox: list[dict], new: list[dict], size: int = INBOX_SIZE) -> list[dict]:
    """`inbox` with `new` alerts added: one per alert_id, newest (as_of) first, at most `size`."""
    seen: dict[str, dict] = {a["alert_id"]: a for a in inbox}
    for alert in new:
        seen[alert["alert_id"]] = alert
    ordered = sorted(seen.values(), key=lambda a: (str(a.get("as_of") or ""), a["alert_id"]),
                     reverse=True)
    return ordered[:size]


def inbox_rows(alerts: list[dict]) -> pd.DataFrame:
    """The inbox for people: when, shipment, what happened, risk before and now, why."""
    frame = pd.DataFrame(alerts, columns=ALERT_COLUMNS)
    when = pd.to_datetime(frame["as_of"], utc=True, errors="coerce")
    previous = pd.to_numeric(frame["previous_p_late"], errors="coerce")
    now = pd.to_numeric(frame["p_late"], errors="coerce")
    kinds = {"threshold": "crossed the alert threshold", "jump": "risk jumped"}
    return pd.DataFrame({
        "alert_id": frame["alert_id"],
        "when": when.dt.strftime("%a %d %b %H:%M").fillna("-"),
        "shipment_id": frame["shipment_id"],
        "what": frame["kind"].map(kinds).fillna(frame["kind"]),
        "risk": [f"{p:.0%} → {n:.0%}" if pd.notna(p) else f"{n:.0%}"
                 for p, n in zip(previous.fillna(float("nan")), now.fillna(0.0))],
        "why": ["; ".join(r) if isinstance(r, list) else "" for r in frame["reasons"]],
    })


class AlertFollower:
    """Follows the alerts topic in a daemon thread; `alerts()` is the inbox so far, `problem`
    one sentence when there is no Kafka to follow."""

    def __init__(self, settings: Settings, poll_s: float = 0.5):
        self.settings = settings
        self.poll_s = poll_s
        self.problem: str | None = None
        self._inbox: list[dict] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> AlertFollower:
        self._thread = threading.Thread(target=self._run, name="cockpit-alerts", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def alerts(self) -> list[dict]:
        with self._lock:
            return list(self._inbox)

    def add(self, values: list[bytes]) -> None:
        new = parse(values)
        if new:
            with self._lock:
                self._inbox = merge_alerts(self._inbox, new)

    def _run(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

        from serving.kafka import NoKafka, Topics, consumer_config

        topic = Topics.from_settings(self.settings).alerts
        while not self._stop.is_set():
            try:
                # quiet: a broker that cannot be reached is said in the inbox, not the terminal
                consumer = Consumer(consumer_config(self.settings, log_level=0,
                                                    **{"group.id": "shipdelay-cockpit"}))
            except NoKafka as err:
                self.problem = f"no live alerts: {err}"
                self._stop.wait(5.0)
                continue
            try:
                meta = consumer.list_topics(topic, timeout=5).topics.get(topic)
                if meta is None or not meta.partitions:
                    self.problem = "no alerts yet: the stream has not published any"
                    self._stop.wait(5.0)
                    continue
                consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING)
                                 for p in meta.partitions])
                self.problem = None
                while not self._stop.is_set():
                    got = consumer.consume(1000, self.poll_s)
                    self.add([m.value() for m in got if m.error() is None])
            except KafkaException as err:
                self.problem = f"the alerts topic could not be read ({err})"
                self._stop.wait(5.0)
            finally:
                consumer.close()
