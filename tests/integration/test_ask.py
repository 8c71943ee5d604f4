"""`shipdelay ask` end to end, as `make demo` runs it: a real served process on a copy of the
`trained` world. The service is slowed down (SHIPDELAY_SERVE_START_DELAY_SECONDS) beyond the
patience `ask` is given, as compiling a large champion's trees is on a slow machine: `ask` waits
because the service keeps reporting progress. A service that dies while starting ends `ask` with
one sentence naming its log, and leaves no worker behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from serving.demo import log_paths
from shipdelay.settings import Settings
from tests.integration.test_service import champion_copy  # one way to copy the trained world
from tests.unit.test_cli_errors import ROOT, SHIPDELAY, assert_clean

pytest.importorskip("bentoml")

PATIENCE_S = 5  # what `ask` waits without progress; the slowed start reports progress longer


@pytest.fixture(scope="module")
def world(trained, tmp_path_factory) -> Settings:
    source, _, _ = trained
    return champion_copy(source, tmp_path_factory.mktemp("ask") / "data")


def ask(settings: Settings, delay_s: float, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items()
           if k not in ("FORCE_COLOR", "PY_COLORS", "GITHUB_ACTIONS", "CLICOLOR_FORCE")}
    env.update(SHIPDELAY_DATA_DIR=str(settings.data_dir),
               SHIPDELAY_ASK_PATIENCE_SECONDS=str(PATIENCE_S),
               SHIPDELAY_SERVE_START_DELAY_SECONDS=str(delay_s))
    return subprocess.Popen([*SHIPDELAY, "ask", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)


def test_ask_waits_for_a_start_slower_than_its_patience(world):
    proc = ask(world, 3 * PATIENCE_S, "--shipments", "3")
    output, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, output
    assert_clean(output)
    assert "slowed down on purpose" in output  # the phase was shown while it waited
    assert "the service was ready after" in output and "POST /predict" in output
    assert "model version" in output and "service stopped" in output
    log, status = log_paths(world)
    assert "ShipDelay" in log.read_text()  # the service's own output went to its log
    assert not status.exists()


def test_ask_reports_a_service_that_died_and_leaves_no_worker(world):
    _, status = log_paths(world)
    status.unlink(missing_ok=True)
    proc = ask(world, 600, "--shipments", "3")
    worker = None
    try:
        deadline = time.monotonic() + 600
        while worker is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            try:
                record = json.loads(status.read_text())
            except (OSError, ValueError):
                continue
            if record["phase"] == "slowed down on purpose":
                worker = psutil.Process(record["pid"])
        assert worker is not None, proc.communicate(timeout=60)[0]
        server = worker.parent()
        assert "bentoml" in " ".join(server.cmdline())
        os.kill(server.pid, signal.SIGKILL)  # the server process dies; its worker lives on
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, output
    assert_clean(output)
    last = output.strip().splitlines()[-1]
    log, _ = log_paths(world)
    assert "stopped while starting" in last and f"its log is {log}." in last
    assert Path(log).exists()
    assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE
