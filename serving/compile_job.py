"""Compile processes: start them, bound how many run, and never leave one behind.

`run_compile(model_text, workdir)` compiles one model text in a `serving.compile_worker` process
and returns the object's bytes once their SHA-256 matches what the process reports; it raises
`CompileFailed` with one plain sentence when the process fails, dies or is cancelled.

Every process started here is tracked until it ends: `stop_all()` (also run at interpreter exit)
kills those still running. A process whose parent dies without running exit handlers (SIGKILL,
a crash) sees its standard input close and exits by itself (`compile_worker.exit_with_parent`).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from serving import compile_worker

# a compile of the largest boosters seen takes seconds; far beyond that something is wrong
TIMEOUT_SECONDS = 600.0

_live: set[subprocess.Popen] = set()
_live_lock = threading.Lock()


class CompileFailed(RuntimeError):
    """One booster could not be compiled; the message says why in one sentence."""


def worker_command(model_file: Path, object_file: Path) -> list[str]:
    """The command that compiles `model_file` into `object_file` (tests replace it)."""
    return [sys.executable, "-m", "serving.compile_worker", str(model_file), str(object_file)]


def parallelism(jobs: int) -> int:
    """How many compile processes run at once: one per booster, at most one per core."""
    return max(1, min(jobs, os.cpu_count() or 1))


def live_pids() -> list[int]:
    """Process ids of the compile processes running now."""
    with _live_lock:
        return sorted(p.pid for p in _live)


def _end(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:  # unkillable for now; the kernel will still reap it
        pass


def stop(processes) -> None:
    """Kill and reap `processes` (those still running)."""
    for process in list(processes):
        _end(process)


def stop_all() -> None:
    """Kill every compile process this interpreter started that is still running."""
    with _live_lock:
        running = list(_live)
    stop(running)


atexit.register(stop_all)


def _exit_reason(code: int, stderr: str) -> str:
    if code == compile_worker.EXIT_ORPHANED:
        return "the compile was cancelled"
    if code < 0:
        try:
            what = f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            what = f"was killed by signal {-code}"
    else:
        what = f"exited with code {code}"
    last = next((line.strip() for line in reversed(stderr.splitlines()) if line.strip()), "")
    return f"the compile process {what}" + (f" ({last})" if last else "")


def run_compile(model_text: str, workdir: Path, cancelled: threading.Event | None = None,
                started: set[subprocess.Popen] | None = None) -> bytes:
    """Compile `model_text` in a process of its own and return the object file's bytes.

    `workdir` is a private folder for the model text, the object and the process's output;
    `cancelled` stops the wait (the process is killed); `started` collects the process so
    that a caller can kill it."""
    model_file, object_file = workdir / "model.txt", workdir / "model.o"
    model_file.write_text(model_text)
    object_file.unlink(missing_ok=True)
    if cancelled is not None and cancelled.is_set():
        raise CompileFailed("the compile was cancelled")
    with open(workdir / "stdout", "w+") as out, open(workdir / "stderr", "w+") as err:
        process = subprocess.Popen(worker_command(model_file, object_file),
                                   stdin=subprocess.PIPE, stdout=out, stderr=err, cwd=workdir,
                                   start_new_session=True)  # a terminal's Ctrl-C is the parent's
        with _live_lock:
            _live.add(process)
        if started is not None:
            started.add(process)
        try:  # stdin stays open as the process's lifeline until it ends
            stopped = _wait(process, cancelled)
        finally:
            _end(process)
            with _live_lock:
                _live.discard(process)
            process.stdin.close()
        out.seek(0)
        err.seek(0)
        output, errors = out.read(), err.read()
    if stopped:
        raise CompileFailed(stopped)
    if process.returncode != 0:
        raise CompileFailed(_exit_reason(process.returncode, errors))
    try:
        reported = json.loads(output.strip().splitlines()[-1])["sha256"]
    except (IndexError, ValueError, KeyError, TypeError):
        raise CompileFailed("the compile process reported no digest") from None
    data = object_file.read_bytes()
    if hashlib.sha256(data).hexdigest() != reported:
        raise CompileFailed("the object file changed after the compile process wrote it")
    return data


def _wait(process: subprocess.Popen, cancelled: threading.Event | None) -> str | None:
    """Wait for `process` to end; kill it when cancelled or past the timeout and say which."""
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while True:
        try:
            process.wait(timeout=0.1)
            return None
        except subprocess.TimeoutExpired:
            pass
        if cancelled is not None and cancelled.is_set():
            process.kill()
            return "the compile was cancelled"
        if time.monotonic() > deadline:
            process.kill()
            return f"the compile process ran longer than {TIMEOUT_SECONDS:.0f} s and was stopped"
