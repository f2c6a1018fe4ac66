"""Pictures, the one way: labelled image grids, matplotlib on the headless Agg backend, and PNGs
written atomically (a temporary file, then a rename). Every figure mnistlab draws goes through here."""

from __future__ import annotations

import base64
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from . import atomic, pages
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
    """A grid of uint8 images ((N,H,W) gray or (N,C,H,W) colour), each upscaled with a caption below,
    laid out to fit its tile: wrapped onto up to three lines, smaller type where it must, never over a
    neighbour's (Fashion-MNIST's `Coat>T-shirt/top` is wider than a 28-pixel digit's tile)."""
    n = len(images)
    if n == 0:
        raise MnistlabError("no images to draw")
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    colour = images.ndim == 4
    h, w = images.shape[-2:]
    cell_w, cell_h = w * scale, h * scale
    font_size = max(10, 4 * scale)
    fitted = [fit_caption(str(c), cell_w, font_size) for c in captions[:n]]
    line_h = max(size for _, size in fitted) + 2
    caption_h = max(len(lines) for lines, _ in fitted) * line_h + 4
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
        lines, size = fitted[i]
        font = _font(size)
        for k, line in enumerate(lines):
            tw = draw.textlength(line, font=font)
            draw.text((x0 + (cell_w - tw) / 2, y0 + cell_h + 2 + k * line_h), line, fill="black", font=font)
    return canvas


MAX_CAPTION_LINES = 3


def titled(picture: Image.Image, title: str, size: int = 14) -> Image.Image:
    """`picture` with `title` above it, wrapped to its width: a gallery that says what it shows."""
    measure = ImageDraw.Draw(Image.new("L", (1, 1)))
    font = _font(size)
    lines, line = [], ""
    for piece in _pieces(title):
        if line and measure.textlength(line + piece, font=font) > picture.width - 8:
            lines.append(line.rstrip())
            line = piece
        else:
            line += piece
    lines.append(line.rstrip())
    band = len(lines) * (size + 3) + 6
    out = Image.new("RGB", (picture.width, picture.height + band), "white")
    draw = ImageDraw.Draw(out)
    for k, text in enumerate(lines):
        draw.text((4, 4 + k * (size + 3)), text, fill="black", font=font)
    out.paste(picture.convert("RGB"), (0, band))
    return out


def _font(size: int):
    return ImageFont.load_default(size=size)


def _pieces(text: str) -> list[str]:
    """Where a caption may break: after spaces, '>' and '/' (kept with the piece before them)."""
    pieces, word = [], ""
    for ch in text:
        word += ch
        if ch in " >/":
            pieces.append(word)
            word = ""
    return pieces + ([word] if word else [])


def fit_caption(text: str, width: float, size: int) -> tuple[list[str], int]:
    """(lines, font size): `text` wrapped to `width` pixels at the largest size from `size` down to
    two thirds of it that needs at most MAX_CAPTION_LINES lines; cut with an ellipsis past that."""
    measure = ImageDraw.Draw(Image.new("L", (1, 1)))
    for s in range(size, max(8, 2 * size // 3) - 1, -1):
        font = _font(s)
        lines, line = [], ""
        for piece in _pieces(text):
            if line and measure.textlength(line + piece, font=font) > width:
                lines.append(line.rstrip())
                line = piece
            else:
                line += piece
        lines.append(line.rstrip())
        if len(lines) <= MAX_CAPTION_LINES and all(measure.textlength(x, font=font) <= width for x in lines):
            return lines, s
    font = _font(s)
    lines = lines[:MAX_CAPTION_LINES]
    for k, x in enumerate(lines):  # still too wide (one long word): each line cut to fit
        while x and measure.textlength(x + "…", font=font) > width:
            x = x[:-1]
        lines[k] = x + ("…" if x != lines[k] else "")
    return lines, s


def grid_html(images: np.ndarray, captions: Sequence[str], title: str) -> str:
    """An image grid as an inline PNG in a small HTML block (a notebook display)."""
    buf = io.BytesIO()
    image_grid(images, captions).save(buf, format="PNG")
    src = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    return pages.fragment("result.html", title=title, figures=[{"src": src, "caption": title}])


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
    above tile c of row r (say, a row's name above its first tile), wrapped to the tiles it may use
    (up to the next label of its row), with the room above each row made for its lines."""
    pad, font_pt = 2, 7
    cols = max(len(r) for r in rows)
    px_per_inch = (cell + pad) / inches_per_cell
    line_px = 1.3 * font_pt / 72 * px_per_inch
    chars_per_tile = max(4, int(inches_per_cell * 72 * cell / (cell + pad) / (0.6 * font_pt)))
    wrapped = []
    for row_labels in labels:
        row_labels = list(row_labels)
        at = [c for c, label in enumerate(row_labels) if label] + [cols]
        out = [[] for _ in row_labels]
        for c, nxt in zip(at, at[1:]):
            out[c] = _wrap(row_labels[c], chars_per_tile * (nxt - c))
        wrapped.append(out)
    lines = max((len(w) for row in wrapped for w in row), default=0)
    gap = int(math.ceil(lines * line_px)) + 2 if lines else 0
    picture = mosaic(rows, cell, pad=pad, gap=gap)
    fig, ax = pyplot().subplots(figsize=(cols * inches_per_cell, len(rows) * inches_per_cell * (1 + gap / cell) + 0.4))
    ax.imshow(picture, interpolation="nearest")
    ax.axis("off")
    for r, row_labels in enumerate(wrapped):
        for c, text in enumerate(row_labels):
            if text:
                ax.text(2 + c * (cell + pad), r * (cell + pad + gap) + gap, "\n".join(text), fontsize=font_pt,
                        va="bottom", ha="left", linespacing=1.1)
    fig.suptitle(title, fontsize=9)
    return fig, ax


def _wrap(text: str, chars: int) -> list[str]:
    """`text` in lines of at most `chars` characters, broken after spaces, '>' and '/' where it can."""
    lines, line = [], ""
    for piece in _pieces(text):
        if line and len(line + piece) > chars:
            lines.append(line.rstrip())
            line = piece
        else:
            line += piece
    lines.append(line.rstrip())
    return [x if len(x) <= chars else x[:max(1, chars - 1)] + "…" for x in lines]


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
