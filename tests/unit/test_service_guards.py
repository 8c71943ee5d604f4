"""The prediction service's guards without a server: requests in flight per client, the body
timeout, numbers past a float's range, the documented error answers, the Redis client's timeouts
and password, the TLS 1.2 cipher list and how `shipdelay serve` and `shipdelay config` show them."""

from __future__ import annotations

import asyncio
import json
import ssl

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from features.schema import CATEGORICAL, TEXT_FEATURES, model_feature_names
from serving.api import REFUSALS, PredictFeaturesRequest, PredictRequest, row_problems
from serving.middleware import ClientLimitMiddleware, RequestLimitsMiddleware
from shipdelay.settings import SSL_CIPHERS, Settings

NEW_SETTINGS = ("redis_connect_timeout_s", "redis_read_timeout_s", "redis_retries",
                "serve_ssl_ciphers", "serve_client_concurrency", "serve_body_timeout_s")


def _scope(host: str = "10.1.1.1", path: str = "/predict", method: str = "POST") -> dict:
    return {"type": "http", "client": (host, 40_000), "path": path, "method": method,
            "headers": [(b"content-type", b"application/json")]}


class Recorder:
    """An ASGI `send` that keeps the status and body of the answer."""

    def __init__(self):
        self.status, self.body = None, b""

    async def __call__(self, message):
        if message["type"] == "http.response.start":
            self.status = message["status"]
        else:
            self.body += message.get("body", b"")


async def _ok(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


# ------------------------------------------------------------------- requests in flight per client
def test_a_client_over_its_limit_is_refused_while_others_are_served():
    async def scenario():
        release = asyncio.Event()

        async def slow(scope, receive, send):
            await release.wait()
            await _ok(scope, receive, send)

        mw = ClientLimitMiddleware(slow, max_in_flight=3)
        held = [asyncio.create_task(mw(_scope(), None, Recorder())) for _ in range(3)]
        await asyncio.sleep(0)
        over, other, probe = Recorder(), Recorder(), Recorder()
        await mw(_scope(), None, over)  # the 4th from the same address: at once
        other_task = asyncio.create_task(mw(_scope("10.2.2.2"), None, other))
        probe_task = asyncio.create_task(mw(_scope(path="/readyz", method="GET"), None, probe))
        await asyncio.sleep(0)
        in_flight = dict(mw.in_flight)
        release.set()
        await asyncio.gather(*held, other_task, probe_task)
        return over, other, probe, in_flight, mw.in_flight

    over, other, probe, during, after = asyncio.run(scenario())
    assert over.status == 429 and "more than 3 requests in flight" in json.loads(over.body)["error"]
    assert other.status == 200 and probe.status == 200  # another client; the probes are exempt
    assert during == {"10.1.1.1": 3, "10.2.2.2": 1}
    assert after == {}  # nothing kept once answered


def test_client_limit_zero_is_no_limit_and_comes_from_the_settings(monkeypatch):
    from shipdelay.settings import get_settings

    never = ClientLimitMiddleware(_ok, max_in_flight=0)
    sent = Recorder()
    asyncio.run(never(_scope(), None, sent))
    assert sent.status == 200 and never.in_flight == {}
    monkeypatch.setenv("SHIPDELAY_SERVE_CLIENT_CONCURRENCY", "7")
    get_settings.cache_clear()
    try:
        assert ClientLimitMiddleware(_ok).max_in_flight == 7
    finally:
        get_settings.cache_clear()


# ------------------------------------------------------------------------------- body timeout
def test_a_body_that_never_finishes_is_answered_408():
    called = []

    async def app(scope, receive, send):
        called.append(True)
        await _ok(scope, receive, send)

    async def trickle():
        if not hasattr(trickle, "sent"):
            trickle.sent = True
            return {"type": "http.request", "body": b'{"shipment_ids": [', "more_body": True}
        await asyncio.Event().wait()  # the rest never comes

    mw = RequestLimitsMiddleware(app, max_bytes=1000, body_timeout_s=0.05)
    sent = Recorder()
    asyncio.run(mw(_scope(), trickle, sent))
    assert sent.status == 408 and "not received within 0.05 s" in json.loads(sent.body)["error"]
    assert not called


def test_a_whole_body_is_handed_on_within_the_timeout():
    seen = []

    async def app(scope, receive, send):
        seen.append(await receive())
        await _ok(scope, receive, send)

    parts = iter([{"type": "http.request", "body": b'{"shipment_ids"', "more_body": True},
                  {"type": "http.request", "body": b': ["a"]}', "more_body": False}])

    async def receive():
        return next(parts)

    sent = Recorder()
    asyncio.run(RequestLimitsMiddleware(app, max_bytes=1000, body_timeout_s=5)(
        _scope(), receive, sent))
    assert sent.status == 200 and seen[0]["body"] == b'{"shipment_ids": ["a"]}'


# ------------------------------------------------------------------ numbers past a float's range
def _row(**overrides) -> dict:
    return {**{f: ("truck" if f in {*CATEGORICAL, *TEXT_FEATURES} else 1.0) for f in model_feature_names()},
            **overrides}


def test_an_integer_past_a_floats_range_names_the_feature():
    assert row_problems(_row(slip_h=10**309)) == \
        ["slip_h must be a finite number (at most ~1.8e308) or null"]
    assert row_problems(_row(slip_h=10**30)) == []  # big, but a float holds it
    for number in ("1" + "0" * 309, "1e309", "-1e309"):
        body = json.dumps({"rows": [_row()]}).replace('"slip_h": 1.0', f'"slip_h": {number}')
        with pytest.raises(ValidationError, match=r"rows\[0\]: slip_h must be a finite number"):
            PredictFeaturesRequest.model_validate_json(body)


# ---------------------------------------------------------------- the documented error answers
def test_the_document_states_the_400_body_bentoml_sends_and_the_refusals():
    """`fix_document` on BentoML's own document: a 400 body made as BentoML makes it (pydantic's
    errors without context or input) validates against the documented schema; BentoML's own
    schema (detail: string) did not."""
    import bentoml
    from _bentoml_sdk.service.openapi import generate_spec
    from jsonschema import Draft202012Validator

    from serving.openapi_doc import fix_document

    @bentoml.service
    class Tiny:
        @bentoml.api(route="/predict", input_spec=PredictRequest)
        def predict(self, shipment_ids: list[str]) -> list[str]:
            return shipment_ids

    original = generate_spec(Tiny).asdict()
    fixed = fix_document(json.loads(json.dumps(original)), ["/predict"])
    with pytest.raises(ValidationError) as info:
        PredictRequest.model_validate_json('{"shipment_ids": [], "as_of": 1}')
    body = {"error": f"{info.value.error_count()} validation error for PredictRequest",
            "detail": info.value.errors(include_context=False, include_input=False)}
    body = json.loads(json.dumps(body))

    def schema(doc, status):
        answer = doc["paths"]["/predict"]["post"]["responses"].get(str(status)) or \
            doc["paths"]["/predict"]["post"]["responses"].get(status)
        return {**answer["content"]["application/json"]["schema"],
                "components": doc["components"]}

    assert not list(Draft202012Validator(schema(fixed, 400)).iter_errors(body))
    assert list(Draft202012Validator(schema(original, 400)).iter_errors(body))  # the old lie
    for status in REFUSALS:
        assert not list(Draft202012Validator(schema(fixed, status)).iter_errors(
            {"error": "refused"}))
    assert list(Draft202012Validator(schema(fixed, 429)).iter_errors({"detail": "x"}))


# ------------------------------------------------------------------- the Redis client, settings
def test_redis_client_has_short_explicit_timeouts_and_any_password(tmp_path):
    from urllib.parse import quote

    from features.store import redis_client, repo_config

    password = 'a,b%c=1%25"@/:'
    settings = Settings(data_dir=tmp_path / "d", online_store="redis",
                        redis_url=f"redis://reader:{quote(password, safe='')}@10.0.0.9:6390/5",
                        redis_read_timeout_s=2.5, redis_retries=2)
    config = repo_config(settings).online_store
    client = redis_client(config)  # no connection is made here
    kwargs = client.get_connection_kwargs()
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("10.0.0.9", 6390, 5)
    assert (kwargs["username"], kwargs["password"]) == ("reader", password)
    assert kwargs["socket_connect_timeout"] == 0.5 and kwargs["socket_timeout"] == 2.5
    assert client.get_retry().get_retries() == 2
    assert password not in config.connection_string and "reader" not in config.connection_string


@pytest.mark.parametrize("field, bad", [("redis_connect_timeout_s", 0), ("redis_retries", -1),
                                        ("serve_client_concurrency", -1),
                                        ("serve_body_timeout_s", 0)])
def test_bad_guard_settings_are_refused_naming_them(field, bad):
    with pytest.raises(ValidationError, match=field):
        Settings(**{field: bad})


def test_config_shows_every_guard_setting(data_dir):
    from shipdelay.cli import app

    result = CliRunner().invoke(app, ["config"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in NEW_SETTINGS:
        assert name in result.output, name
    assert SSL_CIPHERS in result.output


# --------------------------------------------------------------------------- TLS 1.2 ciphers
def test_default_ciphers_are_forward_secret_aead_only():
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_ciphers(SSL_CIPHERS)
    tls12 = [c for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12 and all(c["aead"] and c["kea"] == "kx-ecdhe" for c in tls12), tls12


def test_serve_command_passes_the_ciphers_only_with_tls(tmp_path):
    from serving.serve import serve_command

    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("x")
    key.write_text("x")
    settings = Settings(data_dir=tmp_path / "d", serve_ssl_ciphers="ECDHE+AESGCM")
    argv, _ = serve_command(settings, ssl_certfile=cert, ssl_keyfile=key)
    assert argv[argv.index("--ssl-ciphers") + 1] == "ECDHE+AESGCM"
    argv, _ = serve_command(settings, ssl_certfile=cert, ssl_keyfile=key,
                            ssl_ciphers="ECDHE-ECDSA-CHACHA20-POLY1305")
    assert argv[argv.index("--ssl-ciphers") + 1] == "ECDHE-ECDSA-CHACHA20-POLY1305"
    assert "--ssl-ciphers" not in serve_command(settings)[0]  # no TLS, no cipher list
    with pytest.raises(ValueError, match="ssl_ciphers 'NOTHING-AT-ALL' selects no cipher"):
        serve_command(settings, ssl_certfile=cert, ssl_keyfile=key, ssl_ciphers="NOTHING-AT-ALL")
    with pytest.raises(ValueError, match="ssl_ciphers needs TLS"):
        serve_command(settings, ssl_ciphers="ECDHE+AESGCM")


def test_serve_refuses_a_cipher_list_naming_the_option(data_dir, tmp_path):
    from shipdelay.cli import app

    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("x")
    key.write_text("x")
    for args in (["--ssl-ciphers", "NOTHING-AT-ALL", "--ssl-certfile", str(cert),
                  "--ssl-keyfile", str(key)], ["--ssl-ciphers", "ECDHE+AESGCM"]):
        result = CliRunner().invoke(app, ["serve", *args], env={"COLUMNS": "200"})
        assert result.exit_code == 2, result.output
        assert "--ssl-ciphers" in result.output
