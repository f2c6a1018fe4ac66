"""Predict a user's own digit images: bring each picture into MNIST's form, then classify it.

    mnistlab predict my_digit.png                       # the default model, shipped in the package
    mnistlab predict a.png b.jpg --model runs/seed-cnn-mnist-s0 --save-preprocessed seen/
    mnistlab.predict(["a.png", pil_image, numpy_array])

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

Not-a-digit score (0..1, flagged at >= 0.5, `NOT_DIGIT_THRESHOLD`): the largest of
- 1.0 for an empty picture (no ink after step 3);
- 1 - the model's top probability (an unsure model);
- 0.9 when the ink breaks into more than 12 separate specks (noise, not strokes);
- 0.8 when the ink falls into two or more large separate pieces side by side (several characters).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from .. import atomic
from ..data.images import open_image, standardize, to_pixels
from ..errors import MnistlabError
from ..models.default import DEFAULT_MODEL
from ..models.predictor import load_predictor

NOT_DIGIT_THRESHOLD = 0.5
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


@dataclass
class Prediction:
    """What the model read in one picture, and how sure it is that the picture is a digit at all."""

    label: int  # index of the predicted class
    digit: str  # its name
    probability: float  # the model's probability for it
    top3: list[tuple[str, float]]
    probabilities: list[float]
    not_digit: float  # 0..1; >= NOT_DIGIT_THRESHOLD means probably not a (single) digit, or the model is unsure
    reasons: list[str] = field(default_factory=list)
    image: np.ndarray | None = field(default=None, repr=False)  # the 28x28 uint8 image the model saw

    @property
    def is_digit(self) -> bool:
        return self.not_digit < NOT_DIGIT_THRESHOLD

    def as_dict(self) -> dict:
        return {"digit": self.digit, "label": self.label, "probability": self.probability,
                "top3": [{"digit": d, "probability": p} for d, p in self.top3],
                "probabilities": self.probabilities, "not_digit": self.not_digit, "is_digit": self.is_digit,
                "threshold": NOT_DIGIT_THRESHOLD, "reasons": self.reasons}


def score(probs: torch.Tensor, facts: dict) -> tuple[float, list[str]]:
    """The not-a-digit score of one picture and the reasons behind it (see the module docstring)."""
    if facts.get("empty"):
        return 1.0, ["empty: no ink found"]
    parts = [(1 - float(probs.max()), "the model is unsure")]
    if facts["specks"] > MAX_SPECKS:
        parts.append((0.9, f"the ink is {facts['specks']} separate specks: noise, not strokes"))
    if facts["pieces_side_by_side"] >= 2:
        parts.append((0.8, f"{facts['pieces_side_by_side']} separate pieces side by side: several characters?"))
    value = max(p for p, _ in parts)
    reasons = [r for p, r in parts if p >= NOT_DIGIT_THRESHOLD]
    return value, reasons


def _as_image(item, index: int) -> Image.Image:
    """Any input `predict` takes, through the one door (`mnistlab.data.images`)."""
    if isinstance(item, Image.Image):
        return standardize(item)
    if isinstance(item, np.ndarray):
        pixels = to_pixels(item, f"image {index}")
        return standardize(Image.fromarray(pixels[..., 0] if pixels.ndim == 3 and pixels.shape[2] == 1
                                                  else pixels))
    return open_image(item, name=str(item) if isinstance(item, (str, os.PathLike)) else f"image {index}")


def preprocess(images) -> tuple[torch.Tensor, list[dict]]:
    """(uint8 (N,28,28) tensor, facts per image) for paths, bytes, PIL images or arrays."""
    pics, facts = [], []
    for i, item in enumerate(images):
        arr, f = to_mnist(_as_image(item, i))
        pics.append(arr)
        facts.append(f)
    return torch.from_numpy(np.stack(pics)) if pics else torch.empty(0, 28, 28, dtype=torch.uint8), facts


def classify(predictor, pics: torch.Tensor, facts: list[dict]) -> list[Prediction]:
    """Predictions for preprocessed 28x28 images (the part the web server shares)."""
    if list(predictor.meta["in_shape"]) != [1, 28, 28]:
        raise MnistlabError(f"model {predictor.meta.get('name')} takes {predictor.meta['in_shape']} images; "
                            "predict needs a 1x28x28 model (MNIST, Fashion-MNIST, KMNIST, EMNIST, QMNIST)")
    probs = predictor.probs(pics) if len(pics) else torch.empty(0, len(predictor.classes))
    classes = predictor.classes
    out = []
    for p, f, img in zip(probs.numpy(), facts, pics.numpy()):  # plain numbers: cheap to read one by one
        order = np.argsort(-p, kind="stable")[:3]
        s, reasons = score(p, f)
        out.append(Prediction(label=int(order[0]), digit=classes[order[0]], probability=float(p[order[0]]),
                              top3=[(classes[i], float(p[i])) for i in order], probabilities=p.tolist(),
                              not_digit=s, reasons=reasons, image=img))
    return out


_DEFAULT_CACHE: dict = {}


def default_predictor():
    """The model shipped in the package (see src/mnistlab/_models/README.md), loaded once."""

    if "predictor" not in _DEFAULT_CACHE:
        if not DEFAULT_MODEL.is_file():
            raise MnistlabError(f"the default model {DEFAULT_MODEL} is missing from this installation",
                                hint="pass --model RUN_DIR, or reinstall mnistlab")
        _DEFAULT_CACHE["predictor"] = load_predictor(DEFAULT_MODEL)
    return _DEFAULT_CACHE["predictor"]


def predict(images, model=None, save_preprocessed: str | os.PathLike | None = None) -> list[Prediction]:
    """Read digits in pictures (paths, bytes, PIL images or arrays) with `model` (a run directory,
    checkpoint or ensemble file; default: the packaged model)."""

    if isinstance(images, (str, os.PathLike, bytes, Image.Image, np.ndarray)):
        images = [images]
    predictor = default_predictor() if model is None else load_predictor(model)
    pics, facts = preprocess(images)
    results = classify(predictor, pics, facts)
    if save_preprocessed is not None:

        out = Path(save_preprocessed)
        out.mkdir(parents=True, exist_ok=True)
        for i, (item, r) in enumerate(zip(images, results)):
            stem = Path(item).stem if isinstance(item, (str, os.PathLike)) else f"image{i}"
            buf = io.BytesIO()
            Image.fromarray(r.image, "L").save(buf, format="PNG")
            atomic.write_bytes(out / f"{stem}-28x28.png", buf.getvalue())
    return results
