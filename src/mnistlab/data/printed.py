"""Printed digits: the ten digits typeset in the TrueType fonts matplotlib ships (DejaVu, STIX and the
Computer Modern fonts), so every machine with the same matplotlib renders the same pixels (the
fonts of the system differ from machine to machine, and are not used).

The fonts are split by family, once, here: training uses some, model selection others, and the
figures a report gives come from fonts neither saw (`FONTS`), so "printed digits in fonts not used
for training" means a family the model never met.

    pictures, labels = printed("test", 1000)      # PIL images, light ink on dark, and their digits

Each picture: one digit in one font, at a size drawn from 60-90% of a 96-pixel canvas, placed a little
off centre and turned by up to 6 degrees, as a scanned page would hold it; drawn with the picture's own
generator (seeded by its position), so the same call gives the same pictures everywhere.
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import MnistlabError
from .corruptions import generator

CANVAS = 96

# matplotlib's fonts with the ten ASCII digits in their usual shapes (cmmi10's are old-style figures;
# the STIX "NonUni" and size-variant fonts and LastResort have none), split by family.
FONTS = {
    "train": ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
              "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
              "cmr10.ttf", "cmb10.ttf", "cmti10.ttf"],
    "val": ["DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf",
            "DejaVuSansMono-BoldOblique.ttf", "cmtt10.ttf"],
    "test": ["STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf", "cmss10.ttf"],
}
SEED_BASE = {"train": 2_000_000, "val": 1_000_000, "test": 0}  # each use draws its own pictures


def font_dir() -> Path:
    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


@cache
def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
    path = font_dir() / name
    if not path.is_file():
        raise MnistlabError(f"font {path} is missing", hint="matplotlib ships it: reinstall matplotlib")
    return ImageFont.truetype(str(path), size)


def render(font: str, digit: int, rng: np.random.Generator) -> Image.Image:
    """One digit in `font`, light on dark (see the module docstring)."""
    size = int(round(CANVAS * rng.uniform(0.6, 0.9)))
    dx, dy = rng.uniform(-0.08, 0.08, size=2) * CANVAS
    angle = rng.uniform(-6, 6)
    img = Image.new("L", (CANVAS, CANVAS), 0)
    ImageDraw.Draw(img).text((CANVAS / 2 + dx, CANVAS / 2 + dy), str(digit), fill=255, font=_font(font, size),
                             anchor="mm")
    return img.rotate(angle, resample=Image.BILINEAR) if not math.isclose(angle, 0) else img


def printed(split: str, n: int) -> tuple[list[Image.Image], list[int]]:
    """`n` printed digits in the fonts of `split` (train, val or test), the digits in turn, the fonts in
    turn per ten, and their labels."""
    if split not in FONTS:
        raise MnistlabError(f"printed digits: split {split!r}", hint=f"expected one of {', '.join(FONTS)}")
    fonts = FONTS[split]
    pictures, labels = [], []
    for i in range(n):
        digit, font = i % 10, fonts[(i // 10) % len(fonts)]
        pictures.append(render(font, digit, generator("printed", SEED_BASE[split] + i)))
        labels.append(digit)
    return pictures, labels
