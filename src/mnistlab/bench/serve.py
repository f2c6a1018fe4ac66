"""The serve suite: /api/predict over loopback under concurrent clients, with /api/health as the reference."""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

from . import suite


@suite
def bench_serve(quick: bool = False) -> list[dict]:
    """/api/predict over loopback: a real `mnistlab serve` process, 50 concurrent clients each sending
    a 280x280 PNG drawing back to back; latency p50/p99, throughput, errors. /api/health beside it is
    the reference: the cost of the HTTP stack alone."""
    import io
    import socket
    import subprocess

    import httpx
    from PIL import Image, ImageDraw

    img = Image.new("L", (280, 280), 0)
    ImageDraw.Draw(img).line([(70, 60), (210, 60), (120, 240)], fill=255, width=18)  # a drawn 7
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    body = buf.getvalue()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "mnistlab", "serve", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                if time.time() > deadline or server.poll() is not None:
                    raise RuntimeError("the server did not start")
                time.sleep(0.2)
        total = 500 if quick else 3000
        rows = []
        for name, method, path, content, clients in (
                ("GET /api/health (HTTP stack alone)", "GET", "/api/health", None, 50),
                ("POST /api/predict (PNG drawing)", "POST", "/api/predict", body, 50),
                ("POST /api/predict, one client (what a person drawing sees)", "POST", "/api/predict", body, 1)):
            if shutil.which("wrk"):  # a load generator in C: the client costs the 2 cores little
                rows.append(_wrk(url, method, path, content, clients=clients, seconds=5 if quick else 15, name=name))
            else:
                rows.append(asyncio.run(_load(url, method, path, content, clients=clients, total=total, name=name)))
        return rows
    finally:
        server.terminate()
        server.wait(10)


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
