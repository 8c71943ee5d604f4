"""`shipdelay stream-demo`: the stream scorer at work on the simulated world's newest events.

In a scratch copy of the data directory (the original is never changed) the feature store is
rewound to just before the newest N tracking events; the embedded Kafka cluster starts in its own
process, `shipdelay stream` in another; the N events are replayed to it; then a table shows, for
a few in-flight shipments, P(late) before the events and after each risk update the stream
published, next to the alerts. Everything is stopped at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from features.online_direct import model_vectors, open_direct
from serving.kafka import Topics, read_all
from serving.kafka_mock import MockCluster
from serving.replay import lake_events, replay
from serving.stream_setup import rewind, workspace
from shipdelay.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 240
REPLAY_SECONDS = 20.0  # the replay is spread over this long


def _read(settings: Settings, topic: str) -> list[dict]:
    return read_all(settings, topic, on_message=lambda m: json.loads(m.value()))


def _risk_at_cut(settings: Settings, ids: list[str], cut: pd.Timestamp) -> pd.Series:
    from serving.stream import _champion

    store = open_direct(settings)
    try:
        profile = store.read("shipment_profile", ids)
        progress = store.read("shipment_progress", ids)
        vectors = model_vectors(store, profile, progress, cut)
        return pd.Series(_champion(settings).scorer.score(vectors, reasons=False)["p_late"]
                         .to_numpy(), index=ids)
    finally:
        store.close()


def _pick(events: pd.DataFrame, n: int) -> list[str]:
    """Shipments with the most events in the replay that are not delivered before it."""
    counts = events.groupby("shipment_id")["event_id"].count()
    delivered_first = events[events["event_type"] == "delivered"].groupby("shipment_id").size()
    busy = counts.drop(delivered_first.index[delivered_first > 0], errors="ignore")
    return busy.sort_values(ascending=False).head(n).index.astype(str).tolist()


def stream_demo(settings: Settings, n_events: int = 20_000, n_shipments: int = 8,
                console: Console | None = None) -> None:
    console = console or Console()
    events = lake_events(settings)
    tail = events.tail(n_events)
    cut = tail["ingested_at"].iloc[0]
    with tempfile.TemporaryDirectory(prefix="stream-demo-") as tmp:
        with console.status(f"rewinding a copy of the feature store to {cut:%Y-%m-%d %H:%M}"):
            ws = workspace(settings, Path(tmp) / "data")
            rewind(ws, cut)
            shown = _pick(tail, n_shipments)
            before = _risk_at_cut(ws, shown, cut)
        with MockCluster(Path(tmp) / "data" / "kafka" / "bootstrap") as bootstrap:
            live = ws.model_copy(update={"kafka_bootstrap": bootstrap})
            env = {**os.environ, "SHIPDELAY_DATA_DIR": str(ws.data_dir),
                   "SHIPDELAY_ENCRYPTION_KEY_FILE": str(settings.key_file),  # its lake's keys
                   "SHIPDELAY_KAFKA_BOOTSTRAP": bootstrap, "PYTHONWARNINGS": "ignore"}
            log = Path(tmp) / "stream.log"
            with open(log, "wb") as out:
                proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "shipdelay"), "stream",
                                         "--idle-exit", "4"], env=env, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            try:
                with console.status("starting the stream scorer (consumer group join)"):
                    deadline = time.monotonic() + START_TIMEOUT_S
                    while "partitions assigned" not in log.read_text():
                        if proc.poll() is not None or time.monotonic() > deadline:
                            raise RuntimeError("the stream did not start:\n"
                                               + log.read_text()[-2000:])
                        time.sleep(0.2)
                rate = max(len(tail) / REPLAY_SECONDS, 200.0)  # many micro-batches to watch
                with console.status(f"replaying {len(tail):,} events at {rate:,.0f}/s"):
                    report = replay(live, events=tail, rate=rate)
                with console.status("scoring"):
                    proc.wait(timeout=600)
            finally:
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait(timeout=30)
            topics = Topics.from_settings(live)
            updates = pd.DataFrame(_read(live, topics.risk))
            alerts = pd.DataFrame(_read(live, topics.alerts))
            dead = _read(live, topics.dead_letters)
    _show(console, cut, shown, before, updates, alerts, dead, report)


def _show(console, cut, shown, before, updates, alerts, dead, report) -> None:
    table = Table("shipment", f"P(late) at {cut:%m-%d %H:%M}", "after each risk update",
                  "now", "last scan", "alerts",
                  title=f"{report.events:,} tracking events replayed through `shipdelay stream`")
    for sid in shown:
        mine = updates[updates["shipment_id"] == sid] if len(updates) else updates
        path = ["delivered" if pd.isna(p) else f"{p:.0%}" for p in mine.get("p_late", [])]
        now = mine.iloc[-1] if len(mine) else None
        n_alerts = int((alerts["shipment_id"] == sid).sum()) if len(alerts) else 0
        table.add_row(sid, f"{before[sid]:.0%}", " -> ".join(path[-8:]) or "-",
                      "-" if now is None else ("delivered" if now["delivered"] else
                                               f"{now['p_late']:.0%} {now['risk_band']}"),
                      "-" if now is None else f"{now['last_event_type']} @ {now['current_hub']}",
                      str(n_alerts))
    console.print(table)
    if len(alerts):
        top = alerts.drop_duplicates("alert_id").tail(5)
        box = Table("shipment", "alert", "P(late)", "why", title="latest alerts")
        for a in top.itertuples():
            was = "-" if pd.isna(a.previous_p_late) else f"{a.previous_p_late:.0%}"
            box.add_row(a.shipment_id, a.kind, f"{was} -> {a.p_late:.0%}",
                        "\n".join(a.reasons or []))
        console.print(box)
    reasons = pd.Series([d["reason"] for d in dead]).value_counts() if dead else pd.Series([])
    console.print(f"{len(updates):,} risk updates, {len(alerts):,} alerts, {len(dead):,} dead "
                  f"letters{': ' + ', '.join(f'{k} {v}' for k, v in reasons.items()) if dead else ''}"
                  f"; replay {report.rate:,.0f} events/s; Kafka and the stream stopped")
