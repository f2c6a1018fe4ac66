"""The serve suite: /api/predict over loopback at fixed arrival rates up to saturation; /api/health and
one client as references."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .loadgen import constant_rate, http_request
from .registry import suite

RATES = (100, 250, 500, 750, 1000, 1250, 1500, 2000)  # requests/s offered, open loop
P99_GOAL_MS = 20.0  # a rate is sustained when every request is answered 200 and p99 is within this


@suite
def bench_serve(quick: bool = False) -> list[dict]:
    """/api/predict over loopback as a classroom uses it: a real `mnistlab serve --workers N` (one
    per core) and an open-loop generator offering 280x280 PNG drawings at fixed arrival rates
    (`loadgen.py`; 500/s is 50 pages each asking every 100 ms), rising until the server no longer
    keeps up; latency p50/p99 from when each request was due, 503s shed, errors. The highest rate
    sustained (every answer a 200, p99 <= 20 ms) is the saturation point. References in the same
    run: /api/health (the HTTP stack alone, wrk when installed) and one client sending back to back
    (what one person drawing sees)."""
    import os


    body = _drawing()
    workers = max(1, min(os.cpu_count() or 1, 4))
    seconds = 3 if quick else 10
    rows = []
    with _server(workers) as (host, port):
        request = http_request(host, port, "/api/predict", body, "image/png")
        constant_rate(host, port, request, rate=100, seconds=1)  # warm-up: connections, first calls
        sustained, failing = None, 0
        for rate in RATES:
            # 120 connections at most: the server allows 64 per client address and worker, and the
            # generator is one address
            r = constant_rate(host, port, request, rate=rate, seconds=seconds, max_connections=min(120, 64 * workers))
            ok = r["ok"] == r["sent"] and r["not_sent"] == 0 and r["p99_ms"] <= P99_GOAL_MS
            rows.append({"name": f"POST /api/predict, {rate}/s offered (open loop)", "workers": workers, **r,
                         "sustained": ok})
            sustained = rate if ok else sustained
            failing = 0 if ok else failing + 1
            if failing == 2 or (quick and failing):
                break
        base = f"http://{host}:{port}"
        health = (_wrk(base, "GET", "/api/health", None, clients=50, seconds=seconds, name="GET /api/health, 50 "
                       "connections (the HTTP stack alone, closed loop)") if shutil.which("wrk") else
                  asyncio.run(_load(base, "GET", "/api/health", None, clients=50, total=500 if quick else 3000,
                                    name="GET /api/health, 50 connections (closed loop)")))
        one = asyncio.run(_load(base, "POST", "/api/predict", body, clients=1, total=200 if quick else 1000,
                                name="POST /api/predict, one client back to back (a person drawing)"))
        rows += [health, one]
    rows.append({"name": "saturation: highest rate sustained (all 200, p99 <= 20 ms)", "workers": workers,
                 "sustained_per_s": sustained})
    return rows


def _drawing() -> bytes:
    import io

    from PIL import Image, ImageDraw

    img = Image.new("L", (280, 280), 0)
    ImageDraw.Draw(img).line([(70, 60), (210, 60), (120, 240)], fill=255, width=18)  # a drawn 7
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@contextlib.contextmanager
def _server(workers: int):
    """A `mnistlab serve` process on a free loopback port, up and answering; stopped afterwards."""
    import socket
    import subprocess

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "mnistlab", "serve", "--port", str(port), "--workers",
                               str(workers)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                if time.time() > deadline or server.poll() is not None:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.2)
        time.sleep(2 if workers > 1 else 0)  # the other workers finish loading their models
        yield "127.0.0.1", port
    finally:
        server.terminate()
        server.wait(20)


def _wrk(url: str, method: str, path: str, content, *, clients: int, seconds: int, name: str) -> dict:
    """Closed-loop load from wrk (Debian's package): `clients` connections, each sending back to back."""
    import re
    import subprocess

    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "request.lua"
        lines = [f'wrk.method = "{method}"']
        if content:
            (Path(tmp) / "body").write_bytes(content)
            lines += [f'local f = io.open("{Path(tmp) / "body"}", "rb")', "wrk.body = f:read('*all')", "f:close()",
                      'wrk.headers["Content-Type"] = "image/png"']
        script.write_text("\n".join(lines) + "\n")
        out = subprocess.run(["wrk", "-t1", f"-c{clients}", f"-d{seconds}s", "--latency", "-s", str(script),
                              url + path], capture_output=True, text=True, timeout=seconds + 60).stdout

    def ms(label: str) -> float:
        m = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    requests = int(re.search(r"(\d+) requests in", out).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non_2xx.group(1)) if non_2xx else 0) + (sum(map(int, socket_errors.groups())) if socket_errors else 0)
    return {"name": name, "clients": clients, "requests": requests, "errors": errors,
            "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50_ms": ms("50%"), "p99_ms": ms("99%"), "client": "wrk"}


async def _load(url: str, method: str, path: str, content, *, clients: int, total: int, name: str) -> dict:
    import httpx
    import numpy as np

    latencies, errors, statuses = [], 0, {}
    remaining = total
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Content-Type": "image/png"} if content else {}
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        for _ in range(20):  # warm-up
            await client.request(method, path, content=content, headers=headers)

        async def worker():
            nonlocal remaining, errors
            while remaining > 0:
                remaining -= 1
                t0 = time.perf_counter()
                try:
                    r = await client.request(method, path, content=content, headers=headers)
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                    if r.status_code != 200:
                        errors += 1
                except httpx.HTTPError:
                    errors += 1
                latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    return {"name": name, "clients": clients, "requests": len(lat), "errors": errors,
            "requests_per_s": len(lat) / wall, "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)), "max_ms": float(lat.max())}
