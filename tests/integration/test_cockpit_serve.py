"""The cockpit as people run it: `shipdelay cockpit` serving on a free port (and refusing a
taken one in one sentence), and the alert inbox following a real Kafka topic (the embedded mock
cluster) as the stream publishes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
from confluent_kafka import Producer

from cockpit.alerts import AlertFollower
from serving.kafka import Topics
from serving.kafka_mock import MockCluster
from serving.stream_batch import AlertRule
from serving.stream_records import alert_records
from shipdelay.settings import Settings

CLI = Path(sys.executable).with_name("shipdelay")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(check, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_the_command_serves_and_refuses_a_taken_port(tmp_path):
    port = _free_port()
    env = {**os.environ, "SHIPDELAY_DATA_DIR": str(tmp_path / "data")}
    proc = subprocess.Popen([str(CLI), "cockpit", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def up():
            try:
                return httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200
            except httpx.HTTPError:
                return proc.poll() is not None and AssertionError(proc.stdout.read())
        assert _wait(up) is True
        layout = httpx.get(f"http://127.0.0.1:{port}/_dash-layout", timeout=5)
        assert layout.status_code == 200 and "risk" not in layout.text  # pages come by callback
        second = subprocess.run([str(CLI), "cockpit", "--port", str(port)], env=env,
                                capture_output=True, text=True, timeout=120, check=False)
        assert second.returncode != 0
        said = second.stdout + second.stderr
        assert f"cannot listen on 127.0.0.1:{port}" in said and "Traceback" not in said
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert f"the cockpit is at http://127.0.0.1:{port}/" in proc.stdout.read()


def _alert(shipment: str, p: float, when: str) -> pd.DataFrame:
    return pd.DataFrame({"alert_id": [f"{shipment}@{when}"], "shipment_id": [shipment],
                         "kind": ["threshold"], "p_late": [p], "previous_p_late": [0.3],
                         "risk_band": ["high"], "eta": [pd.Timestamp(when)],
                         "reasons": [["a customs hold"]], "as_of": [pd.Timestamp(when)],
                         "model_version": ["3"]})


def _publish(bootstrap: str, topic: str, frame: pd.DataFrame) -> None:
    values, keys = alert_records(frame, AlertRule(0.6, 0.2))
    producer = Producer({"bootstrap.servers": bootstrap})
    for value, key in zip(values, keys):
        producer.produce(topic, value=value, key=key)
    assert producer.flush(10) == 0


def test_the_inbox_follows_the_alerts_topic(tmp_path):
    with MockCluster() as bootstrap:
        settings = Settings(data_dir=tmp_path / "data", kafka_bootstrap=bootstrap)
        topic = Topics.from_settings(settings).alerts
        _publish(bootstrap, topic, _alert("SH1", 0.7, "2025-11-29T10:00:00Z"))
        follower = AlertFollower(settings, poll_s=0.2).start()
        try:
            first = _wait(lambda: follower.alerts())
            assert [a["shipment_id"] for a in first] == ["SH1"]
            # a newer alert and the first one again (a replayed batch): one of each, newest first
            _publish(bootstrap, topic, pd.concat([_alert("SH2", 0.9, "2025-11-29T11:00:00Z"),
                                                  _alert("SH1", 0.7, "2025-11-29T10:00:00Z")]))
            both = _wait(lambda: len(follower.alerts()) == 2 and follower.alerts())
            assert [a["shipment_id"] for a in both] == ["SH2", "SH1"]
            assert both[0]["reasons"] == ["a customs hold"] and follower.problem is None
        finally:
            follower.stop()
