"""Any picture in MNIST's form: what `predict`, the server and the not-a-digit model's calibration
all bring pictures to before a model sees them.

MNIST's digits were made this way (LeCun et al.): light ink on a dark field, the ink's bounding box
scaled (anti-aliased) so its longer side is 20 pixels, keeping the aspect ratio, then placed in a
28x28 field so that its centre of mass sits at the centre. `to_mnist` does the same to any picture:

1. transparency: an image whose alpha channel varies (strokes on a transparent canvas) uses the
   alpha as the ink, whatever the stroke colour;
2. grayscale, and polarity: if the border is lighter than the middle grey, the picture is dark ink
   on light paper, and is inverted;
3. the background level (the border's median) is subtracted and the contrast stretched; faint
   residue under 15% of the ink's brightness (paper texture, JPEG noise) is cleared;
4. crop to the ink's bounding box; scale the longer side to 20 px (Lanczos), keep the aspect;
5. paste into 28x28 with the centre of mass at pixel (14, 14), where MNIST's own digits have it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

MAX_SPECKS = 12  # more separate pieces of ink than this is noise, not pen strokes
WORKING_SIDE = 112  # pictures are box-reduced toward this side (4x the digit's 28) before any pixel work


def _ink(img: Image.Image) -> np.ndarray:
    """float32 (H,W) in [0,1], light ink on dark, background subtracted (steps 1-3), from an image in
    mode L, LA, RGB or RGBA (what `open_image` and `standardize` give)."""
    if img.mode in ("RGBA", "LA"):
        alpha = np.asarray(img.getchannel("A"), dtype=np.float32) / 255
        if alpha.min() < 0.5 < alpha.max():  # strokes drawn on a transparent canvas: alpha is the ink
            return _clean(alpha)
        img = img.convert("RGB")
    gray = np.asarray(ImageOps.grayscale(img), dtype=np.float32) / 255
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if _quantile(border, 0.5) > 0.5:  # dark ink on light paper
        gray = 1 - gray
        border = 1 - border
    return _clean(np.maximum(gray - _quantile(border, 0.5), 0))


def _quantile(values: np.ndarray, q: float) -> float:
    """The q-quantile (nearest rank below) of a 1-D array: np.percentile's answer within one
    neighbouring value, at a tenth of its fixed cost, which dominates for the sizes here."""
    k = int(q * (values.size - 1))
    return float(np.partition(values, k)[k])


def _shrink(img: Image.Image, target: int = WORKING_SIDE) -> Image.Image:
    """The picture box-averaged by a whole factor so its longer side is at most about `target` px.

    The digit ends at 20 px, so detail beyond a few times that is never seen; every later step
    costs per pixel (a 280x280 canvas drawing: 1.4 ms -> 0.5 ms of preprocessing)."""
    factor = max(img.size) // target
    return img.reduce(factor) if factor >= 2 else img


def _clean(x: np.ndarray, floor: float = 0.15) -> np.ndarray:
    inked = x[x > 0]
    peak = _quantile(inked, 0.995) if inked.size else 0.0
    if peak < 0.1:  # no ink worth the name
        return np.zeros_like(x)
    x = np.minimum(x * np.float32(1 / peak), 1)  # x >= 0 here; ufuncs, not np.clip: a third of the cost
    x -= floor
    x *= np.float32(1 / (1 - floor))
    return np.maximum(x, 0, out=x)


def to_mnist(img: Image.Image) -> tuple[np.ndarray, dict]:
    """(uint8 (28,28) image in MNIST's form, facts about the ink) for any PIL image."""
    ink = _ink(_shrink(img))
    mask = ink > 0
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return np.zeros((28, 28), np.uint8), {"empty": True}
    crop = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    h, w = crop.shape
    scale = 20.0 / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = np.array(Image.fromarray(crop, "F").resize((nw, nh), Image.LANCZOS), dtype=np.float32)
    small = np.minimum(np.maximum(small, 0, out=small), 1, out=small)  # Lanczos rings past [0, 1]
    field_img = np.zeros((28, 28), np.float32)
    total = small.sum()
    cy, cx = ((np.arange(nh)[:, None] * small).sum() / total, (np.arange(nw)[None, :] * small).sum() / total)
    # MNIST's own digits have their centre of mass at pixel (14.0, 14.0) (the mean over the 60,000
    # training images is 13.996, 14.007), half a pixel below-right of the geometric centre 13.5.
    top = min(max(round(float(14 - cy)), 0), 28 - nh)
    left = min(max(round(float(14 - cx)), 0), 28 - nw)
    field_img[top:top + nh, left:left + nw] = small
    out = np.round(field_img * 255).astype(np.uint8)
    specks, side_by_side = ink_pieces(crop)
    return out, {"empty": False, "box": [int(h), int(w)], "specks": specks, "pieces_side_by_side": side_by_side}


def ink_pieces(crop: np.ndarray) -> tuple[int, int]:
    """(number of separate ink specks, number of large pieces side by side) in the cropped ink.

    Noise breaks into many specks; several characters make large pieces that do not overlap
    horizontally; one digit is one or two pieces (a 4 or a 5 drawn in two strokes) that overlap.
    """
    from scipy import ndimage

    labels, n = ndimage.label(crop > 0.3)
    if n < 2:
        return n, n
    sizes = np.bincount(labels.ravel())[1:]
    big = [i + 1 for i, size in enumerate(sizes) if size >= 0.15 * sizes.sum()]
    columns = [np.nonzero((labels == i).any(0))[0] for i in big]
    spans = sorted((int(c[0]), int(c[-1])) for c in columns)
    groups, right = 0, -1
    for lo, hi in spans:
        if lo > right:
            groups += 1
        right = max(right, hi)
    return n, groups
