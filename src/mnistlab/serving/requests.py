"""HTTP request bodies into work for the model: a raw image, a multipart form's `file`, or a JSON
array of pixels. Plain functions of (content type, body bytes), so that tests and the fuzzer call
them without a server; every bad body ends in a RequestError with the HTTP status to answer.

JSON is parsed with bounds: nesting deeper than Python's recursion limit, integers of more than
MAX_INT_DIGITS digits, NaN and Infinity are refused, and the `image` array is checked for shape
(at most MAX_JSON_SIDE per side) before any array is built.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from PIL import Image
from python_multipart.multipart import (
    FormParserError,
    MultipartParseError,
    MultipartParser,
    MultipartState,
    parse_options_header,
)

from ..data.images import MAX_PIXELS, ImageTooLarge, open_image, to_pixels
from ..errors import MnistlabError

IMAGE_TYPES = {"image/png", "image/jpeg", "image/bmp", "image/gif", "image/webp", "image/x-ms-bmp"}
ACCEPTED_TYPES = IMAGE_TYPES | {"application/json", "multipart/form-data"}
MAX_JSON_SIDE = 512
MAX_INT_DIGITS = 20
MAX_FORM_PARTS = 5


class RequestError(MnistlabError):
    """A client's mistake (or a 503: the server's capacity), with the HTTP status to answer it with;
    `body_read` False when the request's body is still unread on the connection."""

    def __init__(self, status: int, message: str, hint: str | None = None, *, body_read: bool = True):
        super().__init__(message, hint)
        self.status, self.body_read = status, body_read


@dataclass
class Job:
    """What the model is to read: a picture to bring into MNIST's form, or 28x28 pixels already in it."""

    image: Image.Image | None = None
    pixels: np.ndarray | None = None  # uint8 (28,28), with preprocess=false


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def check_media_type(content_type: str | None) -> str:
    """The request's media type, if the API takes it; a 415 otherwise."""
    ctype = media_type(content_type)
    if ctype not in ACCEPTED_TYPES:
        raise RequestError(415, f"content type {ctype or '(none)'!r} is not accepted",
                           f"use one of {', '.join(sorted(IMAGE_TYPES))}, multipart/form-data or application/json")
    return ctype


def decode(content_type: str | None, body: bytes, *, max_pixels: int = MAX_PIXELS) -> Job:
    """The job a request body asks for (see the module docstring)."""
    ctype = check_media_type(content_type)
    if not body:
        raise RequestError(400, "empty request body", "send an image, a multipart form with a `file` field, "
                           'or JSON {"image": [[...]]}')
    if ctype == "application/json":
        return decode_json(body)
    if ctype == "multipart/form-data":
        filename, data = multipart_file(content_type, body)
        return image_job(data, filename, max_pixels)
    return image_job(body, "request body", max_pixels)


def image_job(data: bytes, what: str, max_pixels: int) -> Job:
    try:
        return Job(image=open_image(data, name=what, max_pixels=max_pixels))
    except ImageTooLarge as exc:
        raise RequestError(413, exc.message, exc.hint) from None
    except MnistlabError as exc:
        raise RequestError(400, exc.message, exc.hint) from None


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits")
    return int(text)


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number")


def parse_json(body: bytes):
    """The JSON document in `body`, parsed with bounds; a 400 for anything else."""
    try:
        return json.loads(body, parse_int=_bounded_int, parse_constant=_no_constant)
    except RecursionError:
        raise RequestError(400, "body is not valid JSON (nested too deeply)") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, the bounds above
        raise RequestError(400, f"body is not valid JSON ({str(exc)[:200]})") from None


def decode_json(body: bytes) -> Job:
    """{"image": [[...], ...], "preprocess": true|false} -> a Job."""
    doc = parse_json(body)
    if not isinstance(doc, dict) or "image" not in doc:
        raise RequestError(422, "JSON body must be an object with an `image` field: a 2-D array of pixels")
    rows = doc["image"]
    number = (int, float)
    if (not isinstance(rows, list) or not rows or not all(isinstance(r, list) and r for r in rows)
            or any(len(r) != len(rows[0]) for r in rows)
            or not all(isinstance(v, number) and not isinstance(v, bool) for r in rows for v in r)):
        raise RequestError(422, "`image` must be a 2-D array of numbers (rows of equal length)")
    if len(rows) > MAX_JSON_SIDE or len(rows[0]) > MAX_JSON_SIDE:
        raise RequestError(422, f"`image` has shape [{len(rows)}, {len(rows[0])}], expected a 2-D array of at most "
                           f"{MAX_JSON_SIDE}x{MAX_JSON_SIDE}")
    preprocess = doc.get("preprocess", True)
    if not isinstance(preprocess, bool):
        raise RequestError(422, "`preprocess` must be true or false")
    try:
        pixels = to_pixels(np.asarray(rows, dtype=np.float64), "`image`", max_side=MAX_JSON_SIDE)
    except MnistlabError as exc:
        raise RequestError(422, exc.message) from None
    if preprocess:
        return Job(image=Image.fromarray(pixels, "L"))
    if pixels.shape != (28, 28):
        raise RequestError(422, f"with preprocess=false the image must be 28x28, not {pixels.shape[0]}x"
                           f"{pixels.shape[1]}")
    return Job(pixels=pixels)


def multipart_file(content_type: str, body: bytes) -> tuple[str, bytes]:
    """(filename, bytes) of a multipart/form-data body's `file` field."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise RequestError(400, "malformed multipart form (no boundary in the Content-Type)")
    parts: list[dict] = []
    header: dict = {}

    def part_begin():
        if len(parts) >= MAX_FORM_PARTS:
            raise MultipartParseError(f"more than {MAX_FORM_PARTS} parts")
        parts.append({"headers": {}, "data": []})

    def header_field(data, start, end):
        header["field"] = header.get("field", b"") + data[start:end]

    def header_value(data, start, end):
        header["value"] = header.get("value", b"") + data[start:end]

    def header_end():
        parts[-1]["headers"][header.pop("field", b"").lower()] = header.pop("value", b"")

    callbacks = {"on_part_begin": part_begin, "on_header_field": header_field, "on_header_value": header_value,
                 "on_header_end": header_end,
                 "on_part_data": lambda data, start, end: parts[-1]["data"].append(data[start:end])}
    try:
        parser = MultipartParser(boundary, callbacks, max_size=len(body))
        parser.write(body)
        parser.finalize()
        if parser.state != MultipartState.END:
            raise MultipartParseError("the form ends before its closing boundary")
    except (MultipartParseError, FormParserError, ValueError, IndexError) as exc:
        raise RequestError(400, f"malformed multipart form ({str(exc)[:200]})") from None
    for part in parts:
        disposition, options = parse_options_header(part["headers"].get(b"content-disposition", b""))
        if disposition == b"form-data" and options.get(b"name") == b"file" and b"filename" in options:
            return options[b"filename"].decode("utf-8", "replace")[:200] or "upload", b"".join(part["data"])
    raise RequestError(422, "multipart form needs a `file` field holding the image")
