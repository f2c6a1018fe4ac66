"""Synthetic digits to train on beside MNIST: printed in the training fonts (`data.printed`) and drawn
as a pen on the page draws (`data.drawn`, the training seed), each brought into MNIST's form as
`predict` brings a picture. Never the fonts or seeds `mnistlab shift` measures on (validation and the
report have their own), and never added to a run's validation images.

    images, labels = synthetic("printed:5000,drawn:5000")     # uint8 (10000,28,28), int64 (10000,)

Made once and cached by content (`shift_sets.cached`).
"""

from __future__ import annotations

import numpy as np

from ..errors import MnistlabError
from . import drawn, printed
from .mnist_form import to_mnist
from .shift_sets import DRAWN_SEEDS, VERSION, cached

KINDS = ("printed", "drawn")
MAX_COUNT = 200_000


def parse(text: str) -> dict[str, int]:
    """"printed:5000,drawn:5000" -> {"printed": 5000, "drawn": 5000}; "none" or "" -> {}."""
    if text.strip() in ("", "none"):
        return {}
    out = {}
    for item in text.split(","):
        kind, _, count = item.strip().partition(":")
        if kind not in KINDS or not count.strip().isdigit() or not 0 < int(count) <= MAX_COUNT:
            raise MnistlabError(f"synthetic={text!r}: expected none, or kinds with counts such as printed:5000,drawn:5000",
                                hint=f"kinds: {', '.join(KINDS)}; counts from 1 to {MAX_COUNT:,}")
        out[kind] = int(count)
    return out


def make(kind: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` training digits of one kind in MNIST's form, and their labels (cached)."""
    def build():
        pics, labels = printed.printed("train", n) if kind == "printed" else drawn.digits(n, seed=DRAWN_SEEDS["train"])
        return np.stack([to_mnist(p)[0] for p in pics]), np.asarray(labels, dtype=np.int64)

    return cached({"synthetic": kind, "n": n, "version": VERSION}, build)


def synthetic(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Every kind `text` names (see `parse`), one after the other: (uint8 (N,28,28), int64 (N,))."""
    parts = [make(kind, n) for kind, n in parse(text).items()]
    if not parts:
        return np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.int64)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
