"""Not a digit: an out-of-distribution score for a model, fitted once per run and stored with it.

    nd = not_digit_model(predictor)     # the run's ood.safetensors, fitted and stored on first use
    nd.score(features)                  # (N,) in [0, 1): 0.5 at the calibrated threshold

The score is the distance from an image's penultimate features (what the classifier head reads) to
those of the training digits: 1 - the cosine similarity to its k-th nearest neighbour among a
reference set of training images (k = 5; Sun et al. 2022, "Out-of-distribution detection with
deep nearest neighbors"). Chosen by measurement against the model's top probability, the energy
score, Mahalanobis distance (Lee et al. 2018) and its relative form on the packaged model (`mnistlab
bench ood`, docs/trust.md): only the kNN distance reached AUROC >= 0.95 against every set of
non-digits while keeping digits from other writers.

- reference: `per_class` (1,000) training images of each class, drawn with a fixed seed from the
  images the run trained on (never its validation holdout); their L2-normalised features, fp16.
- threshold: the 99th percentile of the distances of the run's validation images, brought into
  MNIST's form as `predict` brings every picture (so about 1% of unseen digits are flagged); a run
  without a holdout calibrates on training images outside the reference set, and says so.
- stored as safetensors (no pickle) with its facts as JSON metadata: in the run directory beside
  its checkpoint (`RunDir.OOD`), or for a loose checkpoint file (the packaged default model) in the
  user cache, keyed by the checkpoint's SHA-256. Whatever a file holds is checked before use.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from .. import atomic, schema
from ..data.dataset import Holdout, load
from ..data.mnist_form import to_mnist
from ..data.paths import cache_dir
from ..errors import MnistlabError
from ..rundir import RunDir
from .classical import ClassicalModel
from .features import features

FORMAT = "mnistlab-ood"
VERSION = 1
K = 5
PER_CLASS = 1000
FLAG_RATE = 0.01  # of unseen digits, at the threshold
MAX_REFERENCE, MAX_DIM = 200_000, 65_536
META_SPEC = schema.obj({
    "format": schema.choice(FORMAT), "version": schema.integer(VERSION, VERSION), "method": schema.choice("knn-cosine"),
    "k": schema.integer(1, 1000), "threshold": schema.number(1e-9, 2.0), "feature_dim": schema.integer(1, MAX_DIM),
    "reference": schema.obj(), "calibration": schema.obj()})


class NotDigitModel:
    """The kNN distance in feature space, and its threshold (see the module docstring)."""

    def __init__(self, reference: torch.Tensor, threshold: float, meta: dict, k: int = K):
        self.reference = F.normalize(reference.float(), dim=1)
        self.threshold, self.meta, self.k = float(threshold), meta, int(k)

    def __repr__(self) -> str:
        return f"NotDigitModel(knn k={self.k}, {len(self.reference)} references, threshold {self.threshold:.4f})"

    def distance(self, feats: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
        """(N,) 1 - cosine similarity to the k-th nearest reference."""
        if feats.shape[1] != self.reference.shape[1]:
            raise MnistlabError(f"not-a-digit model: {self.reference.shape[1]} features per image, the model gives "
                                f"{feats.shape[1]}", hint="it was fitted for another model: delete it to refit")
        k = min(self.k, len(self.reference))
        out = [knn_distance(feats[s:s + chunk], self.reference, k) for s in range(0, len(feats), chunk)]
        return torch.cat(out) if out else torch.empty(0)

    def score(self, feats: torch.Tensor) -> torch.Tensor:
        """(N,) in [0, 1): d / (d + threshold), so 0.5 exactly at the threshold."""
        return score_of_distance(self.distance(feats), self.threshold)


def knn_distance(feats: torch.Tensor, reference: torch.Tensor, k: int) -> torch.Tensor:
    """(N,) 1 - cosine similarity of each row of `feats` to its k-th nearest row of `reference`
    (L2-normalised rows). Plain tensor ops: the ONNX export traces this same function into its graph."""
    q = F.normalize(feats.float(), dim=1)
    return (1 - (q @ reference.float().T).topk(k, dim=1).values[:, -1]).clamp_min(0)


def score_of_distance(distance: torch.Tensor, threshold: float) -> torch.Tensor:
    return distance / (distance + threshold)


def fit(model, norm, dataset, holdout: Holdout | None, *, per_class: int = PER_CLASS, k: int = K,
        rate: float = FLAG_RATE, seed: int = 0) -> NotDigitModel:
    """A NotDigitModel for `model` trained on `dataset`'s train split (less `holdout`)."""
    train = dataset.train
    if holdout is not None:
        fitted_on, val = train.held_out(holdout)
        calib = val.images
        calib_source = f"the run's validation holdout ({len(calib)} images)"
    else:
        fitted_on, calib = train, None
    labels = fitted_on.labels
    gen = torch.Generator().manual_seed(seed)
    picked, rest = [], []
    for c in range(dataset.num_classes):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        picked.append(idx[:per_class])
        rest.append(idx[per_class:])
    picked = torch.cat(picked).sort().values
    if calib is None:  # no holdout: training images outside the reference set (the model saw them)
        others = torch.cat(rest)
        calib = fitted_on.images[others[torch.randperm(len(others), generator=gen)[:5000]]]
        calib_source = f"{len(calib)} training images outside the reference set (the run has no holdout)"
    reference = features(model, fitted_on.images[picked], norm)
    nd = NotDigitModel(reference, 1.0, {}, k)
    calib_mnist = torch.from_numpy(np.stack([to_mnist(_as_pil(img))[0] for img in calib.numpy()]))
    distances = nd.distance(features(model, calib_mnist, norm))
    nd.threshold = max(float(torch.quantile(distances.double(), 1 - rate)), 1e-6)
    nd.meta = {"format": FORMAT, "version": VERSION, "method": "knn-cosine", "k": k, "threshold": nd.threshold,
               "feature_dim": int(reference.shape[1]),
               "reference": {"images": int(len(picked)), "per_class": per_class, "seed": seed,
                             "split": "train" + (" less the validation holdout" if holdout is not None else ""),
                             "dataset": dataset.name},
               "calibration": {"images": int(len(calib)), "source": calib_source, "flag_rate": rate,
                               "flagged": float((distances >= nd.threshold).double().mean())}}
    return nd


def _as_pil(img: np.ndarray) -> Image.Image:
    return Image.fromarray(img if img.ndim == 2 else img[0])


def save(nd: NotDigitModel, path: str | os.PathLike) -> Path:
    """Atomically, as safetensors: the reference features (fp16) and the facts as JSON metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic.replacing(path) as tmp:
        save_file({"reference": nd.reference.half().contiguous()}, tmp, metadata={"mnistlab-ood": json.dumps(nd.meta)})
    return path


def load_file(path: str | os.PathLike) -> NotDigitModel:
    """A NotDigitModel from a file, every field checked (its shape, dtype and values too)."""
    path = Path(path)
    try:
        with safe_open(path, "pt") as f:
            raw = (f.metadata() or {}).get("mnistlab-ood")
            keys = list(f.keys())
            if raw is None or keys != ["reference"]:
                raise MnistlabError(f"{path}: not a not-a-digit model (expected one tensor `reference` and "
                                    "mnistlab-ood metadata)")
            meta = schema.check(json.loads(raw), META_SPEC, str(path))
            sl = f.get_slice("reference")
            shape, dtype = tuple(sl.get_shape()), sl.get_dtype()
            if dtype != "F16" or len(shape) != 2 or not 1 <= shape[0] <= MAX_REFERENCE or shape[1] != meta["feature_dim"]:
                raise MnistlabError(f"{path}: reference {dtype} {list(shape)}: expected F16 (1..{MAX_REFERENCE}, "
                                    f"{meta['feature_dim']})")
            reference = f.get_tensor("reference")
    except MnistlabError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a damaged file makes safetensors or json raise
        raise MnistlabError(f"{path}: not a readable not-a-digit model ({type(exc).__name__})",
                            hint="delete it: it is fitted again on first use") from None
    if not torch.isfinite(reference).all():
        raise MnistlabError(f"{path}: the reference features are not all finite")
    return NotDigitModel(reference, meta["threshold"], meta, meta["k"])


def file_for(checkpoint: str | os.PathLike) -> Path:
    """Where the not-a-digit model of a checkpoint lives: its run directory, or the user cache."""
    checkpoint = Path(checkpoint)
    run = RunDir.holding(checkpoint)
    if run is not None:
        return run.path / RunDir.OOD
    digest = hashlib.sha256()
    with open(checkpoint, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return cache_dir() / "ood" / f"{digest.hexdigest()}.safetensors"


def not_digit_model(predictor, *, fit_missing: bool = True) -> NotDigitModel | None:
    """The predictor's not-a-digit model: read from where it is stored, or fitted and stored there on
    first use (a few seconds), then kept on the predictor. None for an ensemble or a classical model,
    or where the training data cannot be loaded (callers then fall back to the top probability)."""
    predictor = getattr(predictor, "torch_predictor", predictor)  # an ONNX Runtime predictor's own
    if "not_digit" in predictor.__dict__:
        return predictor.not_digit
    nd = None
    meta = predictor.meta
    if (len(predictor.models) == 1 and not isinstance(predictor.models[0], ClassicalModel)
            and meta.get("source") and meta.get("dataset") and Path(meta["source"]).is_file()):
        file = file_for(meta["source"])
        if file.is_file():
            nd = load_file(file)
        elif fit_missing:
            nd = _fit_and_store(predictor, file)
    if nd is not None or fit_missing:
        predictor.not_digit = nd
    return nd


def _fit_and_store(predictor, file: Path) -> NotDigitModel | None:
    try:
        ds = load(predictor.meta["dataset"], download=False)
    except MnistlabError:
        return None
    holdout = predictor.meta.get("holdout")
    nd = fit(predictor.models[0], predictor.norms[0], ds, Holdout.from_dict(holdout) if holdout else None)
    try:
        save(nd, file)
    except OSError:  # a read-only run directory or cache: used unsaved
        pass
    return nd


def scores_of(predictor, images_u8: torch.Tensor) -> torch.Tensor | None:
    """(N,) not-a-digit scores in [0, 1) of images already in MNIST's form, or None (see above)."""
    nd = not_digit_model(predictor)
    if nd is None:
        return None
    predictor = getattr(predictor, "torch_predictor", predictor)
    return nd.score(features(predictor.models[0], images_u8, predictor.norms[0]))
