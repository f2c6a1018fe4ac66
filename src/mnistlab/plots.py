"""Pictures: labelled image grids (and, later, the evaluation figures), written atomically as PNG."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .errors import MnistlabError


def save_png(image: Image.Image, out: str | os.PathLike) -> Path:
    """Write `image` to `out` via a temporary file and a rename, so no half-written PNG is left."""
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise MnistlabError(f"--out {out}: expected a file name ending in .png")
    if out.parent and not out.parent.exists():
        raise MnistlabError(f"--out {out}: directory {out.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            image.save(f, format="PNG")
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out


def image_grid(images: np.ndarray, captions: Sequence[str], *, scale: int = 3, cols: int | None = None) -> Image.Image:
    """A grid of uint8 images ((N,H,W) gray or (N,C,H,W) colour), each upscaled with a caption below."""
    n = len(images)
    if n == 0:
        raise MnistlabError("no images to draw")
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    colour = images.ndim == 4
    h, w = images.shape[-2:]
    cell_w, cell_h = w * scale, h * scale
    font_size = max(10, 4 * scale)
    font = ImageFont.load_default(size=font_size)
    caption_h = font_size + 6
    pad = 4
    canvas = Image.new("RGB", (cols * (cell_w + pad) + pad, rows * (cell_h + caption_h + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for i in range(n):
        r, c = divmod(i, cols)
        x0 = pad + c * (cell_w + pad)
        y0 = pad + r * (cell_h + caption_h + pad)
        arr = images[i].transpose(1, 2, 0) if colour else images[i]
        tile = Image.fromarray(np.ascontiguousarray(arr), "RGB" if colour else "L").resize((cell_w, cell_h), Image.NEAREST)
        canvas.paste(tile.convert("RGB"), (x0, y0))
        text = str(captions[i])
        tw = draw.textlength(text, font=font)
        draw.text((x0 + (cell_w - tw) / 2, y0 + cell_h + 2), text, fill="black", font=font)
    return canvas
