"""The draw-a-digit web page and its HTTP API (FastAPI on uvicorn).

    mnistlab serve                                   # the packaged default model, http://127.0.0.1:8000
    mnistlab serve --model runs/seed-cnn-mnist-s0 --port 8080

Routes: `/` the page (no assets from a CDN), `POST /api/predict`, `GET /api/health`,
`GET /api/model`, OpenAPI at `/openapi.json` and `/docs` (Swagger UI served locally when the
`swagger-ui-bundle` package is installed).

`POST /api/predict` takes an image as a raw body (Content-Type image/png, image/jpeg, image/bmp,
image/gif or image/webp), as multipart/form-data (field `file`), or JSON `{"image": [[...]],
"preprocess": true}` (see `requests.py`). A bad request gets a 4xx with JSON
`{"error": {"status", "message", "hint"}}`; the server keeps serving.

Every cost a request can cause is bounded (`Limits`, each a `mnistlab serve` flag): the body's size
and the time it may take to arrive; the image's pixels (read from its header) and its decoding
(reduced, and only `decoders` at a time, in worker threads); requests in flight (more wait, and a
waiting request holds no body); connections, in all and per client, and the time their headers may
take (`protocol.py`). A client that disconnects mid-body is one INFO line in the log.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import multiprocessing
import re
import signal
import socket
import time
from importlib import resources
from pathlib import Path

import anyio
import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from .._version import __version__
from ..data.images import limit_decodes
from ..errors import MnistlabError
from ..models.predictor import load_predictor
from ..rundir import SUMMARY_SPEC, RunDir
from .backend import accelerate
from .limits import Limits
from .prediction import (
    NOT_DIGIT_THRESHOLD,
    classify,
    default_predictor,
    ink_pieces,
    to_mnist,
)
from .protocol import guarded
from .requests import Job, RequestError, check_media_type, decode, media_type

logger = logging.getLogger("uvicorn.error.mnistlab")  # shown with uvicorn's own log lines
RETRY_AFTER_S = 1  # what a shed request is told to wait
QUICK_BODY, QUICK_PIXELS = 256 * 1024, 1024 * 1024  # served in the event loop (see `is_quick`)


class ClientGone(Exception):
    """The client disconnected before its request body was complete."""


# ----------------------------------------------------------------------------------------------
# The work of one request, without the server around it


def model_info(predictor, source: str | None) -> dict:
    """What `/api/model` answers: the model, its classes, and its measured accuracy where known."""
    meta = predictor.meta
    info = {"name": meta.get("name"), "model": meta.get("model"), "method": predictor.method,
            "members": len(predictor.models), "dataset": meta.get("dataset"), "classes": predictor.classes,
            "dataset_hash": meta.get("dataset_hash"), "not_digit_threshold": NOT_DIGIT_THRESHOLD}
    path = Path(meta["source"]) if meta.get("source") else None
    if path and path.is_file():
        info["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        run = RunDir.holding(path)
        try:
            summary = (run.read_summary() if run else
                       RunDir(path.parent).read_json(path.stem + ".summary.json", SUMMARY_SPEC))
        except MnistlabError:
            summary = None  # a damaged summary beside the model: the model still serves
        if summary:
            info["test_accuracy"], info["val_accuracy"] = summary.get("test_acc"), summary.get("val_acc")
    info["source"] = source or "default"
    return info


def run_job(predictor, info: dict, job: Job) -> dict:
    """The JSON answer for one decoded job (runs in a worker thread)."""
    t0 = time.perf_counter()
    if job.image is not None:
        pic, facts = to_mnist(job.image)
    else:
        pic = job.pixels
        specks, side_by_side = ink_pieces(pic.astype(np.float32) / 255)
        facts = {"empty": not pic.any(), "specks": specks, "pieces_side_by_side": side_by_side}
    with torch.inference_mode():
        result = classify(predictor, torch.from_numpy(pic[None]), [facts])[0]
    out = result.as_dict()
    out["image"] = result.image.tolist()
    out["model"] = info["name"]
    out["elapsed_ms"] = (time.perf_counter() - t0) * 1000
    return out


def is_stale(request: Request, limits: Limits) -> bool:
    received = request.scope.get("state", {}).get("received")
    return received is not None and time.monotonic() - received > limits.max_wait


def shed_if_stale(request: Request, limits: Limits, *, body_read: bool) -> None:
    """A 503 for a request that has waited more than max_wait since its headers were read
    (`protocol.py`): its answer would be stale, and serving it would delay everyone behind it."""
    if is_stale(request, limits):
        waited = time.monotonic() - request.scope["state"]["received"]
        raise RequestError(503, f"the server is at capacity: this request waited {waited:.2f} s, more than the "
                           f"{limits.max_wait:g} s allowed", hint=f"retry after {RETRY_AFTER_S} s",
                           body_read=body_read)


def is_quick(content_type: str | None, body: bytes) -> bool:
    """Whether a request is a small PNG (a canvas drawing) that the event loop can serve itself: at
    most QUICK_BODY bytes whose header declares at most QUICK_PIXELS (decoded in a few ms). The size
    is read from the PNG signature and IHDR chunk at their fixed places; anything else goes to a thread."""
    if len(body) > QUICK_BODY or len(body) < 24 or media_type(content_type) != "image/png":
        return False
    if body[:8] != b"\x89PNG\r\n\x1a\n" or body[12:16] != b"IHDR":
        return False
    width, height = int.from_bytes(body[16:20], "big"), int.from_bytes(body[20:24], "big")
    return width * height <= QUICK_PIXELS


async def read_body(request: Request, limits: Limits) -> bytes:
    """The request body, at most `max_body` bytes, arriving within `body_timeout` seconds."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit() or len(declared) > 15:
            raise RequestError(400, f"Content-Length {declared[:20]!r} is not a number")
        if int(declared) > limits.max_body:
            raise RequestError(413, f"body of {int(declared):,} bytes is larger than the {limits.max_body:,} allowed")
    chunks, size = [], 0
    try:
        with anyio.fail_after(limits.body_timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limits.max_body:
                    raise RequestError(413, f"body larger than the {limits.max_body:,} bytes allowed")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestError(408, f"the body did not arrive within {limits.body_timeout:g} s") from None
    except ClientDisconnect:
        raise ClientGone() from None
    return b"".join(chunks)


# ----------------------------------------------------------------------------------------------
# Routes and error handlers (the app's state holds the predictor, its description and the limits)


async def api_predict(request: Request):
    state = request.app.state
    check_media_type(request.headers.get("content-type"))  # before reading a byte of the body
    if state.inflight is None:  # made in the event loop, on first use
        state.inflight, state.workers = anyio.Semaphore(state.limits.max_inflight), anyio.CapacityLimiter(
            state.limits.decoders)
    # Beyond capacity, a bounded queue: shedding a request costs microseconds, where an unbounded
    # queue would make every request wait longer and longer.
    if state.inflight.value == 0 and state.waiting >= state.limits.max_queue:
        raise RequestError(503, f"the server is at capacity ({state.limits.max_inflight} requests in flight, "
                           f"{state.waiting} waiting)", hint=f"retry after {RETRY_AFTER_S} s", body_read=False)
    state.waiting += 1
    try:
        await state.inflight.acquire()
    finally:
        state.waiting -= 1
    try:
        if is_stale(request, state.limits):
            # A small body is read before the 503, so the connection stays open: a client that must
            # reconnect after every 503 costs the server more than the body does.
            declared = request.headers.get("content-length", "")
            small = declared.isdigit() and int(declared) <= QUICK_BODY
            if small:
                await read_body(request, state.limits)
            shed_if_stale(request, state.limits, body_read=small)
        body = await read_body(request, state.limits)

        def work() -> dict:
            job = decode(request.headers.get("content-type"), body, max_pixels=state.limits.max_pixels)
            return run_job(state.predictor, state.info, job)

        if is_quick(request.headers.get("content-type"), body):
            shed_if_stale(request, state.limits, body_read=True)  # the others in this loop turn went first
            return JSONResponse(work())  # a drawing: ~2 ms, less than handing it to a thread costs
        # Anything larger in worker threads, so the event loop keeps accepting and parsing meanwhile.
        return JSONResponse(await anyio.to_thread.run_sync(work, limiter=state.workers))
    finally:
        state.inflight.release()


async def api_health(request: Request):
    return {"status": "ok"}


async def api_model(request: Request):
    return request.app.state.info


async def page(request: Request):
    with resources.as_file(resources.files("mnistlab.serving") / "static" / "index.html") as p:
        return FileResponse(p, media_type="text/html")


def error_response(status: int, message: str, hint: str | None = None, *, body_read: bool = True) -> JSONResponse:
    # A 408 or 413, or a 503 before the body was read, leaves a body unread on the connection: close
    # it rather than read the rest.
    headers = {"Connection": "close"} if status in (408, 413) or not body_read else {}
    if status == 503:
        headers["Retry-After"] = str(RETRY_AFTER_S)
    return JSONResponse({"error": {"status": status, "message": message, "hint": hint}}, status_code=status,
                        headers=headers)


async def on_request_error(request, exc: RequestError):
    return error_response(exc.status, exc.message, exc.hint, body_read=exc.body_read)


async def on_mnistlab_error(request, exc: MnistlabError):
    return error_response(400, exc.message, exc.hint)


async def on_client_gone(request, exc: ClientGone):
    logger.info("%s disconnected before its request body was complete", request.client.host if request.client else "?")
    return Response(status_code=400)  # nobody is there to read it


async def on_validation_error(request, exc: RequestValidationError):
    return error_response(422, "invalid request", str(exc.errors())[:500])


async def on_http_error(request, exc: StarletteHTTPException):
    return error_response(exc.status_code, str(exc.detail))


async def on_unexpected(request, exc: Exception):  # a bug; the server keeps serving
    return error_response(500, f"internal error: {type(exc).__name__}")


def create_app(predictor, *, source: str | None = None, limits: Limits = Limits(), backend: str = "auto") -> FastAPI:
    """The FastAPI application serving `predictor` (see the module docstring); backend "auto" runs
    the model in ONNX Runtime when it is installed (`backend.py`), "pytorch" keeps PyTorch."""
    if backend not in ("auto", "pytorch"):
        raise MnistlabError(f"backend={backend!r}: expected auto or pytorch")
    if backend == "auto":
        predictor = accelerate(predictor)
    app = FastAPI(title="mnistlab", version=__version__, docs_url=None, redoc_url=None,
                  description="Read handwritten digits: draw one on the page at /, or POST an image to /api/predict.")
    app.openapi_version = "3.0.3"  # the locally served Swagger UI 4 renders 3.0 documents
    app.state.predictor, app.state.info, app.state.limits = predictor, model_info(predictor, source), limits
    limit_decodes(limits.decoders)  # the decode cap and the worker threads agree
    app.state.info["backend"] = getattr(predictor, "backend", "pytorch")
    app.state.inflight = app.state.workers = None
    app.state.waiting = 0
    _warm_up(predictor, app.state.info)
    for exc_type, handler in ((RequestError, on_request_error), (ClientGone, on_client_gone),
                              (MnistlabError, on_mnistlab_error), (RequestValidationError, on_validation_error),
                              (StarletteHTTPException, on_http_error), (Exception, on_unexpected)):
        app.add_exception_handler(exc_type, handler)
    app.add_api_route("/api/predict", api_predict, methods=["POST"], summary="Read the digit in an image",
                      description='Raw image body, multipart `file`, or JSON {"image": [[...]], "preprocess": true}.')
    app.add_api_route("/api/health", api_health, methods=["GET"], summary="Liveness")
    app.add_api_route("/api/model", api_model, methods=["GET"], summary="The model being served")
    app.add_api_route("/", page, methods=["GET"], include_in_schema=False)
    with resources.as_file(resources.files("mnistlab.serving") / "static") as static_dir:
        app.mount("/static", StaticFiles(directory=static_dir), name="static")
    docs_csp = _mount_docs(app)
    app.add_middleware(SecurityHeaders, docs_csp=docs_csp)
    return app


# The page, its script and styles are files of the server's own: nothing inline, nothing from elsewhere.
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


class SecurityHeaders:
    """Every response says how a browser may use it: a strict Content-Security-Policy (the docs page
    gets its Swagger UI's one inline script by hash), no MIME sniffing, no framing, no referrer. A pure
    ASGI wrapper: it adds headers to the response start and nothing else, so it costs nothing per body."""

    def __init__(self, app, docs_csp: str | None = None):
        self.app = app
        common = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                  (b"referrer-policy", b"no-referrer")]
        self.page = [(b"content-security-policy", PAGE_CSP.encode()), *common]
        self.docs = [(b"content-security-policy", (docs_csp or PAGE_CSP).encode()), *common]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        extra = self.docs if scope.get("path") == "/docs" else self.page

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        return await self.app(scope, receive, send_with_headers)


def _warm_up(predictor, info: dict) -> None:
    """One drawing through the whole path, so lazy imports and first calls are not a user's wait."""
    from PIL import ImageDraw

    img = Image.new("L", (280, 280))
    ImageDraw.Draw(img).line([(70, 60), (210, 60), (120, 240)], fill=255, width=18)
    run_job(predictor, info, Job(image=img))


def _mount_docs(app) -> str | None:
    """Swagger UI from the swagger-ui-bundle package, when installed (no CDN); else only /openapi.json.
    Returns the docs page's CSP: its own assets, and its one inline start-up script by SHA-256."""
    try:
        import swagger_ui_bundle
    except ImportError:
        return None
    from fastapi.openapi.docs import get_swagger_ui_html

    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets")
    html = get_swagger_ui_html(openapi_url="/openapi.json", title="mnistlab API",
                               swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                               swagger_css_url="/docs-assets/swagger-ui.css",
                               swagger_favicon_url="/docs-assets/favicon-32x32.png")
    body = html.body.decode()
    inline = re.findall(r"<script>(.*?)</script>", body, flags=re.S)
    hashes = " ".join("'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'" for s in inline)

    async def docs(request: Request):
        return html

    app.add_api_route("/docs", docs, methods=["GET"], include_in_schema=False)
    # Swagger UI sets style attributes as it renders: styles may be inline here, scripts may not
    return (f"default-src 'none'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


def serve(model=None, *, host: str = "127.0.0.1", port: int = 8000, limits: Limits = Limits(),
          log_level: str = "info", workers: int = 1, backend: str = "auto", access_log: bool = False) -> None:
    """Run the server until interrupted: `workers` processes sharing the port (SO_REUSEPORT: the
    kernel spreads connections over them), each with its own model, event loop and limits."""
    try:
        import uvicorn  # noqa: F401

    except ImportError:
        raise MnistlabError("serving needs FastAPI and uvicorn", hint="pip install 'mnistlab[serve]'") from None
    if not 1 <= workers <= 64:
        raise MnistlabError(f"--workers {workers}: expected 1 to 64 (one per CPU core is the usual choice)")
    if workers > 1 and port == 0:
        raise MnistlabError("--workers > 1 needs a fixed --port: each worker listens on it")
    if workers > 1 and not hasattr(socket, "SO_REUSEPORT"):
        raise MnistlabError("--workers > 1 needs SO_REUSEPORT (Linux, BSD, macOS)", hint="use --workers 1")
    _load(model)  # a bad model is one clear error here, not one per worker
    if workers == 1:
        _serve_one(model, host, port, limits, log_level, backend, access_log, reuse_port=False)
        return
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter per worker: no forked threads or locks
    procs = [ctx.Process(target=_serve_one, args=(model, host, port, limits, log_level, backend, access_log),
                         kwargs={"reuse_port": True, "worker": i}, daemon=True) for i in range(workers)]
    for proc in procs:
        proc.start()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        for proc in procs:
            proc.join()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        for proc in procs:
            if proc.is_alive():
                proc.terminate()  # uvicorn finishes the requests in hand, then exits
        for proc in procs:
            proc.join(15)


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM stops the workers as Ctrl-C does


def _load(model):
    return default_predictor() if model is None else load_predictor(model)


def _serve_one(model, host: str, port: int, limits: Limits, log_level: str, backend: str, access_log: bool, *,
               reuse_port: bool, worker: int | None = None) -> None:
    """One server process: the model, the app, and uvicorn on a socket (shared with the other workers)."""
    import uvicorn


    # One request is one small forward pass: intra-op threads only contend with the server's own.
    torch.set_num_threads(1)
    _raise_open_file_limit(limits.max_connections + 64)
    predictor = _load(model)
    app = create_app(predictor, source=str(model) if model else None, limits=limits, backend=backend)
    # access_log: a line per request costs ~5% of a drawing's CPU time; off unless asked for
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_keep_alive=limits.keep_alive,
                            access_log=access_log,
                            http=guarded(limits.header_timeout, limits.max_connections, limits.max_per_client))
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise MnistlabError(f"cannot listen on {host}:{port}: {exc.strerror}",
                            hint="choose another --port, or stop what is using it") from None
    sock.set_inheritable(True)
    who = f" (worker {worker})" if worker is not None else ""
    print(f"mnistlab: serving {app.title} model {predictor.meta.get('name')} with {app.state.info['backend']} "
          f"on http://{host}:{sock.getsockname()[1]}/{who}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])


def _raise_open_file_limit(wanted: int) -> None:
    """Room for `wanted` sockets: the soft limit on open files raised toward the hard one."""
    try:
        import resource
    except ImportError:  # not a Unix: nothing to raise
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
