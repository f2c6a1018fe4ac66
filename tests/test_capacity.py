"""Serving a classroom: the ONNX Runtime backend agrees with PyTorch, requests beyond capacity get a
fast 503 with Retry-After, several worker processes share one port, and the open-loop load
generator the benchmark uses measures a real server correctly."""

from __future__ import annotations

import copy
import io
import os
import signal
import socket
import threading
import time

import httpx
import pytest
import torch
from builders import Server
from PIL import Image
from test_predict import drawn

from mnistlab.bench.loadgen import constant_rate, http_request
from mnistlab.cli import main
from mnistlab.serving.backend import OnnxPredictor, accelerate
from mnistlab.serving.prediction import classify, default_predictor, preprocess
from mnistlab.serving.server import is_quick


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_onnx_runtime_backend_reads_what_pytorch_reads(mnist):
    pytest.importorskip("onnxruntime")
    torch_predictor = default_predictor()
    fast = accelerate(torch_predictor)
    assert isinstance(fast, OnnxPredictor) and fast.classes == torch_predictor.classes
    images = mnist.test.images[:500]
    a, b = fast.probs(images), torch_predictor.probs(images)
    assert float((a - b).abs().max()) < 1e-4
    assert (a.argmax(1) == mnist.test.labels[:500]).float().mean() > 0.98
    pics, facts = preprocess([drawn("4", stroke=3), drawn("7", stroke=3)])
    assert [p.digit for p in classify(fast, pics, facts)] == [p.digit for p in classify(torch_predictor, pics, facts)]


def test_the_exported_graph_is_cached_and_one_that_is_damaged_or_foreign_is_exported_again(empty_cache, mnist):
    """The next start of the same model reads its graph from the user cache (no export, no `onnx`
    import); a cached file that does not load, or is another model's, is exported again and replaced."""
    pytest.importorskip("onnxruntime")
    from mnistlab.models.default import DEFAULT_MODEL
    from mnistlab.models.predictor import load_predictor
    from mnistlab.serving.backend import graph_file

    predictor = load_predictor(DEFAULT_MODEL)
    images = mnist.test.images[:200]
    first = accelerate(predictor)
    cached = graph_file(predictor)
    assert isinstance(first, OnnxPredictor) and list((empty_cache / "onnx").iterdir()) == [cached]
    graph, stamp = cached.read_bytes(), cached.stat().st_mtime_ns
    again = accelerate(predictor)
    assert isinstance(again, OnnxPredictor) and cached.stat().st_mtime_ns == stamp  # read, not written
    assert torch.equal(again.probs(images), first.probs(images))
    # another model's graph (a copy with other last-layer weights: another key)
    other = copy.deepcopy(predictor)
    with torch.no_grad():
        next(reversed(list(other.models[0].parameters()))).mul_(-1.0)
    assert graph_file(other) != cached
    foreign = graph_file(other)
    # a cached file is outside input too: garbage, a truncated graph, one with bytes flipped, another's
    flipped = bytearray(graph)
    for i in range(100, len(flipped), len(flipped) // 7):
        flipped[i] ^= 0xFF
    for bad in (b"not an ONNX graph", graph[:len(graph) // 2], bytes(flipped), None):
        if bad is None:  # a valid graph, of the other model, under this model's name
            accelerate(other)
            bad = foreign.read_bytes()
        cached.write_bytes(bad)
        fixed = accelerate(predictor)
        assert isinstance(fixed, OnnxPredictor) and torch.equal(fixed.probs(images), first.probs(images))
        assert cached.read_bytes() == graph  # exported again (the export is deterministic) and replaced


def test_only_small_raw_images_are_served_in_the_event_loop():
    small = png(drawn("2", stroke=3))
    assert is_quick("image/png", small)
    assert not is_quick("image/png", png(Image.new("P", (4900, 4900))))  # 3 KB declaring 24 megapixels
    assert not is_quick("application/json", b'{"image": [[0]]}')
    assert not is_quick("image/png", b"\x89PNG\r\n\x1a\n garbage")


@pytest.fixture
def tight(tmp_path):
    """A server that sheds early: requests may wait 50 ms, one at a time, one queued."""
    server = Server(tmp_path / "tight.log", "--max-wait", "0.05", "--max-inflight", "1", "--max-queue", "1")
    yield server
    server.stop()


@pytest.mark.slow
def test_beyond_capacity_requests_get_a_fast_503_with_retry_after(tight):
    """Forty drawings at once on one worker: some are served, the rest shed fast with a 503 that
    says when to retry; nothing else goes wrong, and the server serves normally afterwards."""
    body = png(drawn("5", stroke=3))
    results = []

    def send():
        t0 = time.perf_counter()
        try:
            r = httpx.post(f"{tight.url}/api/predict", content=body, headers={"Content-Type": "image/png"}, timeout=30)
            results.append((r.status_code, r.headers.get("retry-after"), r.json(), time.perf_counter() - t0))
        except httpx.HTTPError as exc:
            results.append((type(exc).__name__, None, None, time.perf_counter() - t0))

    threads = [threading.Thread(target=send) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = [s for s, *_ in results]
    assert set(statuses) <= {200, 503}, statuses
    shed = [r for r in results if r[0] == 503]
    assert shed and statuses.count(200) >= 1, statuses
    for _, retry_after, doc, _ in shed:
        assert retry_after == "1" and doc["error"]["status"] == 503 and "capacity" in doc["error"]["message"]
    time.sleep(0.5)
    for _ in range(5):  # alone, a request waits for nobody (a retry covers a hiccup of the machine)
        r = httpx.post(f"{tight.url}/api/predict", content=body, headers={"Content-Type": "image/png"})
        if r.status_code == 200:
            break
        time.sleep(0.2)
    assert r.status_code == 200 and r.json()["digit"] == "5"


@pytest.mark.slow
def test_the_load_generator_offers_a_constant_rate_and_counts_what_comes_back(server):
    host, port = server.removeprefix("http://").split(":")
    request = http_request(host, int(port), "/api/predict", png(drawn("7", stroke=3)), "image/png")
    r = constant_rate(host, int(port), request, rate=40, seconds=1.0, warm_connections=4)
    assert r["sent"] == 40 and r["ok"] == 40 and r["errors"] == 0 and r["statuses"] == {"200": 40}
    assert 0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"] < 5000
    assert 0.8 <= r["generator_wall_s"] < 10  # it took the second it was asked to, not as long as it liked
    with socket.socket() as s:  # nobody listens there: every request is an error, and nothing hangs
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    dead = constant_rate("127.0.0.1", closed, request, rate=20, seconds=0.5, warm_connections=0, drain_s=1)
    assert dead["ok"] == 0 and dead["errors"] == dead["sent"] == 10
    with pytest.raises(ValueError, match="rate and seconds must be positive"):
        constant_rate(host, int(port), request, rate=0, seconds=1)


@pytest.mark.slow
def test_two_worker_processes_share_the_port_and_stop_together(tmp_path):
    server = Server(tmp_path / "workers.log", "--workers", "2")  # the one helper that starts `mnistlab serve`
    proc, port = server.proc, server.url.rsplit(":", 1)[1]
    try:
        deadline = time.time() + 90
        while (tmp_path / "workers.log").read_text().count("(worker ") < 2:
            assert time.time() < deadline and proc.poll() is None, (tmp_path / "workers.log").read_text()
            time.sleep(0.3)
        time.sleep(1)
        body = png(drawn("3", stroke=3))
        pids = set()
        for _ in range(30):  # new connections: the kernel spreads them over both workers
            with httpx.Client() as client:
                for _attempt in range(5):  # a 503 says "at capacity, retry after": a loaded CI machine may say it
                    r = client.post(f"http://127.0.0.1:{port}/api/predict", content=body,
                                    headers={"Content-Type": "image/png"})
                    if r.status_code != 503:
                        break
                    time.sleep(float(r.headers.get("retry-after", "1")))
                assert r.status_code == 200 and r.json()["digit"] == "3"
                assert client.get(f"http://127.0.0.1:{port}/api/model").json()["backend"] in ("onnxruntime",
                                                                                             "pytorch")
        text = (tmp_path / "workers.log").read_text()
        pids = {line.split("[")[1].split("]")[0] for line in text.splitlines() if "Started server process" in line}
        assert len(pids) == 2, text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read().lower()


@pytest.mark.slow
def test_bad_worker_counts_are_clear_errors(capsys):
    for flags, words in ((["--workers", "0"], "--workers 0: expected 1 to 64"),
                         (["--workers", "2", "--port", "0"], "--workers > 1 needs a fixed --port")):
        assert main(["serve", *flags]) == 2  # refused before anything listens
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err


@pytest.mark.slow
def test_the_shed_limits_are_flags_and_must_be_positive(capsys):
    assert main(["serve", "--max-wait", "0"]) == 2  # refused before anything listens
    err = capsys.readouterr().err
    assert "--max-wait 0" in err and "positive" in err


def _call(app, headers: dict, body: bytes, waited: float) -> tuple[int, dict]:
    """One request through the real app's ASGI interface, as uvicorn's protocol hands it over
    (`received`: when its headers were read)."""
    import asyncio

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/api/predict", "raw_path": b"/api/predict", "query_string": b"",
             "root_path": "", "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000),
             "state": {"received": time.monotonic() - waited}}
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], {k.decode().lower(): v.decode() for k, v in start["headers"]}


def test_a_stale_drawing_gets_a_503_on_a_connection_that_stays_open():
    """A small body is read before the 503 (reconnecting after every 503 costs the server more); a
    large one is not, and its connection is closed."""
    from mnistlab.serving.limits import Limits
    from mnistlab.serving.server import QUICK_BODY, create_app

    app = create_app(default_predictor(), limits=Limits(max_wait=0.05))
    body = png(drawn("1", stroke=3))
    fresh, _ = _call(app, {"content-type": "image/png", "content-length": str(len(body))}, body, waited=0)
    assert fresh == 200
    status, headers = _call(app, {"content-type": "image/png", "content-length": str(len(body))}, body, waited=1)
    assert status == 503 and headers["retry-after"] == "1" and headers.get("connection") != "close"
    big = str(QUICK_BODY + 1)
    status, headers = _call(app, {"content-type": "image/png", "content-length": big}, b"", waited=1)
    assert status == 503 and headers["connection"] == "close"
