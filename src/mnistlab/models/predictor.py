"""One model or an ensemble behind one interface, loaded from a run directory, a checkpoint or an
ensemble file: what evaluation, ensembles, prediction, the server and export all start from.

    predictor = load_predictor("runs/seed-cnn-mnist-s0")        # its best.safetensors
    probs = predictor.probs(images_u8)                           # (N, classes)
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data.normalization import Normalization
from ..errors import MnistlabError
from ..rundir import RunDir
from . import checkpoint
from .inference import BATCH_SIZE, batched_logits
from .source import locate

ENSEMBLE = "ensemble"  # the `kind` of an ensemble file


class Predictor:
    """One model or an ensemble, behind one interface: class probabilities for uint8 images.

    `method` is "single", "mean" (averaged probabilities) or "vote" (majority of the members'
    predictions; ties go to the class with the higher mean probability). `meta` describes what the
    predictor expects: dataset, classes, in_shape, num_classes.
    """

    def __init__(self, models: list[torch.nn.Module], norms: list[Normalization], method: str, meta: dict,
                 member_meta: list[dict] | None = None):
        if method not in ("single", "mean", "vote"):
            raise ValueError(f"method={method!r}")
        self.models, self.norms, self.method, self.meta = models, norms, method, meta
        self.member_meta = member_meta or [meta]
        # Convolutions (and max-pooling above all) run several times faster channels-last on CPUs.
        self.channels_last = [convolutional(model) for model in models]
        for model, cl in zip(self.models, self.channels_last):
            if cl:
                model.to(memory_format=torch.channels_last)

    def __repr__(self) -> str:
        return f"Predictor({self.meta.get('name', '?')}, {self.method}, members={len(self.models)})"

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    def to(self, device) -> Predictor:
        self.models = [m.to(device) for m in self.models]
        return self

    def member_probs(self, images_u8: torch.Tensor, batch_size: int = BATCH_SIZE) -> torch.Tensor:
        """(members, N, classes) softmax probabilities of each member."""
        return torch.stack([F.softmax(batched_logits(m, images_u8, n, batch_size=batch_size, channels_last=cl), dim=1)
                            for m, n, cl in zip(self.models, self.norms, self.channels_last)])

    def probs(self, images_u8: torch.Tensor, batch_size: int = BATCH_SIZE) -> torch.Tensor:
        """(N, classes) probabilities; for "vote", the share of members voting for each class."""
        return combine(self.member_probs(images_u8, batch_size), self.method)


def convolutional(model: torch.nn.Module) -> bool:
    """Whether a model has convolutions, which a Predictor runs channels-last."""
    return any(isinstance(m, torch.nn.Conv2d) for m in model.modules())


def reference_probs(model: torch.nn.Module, images_u8: torch.Tensor, norm: Normalization, *,
                    batch_size: int = BATCH_SIZE) -> torch.Tensor:
    """(N, classes) probabilities of `model` exactly as `evaluate` computes them from its checkpoint: a
    Predictor's fp32, channels-last path (see `inference`), on a copy where the layout would change
    the model itself. What training's validation and test figures come from."""
    if convolutional(model) and not all(p.is_contiguous(memory_format=torch.channels_last)
                                        for p in model.parameters() if p.dim() == 4):
        model = copy.deepcopy(model)  # the weights' layout changes the last bits: measure as a checkpoint loads
    return Predictor([model], [norm], "single", {}).member_probs(images_u8, batch_size)[0]


def combine(member_probs: torch.Tensor, method: str) -> torch.Tensor:
    """(M, N, C) members' probabilities -> (N, C): their mean, or for "vote" the share of votes."""
    mean = member_probs.mean(0)
    if method != "vote":
        return mean
    votes = F.one_hot(member_probs.argmax(2), member_probs.shape[2]).float().mean(0)
    return votes + 1e-6 * mean  # mean probability breaks ties without changing any clear majority


def load_predictor(path: str | os.PathLike, device: str | torch.device = "cpu") -> Predictor:
    """A Predictor from a run directory, a checkpoint file, or an ensemble file (`source.locate`)."""
    file = locate(path).checkpoint
    tensors, meta = checkpoint.load(file, device="cpu")
    return predictor_from(tensors, meta, str(file)).to(device)


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """(model in eval mode, metadata) from a single-model checkpoint or a run directory (its best weights)."""
    file = locate(path).checkpoint
    tensors, meta = checkpoint.load(file)
    if meta["kind"] == ENSEMBLE:
        raise MnistlabError(f"{file} is an ensemble", hint="use mnistlab.models.predictor.load_predictor for ensembles")
    return checkpoint.build_model(meta, tensors, checkpoint.model_prefix(meta, tensors), str(file),
                                  RunDir.code_dir_of(file)).to(device), meta


def predictor_from(tensors: dict[str, torch.Tensor], meta: dict, source: str) -> Predictor:
    """A Predictor from a checkpoint's tensors and validated metadata (see `checkpoint.validate`)."""
    if meta["kind"] == ENSEMBLE:
        members = meta["members"]
        models = [checkpoint.build_model(m, tensors, checkpoint.model_prefix(meta, tensors, i), f"{source} member {i}")
                  for i, m in enumerate(members)]
        norms = [Normalization.from_dict(m["normalization"]) for m in members]
        return Predictor(models, norms, meta["method"], describe(meta, source), members)
    model = checkpoint.build_model(meta, tensors, checkpoint.model_prefix(meta, tensors), source,
                                   RunDir.code_dir_of(source))
    return Predictor([model], [Normalization.from_dict(meta["normalization"])], "single", describe(meta, source))


def describe(meta: dict, source: str) -> dict:
    """What a Predictor expects and where it came from."""
    file = Path(source)
    out = {k: meta[k] for k in ("dataset", "dataset_hash", "classes", "num_classes", "in_shape", "holdout", "variant")
           if k in meta}
    if meta["kind"] == ENSEMBLE:
        out.update({k: meta["members"][0][k] for k in ("dataset", "classes", "num_classes", "in_shape")})
        holdouts = [m.get("holdout") for m in meta["members"]]
        out["holdout"] = holdouts[0] if all(h == holdouts[0] for h in holdouts) else None  # else no shared val
    out["name"] = meta.get("name") or (file.parent.name if file.name in (RunDir.BEST, RunDir.LAST)
                                       else file.stem)
    out["model"] = meta.get("model", ENSEMBLE)
    out["source"] = source
    out["config"] = meta.get("config") or {}
    return out
