"""An HTTP load generator, run as its own process: N concurrent clients POST JSON bodies for a
bounded time (and at most a bounded number of requests), then it prints one JSON summary line.

    python benchmarks/loadgen.py --url http://127.0.0.1:3000/predict --bodies bodies.jsonl \
        --concurrency 32 --seconds 10 --max-requests 50000 --warmup-seconds 1

Each of the `--concurrency` workers is one keep-alive HTTP/1.1 connection that sends a request,
waits for the whole answer, and sends the next one: a closed loop, so the concurrency is exactly
the number of requests in flight. When an answer says `Connection: close` (the service closes a
connection after its share of answers, `SHIPDELAY_SERVE_KEEPALIVE_REQUESTS`) the worker opens a
new connection for its next request, as any HTTP/1.1 client does; the summary counts them. Bodies are taken in turn from `--bodies` (one JSON document
per line), so successive requests ask about different shipments. Requests in the warm-up window
are sent but not counted.

The client speaks HTTP/1.1 itself over asyncio streams (uvloop when installed): requests are
encoded once, answers are read by their Content-Length (or chunks). A general client (httpx)
spent ~2-4 ms of CPU per request, as much as the service's own framework path, so on two shared
cores it, not the server, set the pace of the no-op reference. This one spends a tenth of that.

The summary holds the count of answered requests by status, the latency percentiles of the
counted ones (time from sending to the last byte of the answer), the request rate over the
measured window, and this process's own CPU time per request (the client's share of the
machine, which matters when the client and the server share two cores).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np


class ConnectionClosed(Exception):
    """The server closed the connection (or sent something that is not HTTP/1.1)."""


def encode_requests(url: str, bodies: list[bytes], api_key: str | None) -> list[bytes]:
    """Each body as one complete HTTP/1.1 POST, keep-alive."""
    parts = urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    head = (f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Content-Type: application/json\r\nConnection: keep-alive\r\n")
    if api_key:
        head += f"X-API-Key: {api_key}\r\n"
    return [(head + f"Content-Length: {len(b)}\r\n\r\n").encode() + b for b in bodies]


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one whole answer; its status code, and whether the connection stays open (the
    server may close it after an answer with `Connection: close`, as HTTP/1.1 allows)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status_line = lines[0].split(" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith("HTTP/1."):
        raise ConnectionClosed(f"not an HTTP answer: {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return int(status_line[1]), headers.get("connection", "").lower() != "close"


async def _worker(host: str, port: int, requests: list[bytes], start: int, step: int,
                  t_measure: float, t_end: float, timeout: float, budget: list[int],
                  latencies: list[float], statuses: dict[int, int], errors: list[str],
                  opened: list[int]) -> None:
    i = start
    reader = writer = None
    while True:
        now = time.perf_counter()
        if now >= t_end or budget[0] <= 0:
            break
        request = requests[i % len(requests)]
        i += step
        t0 = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
                opened[0] += 1
            writer.write(request)
            status, keep_alive = await asyncio.wait_for(read_answer(reader), timeout)
            if not keep_alive:
                writer.close()
                reader = writer = None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                TimeoutError, ConnectionClosed, ValueError) as exc:
            status = 0
            if len(errors) < 5:
                errors.append(f"{type(exc).__name__}: {exc}")
            if writer is not None:
                writer.close()
            reader = writer = None
        t1 = time.perf_counter()
        if t0 >= t_measure:
            budget[0] -= 1
            latencies.append(t1 - t0)
            statuses[status] = statuses.get(status, 0) + 1
    if writer is not None:
        writer.close()


async def _run(args: argparse.Namespace) -> dict:
    bodies = [line.encode() for line in Path(args.bodies).read_text().splitlines() if line]
    if not bodies:
        raise SystemExit(f"no request bodies in {args.bodies}")
    parts = urlsplit(args.url)
    if parts.scheme != "http" or not parts.hostname:
        raise SystemExit(f"--url must be http://host:port/path, not {args.url}")
    requests = encode_requests(args.url, bodies, args.api_key)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors: list[str] = []
    budget = [args.max_requests]
    opened = [0]
    t_start = time.perf_counter()
    t_measure = t_start + args.warmup_seconds
    t_end = t_measure + args.seconds
    cpu0 = None

    async def start_cpu_clock():
        nonlocal cpu0
        await asyncio.sleep(max(0.0, t_measure - time.perf_counter()))
        cpu0 = time.process_time()

    clock = asyncio.create_task(start_cpu_clock())
    await asyncio.gather(*(
        _worker(parts.hostname, parts.port or 80, requests, k, args.concurrency, t_measure,
                t_end, args.timeout, budget, latencies, statuses, errors, opened)
        for k in range(args.concurrency)))
    await clock
    t_stop = time.perf_counter()
    cpu = time.process_time() - (cpu0 if cpu0 is not None else 0.0)
    lat = np.asarray(latencies) * 1e3
    window = max(1e-9, t_stop - t_measure)
    ok = statuses.get(200, 0)
    out = {"url": args.url, "concurrency": args.concurrency, "requests": len(lat),
           "statuses": {str(k): v for k, v in sorted(statuses.items())}, "ok": ok,
           "errors": errors, "connections_opened": opened[0], "window_s": round(window, 3),
           "rate_per_s": round(len(lat) / window, 2),
           "ok_rate_per_s": round(ok / window, 2),
           "client_cpu_ms_per_request": round(cpu * 1e3 / max(1, len(lat)), 4)}
    if len(lat):
        out.update({f"p{q}_ms": round(float(np.percentile(lat, q)), 3) for q in (50, 90, 99)})
        out.update({"mean_ms": round(float(lat.mean()), 3), "max_ms": round(float(lat.max()), 3)})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--url", required=True, help="full URL to POST to")
    p.add_argument("--bodies", required=True, help="file with one JSON request body per line")
    p.add_argument("--concurrency", type=int, default=1, help="requests in flight")
    p.add_argument("--seconds", type=float, default=10.0, help="length of the measured window")
    p.add_argument("--warmup-seconds", type=float, default=1.0, help="sent, not counted")
    p.add_argument("--max-requests", type=int, default=100_000,
                   help="stop after this many counted requests")
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, seconds")
    p.add_argument("--api-key", default=None, help="X-API-Key header value")
    args = p.parse_args(argv)
    if args.concurrency < 1:
        p.error("--concurrency must be at least 1")
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(_run(args))
    else:
        result = uvloop.run(_run(args))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
