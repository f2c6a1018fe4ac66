"""Running a model on uint8 images in large batches: the one path that training's validation,
evaluation, ensembles, prediction and the web server share."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.normalization import Normalization, to_unit


class NormalizedModel(torch.nn.Module):
    """A model that takes float images in [0,1] (N,C,H,W), its normalisation applied inside.

    What ONNX export ships, and what anything that works in pixel units (an attack's epsilon) needs.
    """

    def __init__(self, model: torch.nn.Module, norm: Normalization):
        super().__init__()
        self.model, self.norm = model, norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.norm.apply(x))


@torch.no_grad()
def batched_logits(model: torch.nn.Module, images_u8: torch.Tensor, norm: Normalization, *, batch_size: int = 2000,
                   device: str | torch.device | None = None, precision: str = "fp32",
                   channels_last: bool = False) -> torch.Tensor:
    """float32 logits (N, classes) of `model` (put in eval mode) for uint8 images, batch by batch."""
    was_training = model.training
    model.eval()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    out = []
    try:
        for start in range(0, images_u8.shape[0], batch_size):
            xb = norm.apply(to_unit(images_u8[start:start + batch_size].to(device, non_blocking=True)))
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                out.append(model(xb).float())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def accuracy_and_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """(accuracy in [0,1], mean cross-entropy) of logits against int64 labels."""
    labels = labels.to(logits.device)
    acc = (logits.argmax(1) == labels).float().mean().item()
    loss = F.cross_entropy(logits, labels).item()
    return acc, loss


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
        self.channels_last = [any(isinstance(m, torch.nn.Conv2d) for m in model.modules()) for model in models]
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

    def member_probs(self, images_u8: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
        """(members, N, classes) softmax probabilities of each member."""
        return torch.stack([F.softmax(batched_logits(m, images_u8, n, batch_size=batch_size, channels_last=cl), dim=1)
                            for m, n, cl in zip(self.models, self.norms, self.channels_last)])

    def probs(self, images_u8: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
        """(N, classes) probabilities; for "vote", the share of members voting for each class."""
        return combine(self.member_probs(images_u8, batch_size), self.method)


def combine(member_probs: torch.Tensor, method: str) -> torch.Tensor:
    """(M, N, C) members' probabilities -> (N, C): their mean, or for "vote" the share of votes."""
    mean = member_probs.mean(0)
    if method != "vote":
        return mean
    votes = F.one_hot(member_probs.argmax(2), member_probs.shape[2]).float().mean(0)
    return votes + 1e-6 * mean  # mean probability breaks ties without changing any clear majority
