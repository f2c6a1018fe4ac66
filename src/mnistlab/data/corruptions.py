"""MNIST-C-style corruptions: the 15 of Mu & Gilmer (2019, "MNIST-C: A Robustness Benchmark for
Computer Vision"), at the severities of their published set, re-implemented from the paper's
definitions with numpy, scipy and scikit-image (motion blur in numpy, since the original calls
ImageMagick). "MNIST-C-style": the published pixels cannot be regenerated bit for bit (their random
draws came from numpy's global state and ImageMagick), so these are the same corruptions, not the
same images.

    out = corrupt(images_u8, "fog", seeds)     # (N,28,28) uint8 -> (N,28,28) uint8, labels unchanged

Every image has its own random generator, seeded by (the corruption, the image's seed): the same
image gets the same pixels on every machine, whatever else is corrupted with it or in what order
(numpy's PCG64 draws are exact; the arithmetic is float64, rounded to uint8 at the end).

| name | what (severity of the published set) |
|---|---|
| shot-noise | Poisson noise: poisson(3 x) / 3 |
| impulse-noise | salt and pepper, 17% of the pixels |
| glass-blur | a vertical Gaussian blur (sigma 0.7), pixels swapped with a neighbour 1 px up or left (2 passes), blurred again |
| motion-blur | a one-sided Gaussian streak (radius 10, sigma 3) at an angle in +-45 degrees |
| shear | an affine shear of 0.4 rad, either way, about the centre |
| scale | shrunk to 70% about the centre |
| rotate | 0.4 rad (23 degrees), either way, about the centre |
| brightness | +0.5 on every pixel (the HSV value of a grey image), clipped |
| translate | 3 px along each axis, each either way |
| stripe | the 7 columns at each edge inverted |
| fog | a plasma fractal (diamond-square, decay 1.4) of weight 3 added, the range rescaled |
| spatter | smoothed, thresholded noise blobs of grey 63/255 over the digit |
| dotted-line | a dashed anti-aliased line across the image |
| zigzag | an anti-aliased zigzag line across the image |
| canny-edges | the digit replaced by its Canny edges (sigma 1) |
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import ndimage

from ..errors import MnistlabError

SIDE = 28
CENTRE = (SIDE - 1) / 2  # 13.5: geometric transforms keep the image's centre fixed


def _skimage_feature():
    try:
        from skimage import feature
    except ImportError:  # an optional extra: only canny edges and stroke thickness need it
        raise MnistlabError("the canny-edges corruption and stroke thickness need scikit-image",
                            hint="pip install 'mnistlab[shift]'") from None
    return feature


def gaussian(x: np.ndarray, sigma) -> np.ndarray:
    """A Gaussian blur as scikit-image's `filters.gaussian` does it (nearest-edge, truncated at 4 sigma)."""
    return ndimage.gaussian_filter(x, sigma, mode="nearest", truncate=4.0)


def affine(x: np.ndarray, matrix: np.ndarray, shift=(0.0, 0.0)) -> np.ndarray:
    """`x` warped by a 2x2 matrix mapping (x, y) = (column, row) of the output to the input, about the
    centre, then moved by `shift` (dx, dy) pixels; bilinear, zeros outside (scikit-image's `warp`)."""
    m = np.asarray(matrix, dtype=np.float64)
    rc = np.array([[m[1, 1], m[1, 0]], [m[0, 1], m[0, 0]]])  # the same map in (row, column) order
    centre = np.array([CENTRE, CENTRE])
    offset = centre - rc @ centre - np.array([shift[1], shift[0]]) @ rc.T
    return ndimage.affine_transform(x, rc, offset=offset, order=1, mode="constant", cval=0.0)


def rotation(theta: float) -> np.ndarray:
    """The inverse map of a rotation by `theta` radians (as scikit-image's AffineTransform(rotation=...)
    used as an inverse map)."""
    return np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])


def shearing(amount: float) -> np.ndarray:
    """The inverse map of a shear by `amount` radians along x."""
    return np.array([[1.0, -math.sin(amount)], [0.0, math.cos(amount)]])


def sign(rng: np.random.Generator) -> int:
    return 1 if rng.random() < 0.5 else -1


# ---------- the fifteen ----------

def shot_noise(x, rng):
    return rng.poisson(x * 3) / 3


def impulse_noise(x, rng, amount: float = 0.17):
    u, salt = rng.random(x.shape), rng.random(x.shape) < 0.5
    out = x.copy()
    hit = u < amount
    out[hit] = salt[hit].astype(np.float64)
    return out


def glass_blur(x, rng, sigma: float = 0.7, delta: int = 1, passes: int = 2):
    return glass_blur_each(x[None], [rng], sigma, delta, passes)[0]


def glass_blur_each(images: np.ndarray, rngs, sigma: float = 0.7, delta: int = 1, passes: int = 2) -> np.ndarray:
    """Glass blur of a batch (N,28,28 in [0,1]): blurred vertically, rounded to bytes as the published set was, then
    each pixel (bottom-right to top-left, `passes` times) swapped with a chance of 1/2 with the one at an
    offset in [-delta, delta) per axis, and blurred again. Each image's coin flips and offsets come from its
    own generator, drawn up front; the swaps run in order, for every image at once."""
    positions = [(h, w) for h in range(SIDE - delta, delta, -1) for w in range(SIDE - delta, delta, -1)]
    steps = passes * len(positions)
    coins = np.stack([r.random(steps) < 0.5 for r in rngs])  # (N, steps)
    offsets = np.stack([r.integers(-delta, delta, size=(steps, 2)) for r in rngs])  # (N, steps, (dy, dx))
    # The published set blurred a 2-D image as if its columns were colour channels (scikit-image's
    # multichannel=True): along the rows' axis alone. So does this.
    y = np.stack([np.floor(np.clip(gaussian(img, (sigma, 0)), 0, 1) * 255) / 255 for img in images])
    every = np.arange(len(y))
    for step in range(steps):
        h, w = positions[step % len(positions)]
        hit = every[coins[:, step]]
        h2, w2 = h + offsets[hit, step, 0], w + offsets[hit, step, 1]
        here, there = y[hit, h, w].copy(), y[hit, h2, w2]
        y[hit, h, w] = there
        y[hit, h2, w2] = here
    return np.stack([gaussian(img, (sigma, 0)) for img in y])


def motion_kernel_offsets(angle_deg: float, radius: int = 10, sigma: float = 3.0):
    """(offsets (dy, dx), weights) of a one-sided Gaussian streak: the image drawn again at 0..radius
    pixels along the angle, each copy weighted by exp(-d^2 / 2 sigma^2), the weights summing to 1."""
    d = np.arange(radius + 1, dtype=np.float64)
    w = np.exp(-d ** 2 / (2 * sigma ** 2))
    a = math.radians(angle_deg)
    return [(int(round(k * math.sin(a))), int(round(k * math.cos(a)))) for k in d], w / w.sum()


def shifted(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """`x` moved by whole pixels (down, right), zeros where nothing comes in."""
    out = np.zeros_like(x)
    h, w = x.shape
    out[max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)] = \
        x[max(0, -dy):h + min(0, -dy), max(0, -dx):w + min(0, -dx)]
    return out


def motion_blur(x, rng):
    offsets, weights = motion_kernel_offsets(rng.uniform(-45, 45))
    return sum(wt * shifted(x, dy, dx) for (dy, dx), wt in zip(offsets, weights))


def shear(x, rng, amount: float = 0.4):
    return affine(x, shearing(amount * sign(rng)))


def scale(x, rng, factor: float = 0.7):
    return affine(x, np.eye(2) / factor)


def rotate(x, rng, theta: float = 0.4):
    return affine(x, rotation(theta * sign(rng)))


def brightness(x, rng, amount: float = 0.5):
    return x + amount


def translate(x, rng, px: int = 3):
    return shifted(x, px * sign(rng), px * sign(rng))


def stripe(x, rng, width: int = 7):
    out = x.copy()
    out[:, :width] = 1 - out[:, :width]
    out[:, SIDE - width:] = 1 - out[:, SIDE - width:]
    return out


def plasma(rng: np.random.Generator, size: int = 256, decay: float = 1.4) -> np.ndarray:
    """A diamond-square height map in [0, 1] (size a power of two), its random offsets from `rng`:
    each level's midpoints are the mean of their four neighbours plus noise that shrinks by `decay`."""
    m = np.zeros((size, size))
    step, wobble = size, 100.0
    while step >= 2:
        half = step // 2
        corners = m[0:size:step, 0:size:step]
        around = corners + np.roll(corners, -1, axis=0)
        around = around + np.roll(around, -1, axis=1)
        m[half:size:step, half:size:step] = around / 4 + wobble * rng.uniform(-wobble, wobble, around.shape)
        centres = m[half:size:step, half:size:step]
        corners = m[0:size:step, 0:size:step]
        across = centres + np.roll(centres, 1, axis=0) + corners + np.roll(corners, -1, axis=1)
        m[0:size:step, half:size:step] = across / 4 + wobble * rng.uniform(-wobble, wobble, across.shape)
        down = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=0)
        m[half:size:step, 0:size:step] = down / 4 + wobble * rng.uniform(-wobble, wobble, down.shape)
        step //= 2
        wobble /= decay
    m -= m.min()
    return m / m.max()


def fog(x, rng, weight: float = 3.0, decay: float = 1.4):
    peak = x.max()
    return (x + weight * plasma(rng, decay=decay)[:SIDE, :SIDE]) * peak / (peak + weight)


def spatter(x, rng):
    liquid = gaussian(rng.normal(0.65, 0.3, x.shape), 1.0)
    wet = (liquid > 0.65).astype(np.float64)
    mask = gaussian(wet, 1.5)
    mask[mask < 0.8] = 0
    return x * (1 - mask) + 63 / 255 * mask


def line(c0: float, r0: float, c1: float, r1: float) -> np.ndarray:
    """An anti-aliased line between (column, row) points: 1 + log(1 - d / 2.3) of the vertical distance
    d to it (clipped), over the columns from floor(c0) to ceil(c1)."""
    if c1 == c0:
        return np.zeros((SIDE, SIDE))
    cols, rows = np.meshgrid(np.arange(SIDE, dtype=np.float64), np.arange(SIDE, dtype=np.float64), sparse=True)
    slope = (r1 - r0) / (c1 - c0)
    dist = np.clip(np.abs(rows - (slope * (cols - c0) + r0)), 0, 2.3 - 1e-10)
    out = np.clip(np.log(1 - dist / 2.3) + 1, 0, 1)
    out[:, :int(math.floor(c0))] = 0
    out[:, int(math.ceil(c1)):] = 0
    return out


def dotted_line(x, rng):
    r0, r1 = rng.integers(0, SIDE - 1, size=2)
    drawn = line(0, r0, SIDE - 1, r1)
    for start in range(0, SIDE + 2, 4):  # every other pair of columns left out: dashes 2 px long
        drawn[:, start:start + 2] = 0
    return x + drawn


def zigzag(x, rng, length: float = 2.0, amplitude: float = 2.0):
    c0, c1 = 2, SIDE - 3
    r0 = int(rng.integers(0, SIDE - 1))
    r1 = r0 + int(rng.integers(-5, 5))
    theta = math.atan((r1 - r0) / (c1 - c0))
    d = (c1 - c0) / math.cos(theta)
    points = [(0.0, 0.0)]
    r_i = 0.0
    for i in range(int((d - length) // (2 * length)) + 1):
        r_i = (-1) ** i * amplitude
        points.append(((2 * i + 1) * length, r_i))
    last = (2 * length) * (d // (2 * length))
    if d != last:
        points.append((d, r_i / (2 * (d - last))))
    turn = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    cs, rs = turn @ np.array(points).T
    out = x.copy()
    for i in range(1, len(cs)):
        out = np.clip(out + line(cs[i - 1] + c0, rs[i - 1] + r0, cs[i] + c0, rs[i] + r0), 0, 1)
    return out


def canny_edges(x, rng):
    return _skimage_feature().canny(x).astype(np.float64)


Corruption = Callable[[np.ndarray, np.random.Generator], np.ndarray]

# In the paper's order: noise, blur, affine, brightness and the rest.
CORRUPTIONS: dict[str, Corruption] = {
    "shot-noise": shot_noise, "impulse-noise": impulse_noise, "glass-blur": glass_blur,
    "motion-blur": motion_blur, "shear": shear, "scale": scale, "rotate": rotate, "brightness": brightness,
    "translate": translate, "stripe": stripe, "fog": fog, "spatter": spatter, "dotted-line": dotted_line,
    "zigzag": zigzag, "canny-edges": canny_edges,
}


def stream_of(name: str) -> int:
    """A fixed number per name (its bytes; not Python's hash, which changes per process)."""
    return int.from_bytes(name.encode()[:16].ljust(16, b"\0"), "little") % (2 ** 63)


def generator(name: str, seed: int) -> np.random.Generator:
    """Image `seed`'s own generator for transform `name`."""
    return np.random.default_rng([stream_of(name), int(seed)])


def to_u8(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)


def apply_each(fn: Callable[[np.ndarray, np.random.Generator], np.ndarray], name: str, images: np.ndarray,
               seeds) -> np.ndarray:
    """(N,28,28) uint8 -> uint8: `fn` on each image in [0, 1] (float64) with the image's own generator."""
    out = np.empty_like(images)
    for i, (img, seed) in enumerate(zip(images, seeds)):
        out[i] = to_u8(fn(img.astype(np.float64) / 255, generator(name, seed)))
    return out


def corrupt(images: np.ndarray, name: str, seeds) -> np.ndarray:
    """The images (N,28,28 uint8) under corruption `name`, image i drawing from seed `seeds[i]`."""
    if name not in CORRUPTIONS:
        raise MnistlabError(f"unknown corruption {name!r}", hint=f"expected one of {', '.join(CORRUPTIONS)}")
    if name == "glass-blur":  # its swaps run over the whole batch at once (a loop per image costs 8 ms)
        return to_u8(glass_blur_each(images.astype(np.float64) / 255, [generator(name, s) for s in seeds]))
    return apply_each(CORRUPTIONS[name], name, images, seeds)
