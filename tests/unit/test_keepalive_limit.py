"""The keep-alive limit: after N answers on one connection the service asks the client to
reconnect, so that connections spread over the workers again."""

from __future__ import annotations

import asyncio

from serving.middleware import KeepAliveLimitMiddleware
from tests.conftest import assert_serve_option_refused


async def _app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"connection", b"keep-alive")]})
    await send({"type": "http.response.body", "body": b"{}"})


def _answer(mw: KeepAliveLimitMiddleware, client=("127.0.0.1", 5000), kind="http") -> dict:
    """The response start message `mw` sends for one request from `client`."""
    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": kind, "client": client, "path": "/predict", "method": "POST"}
    asyncio.run(mw(scope, receive, send))
    return dict(sent[0]["headers"]) if sent else {}


def test_every_nth_answer_on_a_connection_closes_it():
    mw = KeepAliveLimitMiddleware(_app, max_requests=3)
    first = [_answer(mw).get(b"connection") for _ in range(7)]
    assert first == [b"keep-alive", b"keep-alive", b"close"] * 2 + [b"keep-alive"]
    # another connection keeps its own count; a closing answer carries one Connection header
    other = [_answer(mw, ("127.0.0.1", 5001)) for _ in range(3)]
    assert [h.get(b"connection") for h in other] == [b"keep-alive", b"keep-alive", b"close"]
    assert _answer(mw).get(b"connection") == b"keep-alive"  # the first client's count went on


def test_no_limit_and_non_http_pass_through():
    never = KeepAliveLimitMiddleware(_app, max_requests=0)
    assert {_answer(never).get(b"connection") for _ in range(50)} == {b"keep-alive"}
    mw = KeepAliveLimitMiddleware(_app, max_requests=1)
    assert _answer(mw, client=None).get(b"connection") == b"keep-alive"  # unknown peer
    assert _answer(mw).get(b"connection") == b"close"  # 1: every answer closes


def test_the_counts_are_bounded():
    mw = KeepAliveLimitMiddleware(_app, max_requests=5)
    for port in range(mw.FORGET_AFTER + 10):
        _answer(mw, ("10.0.0.1", port))
    assert len(mw.answered) <= mw.FORGET_AFTER


def test_limit_from_the_environment(monkeypatch):
    from serving.options import KEEPALIVE_REQUESTS, ServeOptions

    monkeypatch.delenv("SHIPDELAY_SERVE_KEEPALIVE_REQUESTS", raising=False)
    assert ServeOptions.from_env().keepalive_requests == KEEPALIVE_REQUESTS
    assert KeepAliveLimitMiddleware(_app).max_requests == KEEPALIVE_REQUESTS
    monkeypatch.setenv("SHIPDELAY_SERVE_KEEPALIVE_REQUESTS", "0")
    assert ServeOptions.from_env().keepalive_requests == 0
    assert_serve_option_refused(monkeypatch, "SHIPDELAY_SERVE_KEEPALIVE_REQUESTS",
                                ("-1", "2.5", "many"))
