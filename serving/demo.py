"""`shipdelay ask`: start the service, ask it about a few in-flight shipments, print, stop.

What `make demo` ends with: the answers an operations dashboard would get, from a real served
process on 127.0.0.1, for shipments still moving at the simulated world's "now".

The service writes its output to `<data_dir>/logs/ask-service.log` and its start-up phase to a
status file beside it (`serving.startup`). `ask` waits while the service is alive and making
progress, showing what it is doing (`serving.start_watch`): a start takes from seconds to
minutes, depending on the machine and how busy it is (importing the libraries, opening the
feature store, loading the champion). It gives up after SHIPDELAY_ASK_PATIENCE_SECONDS (300)
without progress or SHIPDELAY_ASK_START_LIMIT_SECONDS (3600) in all, or at once when the service
dies, with one sentence naming the log.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pandas as pd
from rich.console import Console
from rich.table import Table

from serving import start_watch, startup
from serving.options import ServeOptions
from serving.serve import serve_command
from shipdelay.cli_guard import Failure
from shipdelay.lake import Lake
from shipdelay.settings import Settings

PATIENCE_ENV = "SHIPDELAY_ASK_PATIENCE_SECONDS"
LIMIT_ENV = "SHIPDELAY_ASK_START_LIMIT_SECONDS"
STOP_GRACE_S = 20


def in_flight(settings: Settings, n: int) -> tuple[list[str], pd.Timestamp]:
    """A few shipments booked but not delivered at the lake's latest ingestion time."""
    lake = Lake(settings.lake_dir)
    now = lake.read("tracking_events", columns=["ingested_at"])["ingested_at"].max()
    shipments = lake.read("shipments", columns=["shipment_id", "booked_at"])
    delivered = set(lake.read("outcomes", columns=["shipment_id"])["shipment_id"])
    moving = shipments[(shipments["booked_at"] <= now)
                       & ~shipments["shipment_id"].isin(delivered)]
    return moving.sort_values("booked_at")["shipment_id"].head(n).tolist(), now


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name) or ""
    try:
        value = float(raw) if raw else default
    except ValueError:
        value = -1.0
    if value <= 0:
        raise Failure(f"{name} must be a positive number of seconds, not {raw!r}.", exit_code=2)
    return value


def log_paths(settings: Settings) -> tuple[Path, Path]:
    """The service's log and its start-up status file, under the data folder."""
    folder = settings.data_dir.absolute() / "logs"
    return folder / "ask-service.log", folder / "ask-service.status.json"


def check(settings: Settings) -> ServeOptions:
    """What `ask` needs, checked before the service starts: the lake's tracking events, the
    feature store, a champion and valid SHIPDELAY_SERVE_* options (the service's)."""
    from shipdelay.preflight import need_lake, need_servable

    need_lake(settings, "tracking_events", "outcomes")
    need_servable(settings)
    try:
        return ServeOptions.from_env()
    except ValueError as err:
        raise Failure(str(err), exit_code=2) from None


def ask(settings: Settings, n: int = 6, console: Console | None = None) -> list[dict]:
    """Start the service, ask it about `n` in-flight shipments and an unknown id, print the
    answers as a table, stop it. Raises `Failure` (one sentence) when it cannot."""
    console = console or Console()
    options = check(settings)
    patience = _seconds(PATIENCE_ENV, start_watch.PATIENCE_S)
    limit = _seconds(LIMIT_ENV, start_watch.LIMIT_S)
    ids, now = in_flight(settings, n)
    port = _free_port()
    argv, env = serve_command(settings, port=port, as_of=now.isoformat())
    log_file, status_file = log_paths(settings)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    status_file.unlink(missing_ok=True)
    env[startup.STATUS_ENV] = str(status_file)
    console.print(f"starting the prediction service; its log: {log_file}", markup=False,
                  highlight=False, soft_wrap=True)
    with open(log_file, "wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    tree = start_watch.ProcessTree(proc.pid)
    try:
        waited = start_watch.wait_until_ready(proc, tree, base, status_file, log_file, console,
                                              patience_s=patience, limit_s=limit)
        console.print(f"the service was ready after {start_watch.clock(waited)}",
                      highlight=False)
        headers = {}
        if settings.api_key is not None:
            headers["X-API-Key"] = settings.api_key.get_secret_value()
        started = time.perf_counter()
        try:
            answer = httpx.post(f"{base}/predict",
                                json={"shipment_ids": [*ids, "SH-NOT-A-SHIPMENT"]},
                                headers=headers, timeout=30)
            answer.raise_for_status()
        except httpx.HTTPError as err:
            raise Failure(f"The prediction service did not answer /predict ({err}); its log "
                          f"is {log_file}.") from None
        took_ms = (time.perf_counter() - started) * 1000
        items = answer.json()
    finally:
        tree.stop(proc, STOP_GRACE_S)
        status_file.unlink(missing_ok=True)
    explained = options.reasons_from  # the service's, from the same environment
    table = Table("shipment", "P(late)", "band", "delay h\nP50 / P90", "delivery (UTC)\nP50, P10..P90",
                  "why", title=f"POST /predict at {now:%Y-%m-%d %H:%M} UTC ({took_ms:.0f} ms)")
    for item in items:
        if not item["ok"]:
            table.add_row(item["shipment_id"], "-", "-", "-", "-", f"[yellow]{item['error']}")
            continue
        table.add_row(item["shipment_id"], f"{item['p_late']:.0%}", item["risk_band"],
                      f"{item['delay_p50_h']:+.0f} / {item['delay_p90_h']:+.0f}",
                      f"{item['eta'][5:16]}\n{item['eta_p10'][5:10]}..{item['eta_p90'][5:10]}",
                      "\n".join(item["reasons"]) or f"[dim]explained from P(late) {explained:.0%}")
    console.print(table)
    console.print(f"model version {items[0].get('model_version')}; service stopped")
    return items
