"""The scale profile's connections are encrypted and authenticated: Redis over TLS with AUTH
(a second redis-server started here with a certificate made here), PostgreSQL with
sslmode=require."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time

import pytest

from features.store import redis_connection_string, repo_config
from shipdelay.settings import Settings
from tests.conftest import services_required
from tests.net import free_port, self_signed

PASSWORD = "s3cret-for-tls"


@pytest.fixture
def tls_redis(tmp_path, monkeypatch):
    """(port, CA file) of a redis-server that speaks only TLS and requires a password."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    cert, key = self_signed(tmp_path, "redis")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", "0", "--tls-port", str(port), "--tls-cert-file",
                             str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file",
                             str(cert), "--tls-auth-clients", "no", "--requirepass", PASSWORD,
                             "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    context = ssl.create_default_context(cafile=str(cert))
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            said = proc.stdout.read()
            if "TLS" in said and "not" in said.lower() and "support" in said.lower():
                pytest.skip(f"redis-server was built without TLS: {said[-200:]}")
            raise AssertionError(f"redis-server with TLS did not start:\n{said[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as raw, \
                    context.wrap_socket(raw, server_hostname="127.0.0.1"):
                break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.1)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the CA every TLS client here trusts
    yield port
    proc.terminate()
    proc.wait(timeout=10)


def _client(settings: Settings):
    """The Redis client of the online store the settings configure, as Feast builds it."""
    from feast.infra.online_stores.helpers import get_online_store_from_config

    config = repo_config(settings).online_store
    return get_online_store_from_config(config)._get_client(config)


def test_the_online_store_talks_tls_with_auth(tls_redis, tmp_path):
    import redis

    url = f"rediss://:{PASSWORD}@127.0.0.1:{tls_redis}/0"
    settings = Settings(data_dir=tmp_path / "data", profile="scale", redis_url=url)
    assert "ssl=true" in redis_connection_string(url)
    client = _client(settings)
    assert client.ping()
    client.set("shipdelay:tls-check", b"ok")
    assert client.get("shipdelay:tls-check") == b"ok"
    assert PASSWORD not in str(settings.masked())
    # the same server refuses plaintext, and TLS without the password
    plain = Settings(data_dir=tmp_path / "p", profile="scale",
                     redis_url=f"redis://:{PASSWORD}@127.0.0.1:{tls_redis}/0")
    with pytest.raises(redis.exceptions.ConnectionError):
        _client(plain).ping()
    anonymous = Settings(data_dir=tmp_path / "a", profile="scale",
                         redis_url=f"rediss://127.0.0.1:{tls_redis}/0")
    with pytest.raises(redis.exceptions.AuthenticationError):
        _client(anonymous).ping()


def test_scale_defaults_ask_for_tls():
    s = Settings(profile="scale")
    assert s.redis_url.startswith("rediss://")
    assert s.postgres_url.endswith("?sslmode=require")


def test_postgresql_at_scale_requires_tls():
    """The local PostgreSQL has no TLS: the scale profile's sslmode refuses to talk to it in
    plaintext, while the same address without it connects."""
    import psycopg

    plain = "postgresql://postgres@127.0.0.1:5432/test"
    try:
        psycopg.connect(plain, connect_timeout=3).close()
    except psycopg.OperationalError:
        if services_required():
            pytest.fail("PostgreSQL at 127.0.0.1:5432 is required in CI and is not reachable")
        pytest.skip("no PostgreSQL at 127.0.0.1:5432")
    sslmode = Settings(profile="scale").postgres_url.split("?", 1)[1]
    with pytest.raises(psycopg.OperationalError, match="SSL"):
        psycopg.connect(f"{plain}?{sslmode}", connect_timeout=3)
