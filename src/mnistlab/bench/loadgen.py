"""An open-loop HTTP load generator: requests arrive at a constant rate, whatever the server does.

A closed-loop client (wrk, or N clients each sending back to back) waits for each answer before
asking again, so a slow server is asked less, and its latency hides in the requests never sent
("coordinated omission"). Here request i is due at t0 + i / rate; it goes out on an idle kept-alive
connection (a new one is opened when all are busy, up to `max_connections`), and its latency is
counted from when it was due, not from when it went out, as wrk2 does. 50 people drawing, each page
asking every 100 ms, are 500 requests/s arriving this way.

One asyncio loop and a minimal HTTP/1.1 client (responses with Content-Length, as the server
sends): a few tens of microseconds of CPU per request, so the generator can share the machine.
"""

from __future__ import annotations

import asyncio
import collections
import time

import numpy as np


class _Connection(asyncio.Protocol):
    """One kept-alive connection carrying one request at a time."""

    def __init__(self, pool: _Pool):
        self.pool, self.transport, self.buffer = pool, None, bytearray()
        self.due = None  # when the request in flight was due (loop time); None when idle
        self.open = False

    def connection_made(self, transport):
        self.transport, self.open = transport, True

    def send(self, request: bytes, due: float) -> None:
        self.due = due
        self.buffer.clear()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.due is None:
            return
        head = bytes(self.buffer[:end]).lower()
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line.startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        if len(self.buffer) < end + 4 + length:
            return
        status = int(head[9:12])
        closing = b"connection: close" in head
        due, self.due = self.due, None
        self.pool.finished(self, status, due, closing)

    def connection_lost(self, exc) -> None:
        self.open = False
        if self.due is not None:
            due, self.due = self.due, None
            self.pool.failed(self, due)
        self.pool.lost(self)


class _Pool:
    def __init__(self, loop, host: str, port: int, max_connections: int):
        self.loop, self.host, self.port, self.max_connections = loop, host, port, max_connections
        self.idle: list[_Connection] = []
        self.count = 0  # connections open or opening
        self.latencies: list[float] = []  # seconds, from due to answered, of 2xx answers
        self.statuses: collections.Counter = collections.Counter()
        self.failures = 0  # connections refused or lost with a request in flight
        self.pending = 0

    def finished(self, conn: _Connection, status: int, due: float, closing: bool) -> None:
        self.pending -= 1
        self.statuses[status] += 1
        if 200 <= status < 300:
            self.latencies.append(self.loop.time() - due)
        if closing:
            conn.transport.close()
        else:
            self.idle.append(conn)

    def failed(self, conn: _Connection, due: float) -> None:
        self.pending -= 1
        self.failures += 1

    def lost(self, conn: _Connection) -> None:
        self.count -= 1
        if conn in self.idle:
            self.idle.remove(conn)

    async def send_new(self, request: bytes, due: float) -> None:
        """Open a connection and send on it (the request waits for the connect, counted in its latency)."""
        try:
            _, conn = await self.loop.create_connection(lambda: _Connection(self), self.host, self.port)
        except OSError:
            self.count -= 1
            self.pending -= 1
            self.failures += 1
            return
        conn.send(request, due)


async def _run(host: str, port: int, request: bytes, rate: float, seconds: float, max_connections: int,
               warm_connections: int, drain_s: float) -> dict:
    loop = asyncio.get_running_loop()
    pool = _Pool(loop, host, port, max_connections)
    for _ in range(warm_connections):  # the clients' pages are open before the measurement starts
        try:
            _, conn = await loop.create_connection(lambda: _Connection(pool), host, port)
        except OSError:
            break
        pool.count += 1
        pool.idle.append(conn)
    total = int(rate * seconds)
    t0 = loop.time() + 0.05
    sent = skipped = 0
    tasks = set()
    while sent + skipped < total:
        now = loop.time()
        while sent + skipped < total and t0 + (sent + skipped) / rate <= now:  # everything now due
            due = t0 + (sent + skipped) / rate
            if pool.idle:
                pool.pending += 1
                pool.idle.pop().send(request, due)
                sent += 1
            elif pool.count < max_connections:
                pool.count += 1
                pool.pending += 1
                task = loop.create_task(pool.send_new(request, due))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
            else:  # the generator itself is out of connections: the server is far behind
                skipped += 1
        if sent + skipped < total:
            await asyncio.sleep(max(0.0, t0 + (sent + skipped) / rate - loop.time()))
    end = loop.time() + drain_s
    while pool.pending > 0 and loop.time() < end:
        await asyncio.sleep(0.01)
    unanswered = pool.pending
    wall = loop.time() - t0
    for conn in list(pool.idle):
        conn.transport.close()
    await asyncio.sleep(0)
    lat = np.array(pool.latencies) * 1000
    ok = int(sum(n for s, n in pool.statuses.items() if 200 <= s < 300))
    shed = int(pool.statuses.get(503, 0))
    other = sum(pool.statuses.values()) - ok - shed
    pct = (lambda q: float(np.percentile(lat, q))) if lat.size else (lambda q: float("nan"))
    return {"target_per_s": rate, "seconds": seconds, "sent": sent, "ok": ok,
            "shed_503": shed, "errors": other + pool.failures + unanswered + skipped,
            "unanswered": unanswered, "not_sent": skipped, "connections_failed": pool.failures,
            "statuses": {str(k): v for k, v in sorted(pool.statuses.items())},
            "ok_per_s": ok / wall if wall > 0 else 0.0, "p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99),
            "p999_ms": pct(99.9), "max_ms": float(lat.max()) if lat.size else float("nan")}


def http_request(host: str, port: int, path: str, body: bytes, content_type: str) -> bytes:
    """A keep-alive HTTP/1.1 POST as bytes, sent as is for every request."""
    return (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n").encode() + body


def constant_rate(host: str, port: int, request: bytes, *, rate: float, seconds: float, max_connections: int = 512,
                  warm_connections: int = 50, drain_s: float = 5.0) -> dict:
    """Send `request` at `rate` per second for `seconds`; latency percentiles (ms, from when each
    request was due, 2xx answers only), answers by status, and what failed. `errors` counts
    everything that was neither a 2xx nor a 503: other statuses, lost connections, requests
    unanswered `drain_s` after the last was due, and requests the generator could not send."""
    if not rate > 0 or not seconds > 0:
        raise ValueError(f"rate and seconds must be positive (got {rate!r}, {seconds!r})")
    t0 = time.perf_counter()
    result = asyncio.run(_run(host, port, request, rate, seconds, max_connections, warm_connections, drain_s))
    result["generator_wall_s"] = time.perf_counter() - t0
    return result
