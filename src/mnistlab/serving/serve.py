"""The draw-a-digit web page and its HTTP API (FastAPI on uvicorn).

    mnistlab serve                                   # the packaged default model, http://127.0.0.1:8000
    mnistlab serve --model runs/seed-cnn-mnist-s0 --port 8080

Routes: `/` the page (no assets from a CDN), `POST /api/predict`, `GET /api/health`,
`GET /api/model`, OpenAPI at `/openapi.json` and `/docs` (Swagger UI served locally when the
`swagger-ui-bundle` package is installed).

`POST /api/predict` takes an image as a raw body (Content-Type image/png, image/jpeg, image/bmp,
image/gif or image/webp), as multipart/form-data (field `file`), or JSON `{"image": [[...]],
"preprocess": true}` (a 2-D array of 0..255 or 0..1 values, up to 512x512). Limits: the body size
(`--max-body`, checked against Content-Length and while reading), the pixel count (read from the
image header before decoding), the content type. A bad request gets a 4xx with JSON
`{"error": {"status", "message", "hint"}}`; the server keeps serving.
"""


import hashlib
import json
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from ..errors import MnistlabError
from .predict import (
    MAX_PIXELS,
    NOT_DIGIT_THRESHOLD,
    ImageTooLarge,
    classify,
    open_image,
    to_mnist,
)

MAX_BODY = 5 * 1024 * 1024  # bytes
MAX_JSON_SIDE = 512
IMAGE_TYPES = {"image/png", "image/jpeg", "image/bmp", "image/gif", "image/webp", "image/x-ms-bmp"}


class RequestError(MnistlabError):
    """A client's mistake, with the HTTP status to answer it with."""

    def __init__(self, status: int, message: str, hint: str | None = None):
        super().__init__(message, hint)
        self.status = status


def model_info(predictor, source: str | None) -> dict:
    meta = predictor.meta
    info = {"name": meta.get("name"), "model": meta.get("model"), "method": predictor.method,
            "members": len(predictor.models), "dataset": meta.get("dataset"), "classes": predictor.classes,
            "dataset_hash": meta.get("dataset_hash"), "not_digit_threshold": NOT_DIGIT_THRESHOLD}
    path = Path(meta.get("source", "")) if meta.get("source") else None
    if path and path.is_file():
        info["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        for summary in (path.parent / "summary.json", path.with_suffix(".summary.json")):
            if summary.is_file():
                s = json.loads(summary.read_text())
                info["test_accuracy"] = s.get("test_acc")
                info["val_accuracy"] = s.get("val_acc")
                break
    info["source"] = source or "default"
    return info


def create_app(predictor, *, source: str | None = None, max_body: int = MAX_BODY, max_pixels: int = MAX_PIXELS):
    """The FastAPI application serving `predictor` (see the module docstring)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.formparsers import MultiPartException, MultiPartParser

    app = FastAPI(title="mnistlab", version=_version(), docs_url=None, redoc_url=None,
                  description="Read handwritten digits: draw one on the page at /, or POST an image to /api/predict.")
    app.openapi_version = "3.0.3"  # the locally served Swagger UI 4 renders 3.0 documents
    info = model_info(predictor, source)
    static = resources.files("mnistlab.serving") / "static"

    def error(status: int, message: str, hint: str | None = None) -> JSONResponse:
        return JSONResponse({"error": {"status": status, "message": message, "hint": hint}}, status_code=status)

    @app.exception_handler(RequestError)
    async def _request_error(request, exc: RequestError):
        return error(exc.status, exc.message, exc.hint)

    @app.exception_handler(ImageTooLarge)
    async def _too_large(request, exc: ImageTooLarge):
        return error(413, exc.message, exc.hint)

    @app.exception_handler(MnistlabError)
    async def _mnistlab_error(request, exc: MnistlabError):
        return error(400, exc.message, exc.hint)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc: RequestValidationError):
        return error(422, "invalid request", str(exc.errors())[:500])

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc: StarletteHTTPException):
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request, exc: Exception):  # pragma: no cover - a bug, but never a dead server
        return error(500, f"internal error: {type(exc).__name__}")

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise RequestError(400, f"Content-Length {declared!r} is not a number")
            if int(declared) > max_body:
                raise RequestError(413, f"body of {int(declared):,} bytes is larger than the {max_body:,} allowed")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body:
                raise RequestError(413, f"body larger than the {max_body:,} bytes allowed")
            chunks.append(chunk)
        body = b"".join(chunks)
        if not body:
            raise RequestError(400, "empty request body", "send an image, a multipart form with a `file` field, "
                               "or JSON {\"image\": [[...]]}")
        return body

    def run(images_or_pixels) -> dict:
        t0 = time.perf_counter()
        kind, payload = images_or_pixels
        if kind == "image":
            pic, facts = to_mnist(payload)
        else:
            pic, facts = payload
        with torch.inference_mode():
            result = classify(predictor, torch.from_numpy(pic[None]), [facts])[0]
        out = result.as_dict()
        out["image"] = result.image.tolist()
        out["model"] = info["name"]
        out["elapsed_ms"] = (time.perf_counter() - t0) * 1000
        return out

    def decode(data: bytes, what: str):
        return ("image", open_image(data, name=what, max_pixels=max_pixels))

    def from_json(data: bytes):
        try:
            doc = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RequestError(400, f"body is not valid JSON ({exc})") from None
        if not isinstance(doc, dict) or "image" not in doc:
            raise RequestError(422, "JSON body must be an object with an `image` field: a 2-D array of pixels")
        try:
            arr = np.asarray(doc["image"], dtype=np.float64)
        except (ValueError, TypeError):
            raise RequestError(422, "`image` must be a 2-D array of numbers (rows of equal length)") from None
        if arr.ndim != 2 or not (1 <= arr.shape[0] <= MAX_JSON_SIDE and 1 <= arr.shape[1] <= MAX_JSON_SIDE):
            raise RequestError(422, f"`image` has shape {list(arr.shape)}, expected a 2-D array of at most "
                               f"{MAX_JSON_SIDE}x{MAX_JSON_SIDE}")
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 255:
            raise RequestError(422, "`image` values must be finite numbers in 0..255 (or 0..1)")
        if arr.max() <= 1:
            arr = arr * 255
        pixels = np.round(arr).astype(np.uint8)
        preprocess = doc.get("preprocess", True)
        if not isinstance(preprocess, bool):
            raise RequestError(422, "`preprocess` must be true or false")
        if preprocess:
            from PIL import Image

            return ("image", Image.fromarray(pixels, "L"))
        if pixels.shape != (28, 28):
            raise RequestError(422, f"with preprocess=false the image must be 28x28, not {pixels.shape[0]}x"
                               f"{pixels.shape[1]}")
        from .predict import ink_pieces

        specks, side_by_side = ink_pieces(pixels.astype(np.float32) / 255)
        facts = {"empty": not pixels.any(), "specks": specks, "pieces_side_by_side": side_by_side}
        return ("pixels", (pixels, facts))

    @app.post("/api/predict", summary="Read the digit in an image",
              description="Raw image body, multipart `file`, or JSON {\"image\": [[...]], \"preprocess\": true}.")
    async def api_predict(request: Request):
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in IMAGE_TYPES | {"application/json", "multipart/form-data"}:
            raise RequestError(415, f"content type {ctype or '(none)'!r} is not accepted",
                               f"use one of {', '.join(sorted(IMAGE_TYPES))}, multipart/form-data or application/json")
        body = await read_body(request)
        if ctype == "application/json":
            job = from_json(body)
        elif ctype == "multipart/form-data":
            async def once():
                yield body

            try:
                form = await MultiPartParser(request.headers, once(), max_files=1, max_fields=5).parse()
            except MultiPartException as exc:
                raise RequestError(400, f"malformed multipart form ({exc.message})") from None
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise RequestError(422, "multipart form needs a `file` field holding the image")
            job = decode(await upload.read(), upload.filename or "upload")
        else:
            job = decode(body, "request body")
        # In a worker thread, so the event loop keeps accepting and parsing requests meanwhile
        # (measured: running it inline stalls the loop, and p99 grows fourfold).
        return JSONResponse(await run_in_threadpool(run, job))  # plain JSON types: skip re-encoding

    @app.get("/api/health", summary="Liveness")
    async def api_health():
        return {"status": "ok"}

    @app.get("/api/model", summary="The model being served")
    async def api_model():
        return info

    @app.get("/", include_in_schema=False)
    async def page():
        with resources.as_file(static / "index.html") as p:
            return FileResponse(p, media_type="text/html")

    with resources.as_file(static) as static_dir:
        app.mount("/static", StaticFiles(directory=static_dir), name="static")
    _mount_docs(app)
    return app


def _mount_docs(app) -> None:
    """Swagger UI from the swagger-ui-bundle package, when installed (no CDN); else only /openapi.json."""
    try:
        import swagger_ui_bundle
    except ImportError:
        return
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(openapi_url="/openapi.json", title="mnistlab API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon-32x32.png")


def _version() -> str:
    from .. import __version__

    return __version__


def serve(model=None, *, host: str = "127.0.0.1", port: int = 8000, max_body: int = MAX_BODY,
          max_pixels: int = MAX_PIXELS, log_level: str = "info") -> None:
    """Run the server until interrupted."""
    try:
        import uvicorn
    except ImportError:
        raise MnistlabError("serving needs FastAPI and uvicorn", hint="pip install 'mnistlab[serve]'") from None
    from ..analysis.ensemble import load_predictor
    from .predict import default_predictor

    # One request is one small forward pass: intra-op threads only contend with the server's own.
    torch.set_num_threads(1)
    predictor = default_predictor() if model is None else load_predictor(model)
    app = create_app(predictor, source=str(model) if model else None, max_body=max_body, max_pixels=max_pixels)
    print(f"mnistlab: serving {app.title} model {predictor.meta.get('name')} on http://{host}:{port}/", flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
