"""The embedded Kafka cluster: librdkafka's mock cluster, hosted by one long-lived process.

A client created with `test.mock.num.brokers` starts an in-process cluster that speaks the real
Kafka protocol on loopback; it lives exactly as long as that client. `host` keeps one such
client alive, writes the brokers' addresses to a file (and prints them) and waits for SIGTERM or
SIGINT, so consumers and producers in other processes can come, go and be killed against one
cluster. Topics are created on first use with 4 partitions. The mock keeps about 5 MB per
partition (older messages are dropped): fine for demos and tests, not for a backlog of millions.

`MockCluster` starts such a host as a child process for a test, a benchmark or the demo.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PARTITIONS = 4  # what the mock cluster gives an auto-created topic


def host(bootstrap_path: Path, brokers: int = 3, announce=print) -> None:
    """Run the mock cluster until SIGTERM/SIGINT; its bootstrap address goes to `bootstrap_path`."""
    from confluent_kafka import Producer

    anchor = Producer({"test.mock.num.brokers": brokers, "log_level": 2})
    meta = anchor.list_topics(timeout=10)
    address = ",".join(f"{b.host}:{b.port}" for b in sorted(meta.brokers.values(),
                                                            key=lambda b: b.id))
    bootstrap_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = bootstrap_path.with_suffix(".tmp")
    tmp.write_text(address + "\n")
    tmp.replace(bootstrap_path)
    announce(address)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    try:
        while not stop:
            anchor.poll(0.5)
    finally:
        if bootstrap_path.exists() and bootstrap_path.read_text().strip() == address:
            bootstrap_path.unlink()


class MockCluster:
    """A mock-cluster host in a child process: `with MockCluster() as bootstrap: ...`."""

    def __init__(self, bootstrap_path: Path | None = None, brokers: int = 3,
                 timeout_s: float = 60):
        self._tmp = None
        if bootstrap_path is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="kafka-mock-")
            bootstrap_path = Path(self._tmp.name) / "bootstrap"
        self.path = Path(bootstrap_path)
        self.brokers, self.timeout_s = brokers, timeout_s
        self.proc: subprocess.Popen | None = None
        self.bootstrap = ""

    def start(self) -> str:
        if self.path.exists():
            self.path.unlink()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "serving.kafka_mock", str(self.path), str(self.brokers)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            cwd=Path(__file__).resolve().parent.parent, env={**os.environ})
        deadline = time.monotonic() + self.timeout_s
        while not (self.path.exists() and self.path.read_text().strip()):
            if self.proc.poll() is not None:
                raise RuntimeError(f"the mock Kafka host exited with code {self.proc.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the mock Kafka host gave no address in {self.timeout_s} s")
            time.sleep(0.05)
        self.bootstrap = self.path.read_text().strip()
        return self.bootstrap

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":  # python -m serving.kafka_mock BOOTSTRAP_FILE [BROKERS]
    host(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 3)
