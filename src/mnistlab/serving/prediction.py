"""Predict a user's own digit images: bring each picture into MNIST's form, then classify it.

    mnistlab predict my_digit.png                       # the default model, shipped in the package
    mnistlab predict a.png b.jpg --model runs/seed-cnn-mnist-s0 --save-preprocessed seen/
    mnistlab.predict(["a.png", pil_image, numpy_array])

Pictures are brought into MNIST's form first (`mnistlab.data.mnist_form.to_mnist`).

Not-a-digit score (0..1, flagged at >= 0.5, `NOT_DIGIT_THRESHOLD`): the largest of
- 1.0 for an empty picture (no ink after step 3);
- the model's not-a-digit score (`mnistlab.models.ood`: the distance of the picture's features to
  the training digits', 0.5 at the threshold calibrated on validation digits); for a model without
  one (an ensemble, a classical model), 1 - its top probability;
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
from PIL import Image

from .. import atomic
from ..data.images import open_image, standardize, to_pixels
from ..data.mnist_form import MAX_SPECKS, ink_pieces, to_mnist  # noqa: F401 - the names predict always had
from ..errors import MnistlabError
from ..models.default import DEFAULT_MODEL
from ..models.ood import scores_of
from ..models.predictor import load_predictor

NOT_DIGIT_THRESHOLD = 0.5


@dataclass
class Prediction:
    """What the model read in one picture, and how sure it is that the picture is a digit at all."""

    label: int  # index of the predicted class
    class_name: str  # its name ("7", "Sneaker")
    probability: float  # the model's probability for it
    top3: list[tuple[str, float]]
    probabilities: list[float]
    not_digit: float  # 0..1; >= NOT_DIGIT_THRESHOLD means probably not a (single) digit, or the model is unsure
    reasons: list[str] = field(default_factory=list)
    image: np.ndarray | None = field(default=None, repr=False)  # the 28x28 uint8 image the model saw

    @property
    def digit(self) -> int | str:
        """The digit read, as a number (`7`), where the classes are digits; else the class name."""
        return int(self.class_name) if self.class_name.isdecimal() and len(self.class_name) == 1 else self.class_name

    @property
    def is_digit(self) -> bool:
        return self.not_digit < NOT_DIGIT_THRESHOLD

    def __str__(self) -> str:  # as `mnistlab predict` prints it after the file's name
        top = ", ".join(f"{d} {p:.1%}" for d, p in self.top3)
        verdict = "" if self.is_digit else (f"  [not a digit? score {self.not_digit:.2f} >= {NOT_DIGIT_THRESHOLD}: "
                                            f"{'; '.join(self.reasons)}]")
        return f"{self.class_name} ({self.probability:.1%}; top 3: {top}){verdict}"

    def as_dict(self) -> dict:  # the HTTP API's answer: "digit" is the class name, a string ("7")
        return {"digit": self.class_name, "label": self.label, "probability": self.probability,
                "top3": [{"digit": d, "probability": p} for d, p in self.top3],
                "probabilities": self.probabilities, "not_digit": self.not_digit, "is_digit": self.is_digit,
                "threshold": NOT_DIGIT_THRESHOLD, "reasons": self.reasons}


def score(probs, facts: dict, ood: float | None = None) -> tuple[float, list[str]]:
    """The not-a-digit score of one picture and the reasons behind it (see the module docstring):
    `ood` is the model's not-a-digit score (`models.ood`), None where it has none."""
    if facts.get("empty"):
        return 1.0, ["empty: no ink found"]
    if ood is None:
        parts = [(1 - float(probs.max()), "the model is unsure")]
    else:
        parts = [(ood, "it looks like none of the digits the model learned from")]
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
    ood = scores_of(predictor, pics) if len(pics) else None
    ood = ood.tolist() if ood is not None else [None] * len(pics)
    classes = predictor.classes
    out = []
    for p, f, img, o in zip(probs.numpy(), facts, pics.numpy(), ood):  # plain numbers: cheap to read one by one
        order = np.argsort(-p, kind="stable")[:3]
        s, reasons = score(p, f, o)
        out.append(Prediction(label=int(order[0]), class_name=classes[order[0]], probability=float(p[order[0]]),
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
