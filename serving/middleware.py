"""ASGI guards of the prediction service, in front of every route (including any added later).

- `ClientLimitMiddleware`: at most `settings.serve_client_concurrency` requests in flight per
  client address (429 beyond), so that one client cannot take every slot of the service's
  concurrency limit (64), e.g. with requests whose bodies never finish.
- `ApiKeyMiddleware`: `X-API-Key` must equal `settings.api_key` when one is set (constant-time
  comparison); every route but the probes and /metrics; 401 JSON otherwise.
- `RequestLimitsMiddleware`: JSON bodies only (415; pickle in particular is never parsed), at
  most `max_body_bytes` of them (413), received within `settings.serve_body_timeout_s` (408),
  checked before any parsing; it also counts the 4xx answers the API itself gives to invalid
  input.
Every refusal is a JSON `{"error": ...}` (the `RequestRefused` schema of `serving.api`) and is
counted in `shipdelay_rejected_requests_total` by reason.
"""

from __future__ import annotations

import asyncio
import hmac
import json

from serving.metrics import metrics
from serving.options import ServeOptions

OPEN_PATHS = frozenset({"/livez", "/healthz", "/readyz", "/metrics"})


async def _reply(send, status: int, error: str) -> None:
    body = json.dumps({"error": error}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _header(scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value
    return None


class ClientLimitMiddleware:
    """At most `max_in_flight` requests from one client address at a time; more are answered
    429 at once (the probes and /metrics are exempt). 0: no limit.

    Why: BentoML refuses (429) every request beyond 64 in flight in a worker, and a request
    counts from its headers on: one client holding 64 requests open (slow or never-finished
    bodies) locked every other client out until they timed out. Behind a proxy every client
    has the proxy's address: raise the limit there, or set 0."""

    def __init__(self, app, max_in_flight: int | None = None):
        from shipdelay.settings import get_settings

        self.app = app
        if max_in_flight is None:
            max_in_flight = get_settings().serve_client_concurrency
        self.max_in_flight = max_in_flight
        self.in_flight: dict[str, int] = {}  # only clients with a request open: bounded

    async def __call__(self, scope, receive, send):
        client = scope.get("client")
        if (not self.max_in_flight or scope["type"] != "http" or not client
                or scope["path"] in OPEN_PATHS):
            return await self.app(scope, receive, send)
        host = client[0]
        count = self.in_flight.get(host, 0)
        if count >= self.max_in_flight:
            metrics().rejected.labels("client_limit").inc()
            return await _reply(send, 429, f"more than {self.max_in_flight} requests in flight "
                                           "from this client: wait for earlier answers")
        self.in_flight[host] = count + 1
        try:
            return await self.app(scope, receive, send)
        finally:
            left = self.in_flight[host] - 1
            if left:
                self.in_flight[host] = left
            else:
                del self.in_flight[host]


class ApiKeyMiddleware:
    """Requires `X-API-Key` equal to `settings.api_key` (when set) on every route except the
    probes and /metrics; 401 JSON otherwise. The key is read once, when the app starts."""

    def __init__(self, app, api_key: str | None = None, open_paths=OPEN_PATHS):
        from shipdelay.settings import get_settings

        self.app = app
        if api_key is None:
            secret = get_settings().api_key
            api_key = secret.get_secret_value() if secret is not None else None
        self.key = api_key.encode() if api_key else None
        self.open_paths = open_paths

    async def __call__(self, scope, receive, send):
        if self.key is None or scope["type"] != "http" or scope["path"] in self.open_paths:
            return await self.app(scope, receive, send)
        supplied = _header(scope, b"x-api-key")
        if supplied is None or not hmac.compare_digest(supplied, self.key):
            metrics().rejected.labels("unauthorized").inc()
            return await _reply(send, 401, "missing or invalid X-API-Key header")
        return await self.app(scope, receive, send)


class RequestLimitsMiddleware:
    """JSON bodies only (415), at most `max_bytes` of them (413), the whole body received within
    `body_timeout_s` of the request's start (408), checked before any parsing; also counts the
    4xx answers the API itself gives to invalid input."""

    def __init__(self, app, max_bytes: int | None = None, body_timeout_s: float | None = None):
        from shipdelay.settings import get_settings

        self.app = app
        self.max_bytes = max_bytes or ServeOptions.from_env().max_body_bytes
        self.body_timeout_s = body_timeout_s or get_settings().serve_body_timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        media = (_header(scope, b"content-type") or b"application/json").split(b";")[0].strip()
        if media.lower() != b"application/json":
            metrics().rejected.labels("media_type").inc()
            return await _reply(send, 415, "Content-Type must be application/json")
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            metrics().rejected.labels("too_large").inc()
            return await _reply(send, 413, f"request body over {self.max_bytes} bytes")
        chunks, size = [], 0
        try:
            async with asyncio.timeout(self.body_timeout_s):
                while size <= self.max_bytes:  # read the whole (bounded) body, then hand it on
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            metrics().rejected.labels("body_timeout").inc()
            return await _reply(send, 408, "request body not received within "
                                           f"{self.body_timeout_s:g} s")
        if size > self.max_bytes:
            metrics().rejected.labels("too_large").inc()
            return await _reply(send, 413, f"request body over {self.max_bytes} bytes")
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def counting_send(message):
            if message["type"] == "http.response.start" and 400 <= message["status"] < 500:
                metrics().rejected.labels("invalid").inc()
            await send(message)

        return await self.app(scope, replay, counting_send)


class KeepAliveLimitMiddleware:
    """Closes a keep-alive connection after `max_requests` answers on it (`Connection: close` on
    the last one; the client opens a new one), as nginx's `keepalive_requests` does.

    Why: BentoML's workers share one listening socket, and whichever worker wakes first accepts
    every connection waiting: a burst of new connections (a dashboard, a load balancer or a
    batch client opening its pool) often lands wholly on one worker and stays there while the
    others idle. A reconnecting client is mostly taken by a worker with time to spare, so the
    connections spread again within a few hundred answers. A connection is known by the client's
    address and port; the counts are dropped now and then (a reused port starts afresh)."""

    FORGET_AFTER = 10_000  # connections remembered before the counts start over

    def __init__(self, app, max_requests: int | None = None):
        self.app = app
        if max_requests is None:
            max_requests = ServeOptions.from_env().keepalive_requests
        self.max_requests = max_requests
        self.answered: dict[tuple, int] = {}

    async def __call__(self, scope, receive, send):
        client = scope.get("client")
        if not self.max_requests or scope["type"] != "http" or client is None:
            return await self.app(scope, receive, send)
        key = tuple(client)
        count = self.answered.get(key, 0) + 1
        if count < self.max_requests:
            if len(self.answered) >= self.FORGET_AFTER:
                self.answered.clear()
            self.answered[key] = count
            return await self.app(scope, receive, send)
        self.answered.pop(key, None)

        async def closing_send(message):
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", ()) if h[0].lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        return await self.app(scope, receive, closing_send)
