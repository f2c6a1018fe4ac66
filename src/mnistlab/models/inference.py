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
    device = torch.device(device) if device is not None else next(model.parameters(), torch.empty(0)).device  # (classical: none)
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
