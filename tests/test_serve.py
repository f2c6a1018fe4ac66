"""The HTTP server, started for real on 127.0.0.1 and called over HTTP: every route, every bad input
answered with a 4xx JSON error (never a 500), and the server still serving afterwards."""

from __future__ import annotations

import io
import socket
import time

import httpx
import numpy as np
import pytest
from builders import MAX_BODY, Server  # noqa: F401  (Server: the tests below start their own)
from PIL import Image
from test_predict import drawn


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_health_model_page_and_docs(server):
    assert httpx.get(f"{server}/api/health").json() == {"status": "ok"}
    model = httpx.get(f"{server}/api/model").json()
    assert model["dataset"] == "mnist" and model["classes"] == list("0123456789")
    assert model["test_accuracy"] > 0.99 and len(model["sha256"]) == 64
    page = httpx.get(f"{server}/")
    assert page.status_code == 200 and "<canvas id=\"pad\"" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from a CDN
    for asset in ("/static/app.js", "/static/style.css"):
        r = httpx.get(server + asset)
        assert r.status_code == 200 and "http://" not in r.text and "https://" not in r.text
    spec = httpx.get(f"{server}/openapi.json").json()
    assert "/api/predict" in spec["paths"] and "/api/model" in spec["paths"]
    docs = httpx.get(f"{server}/docs")
    assert docs.status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in docs.text
    assert httpx.get(f"{server}/docs-assets/swagger-ui-bundle.js").status_code == 200


def test_predict_raw_multipart_and_json(server, mnist):
    body = png(drawn("3", stroke=3))
    raw = httpx.post(f"{server}/api/predict", content=body, headers={"Content-Type": "image/png"})
    assert raw.status_code == 200, raw.text
    r = raw.json()
    assert r["digit"] == "3" and r["is_digit"] and len(r["probabilities"]) == 10
    assert abs(sum(r["probabilities"]) - 1) < 1e-3 and np.array(r["image"]).shape == (28, 28)
    assert [t["digit"] for t in r["top3"]][0] == "3" and r["threshold"] == 0.5
    multi = httpx.post(f"{server}/api/predict", files={"file": ("three.png", body, "image/png")})
    assert multi.status_code == 200 and multi.json()["digit"] == "3"
    for i in range(5):  # MNIST's own pictures as JSON arrays, already in MNIST's form
        pixels = mnist.test.images[i].tolist()
        j = httpx.post(f"{server}/api/predict", json={"image": pixels, "preprocess": False})
        assert j.status_code == 200 and j.json()["digit"] == str(int(mnist.test.labels[i]))
    scaled = (mnist.test.images[0].numpy() / 255).tolist()  # 0..1 values, preprocessed on the server
    assert httpx.post(f"{server}/api/predict", json={"image": scaled}).json()["digit"] == "7"
    empty = httpx.post(f"{server}/api/predict", json={"image": [[0] * 28] * 28}).json()
    assert empty["is_digit"] is False and empty["not_digit"] == 1.0


def bomb_png() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (10000, 10000)).save(buf, format="PNG")  # 100 megapixels in ~12 kB
    return buf.getvalue()


BAD = [
    ("too large by Content-Length", dict(content=b"\x89PNG" + b"0" * (MAX_BODY + 1),
                                         headers={"Content-Type": "image/png"}), 413, "larger than"),
    ("too large, streamed without a length", dict(content=iter([b"0" * 100_000] * 4),
                                                  headers={"Content-Type": "image/png"}), 413, "larger than"),
    ("too many pixels", dict(content=bomb_png(), headers={"Content-Type": "image/png"}), 413, "pixels allowed"),
    ("wrong content type", dict(content=b"hello", headers={"Content-Type": "text/plain"}), 415, "not accepted"),
    ("no content type", dict(content=b"hello"), 415, "not accepted"),
    ("corrupt image", dict(content=b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, headers={"Content-Type": "image/png"}),
     400, "request body"),
    ("empty body", dict(content=b"", headers={"Content-Type": "image/png"}), 400, "empty request body"),
    ("bad JSON", dict(content=b"{image:", headers={"Content-Type": "application/json"}), 400, "not valid JSON"),
    ("JSON without image", dict(json={"pixels": [[0]]}), 422, "`image` field"),
    ("JSON ragged rows", dict(json={"image": [[0, 1], [2]]}), 422, "2-D array"),
    ("JSON 3-D", dict(json={"image": [[[0]]]}), 422, "2-D array of numbers"),
    ("JSON too big", dict(json={"image": [[0] * 600] * 2}), 422, "at most 512x512"),
    ("JSON out of range", dict(json={"image": [[300] * 28] * 28}), 422, "0..255"),
    ("JSON not 28x28 raw", dict(json={"image": [[0] * 10] * 10, "preprocess": False}), 422, "must be 28x28"),
    ("JSON bad preprocess", dict(json={"image": [[0] * 28] * 28, "preprocess": "yes"}), 422, "true or false"),
    ("JSON nested 100,000 deep", dict(content=b"[" * 100_000, headers={"Content-Type": "application/json"}), 400,
     "nested too deeply"),
    ("JSON integer of 5,000 digits", dict(content=b'{"image": [[' + b"9" * 5000 + b"]]}",
                                          headers={"Content-Type": "application/json"}), 400, "5000 digits"),
    ("JSON NaN", dict(content=b'{"image": [[NaN]]}', headers={"Content-Type": "application/json"}), 400,
     "NaN is not a number"),
    ("JSON bools", dict(json={"image": [[True, False]]}), 422, "2-D array of numbers"),
    ("multipart without boundary", dict(content=b"--x\r\n", headers={"Content-Type": "multipart/form-data"}), 400,
     "no boundary"),
    ("multipart cut short", dict(content=b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png"
                                 b"\"\r\n\r\n\x89PNG", headers={"Content-Type": "multipart/form-data; boundary=b"}),
     400, "malformed multipart form"),
    ("damaged PNG chunk", dict(content=None, headers={"Content-Type": "image/png"}), 400, "request body: "),
    ("PNG header cut short", dict(content=None, headers={"Content-Type": "image/png"}), 400, "not an image"),

    ("multipart without file", dict(files={"other": ("x.txt", b"abc", "text/plain")}), 422, "`file` field"),
    ("multipart with text", dict(files={"file": ("x.txt", b"abc", "text/plain")}), 400, "not an image"),
    ("TIFF", dict(content=None, headers={"Content-Type": "image/png"}), 400, "TIFF images are not accepted"),
]


@pytest.mark.slow
@pytest.mark.parametrize("case, kwargs, status, fragment", BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_a_4xx_json_error(server, case, kwargs, status, fragment):
    if case == "TIFF":
        buf = io.BytesIO()
        drawn("3").save(buf, format="TIFF")
        kwargs = dict(kwargs, content=buf.getvalue())
    if case == "damaged PNG chunk":  # the IDAT length field: Pillow raised SyntaxError, the server a 500
        damaged = bytearray(png(drawn("3")))
        damaged[37:41] = b"\xff\xff\xff\xff"
        kwargs = dict(kwargs, content=bytes(damaged))
    if case == "PNG header cut short":  # Pillow raised ValueError
        kwargs = dict(kwargs, content=png(drawn("3"))[:20])
    r = httpx.post(f"{server}/api/predict", timeout=30, **kwargs)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["status"] == status and fragment in err["message"], err
    assert httpx.get(f"{server}/api/health").status_code == 200  # still serving


def test_wrong_method_and_path_are_json_4xx(server):
    r = httpx.get(f"{server}/api/predict")
    assert r.status_code == 405 and r.json()["error"]["status"] == 405
    r = httpx.get(f"{server}/api/nothing")
    assert r.status_code == 404 and "error" in r.json()


@pytest.mark.slow
def test_concurrent_clients_all_succeed(server):
    body = png(drawn("5", stroke=3))

    def one(_):
        return httpx.post(f"{server}/api/predict", content=body, headers={"Content-Type": "image/png"}, timeout=30)

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(64)))
    assert all(r.status_code == 200 and r.json()["digit"] == "5" for r in results)


# ---------- slow, rude and hostile clients ----------

def connect(url: str, source: str = "127.0.0.1") -> socket.socket:
    """A raw TCP connection to the server from `source` (any 127.x.y.z address is this machine)."""
    port = int(url.rsplit(":", 1)[1])
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def read_until_closed(sock: socket.socket, wait: float) -> bytes:
    """Everything the server sends until it closes the connection (or `wait` seconds pass)."""
    sock.settimeout(wait)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    return data


def closed_by_peer(sock: socket.socket, wait: float) -> bool:
    sock.settimeout(wait)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


@pytest.fixture(scope="module")
def strict(tmp_path_factory):
    """A server with short timeouts and small connection limits, so the tests run in seconds; one for
    the module (each test leaves it as it found it: every connection it opened closed)."""
    server = Server(tmp_path_factory.mktemp("strict") / "strict.log", "--header-timeout", "2", "--body-timeout", "2",
                    "--max-per-client", "20", "--max-connections", "900")
    yield server
    server.stop()
    assert "Traceback" not in server.log.read_text()


@pytest.mark.slow
def test_headers_that_trickle_are_cut_off_and_everyone_else_is_served(strict):
    """1,100 connections whose headers never finish, from 55 addresses: uvicorn held each for ever,
    and with the process's file descriptors gone /api/health failed for the whole attack."""
    import resource

    n = min(1100, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 200)
    slow = []
    for i in range(n):
        sock = connect(strict.url, f"127.0.{1 + i // 20}.1")  # 20 connections from each of 55 addresses
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # never finished
        slow.append(sock)
    t0 = time.time()
    while True:  # over the connection limit at first; served again once the slow ones are cut off
        try:
            if httpx.get(f"{strict.url}/api/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.time() - t0 < 8, "/api/health did not answer within the header timeout plus margin"
        time.sleep(0.2)
    assert all(closed_by_peer(sock, wait=max(0.1, 6 - (time.time() - t0))) for sock in slow)
    for sock in slow:
        sock.close()
    # one address may hold at most 20 connections: the rest are closed at once
    mine = [connect(strict.url, "127.0.99.1") for _ in range(30)]
    time.sleep(0.5)
    assert sum(closed_by_peer(sock, wait=0.2) for sock in mine) >= 10
    for sock in mine:
        sock.close()
    assert httpx.get(f"{strict.url}/api/health").status_code == 200


@pytest.mark.slow
def test_a_body_that_does_not_arrive_in_time_gets_408(strict):
    sock = connect(strict.url)
    sock.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n"
                 + b"\x89PNG")
    t0 = time.time()
    answer = read_until_closed(sock, wait=8).decode(errors="replace")
    assert answer.startswith("HTTP/1.1 408") and "did not arrive within 2 s" in answer, answer
    assert time.time() - t0 < 7  # and closed, not left open for the rest of the body
    sock.close()


@pytest.mark.slow
def test_a_client_that_leaves_mid_body_is_one_log_line(strict):
    seen = len(strict.log.read_text())  # the server is shared: count only this test's lines
    sock = connect(strict.url)
    sock.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                 b"Content-Length: 100000\r\n\r\n" + b"\x89PNG" * 10)
    time.sleep(0.3)
    sock.close()
    time.sleep(1)
    assert httpx.get(f"{strict.url}/api/health").status_code == 200
    log = strict.log.read_text()[seen:]
    assert log.count("disconnected before its request body was complete") == 1, log
    assert "Traceback" not in log and "Exception" not in log


@pytest.mark.slow
def test_a_malformed_content_length_is_a_400(strict):
    sock = connect(strict.url)
    sock.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 12a\r\n\r\n")
    assert read_until_closed(sock, wait=5).startswith(b"HTTP/1.1 400")
    sock.close()


@pytest.mark.slow
def test_under_load_with_hostile_bodies_memory_stays_bounded_and_nothing_is_a_5xx(running):
    """Good drawings from 16 clients, while others send images just under the pixel limit (paletted
    PNGs of 3 KB that decode to 24 megapixels; six at once took 4.9 GB before), bombs past it, damaged
    images and hostile JSON. Every answer is 200 or 4xx, and the server's peak memory stays bounded."""
    from concurrent.futures import ThreadPoolExecutor

    good = png(drawn("5", stroke=3))
    near_limit = png(Image.new("P", (4900, 4900)))
    damaged = bytearray(good)
    damaged[37:41] = b"\xff\xff\xff\xff"
    hostile = [(near_limit, "image/png")] * 12 + [(bomb_png(), "image/png"), (bytes(damaged), "image/png"),
                                                  (b"[" * 100_000, "application/json"),
                                                  (b'{"image": [[' + b"9" * 5000 + b"]]}", "application/json")] * 3
    _, peak_before = running.memory_mb()

    def send(item):
        body, ctype = item
        r = httpx.post(f"{running.url}/api/predict", content=body, headers={"Content-Type": ctype}, timeout=120)
        return r.status_code, (r.json().get("digit") if r.status_code == 200 and body is good else None)

    with ThreadPoolExecutor(24) as pool:
        results = list(pool.map(send, [(good, "image/png")] * 160 + hostile))
    statuses = [s for s, _ in results]
    assert max(statuses) < 500, sorted(set(statuses))
    assert [d for s, d in results[:160]] == ["5"] * 160
    now, peak = running.memory_mb()
    print(f"server memory: peak {peak_before} MB before the load, {peak} MB after; {now} MB resident now")
    assert peak - peak_before < 700, (peak_before, peak)
    assert httpx.get(f"{running.url}/api/health").status_code == 200
