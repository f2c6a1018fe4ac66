"""People's images, decoded with bounded cost: the one door every picture comes in by (predict,
serve, and a dataset's image folder).

`open_image` takes a path, bytes or a file object and returns a small PIL image in one of the
modes L, LA, RGB or RGBA, or raises MnistlabError (ImageTooLarge for the 413 kind). Its limits:

- the format must be PNG, JPEG, BMP, GIF or WebP, and the file at most MAX_FILE_BYTES;
- the pixel count the header declares at most `max_pixels` (MAX_PIXELS: a 24-megapixel phone
  photo fits), checked before anything is decoded;
- JPEGs are decoded at a reduced scale (1/2 to 1/8 per side, by the decoder itself), and every
  image is reduced to at most DECODE_SIDE pixels per side before any pixel work: a digit never
  needs more, and the cost of what follows no longer grows with the upload;
- at most MAX_DECODES images are decoded at once in a process, so memory is bounded by
  MAX_DECODES x the largest decode whatever arrives (at 24 megapixels 190-210 MB for an RGBA
  or palette PNG and 380 MB for a WebP, whose decoder keeps two canvases: tests/test_predict.py);
- EXIF orientation is applied (a phone stores a portrait photo sideways and says so in EXIF);
- any decoder failure, whatever Pillow raises, is a MnistlabError naming the image.

`to_pixels` is the one rule for arrays: uint8 as it is, other numbers in 0..1 scaled by 255 or
in 0..255 kept, anything else (non-finite, negative, past 255, the wrong shape) an error.
"""

from __future__ import annotations

import io
import math
import os
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps

from ..errors import MnistlabError

MAX_PIXELS = 25_000_000  # header-declared pixels of an image; a 24-megapixel phone photo fits
MAX_DECODES = max(1, min(4, os.cpu_count() or 1))  # images decoded at once in one process

MAX_FILE_BYTES = 64 << 20  # an image file read by predict (the server has its own body limit)
DECODE_SIDE = 1024  # images are reduced to at most this many pixels per side before any pixel work
ALLOWED_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")
_decoding = threading.BoundedSemaphore(MAX_DECODES)


def limit_decodes(n: int) -> None:
    """Decode at most `n` images at once in this process (the server sets its --decoders)."""
    global _decoding
    _decoding = threading.BoundedSemaphore(n)


class ImageTooLarge(MnistlabError):
    """An image larger than allowed (refused before decoding)."""


def open_image(source, *, name: str = "image", max_pixels: int = MAX_PIXELS) -> Image.Image:
    """A decoded, oriented, reduced PIL image (mode L, LA, RGB or RGBA) from a path, bytes or file."""
    if isinstance(source, (str, os.PathLike)):
        name = str(source)
        source = _read_file(Path(source))
    elif isinstance(source, (bytes, bytearray, memoryview)):
        source = bytes(source)
    else:
        source = source.read(MAX_FILE_BYTES + 1)
        if not isinstance(source, bytes) or len(source) > MAX_FILE_BYTES:
            raise MnistlabError(f"{name}: expected the bytes of an image file of at most {MAX_FILE_BYTES:,} bytes")
    try:
        with warnings.catch_warnings():  # Pillow warns past 89 megapixels; our own, lower limit follows
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(source))
        fmt, (w, h) = img.format, img.size
    except Image.DecompressionBombError:  # Pillow's own guard, for headers past ~179 megapixels
        raise ImageTooLarge(f"{name}: more than the {max_pixels:,} pixels allowed",
                            hint="scale the image down first") from None
    except Exception as exc:  # noqa: BLE001 - whatever a damaged header makes Pillow raise
        raise MnistlabError(f"{name}: not an image mnistlab can read ({type(exc).__name__})",
                            hint=f"use one of {', '.join(ALLOWED_FORMATS)}") from None
    if fmt not in ALLOWED_FORMATS:
        raise MnistlabError(f"{name}: {fmt} images are not accepted", hint=f"use one of {', '.join(ALLOWED_FORMATS)}")
    if w * h > max_pixels:
        raise ImageTooLarge(f"{name}: {w}x{h} = {w * h:,} pixels, more than the {max_pixels:,} pixels allowed",
                            hint="scale the image down first")
    with _decoding:
        try:
            return _decode(img)
        except MnistlabError:
            raise
        except Exception as exc:  # noqa: BLE001 - a damaged body can make Pillow raise nearly anything
            raise MnistlabError(f"{name}: the image data is corrupt or truncated ({type(exc).__name__}: "
                                f"{str(exc)[:100]})") from None


def _read_file(path: Path) -> bytes:
    try:
        if not path.is_file():
            raise MnistlabError(f"{path}: no such file")
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ImageTooLarge(f"{path}: {size:,} bytes, more than the {MAX_FILE_BYTES:,} an image may have",
                                hint="scale the image down first")
        return path.read_bytes()
    except OSError as exc:
        raise MnistlabError(f"{path}: cannot read ({exc.strerror})") from None


def _decode(img: Image.Image) -> Image.Image:
    """Decode (a JPEG at a reduced scale), then `standardize`."""
    if img.format == "JPEG":
        img.draft(img.mode, (DECODE_SIDE, DECODE_SIDE))  # DCT scaling: decodes 1/2..1/8 of each side
    img.load()
    return standardize(img)


def standardize(img: Image.Image) -> Image.Image:
    """A decoded image oriented by its EXIF, in mode L, LA, RGB or RGBA, at most DECODE_SIDE per side."""
    img.load()  # a PNG's EXIF may follow its pixels
    if img.getexif().get(ExifTags.Base.Orientation, 1) != 1:
        # only then: with nothing to turn, exif_transpose returns a full-size copy (96 MB more at
        # the peak of a 24-megapixel RGBA decode)
        img = ImageOps.exif_transpose(img)
    img = _standard_mode(img)
    factor = math.ceil(max(img.size) / DECODE_SIDE)
    return img.reduce(factor) if factor > 1 else img


def _standard_mode(img: Image.Image) -> Image.Image:
    """L, LA, RGB or RGBA; 16-bit and float images scaled into 8 bits rather than clipped."""
    if img.mode in ("L", "LA", "RGB", "RGBA"):
        return img
    if img.mode == "1":
        return img.convert("L")
    if img.mode.startswith("I") or img.mode == "F":
        return _eight_bit(img)
    return img.convert("RGBA")  # palette (with or without transparency), CMYK, YCbCr, LAB, ...


def _eight_bit(img: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit or float image as 8-bit L, block-averaged to DECODE_SIDE first (Pillow cannot
    reduce I;16, and a full-size float copy of 25 megapixels would be 100 MB): scaled, not clipped."""
    values = np.asarray(img)
    f = math.ceil(max(values.shape) / DECODE_SIDE)
    fh, fw = min(f, values.shape[0]), min(f, values.shape[1])
    h, w = values.shape[0] // fh * fh, values.shape[1] // fw * fw
    values = values[:h, :w].reshape(h // fh, fh, w // fw, fw).mean(axis=(1, 3), dtype=np.float32)
    values = np.nan_to_num(values)
    top = 65535.0 if img.mode.startswith("I;16") else max(1.0, float(values.max()) if values.size else 1.0)
    scale = 255.0 / top if top > 255 else (255.0 if top <= 1 else 1.0)
    return Image.fromarray(np.clip(values * scale, 0, 255).astype(np.uint8), "L")


def to_pixels(value, name: str = "image", *, max_side: int = 4096) -> np.ndarray:
    """uint8 pixels (H,W) or (H,W,C) from an array-like, by the one rule in the module docstring."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise MnistlabError(f"{name}: expected a 2-D array of numbers (rows of equal length)") from None
    if arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
        pass
    elif arr.ndim != 2:
        raise MnistlabError(f"{name}: array of shape {list(arr.shape)}, expected (H,W) or (H,W,C) with C 1, 3 or 4")
    if not (1 <= arr.shape[0] <= max_side and 1 <= arr.shape[1] <= max_side):
        raise MnistlabError(f"{name}: array of shape {list(arr.shape)}, expected sides of 1 to {max_side}")
    return as_uint8(arr, name)


def as_uint8(arr: np.ndarray, name: str = "image") -> np.ndarray:
    """The one rule for pixel values, for an array of any shape (see the module docstring); a large
    array is converted in slices, so the float64 working copy stays small whatever comes in."""
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype == np.uint8:
        return arr
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise MnistlabError(f"{name}: array of {arr.dtype} values, expected numbers")
    flat = arr.reshape(-1) if arr.ndim else arr.reshape(1)
    step = 1 << 22  # elements per slice: 32 MB of float64
    lo, hi, finite = math.inf, -math.inf, True
    for i in range(0, flat.size, step):
        part = flat[i:i + step].astype(np.float64)
        finite = finite and bool(np.isfinite(part).all())
        if part.size:
            lo, hi = min(lo, float(part.min())), max(hi, float(part.max()))
    if not finite or lo < 0 or hi > 255:
        raise MnistlabError(f"{name}: values must be finite numbers in 0..255 (or 0..1)")
    scale = 255.0 if hi <= 1 else 1.0
    out = np.empty(flat.size, dtype=np.uint8)
    for i in range(0, flat.size, step):
        out[i:i + step] = np.round(flat[i:i + step].astype(np.float64) * scale)
    return out.reshape(arr.shape)
