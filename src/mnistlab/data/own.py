"""The user's own data: arrays in memory and folders of images, checked and hashed.

    images, labels = from_arrays(x, y, "x_train", "y_train")   # uint8 (N,H,W) or (N,C,H,W), int64 (N,)
    splits, classes = read_folder("digits/")                   # root/train/<class>/*.png, root/test/<class>/*.png

Arrays may be uint8 or floats in [0, 1] (or 0..255), laid out NHW, NHWC or NCHW with 1 or 3
channels; labels integers from 0. A folder has the layout torchvision's ImageFolder reads, one
subfolder per class (sorted names: the class index is the position), the same classes under
train/ and test/; every file is decoded through the one bounded image door (`images.open_image`)
and must have the size of the first. Every split gets a SHA-256 of its content that runs record.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..errors import MnistlabError
from ..names import MAX_CLASSES, MAX_LABEL, check_labels
from .images import as_uint8, open_image

MAX_IMAGES = 2_000_000  # per split, for a folder: the walk stops with an error past this
MAX_SIDE = 512  # pixels a side, as a checkpoint may declare
MAX_BYTES = 1 << 31  # uint8 pixels of one split (2 GiB; EMNIST's largest split is 0.55 GB), checked before any copy
SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
SPLITS = ("train", "test")


def from_arrays(x, y, x_name: str = "images", y_name: str = "labels") -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images (N,H,W) or (N,C,H,W), int64 labels (N,)), each problem named by its argument."""
    x = _as_numpy(x, x_name)
    if x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)  # NHWC -> NCHW
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[1] != 3):
        raise MnistlabError(f"{x_name}: an array of shape {list(x.shape)}, expected (N, H, W), (N, H, W, C) or "
                            "(N, C, H, W) with C 1 or 3")
    if not 1 <= len(x) <= MAX_IMAGES or not all(1 <= s <= MAX_SIDE for s in x.shape[-2:]):
        raise MnistlabError(f"{x_name}: shape {list(x.shape)}: expected 1 to {MAX_IMAGES:,} images of 1 to "
                            f"{MAX_SIDE} pixels a side")
    _check_size(x.size, f"{x_name}: shape {list(x.shape)}")  # before any copy (a broadcast view costs nothing)
    y = _as_numpy(y, y_name)
    if y.ndim != 1 or len(y) != len(x):
        raise MnistlabError(f"{y_name}: shape {list(y.shape)}, expected ({len(x)},): one label per image in {x_name}")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.floating) or not np.isfinite(y).all() or (y != np.round(y)).any():
            raise MnistlabError(f"{y_name}: {y.dtype} values, expected integer class indices")
    if y.min() < 0 or y.max() >= MAX_CLASSES:  # compared as they are: a cast first would wrap 2**64-1 or 1e20
        bad = y.min() if y.min() < 0 else y.max()
        bad = int(bad) if np.issubdtype(y.dtype, np.integer) else f"{bad:.0f}"
        raise MnistlabError(f"{y_name}: label {bad}, expected class indices 0 to {MAX_CLASSES - 1} "
                            f"(at most {MAX_CLASSES} classes)")
    x = as_uint8(x, x_name)  # the one rule for pixel values, as predict's
    return np.ascontiguousarray(x), y.astype(np.int64)


def _check_size(pixels: int, what: str) -> None:
    if pixels > MAX_BYTES:
        raise MnistlabError(f"{what}: {pixels / 1e9:.1f} GB of pixels, more than the {MAX_BYTES / 1e9:.1f} GB one "
                            "split may hold", hint="use fewer or smaller images (a random subset, or images "
                            "resized to the size the model takes)")


def check_classes(classes, labels: list[np.ndarray], where: str) -> tuple[str, ...]:
    """Class names: given (one per class, distinct) or '0'..'K-1' for the labels seen."""
    top = max(int(y.max()) for y in labels) + 1
    if classes is None:
        if top < 2:
            raise MnistlabError(f"{where}: every label is 0: a classifier needs at least 2 classes")
        return tuple(str(i) for i in range(top))
    names = check_labels((str(c) for c in classes), f"{where}: classes")
    if len(names) < top:
        raise MnistlabError(f"{where}: {len(names)} class names, but the largest label is {top - 1}",
                            hint="give one name per class, in label order")
    return names


def content_hash(images: np.ndarray, labels: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(repr((images.shape, str(images.dtype))).encode())
    h.update(images.tobytes())
    h.update(labels.astype("<i8").tobytes())
    return h.hexdigest()


def read_folder(root: str | Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], tuple[str, ...]]:
    """({split: (images, labels)}, classes) of an image folder (see the module docstring)."""
    root = Path(root)
    missing = [s for s in SPLITS if not (root / s).is_dir()]
    if missing:
        raise MnistlabError(f"{root}: no {' or '.join(f'{s}/' for s in missing)} folder",
                            hint="an image folder holds train/<class>/*.png and test/<class>/*.png")
    if len(str(root)) > MAX_LABEL:  # the folder's path names the dataset in every run and checkpoint
        raise MnistlabError(f"{str(root)[:60]}...: a path of {len(str(root))} characters; a dataset folder's path may "
                            f"have at most {MAX_LABEL}", hint="move the folder (or link it) somewhere with a shorter path")
    classes = tuple(sorted(p.name for p in (root / "train").iterdir() if p.is_dir()))
    if len(classes) < 2:
        raise MnistlabError(f"{root / 'train'}: {len(classes)} class folders, expected at least 2")
    check_labels(classes, f"{root / 'train'}: class folders")
    test_classes = tuple(sorted(p.name for p in (root / "test").iterdir() if p.is_dir()))
    if set(test_classes) - set(classes):
        raise MnistlabError(f"{root / 'test'}: classes {sorted(set(test_classes) - set(classes))[:5]} are not "
                            "in train/", hint="train/ and test/ hold the same class folders")
    out, shape = {}, None
    for split in SPLITS:
        files = [(i, f) for i, c in enumerate(classes) if (root / split / c).is_dir()
                 for f in sorted((root / split / c).iterdir()) if f.suffix.lower() in SUFFIXES and f.is_file()]
        if not files:
            raise MnistlabError(f"{root / split}: no images ({', '.join(SUFFIXES)}) in its class folders")
        if len(files) > MAX_IMAGES:
            raise MnistlabError(f"{root / split}: more than {MAX_IMAGES:,} images")
        images = None
        for n, (_, path) in enumerate(files):
            pixels, shape = _pixels(path, shape)
            if pixels.ndim == 3:
                pixels = pixels.transpose(2, 0, 1)  # (H,W,3) -> (3,H,W), written straight into the split
            if images is None:  # one array for the split, its size known (and checked) from the first image
                _check_size(len(files) * pixels.size, f"{root / split}: {len(files):,} images of {shape}")
                images = np.empty((len(files), *pixels.shape), dtype=np.uint8)
            images[n] = pixels
        out[split] = (images, np.array([i for i, _ in files], dtype=np.int64))
    return out, classes


def _pixels(path: Path, shape) -> tuple[np.ndarray, tuple]:
    """One file's uint8 pixels (H,W) for grayscale or (H,W,3); all files the size and mode of the first."""
    img = open_image(path, max_pixels=MAX_SIDE * MAX_SIDE)
    pixels = np.asarray(img.convert("L" if img.mode in ("L", "LA") else "RGB"))
    if max(pixels.shape[:2]) > MAX_SIDE:
        raise MnistlabError(f"{path}: {pixels.shape[1]}x{pixels.shape[0]} pixels, more than {MAX_SIDE} a side")
    if shape is None:
        return pixels, pixels.shape
    if pixels.shape != shape:
        if pixels.shape[:2] == shape[:2]:  # a colour image among grey ones (or the reverse): take the first's mode
            pixels = np.asarray(img.convert("L" if len(shape) == 2 else "RGB"))
        else:
            raise MnistlabError(f"{path}: {pixels.shape[1]}x{pixels.shape[0]} pixels, but the first image is "
                                f"{shape[1]}x{shape[0]}", hint="resize the images to one size first")
    return pixels, shape


def _as_numpy(value, name: str) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise MnistlabError(f"{name}: expected an array of numbers") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise MnistlabError(f"{name}: an array of {arr.dtype}, expected numbers")
    if np.iscomplexobj(arr):
        raise MnistlabError(f"{name}: complex numbers, expected real pixel values")
    return arr
