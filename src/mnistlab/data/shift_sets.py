"""The sets `mnistlab shift` measures a model on: MNIST's images corrupted, turned, restroked and
inverted, and digits of other styles, each a (N,28,28) uint8 array with its labels, built once and
cached by content hash.

    base = base_split("test")                       # MNIST test (or "val": the 5,000 held-out training images)
    for s in build_sets(["corruptions", "uci"], base):
        s.name, s.group, s.images.shape, s.labels   # "fog", "corruptions", (10000, 28, 28), ...

Groups, and the names `--sets` takes (a group, a sweep, or a set's own name):

- clean: the base images as they are (always measured: every drop is from it);
- corruptions: the 15 MNIST-C-style corruptions (`data.corruptions`), every base image;
- variants: rotate-30 (each image turned 30 degrees, either way), thin and thick (Morpho-MNIST-style
  strokes 0.3x and 2x as thick: `data.strokes`), inverted (dark digits on white), every base image;
- sweeps: rotation, scale, translation, shear and thickness, a set per point (the first 2,000 images);
- styles: other digits, each in MNIST's form (`data.mnist_form`, as `predict` brings pictures) and as
  they come (`-raw`: the picture scaled to 28x28, nothing else): uci (scikit-learn's copy of the UCI
  handwritten digits, 8x8), drawn (`data.drawn`, as a pen on the page draws), printed (`data.printed`,
  fonts never used in training), and emnist-digits / qmnist-extra where those datasets are installed.

Validation ("val") builds the same sets from the 5,000 training images a run held out, other draws of
every random number, the selection fonts and other drawn seeds, and no UCI, EMNIST or QMNIST (kept for
the report): what a recipe is chosen on, so the test figures are read once.

Every random draw is per image (`corruptions.generator`: the set's name and the image's seed, which is
its position in its MNIST split, offset for training images), so a set's first N images are the same
whatever N, on every machine. A cache file holds the images, the labels and their SHA-256, which is
checked on every read.
"""

from __future__ import annotations

import hashlib
import json
import math
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .. import atomic
from ..errors import MnistlabError
from . import corruptions, drawn, printed, strokes
from .dataset import Holdout, load
from .mnist_form import to_mnist
from .paths import cache_dir

VERSION = 2  # of the sets' definitions: a change makes new cache keys (2: glass blur as committed; caches made
# while it was written held an older glass blur)
SWEEP_N = 2000  # base images per sweep point
STYLE_N = {"uci": None, "drawn": 2000, "printed": 2000, "emnist-digits": 10000, "qmnist-extra": 10000}
TRAIN_SEED_OFFSET = 1_000_000  # a training image's seed: its index plus this (test images: the index)
DRAWN_SEEDS = {"test": 1, "val": 101, "train": 201}

SWEEPS: dict[str, tuple[str, list[float]]] = {  # name: (what the axis measures, the points)
    "rotation": ("degrees", [-60, -45, -30, -15, 0, 15, 30, 45, 60]),
    "scale": ("size (x the original)", [0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3]),
    "translation": ("pixels, in a random direction", [0, 1, 2, 3, 4, 5, 6]),
    "shear": ("radians", [-0.8, -0.6, -0.4, -0.2, 0.0, 0.2, 0.4, 0.6, 0.8]),
    "thickness": ("stroke thickness (x the original)", [0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0]),
}
VARIANTS = {
    "rotate-30": "turned 30 degrees, either way",
    "thin": "strokes thinned to 0.3x (Morpho-MNIST's thinning by 0.7)",
    "thick": "strokes thickened to 2x (Morpho-MNIST's thickening by 1.0)",
    "inverted": "dark digits on white (polarity inverted)",
}
STYLES = {
    "uci": "UCI handwritten digits (scikit-learn; 8x8 scans, 0-16)",
    "drawn": "digits drawn as a pen on the page draws (mnistlab.data.drawn)",
    "printed": "printed digits, fonts never used in training",
    "emnist-digits": "EMNIST digits test split (NIST writers)",
    "qmnist-extra": "QMNIST's 50,000 test images beyond MNIST's 10,000",
}
GROUPS = ("clean", "corruptions", "variants", "sweeps", "styles")


@dataclass
class Base:
    """The images the corruptions, variants and sweeps start from, and each one's seed."""

    split: str  # "test" or "val"
    images: np.ndarray  # (N,28,28) uint8
    labels: np.ndarray  # (N,) int64
    seeds: np.ndarray  # (N,) int64: the image's position in its MNIST split (+ TRAIN_SEED_OFFSET for training images)
    description: str

    def first(self, n: int | None) -> Base:
        if n is None or n >= len(self.images):
            return self
        return Base(self.split, self.images[:n], self.labels[:n], self.seeds[:n], self.description)

    @property
    def key(self) -> str:
        """The content hash of what the base images contribute to a set."""
        h = hashlib.sha256()
        for a in (self.images, self.labels, self.seeds):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()


@dataclass
class ShiftSet:
    """One set: its images and labels, what it is, and where it sits (a group; a sweep and its point)."""

    name: str
    group: str
    images: np.ndarray
    labels: np.ndarray
    about: str
    sweep: str | None = None
    value: float | None = None
    facts: dict = field(default_factory=dict)


def base_split(split: str = "test", holdout: dict | None = None, data_dir=None) -> Base:
    """MNIST test, or the validation examples `holdout` (a run's record; default: the 5,000 that every
    run holds out: stratified, seed 0) taken from MNIST's training split."""
    ds = load("mnist", data_dir=data_dir)
    if split == "test":
        images, labels = ds.test.images.numpy(), ds.test.labels.numpy()
        return Base("test", images, labels, np.arange(len(images), dtype=np.int64), "MNIST test")
    if split != "val":
        raise MnistlabError(f"split {split!r}: expected test or val")
    if holdout is None:
        idx = ds.train.validation_indices(5000, seed=0, stratified=True)
    else:
        record = Holdout.from_dict(holdout)
        ds.train.held_out(record)  # checks the record against this training split
        idx = ds.train.validation_indices(record.count, seed=record.seed, stratified=record.stratified)
    idx = np.sort(np.asarray(idx, dtype=np.int64))
    return Base("val", ds.train.images.numpy()[idx], ds.train.labels.numpy()[idx], idx + TRAIN_SEED_OFFSET,
                f"MNIST's {len(idx):,} held-out training images")


# ---------- what `--sets` may name ----------

def sweep_points() -> list[str]:
    return [point_name(s, v) for s, (_, values) in SWEEPS.items() for v in values]


def point_name(sweep: str, value: float) -> str:
    return f"{sweep}:{value:g}"


def names_of(group: str) -> list[str]:
    return {"clean": ["clean"], "corruptions": list(corruptions.CORRUPTIONS), "variants": list(VARIANTS),
            "sweeps": sweep_points(), "styles": [f"{s}{v}" for s in STYLES for v in ("", "-raw")]}[group]


def every_name() -> list[str]:
    return [n for g in GROUPS for n in names_of(g)]


def choose(sets: str | list[str] | None) -> list[str]:
    """The set names `--sets` means: groups, sweeps or names, comma-separated ("all" or None: every set);
    clean always comes first."""
    if sets is None:
        wanted = ["all"]
    elif isinstance(sets, str):
        wanted = [s.strip() for s in sets.split(",") if s.strip()]
    else:
        wanted = list(sets)
    known = every_name()
    chosen = ["clean"]
    for w in wanted:
        if w == "all":
            names = known
        elif w in GROUPS:
            names = names_of(w)
        elif w in SWEEPS:
            names = [point_name(w, v) for v in SWEEPS[w][1]]
        elif w in STYLES:
            names = [w, f"{w}-raw"]
        elif w in known:
            names = [w]
        else:
            raise MnistlabError(f"--sets {w!r}: no such set",
                                hint=f"name groups ({', '.join(GROUPS)}), sweeps ({', '.join(SWEEPS)}), styles "
                                f"({', '.join(STYLES)}) or sets such as fog, rotate-30, uci-raw; all for every set")
        chosen += [n for n in names if n not in chosen]
    return chosen


def group_of(name: str) -> str:
    return next(g for g in GROUPS if name in names_of(g))


# ---------- building, cached ----------

def build_sets(names: list[str], base: Base, n: int | None = None, *, data_dir=None,
               progress: Callable[[str], None] | None = None) -> list[ShiftSet]:
    """Every set named (see `choose`) that can be built here, from `base` (its first `n` images; n also
    caps the style sets): the others (a dataset not installed; UCI, EMNIST or QMNIST for validation) are
    left out, and their names listed in the last set's facts["skipped"] as (name, why)."""
    out, skipped = [], []
    for name in names:
        if progress is not None:
            progress(name)
        made = build_set(name, base, n, data_dir=data_dir)
        if isinstance(made, str):
            skipped.append((name, made))
        else:
            out.append(made)
    if out:
        out[-1].facts["skipped"] = skipped
    return out


def build_set(name: str, base: Base, n: int | None = None, *, data_dir=None) -> ShiftSet | str:
    """One set (cached), or why it cannot be built here."""
    group = group_of(name)
    if group == "styles":
        style = name.removesuffix("-raw")
        return _style(style, not name.endswith("-raw"), base.split, n, data_dir)
    if group == "sweeps":
        sweep, value = name.split(":")
        part = base.first(min(n or SWEEP_N, SWEEP_N))
        images = _cached(f"{name}", part, lambda: _sweep_point(sweep, float(value), part))
        axis = SWEEPS[sweep][0]
        return ShiftSet(name, group, images, part.labels, f"{sweep} {float(value):g} ({axis})", sweep, float(value))
    part = base.first(n)
    if name == "clean":
        return ShiftSet(name, group, part.images, part.labels, part.description)
    if group == "corruptions":
        images = _cached(name, part, lambda: corruptions.corrupt(part.images, name, part.seeds))
        return ShiftSet(name, group, images, part.labels, f"MNIST-C-style {name.replace('-', ' ')}")
    images = _cached(name, part, lambda: _variant(name, part))
    return ShiftSet(name, group, images, part.labels, VARIANTS[name])


def _variant(name: str, base: Base) -> np.ndarray:
    if name == "rotate-30":
        return corruptions.apply_each(lambda x, rng: corruptions.rotate(x, rng, math.radians(30)), name,
                                      base.images, base.seeds)
    if name == "thin":
        return strokes.restroke(base.images, 0.3)
    if name == "thick":
        return strokes.restroke(base.images, 2.0)
    return 255 - base.images  # inverted


def _sweep_point(sweep: str, value: float, base: Base) -> np.ndarray:
    if sweep == "thickness":
        return strokes.restroke(base.images, value)
    if sweep == "rotation":
        fn = lambda x, rng: corruptions.affine(x, corruptions.rotation(math.radians(value)))  # noqa: E731
    elif sweep == "scale":
        fn = lambda x, rng: corruptions.affine(x, np.eye(2) / value)  # noqa: E731
    elif sweep == "shear":
        fn = lambda x, rng: corruptions.affine(x, corruptions.shearing(value))  # noqa: E731
    else:  # translation: `value` pixels in a direction drawn per image
        def fn(x, rng):
            a = rng.uniform(0, 2 * math.pi)
            return corruptions.affine(x, np.eye(2), (value * math.cos(a), value * math.sin(a)))
    return corruptions.apply_each(fn, f"sweep-{sweep}", base.images, base.seeds)


def _style(style: str, form: bool, split: str, n: int | None, data_dir) -> ShiftSet | str:
    cap = STYLE_N[style] if n is None else (n if STYLE_N[style] is None else min(n, STYLE_N[style]))
    name = style + ("" if form else "-raw")
    about = STYLES[style] + (", in MNIST's form" if form else ", as they come (scaled to 28x28)")
    if split == "val" and style not in ("drawn", "printed"):
        return "kept for the report (test): not built for validation"
    key = {"set": name, "style": style, "split": split, "n": cap}
    if style == "printed":
        fonts = printed.FONTS["test" if split == "test" else "val"]
        about = f"printed digits in {', '.join(Path(f).stem for f in fonts)}" + (
            " (fonts never used in training)" if split == "test" else " (selection fonts)") + about[len(STYLES[style]):]
    if style in ("emnist-digits", "qmnist-extra"):
        try:
            pictures, labels = _installed(style, cap, data_dir)
        except MnistlabError:
            return f"not installed: `mnistlab data fetch {'qmnist' if style == 'qmnist-extra' else style}` brings it"
        key["data"] = digest_of(pictures, labels)

        def make():
            return (np.stack([to_mnist(Image.fromarray(p))[0] for p in pictures]) if form else pictures), labels
    else:
        def make():
            pics, labels = _style_pictures(style, split, cap)
            return (np.stack([to_mnist(p)[0] for p in pics]) if form else np.stack([raw(p) for p in pics])), labels
    images, labels = cached(key, make)
    return ShiftSet(name, "styles", images, labels, about, facts={"mnist_form": form})


def raw(picture: Image.Image) -> np.ndarray:
    """A picture as it comes, scaled to 28x28 (grayscale, box-averaged): what a model reads without
    MNIST's preprocessing."""
    return np.asarray(picture.convert("L").resize((28, 28), Image.BOX), dtype=np.uint8)


def uci_digits() -> tuple[list[Image.Image], np.ndarray]:
    """scikit-learn's copy of the UCI handwritten digits (1,797 scans of 8x8, 0..16), each upscaled to
    64x64 (bilinear) as a picture, and their labels."""
    # scikit-learn costs 1-3 s of import: only when asked for
    from sklearn.datasets import load_digits

    d = load_digits()
    return ([Image.fromarray((im / 16 * 255).astype(np.uint8)).resize((64, 64), Image.BILINEAR) for im in d.images],
            d.target.astype(np.int64))


def _style_pictures(style: str, split: str, n: int | None) -> tuple[list[Image.Image], list[int]]:
    if style == "uci":
        pics, labels = uci_digits()
        return pics[:n], list(labels[:n])
    if style == "drawn":
        return drawn.digits(n, seed=DRAWN_SEEDS[split])
    return printed.printed("test" if split == "test" else "val", n)


def _installed(style: str, n: int | None, data_dir) -> tuple[np.ndarray, np.ndarray]:
    if style == "emnist-digits":
        split = load("emnist-digits", data_dir=data_dir, download=False).test
        return split.images[:n].numpy(), split.labels[:n].numpy()
    split = load("qmnist", data_dir=data_dir, download=False).test
    stop = None if n is None else 10000 + n
    return split.images[10000:stop].numpy(), split.labels[10000:stop].numpy()


def _path(key: dict) -> Path:
    digest = hashlib.sha256(json.dumps({"version": VERSION, **key}, sort_keys=True).encode()).hexdigest()
    return cache_dir() / "shift" / f"{digest}.npz"


def _cached(name: str, base: Base, make: Callable[[], np.ndarray]) -> np.ndarray:
    images, _ = cached({"set": name, "base": base.key}, lambda: (make(), base.labels))
    return images


def digest_of(images: np.ndarray, labels: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in (images, labels):
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


# The largest set is 10,000 (or QMNIST's 50,000) 28x28 images: 1 GiB leaves room and bounds a damaged file.
MAX_CACHED_BYTES = 1 << 30


def cached(key: dict, make: Callable[[], tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) from the cache file of `key` when its recorded SHA-256 matches what it holds,
    else made, and written (atomically) for next time."""
    path = _path(key)
    if path.is_file():
        try:
            with zipfile.ZipFile(path) as archive:  # a set's arrays, not a bomb: sized before anything is read
                if sum(member.file_size for member in archive.infolist()) > MAX_CACHED_BYTES:
                    raise ValueError("larger than any set")
            with np.load(path, allow_pickle=False) as f:
                images, labels, digest = f["images"], f["labels"], str(f["sha256"])
            if images.dtype == np.uint8 and labels.dtype == np.int64 and digest == digest_of(images, labels):
                return images, labels
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # damaged: made again below
            pass
    images, labels = make()
    images = np.ascontiguousarray(images, dtype=np.uint8)
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic.replacing(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, images=images, labels=labels, sha256=np.array(digest_of(images, labels)))
    except OSError:  # a read-only cache: used unsaved
        pass
    return images, labels


def cache_size() -> int:
    """Bytes the cached sets take (in the user cache's shift/ folder)."""
    folder = cache_dir() / "shift"
    return sum(p.stat().st_size for p in folder.glob("*.npz")) if folder.is_dir() else 0

