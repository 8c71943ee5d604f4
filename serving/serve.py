"""Starting the prediction service in the foreground: `shipdelay serve` calls `serve`.

The service runs as `python -m bentoml serve serving.service:ShipDelay` in a child process,
because BentoML's server (an arbiter with worker processes) wants a process of its own. The
child gets `settings` as `SHIPDELAY_*` environment variables, which is how the service (and each
worker) reads them; `serve_command` returns that command line and environment, so tests start
the service exactly as the CLI does.

Over TLS the server offers `settings.serve_ssl_ciphers` to TLS 1.2 clients (by default only
forward-secret AEAD suites: ECDHE with AES-GCM or ChaCha20-Poly1305); BentoML's own default
("TLSv1") would offer them only CBC suites with SHA-1. TLS 1.3 suites are always offered.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
from pathlib import Path

from pydantic import SecretStr

from shipdelay.settings import Settings

SERVICE = "serving.service:ShipDelay"
SERVICE_NAME = "ShipDelay"
ROOT = Path(__file__).resolve().parents[1]  # the folder holding the `serving` package
STOP_GRACE_SECONDS = 20


def settings_env(settings: Settings) -> dict[str, str]:
    """`settings` as the environment variables that rebuild them (None fields are left out)."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, dict):
            value = json.dumps(value)
        elif isinstance(value, Path):
            value = str(value.resolve())
        env[f"SHIPDELAY_{name.upper()}"] = str(value)
    return env


def check_ciphers(ciphers: str) -> str:
    """`ciphers` if OpenSSL selects at least one cipher from it, else ValueError."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(ciphers)
    except ssl.SSLError:
        raise ValueError(f"ssl_ciphers {ciphers!r} selects no cipher OpenSSL knows; give an "
                         "OpenSSL cipher list such as 'ECDHE+AESGCM:ECDHE+CHACHA20'") from None
    return ciphers


def serve_command(settings: Settings, host: str = "127.0.0.1", port: int = 3000,
                  ssl_certfile: str | Path | None = None, ssl_keyfile: str | Path | None = None,
                  workers: int = 1, *, refresh_seconds: float | None = None,
                  as_of: str | None = None,
                  ssl_ciphers: str | None = None) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that serve `settings` on host:port.

    TLS when both `ssl_certfile` and `ssl_keyfile` are given (PEM files), offering
    `ssl_ciphers` (default `settings.serve_ssl_ciphers`) to TLS 1.2 clients. `refresh_seconds`
    (how often the champion alias is checked) and `as_of` (a frozen service clock, for
    simulated worlds and replays) default to SHIPDELAY_MODEL_REFRESH_SECONDS and
    SHIPDELAY_SERVE_AS_OF from the environment."""
    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise ValueError("TLS needs both ssl_certfile and ssl_keyfile")
    if ssl_ciphers is not None and ssl_certfile is None:
        raise ValueError("ssl_ciphers needs TLS: give ssl_certfile and ssl_keyfile as well")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    argv = [sys.executable, "-m", "bentoml", "serve", SERVICE, "--working-dir", str(ROOT),
            "--host", host, "--port", str(int(port))]
    for flag, path in (("--ssl-certfile", ssl_certfile), ("--ssl-keyfile", ssl_keyfile)):
        if path is not None:
            if not Path(path).is_file():
                raise FileNotFoundError(f"{flag[2:]} {path} does not exist")
            argv += [flag, str(Path(path).resolve())]
    if ssl_certfile is not None:
        argv += ["--ssl-ciphers", check_ciphers(ssl_ciphers or settings.serve_ssl_ciphers)]
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("SHIPDELAY_") and k[10:].lower() in Settings.model_fields)}
    env.update(settings_env(settings))
    env.update({
        "BENTOML_CONFIG_OVERRIDES": json.dumps({"services": {SERVICE_NAME: {"workers": workers}}}),
        "BENTOML_DO_NOT_TRACK": "True",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "PYTHONUNBUFFERED": "1",
    })
    if refresh_seconds is not None:
        env["SHIPDELAY_MODEL_REFRESH_SECONDS"] = str(float(refresh_seconds))
    if as_of is not None:
        env["SHIPDELAY_SERVE_AS_OF"] = str(as_of)
    return argv, env


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 3000,
          ssl_certfile: str | Path | None = None, ssl_keyfile: str | Path | None = None,
          workers: int = 1, *, refresh_seconds: float | None = None,
          as_of: str | None = None, ssl_ciphers: str | None = None) -> int:
    """Serve in the foreground until interrupted; returns the server's exit code.

    Ctrl-C (SIGINT) and SIGTERM stop the server gracefully; it is killed if it has not stopped
    STOP_GRACE_SECONDS later."""
    argv, env = serve_command(settings, host, port, ssl_certfile, ssl_keyfile, workers,
                              refresh_seconds=refresh_seconds, as_of=as_of,
                              ssl_ciphers=ssl_ciphers)
    proc = subprocess.Popen(argv, env=env)

    def forward(signum, _frame):
        if proc.poll() is None:
            proc.send_signal(signum)

    try:
        previous = signal.signal(signal.SIGTERM, forward)
    except ValueError:  # not the main thread: leave signal handling alone
        previous = None
    try:
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:  # the terminal sent SIGINT to the child as well
                forward(signal.SIGINT, None)
                try:
                    return proc.wait(STOP_GRACE_SECONDS)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    return proc.wait()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
