"""`shipdelay ask`: start the service, ask it about a few in-flight shipments, print, stop.

What `make demo` ends with: the answers an operations dashboard would get, from a real served
process on 127.0.0.1, for shipments still moving at the simulated world's "now".
"""

from __future__ import annotations

import socket
import subprocess
import time

import httpx
import pandas as pd
from rich.console import Console
from rich.table import Table

from serving.options import ServeOptions
from serving.serve import serve_command
from shipdelay.lake import Lake
from shipdelay.settings import Settings

READY_TIMEOUT_S = 120


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


def ask(settings: Settings, n: int = 6, console: Console | None = None) -> list[dict]:
    console = console or Console()
    ids, now = in_flight(settings, n)
    port = _free_port()
    argv, env = serve_command(settings, port=port, as_of=now.isoformat())
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        with console.status(f"starting the service on {base}"):
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"the service exited with code {proc.returncode}")
                try:
                    if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the service was not ready within {READY_TIMEOUT_S} s")
                time.sleep(0.5)
        headers = {}
        if settings.api_key is not None:
            headers["X-API-Key"] = settings.api_key.get_secret_value()
        started = time.perf_counter()
        answer = httpx.post(f"{base}/predict", json={"shipment_ids": [*ids, "SH-NOT-A-SHIPMENT"]},
                            headers=headers, timeout=30)
        took_ms = (time.perf_counter() - started) * 1000
        answer.raise_for_status()
        items = answer.json()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    explained = ServeOptions.from_env().reasons_from  # the service's, from the same environment
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
