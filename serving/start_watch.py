"""Waiting for a prediction service that is starting: as long as it is alive and progressing.

Starting takes from seconds to minutes (importing BentoML, MLflow, Feast and LightGBM, opening
the feature store, loading the champion; more on a busy machine), so a fixed timeout is wrong on
some machine. `wait_until_ready` waits
while the service makes progress, shows what it is doing, and gives up with one sentence
(`ServiceFailed`, naming the service's log) when:

- the server process exits;
- the service reports that it failed or has no model (`serving.startup`'s status file);
- BentoML keeps restarting its worker (it does so forever when the service cannot be built);
- nothing progressed for `patience_s`: no new phase reported and the service's processes
  used less than a tenth of a core (loading keeps a core busy; a hung service sits idle);
- it is still not ready after `limit_s`, progress or not.

On a terminal the phase, the time so far and whether the service is working show in a status
line; elsewhere (a log file, CI) as a plain line at each new phase and every 30 s.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from rich.console import Console

from serving import startup
from shipdelay.cli_guard import Failure

PATIENCE_S = 300.0  # SHIPDELAY_ASK_PATIENCE_SECONDS: no progress for this long: give up
LIMIT_S = 3600.0  # SHIPDELAY_ASK_START_LIMIT_SECONDS: never wait longer than this
POLL_S = 0.5
BUSY_SHARE = 0.1  # busy: the service's processes used at least this share of one core
NOTE_EVERY_S = 30.0
QUIET_SHOWN_S = 5.0  # progress not seen for this long is shown (shorter gaps are polling's)
MAX_WORKER_STARTS = 4  # worker processes seen; more means BentoML keeps restarting it


class ServiceFailed(Failure):
    """The service did not become ready; the message names its log."""


def clock(seconds: float) -> str:
    """Seconds as m:ss."""
    seconds = int(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}"


@dataclass
class ProcessTree:
    """The server process and every process it started, remembered as they are seen: BentoML
    starts its workers in sessions of their own, so a server that dies leaves them behind,
    out of its process group; `stop` ends them all."""

    pid: int
    procs: dict[int, psutil.Process] = field(default_factory=dict)
    cpu: dict[int, float] = field(default_factory=dict)
    workers: set[int] = field(default_factory=set)  # the server's direct children

    def used(self) -> float:
        """CPU seconds the tree used since the previous call (the first: since it started)."""
        try:
            root = psutil.Process(self.pid)
            self.workers |= {c.pid for c in root.children()}
            found = [root, *root.children(recursive=True)]
        except psutil.Error:  # the server is gone: its remembered processes still count
            found = []
        for proc in found:
            self.procs.setdefault(proc.pid, proc)
        total = 0.0
        for pid, proc in list(self.procs.items()):
            try:
                t = proc.cpu_times()
            except psutil.Error:
                continue
            now = t.user + t.system
            total += max(0.0, now - self.cpu.get(pid, 0.0))
            self.cpu[pid] = now
        return total

    def stop(self, proc: subprocess.Popen, grace_s: float) -> None:
        """Ask the server to stop (SIGTERM), wait up to `grace_s`, then kill whatever of the
        tree still runs, orphaned workers included."""
        self.used()  # remember the processes started since the last look
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        left = [p for p in self.procs.values() if p.pid != proc.pid and p.is_running()]
        for p in left:  # psutil checks that the pid still names the same process
            with contextlib.suppress(psutil.Error):
                p.terminate()
        _, alive = psutil.wait_procs(left, timeout=5)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _ready(url: str) -> int | None:
    """The status code of GET /readyz, or None when nothing answered."""
    try:
        return httpx.get(f"{url}/readyz", timeout=1.0).status_code
    except httpx.HTTPError:
        return None


def _phase(status: dict | None) -> str:
    """The status as words: "loading the champion model and compiling ...", "model loaded
    version 3" reads "model loaded (version 3)"."""
    if status is None:
        return "starting the server"
    detail = status.get("detail") or ""
    if not detail:
        return status["phase"]
    return f"{status['phase']} {detail}" if detail.startswith("and ") else \
        f"{status['phase']} ({detail})"


def wait_until_ready(proc: subprocess.Popen, tree: ProcessTree, url: str, status_file: Path,
                     log_file: Path, console: Console, patience_s: float = PATIENCE_S,
                     limit_s: float = LIMIT_S) -> float:
    """Wait until `url`/readyz answers 200; returns the seconds waited. Raises ServiceFailed
    (see the module's docstring). `tree` is `proc`'s ProcessTree."""
    started = last_progress = last_measure = time.monotonic()
    cpu, last_status, last_note, answer = tree, None, None, None
    plain = not console.is_terminal
    with console.status(f"starting the prediction service (log: {log_file})") as line:
        while True:
            now = time.monotonic()
            status = startup.read(status_file)
            phase = _phase(status)
            if proc.poll() is not None:
                raise ServiceFailed(f"The prediction service stopped while starting (exit code "
                                    f"{proc.returncode}, last step: {phase}); its log is "
                                    f"{log_file}.")
            if status is not None and status["phase"] in startup.ENDED:
                raise ServiceFailed(f"The prediction service could not start ({phase}); its "
                                    f"log is {log_file}.")
            if len(cpu.workers) > MAX_WORKER_STARTS:
                raise ServiceFailed(f"The prediction service keeps restarting its worker "
                                    f"({len(cpu.workers)} starts, last step: {phase}); its log "
                                    f"is {log_file}.")
            if status is None or status["phase"] == startup.READY:
                answer = _ready(url)
                if answer == 200:
                    return now - started
            busy = cpu.used() >= BUSY_SHARE * (now - last_measure)
            last_measure = now
            if busy or status != last_status:
                last_progress = now
            if now - last_progress > patience_s:
                why = f", /readyz answered {answer}" if answer else ""
                raise ServiceFailed(f"The prediction service made no progress for "
                                    f"{patience_s:.0f} s (last step: {phase}{why}); its log is "
                                    f"{log_file} (SHIPDELAY_ASK_PATIENCE_SECONDS waits longer).")
            if now - started > limit_s:
                raise ServiceFailed(f"The prediction service was not ready after {limit_s:.0f} s "
                                    f"(last step: {phase}); its log is {log_file} "
                                    "(SHIPDELAY_ASK_START_LIMIT_SECONDS waits longer).")
            quiet = now - last_progress
            state = "working" if quiet < QUIET_SHOWN_S else f"no progress for {clock(quiet)}"
            text = f"prediction service: {phase} ({clock(now - started)}, {state})"
            if plain:  # a line per phase (not per detail: a slow one counts its seconds)
                step = None if status is None else status["phase"]
                if last_note is None or step != last_note[1] or now - last_note[0] >= NOTE_EVERY_S:
                    console.print(text, markup=False, highlight=False, soft_wrap=True)
                    last_note = (now, step)
            else:
                line.update(text)
            last_status = status
            time.sleep(POLL_S)
