"""Waiting for a starting service (`serving.start_watch`), against small stand-in servers: it
waits as long as the service progresses (a new phase reported, or a busy CPU), and gives up with
one sentence naming the log when the service dies, reports a failure or sits idle too long."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from rich.console import Console

from serving import startup
from serving.start_watch import ProcessTree, ServiceFailed, wait_until_ready

# A stand-in server: runs `steps` (report a phase and sleep, keep the CPU busy, or exit), then
# reports its model loaded, as the service does, and answers GET /readyz with 200 on `port`.
SERVER = textwrap.dedent("""
    import json, os, sys, time
    from http.server import BaseHTTPRequestHandler, HTTPServer
    from serving import startup

    port, steps = int(sys.argv[1]), json.loads(sys.argv[2])
    for kind, value, seconds in steps:
        if kind == "phase":
            startup.report(value)
            time.sleep(seconds)
        elif kind == "busy":
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                pass
        elif kind == "exit":
            sys.exit(value)
    startup.report(startup.READY)

    class Ready(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/readyz" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    HTTPServer(("127.0.0.1", port), Ready).serve_forever()
""")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(tmp_path: Path, steps: list) -> tuple[subprocess.Popen, str, Path, Path]:
    port = _port()
    status, log = tmp_path / "status.json", tmp_path / "service.log"
    env = {**__import__("os").environ, startup.STATUS_ENV: str(status)}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port), json.dumps(steps)],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}", status, log


def wait(tmp_path, steps, patience_s, limit_s=120.0):
    proc, url, status, log = start(tmp_path, steps)
    out = io.StringIO()
    tree = ProcessTree(proc.pid)
    try:
        waited = wait_until_ready(proc, tree, url, status, log, Console(file=out, width=200),
                                  patience_s=patience_s, limit_s=limit_s)
        return waited, out.getvalue()
    finally:
        tree.stop(proc, 5)


def test_waits_past_its_patience_while_phases_keep_coming(tmp_path):
    # 8 s of start-up, a new phase every second: more than the 3 s without progress it allows
    steps = [["phase", f"step {i}", 1.0] for i in range(8)]
    waited, shown = wait(tmp_path, steps, patience_s=3.0)
    assert waited >= 8.0
    assert "step 0" in shown and "step 7" in shown  # a plain line per phase off a terminal


def test_a_busy_cpu_counts_as_progress(tmp_path):
    # compiling trees reports nothing for a long time but keeps a core busy
    waited, shown = wait(tmp_path, [["phase", "compiling", 0.0], ["busy", None, 6.0]],
                         patience_s=2.0)
    assert waited >= 6.0 and "compiling" in shown


def test_an_idle_service_is_given_up_after_its_patience(tmp_path):
    with pytest.raises(ServiceFailed) as caught:
        wait(tmp_path, [["phase", "stuck", 60.0]], patience_s=2.0)
    message = str(caught.value)
    assert "no progress for 2 s" in message and "stuck" in message
    assert str(tmp_path / "service.log") in message and "\n" not in message


def test_a_service_that_exits_is_reported_at_once_with_its_log(tmp_path):
    with pytest.raises(ServiceFailed) as caught:
        wait(tmp_path, [["phase", startup.OPENING_STORE, 0.5], ["exit", 3, 0]], patience_s=60)
    message = str(caught.value)
    assert "stopped while starting (exit code 3" in message
    assert startup.OPENING_STORE in message and str(tmp_path / "service.log") in message


def test_a_reported_failure_ends_the_wait(tmp_path):
    with pytest.raises(ServiceFailed) as caught:
        wait(tmp_path, [["phase", startup.FAILED, 60.0]], patience_s=60)
    assert "could not start (failed)" in str(caught.value)


def test_the_limit_holds_even_with_progress(tmp_path):
    with pytest.raises(ServiceFailed) as caught:
        wait(tmp_path, [["busy", None, 60.0]], patience_s=60, limit_s=3.0)
    assert "not ready after 3 s" in str(caught.value)


def test_stop_ends_workers_that_a_dead_server_left_behind(tmp_path):
    import os
    import signal
    import time

    import psutil

    # a "server" that starts a worker in a session of its own, as BentoML's arbiter does
    code = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
            "'import time; time.sleep(300)'], start_new_session=True); time.sleep(300)")
    proc = subprocess.Popen([sys.executable, "-c", code])
    tree = ProcessTree(proc.pid)
    deadline = time.monotonic() + 30
    while not tree.workers and time.monotonic() < deadline:
        tree.used()
        time.sleep(0.2)
    (worker,) = tree.workers
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert psutil.pid_exists(worker)
    tree.stop(proc, 1)
    assert not psutil.pid_exists(worker) or psutil.Process(worker).status() == "zombie"
