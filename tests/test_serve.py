"""The HTTP server, started for real on 127.0.0.1 and called over HTTP: every route, every bad input
answered with a 4xx JSON error (never a 500), and the server still serving afterwards."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from PIL import Image
from test_predict import drawn

MAX_BODY = 300_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mnistlab", "serve", "--port", str(port), "--max-body",
                             str(MAX_BODY)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stdout.read()}")
    else:
        proc.kill()
        raise RuntimeError("server did not start within 60 s")
    yield url
    proc.terminate()
    proc.wait(10)


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
    ("multipart without file", dict(files={"other": ("x.txt", b"abc", "text/plain")}), 422, "`file` field"),
    ("multipart with text", dict(files={"file": ("x.txt", b"abc", "text/plain")}), 400, "not an image"),
    ("TIFF", dict(content=None, headers={"Content-Type": "image/png"}), 400, "TIFF images are not accepted"),
]


@pytest.mark.parametrize("case, kwargs, status, fragment", BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_a_4xx_json_error(server, case, kwargs, status, fragment):
    if case == "TIFF":
        buf = io.BytesIO()
        drawn("3").save(buf, format="TIFF")
        kwargs = dict(kwargs, content=buf.getvalue())
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


def test_concurrent_clients_all_succeed(server):
    body = png(drawn("5", stroke=3))

    def one(_):
        return httpx.post(f"{server}/api/predict", content=body, headers={"Content-Type": "image/png"}, timeout=30)

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(64)))
    assert all(r.status_code == 200 and r.json()["digit"] == "5" for r in results)
