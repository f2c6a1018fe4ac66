"""Pictures, the one way: labelled image grids, matplotlib on the headless Agg backend, and PNGs
written atomically (a temporary file, then a rename). Every figure mnistlab draws goes through here."""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from . import atomic
from .errors import MnistlabError


def save_png(image: Image.Image, out: str | os.PathLike) -> Path:
    """Write `image` to `out` via a temporary file and a rename, so no half-written PNG is left."""
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise MnistlabError(f"--out {out}: expected a file name ending in .png")
    if out.parent and not out.parent.exists():
        raise MnistlabError(f"--out {out}: directory {out.parent} does not exist")
    with atomic.replacing(out) as tmp:
        image.save(tmp, format="PNG")
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


def grid_html(images: np.ndarray, captions: Sequence[str], title: str) -> str:
    """An image grid as an inline PNG in a small HTML block (a notebook display)."""
    buf = io.BytesIO()
    image_grid(images, captions).save(buf, format="PNG")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return (f"<div><b>{html.escape(title)}</b><br><img src='data:image/png;base64,{data}' "
            f"alt='{html.escape(title)}'></div>")


def coloured(values: np.ndarray, cmap: str, vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """(H, W) values as an (H, W, 3) uint8 picture through a matplotlib colormap, scaled from `vmin`
    to `vmax` (by default the values' own range, as `imshow` scales them)."""
    pyplot()
    import matplotlib

    values = np.asarray(values, dtype=np.float64)
    lo = float(values.min()) if vmin is None else vmin
    hi = float(values.max()) if vmax is None else vmax
    scaled = np.clip((values - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(values)
    return (matplotlib.colormaps[cmap](scaled)[..., :3] * 255).round().astype(np.uint8)


def mosaic(rows: Sequence[Sequence[np.ndarray | None]], cell: int, pad: int = 2, gap: int = 0) -> np.ndarray:
    """Rows of (H, W, 3) uint8 tiles (None: an empty place) as one white picture, each tile resized to
    cell x cell (nearest pixel), `pad` pixels apart and `gap` more above each row (room for a label).
    One `imshow` of this draws a grid of hundreds of tiles in a fraction of the time a subplot per
    tile takes."""
    cols = max((len(r) for r in rows), default=0)
    pitch = cell + pad + gap
    out = np.full((len(rows) * pitch + pad, cols * (cell + pad) + pad, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            if tile is not None:
                y, x = r * pitch + gap + pad, pad + c * (cell + pad)
                out[y:y + cell, x:x + cell] = np.asarray(Image.fromarray(tile).resize((cell, cell), Image.NEAREST))
    return out


def mosaic_figure(rows: Sequence[Sequence[np.ndarray | None]], *, cell: int, title: str,
                  labels: Sequence[Sequence[str]] = (), inches_per_cell: float = 0.8):
    """(figure, axes) showing `mosaic(rows, cell)` on one axes; `labels[r][c]`, if given, is written
    above tile c of row r (say, a row's name above its first tile)."""
    gap = 14 if labels else 0
    picture = mosaic(rows, cell, gap=gap)
    cols = max(len(r) for r in rows)
    fig, ax = pyplot().subplots(figsize=(cols * inches_per_cell, len(rows) * inches_per_cell * (1 + gap / cell) + 0.4))
    ax.imshow(picture, interpolation="nearest")
    ax.axis("off")
    for r, row_labels in enumerate(labels):
        for c, label in enumerate(row_labels):
            if label:
                ax.text(2 + c * (cell + 2), r * (cell + 2 + gap) + gap, label, fontsize=7, va="bottom", ha="left")
    fig.suptitle(title, fontsize=9)
    return fig, ax


def pyplot():
    """matplotlib.pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def figure(width: float, height: float, **subplots):
    """(pyplot, figure, axes) of a new figure `width` x `height` inches at 110 dpi."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(width, height), dpi=110, **subplots)
    return plt, fig, ax


def save_figure(fig, out: str | os.PathLike, *, dpi: float | None = None, crop: bool = False) -> Path:
    """A matplotlib figure as a PNG at `out`, atomically (tight layout, or cropped to its content); closed after."""
    buf = io.BytesIO()
    if not crop:
        fig.tight_layout()
    fig.savefig(buf, format="png", dpi=dpi or fig.dpi, bbox_inches="tight" if crop else None)
    pyplot().close(fig)
    buf.seek(0)
    return save_png(Image.open(buf), out)
