"""Pictures drawn as a person draws on the draw-a-digit page: pen strokes in a unit box, jittered,
rendered with a round pen on a canvas. What the not-a-digit benchmark (`mnistlab bench ood`) and its
tests are made of: capital letters that look like no digit, scribbles, shapes, and digits drawn the
same way (so the benchmark does not just learn "drawn" from "scanned").

A stroke is a list of (x, y) points in 0..1 (x to the right, y down); a drawing is a list of strokes.
Everything is seeded: the same seed gives the same pictures on every machine (numpy's PCG64 and
Pillow's line drawing are exact).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

Stroke = list[tuple[float, float]]

# Capital letters that look like no digit (as a person draws them, in one to four strokes).
LETTERS: dict[str, list[Stroke]] = {
    "A": [[(0.2, 0.9), (0.5, 0.1), (0.8, 0.9)], [(0.32, 0.6), (0.68, 0.6)]],
    "C": [[(0.78, 0.22), (0.6, 0.1), (0.38, 0.12), (0.22, 0.3), (0.2, 0.6), (0.32, 0.84), (0.55, 0.92),
           (0.78, 0.8)]],
    "E": [[(0.75, 0.1), (0.25, 0.1), (0.25, 0.9), (0.75, 0.9)], [(0.25, 0.5), (0.65, 0.5)]],
    "F": [[(0.75, 0.1), (0.25, 0.1), (0.25, 0.9)], [(0.25, 0.5), (0.62, 0.5)]],
    "H": [[(0.22, 0.1), (0.22, 0.9)], [(0.78, 0.1), (0.78, 0.9)], [(0.22, 0.5), (0.78, 0.5)]],
    "K": [[(0.25, 0.1), (0.25, 0.9)], [(0.75, 0.1), (0.27, 0.55)], [(0.4, 0.45), (0.78, 0.9)]],
    "M": [[(0.15, 0.9), (0.2, 0.1), (0.5, 0.6), (0.8, 0.1), (0.85, 0.9)]],
    "N": [[(0.22, 0.9), (0.22, 0.1), (0.78, 0.9), (0.78, 0.1)]],
    "P": [[(0.28, 0.9), (0.28, 0.1), (0.6, 0.1), (0.74, 0.2), (0.74, 0.38), (0.6, 0.5), (0.28, 0.5)]],
    "R": [[(0.28, 0.9), (0.28, 0.1), (0.6, 0.1), (0.74, 0.2), (0.74, 0.38), (0.6, 0.5), (0.28, 0.5)],
          [(0.48, 0.5), (0.76, 0.9)]],
    "T": [[(0.15, 0.1), (0.85, 0.1)], [(0.5, 0.1), (0.5, 0.9)]],
    "U": [[(0.22, 0.1), (0.22, 0.7), (0.35, 0.88), (0.5, 0.92), (0.65, 0.88), (0.78, 0.7), (0.78, 0.1)]],
    "V": [[(0.18, 0.1), (0.5, 0.9), (0.82, 0.1)]],
    "W": [[(0.1, 0.1), (0.3, 0.9), (0.5, 0.4), (0.7, 0.9), (0.9, 0.1)]],
    "X": [[(0.2, 0.1), (0.8, 0.9)], [(0.8, 0.1), (0.2, 0.9)]],
    "Y": [[(0.2, 0.1), (0.5, 0.5), (0.8, 0.1)], [(0.5, 0.5), (0.5, 0.9)]],
}

# Digits drawn the same way: the in-distribution side of a drawn benchmark.
DIGITS: dict[str, list[Stroke]] = {
    "0": [[(0.5, 0.1), (0.3, 0.22), (0.24, 0.5), (0.32, 0.8), (0.5, 0.9), (0.68, 0.8), (0.76, 0.5), (0.7, 0.22),
           (0.5, 0.1)]],
    "1": [[(0.38, 0.25), (0.55, 0.1), (0.55, 0.9)]],
    "2": [[(0.25, 0.28), (0.4, 0.12), (0.62, 0.12), (0.74, 0.3), (0.66, 0.5), (0.25, 0.88), (0.78, 0.88)]],
    "3": [[(0.28, 0.15), (0.6, 0.1), (0.72, 0.25), (0.6, 0.45), (0.42, 0.5), (0.62, 0.55), (0.74, 0.72),
           (0.6, 0.9), (0.26, 0.86)]],
    "4": [[(0.6, 0.1), (0.22, 0.62), (0.78, 0.62)], [(0.6, 0.32), (0.6, 0.92)]],
    "5": [[(0.72, 0.1), (0.34, 0.1), (0.3, 0.45), (0.55, 0.42), (0.72, 0.58), (0.7, 0.8), (0.5, 0.92),
           (0.26, 0.84)]],
    "6": [[(0.66, 0.1), (0.4, 0.3), (0.28, 0.6), (0.36, 0.86), (0.58, 0.9), (0.72, 0.72), (0.62, 0.52),
           (0.4, 0.54), (0.3, 0.66)]],
    "7": [[(0.22, 0.12), (0.78, 0.12), (0.45, 0.9)]],
    "8": [[(0.6, 0.15), (0.45, 0.1), (0.3, 0.2), (0.35, 0.4), (0.65, 0.58), (0.7, 0.8), (0.5, 0.92),
           (0.3, 0.8), (0.35, 0.58), (0.65, 0.4), (0.68, 0.2), (0.6, 0.15)]],
    "9": [[(0.7, 0.3), (0.55, 0.12), (0.35, 0.15), (0.3, 0.35), (0.45, 0.48), (0.68, 0.4), (0.7, 0.25),
           (0.68, 0.9)]],
}

CANVAS = 280  # the page's drawing pad, in pixels


def jitter(strokes: list[Stroke], rng: np.random.Generator, *, wobble: float = 0.03,
           slant: float = 0.15, squash: float = 0.15) -> list[Stroke]:
    """The drawing as one person's hand would make it: each point moved a little, the whole slanted,
    stretched and placed somewhere on the pad (the page centres and scales it anyway)."""
    shear = rng.uniform(-slant, slant)
    sx, sy = 1 + rng.uniform(-squash, squash), 1 + rng.uniform(-squash, squash)
    scale = rng.uniform(0.55, 0.85)
    cx, cy = rng.uniform(0.4, 0.6, size=2)
    out = []
    for stroke in strokes:
        pts = np.asarray(stroke, dtype=np.float64) + rng.normal(0, wobble, size=(len(stroke), 2))
        x, y = pts[:, 0] - 0.5, pts[:, 1] - 0.5
        x = (x + shear * y) * sx
        y = y * sy
        out.append([(float(cx + scale * a), float(cy + scale * b)) for a, b in zip(x, y)])
    return out


def render(strokes: list[Stroke], *, width: float = 0.06, size: int = CANVAS, dark_ink: bool = False) -> Image.Image:
    """An L-mode picture of the strokes with a round pen `width` (a share of the canvas side): light
    ink on black as the page draws, or dark ink on white paper."""
    img = Image.new("L", (size, size), 255 if dark_ink else 0)
    pen = ImageDraw.Draw(img)
    w = max(1, round(width * size))
    ink = 0 if dark_ink else 255
    for stroke in strokes:
        pts = [(x * size, y * size) for x, y in stroke]
        if len(pts) > 1:
            pen.line(pts, fill=ink, width=w, joint="curve")
        for x, y in (pts[0], pts[-1]) if len(pts) > 1 else pts:  # round pen ends
            pen.ellipse((x - w / 2, y - w / 2, x + w / 2, y + w / 2), fill=ink)
    return img


def _pen(rng: np.random.Generator) -> dict:
    return {"width": float(rng.uniform(0.04, 0.09)), "dark_ink": bool(rng.random() < 0.3)}


def drawn(templates: dict[str, list[Stroke]], n: int, seed: int) -> tuple[list[Image.Image], list[str]]:
    """`n` jittered drawings of the templates, in turn, and the name of each."""
    rng = np.random.default_rng(seed)
    names = list(templates)
    pics, which = [], []
    for i in range(n):
        name = names[i % len(names)]
        pics.append(render(jitter(templates[name], rng), **_pen(rng)))
        which.append(name)
    return pics, which


def letters(n: int, seed: int = 0) -> list[Image.Image]:
    """Capital letters that look like no digit, drawn by hand."""
    return drawn(LETTERS, n, seed)[0]


def digits(n: int, seed: int = 0) -> tuple[list[Image.Image], list[int]]:
    """Digits drawn by hand, and their labels."""
    pics, names = drawn(DIGITS, n, seed)
    return pics, [int(d) for d in names]


def scribbles(n: int, seed: int = 0) -> list[Image.Image]:
    """Random scribbles: polylines of 4 to 9 points anywhere on the pad."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.integers(4, 10))
        out.append(render([[tuple(p) for p in rng.uniform(0.1, 0.9, size=(k, 2))]], **_pen(rng)))
    return out


def _polygon(sides: int, rng: np.random.Generator, star: bool = False) -> Stroke:
    turn = rng.uniform(0, 2 * math.pi)
    k = sides * (2 if star else 1)
    pts = []
    for i in range(k + 1):
        r = 0.4 if not star or i % 2 == 0 else 0.17
        a = turn + 2 * math.pi * i / k
        pts.append((0.5 + r * math.cos(a), 0.5 + r * math.sin(a)))
    return pts


def shapes(n: int, seed: int = 0) -> list[Image.Image]:
    """Shapes a person might draw instead of a digit: triangles, squares, stars, a hash, a grid, a
    zigzag, a spiral, a filled blob. (No circle: a drawn circle is a fair 0.)"""
    rng = np.random.default_rng(seed)
    makers = [
        lambda: [_polygon(3, rng)],
        lambda: [_polygon(4, rng)],
        lambda: [_polygon(5, rng, star=True)],
        lambda: [[(0.35, 0.1), (0.35, 0.9)], [(0.65, 0.1), (0.65, 0.9)], [(0.1, 0.35), (0.9, 0.35)],
                 [(0.1, 0.65), (0.9, 0.65)]],
        lambda: [[(x, 0.1), (x, 0.9)] for x in (0.15, 0.5, 0.85)] + [[(0.1, y), (0.9, y)] for y in (0.15, 0.5, 0.85)],
        lambda: [[(0.1 + 0.8 * i / 6, 0.3 if i % 2 else 0.7) for i in range(7)]],
        lambda: [[(0.5 + 0.05 * t * math.cos(t), 0.5 + 0.05 * t * math.sin(t)) for t in np.linspace(0, 7.5, 40)]],
        lambda: [[(0.5 + r * math.cos(a), 0.5 + r * math.sin(a)) for r in np.linspace(0.05, 0.35, 6)
                  for a in np.linspace(0, 2 * math.pi, 12)]],
    ]
    out = []
    for i in range(n):
        out.append(render(jitter(makers[i % len(makers)](), rng, wobble=0.015), **_pen(rng)))
    return out


def noise(n: int, seed: int = 0, side: int = 28) -> np.ndarray:
    """(n, side, side) uint8 pictures of noise: uniform pixels, sparse salt, and smooth blobs, in turn."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, side, side), np.uint8)
    for i in range(n):
        kind = i % 3
        if kind == 0:
            x = rng.uniform(0, 1, (side, side))
        elif kind == 1:
            x = (rng.random((side, side)) < 0.08).astype(np.float64)
        else:
            small = rng.uniform(0, 1, (4, 4))
            x = np.asarray(Image.fromarray((small * 255).astype(np.uint8)).resize((side, side), Image.BICUBIC)) / 255
        out[i] = np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)
    return out
