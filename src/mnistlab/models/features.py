"""A network's penultimate features (the input of its classifier head) over many images, in batches:
what `inspect` ranks units by, what `map` embeds and what `audit` compares. One forward pass gives
the probabilities too."""

from __future__ import annotations

import torch
from torch import nn

from ..data.normalization import Normalization, to_unit
from .heads import capture_features
from .inference import BATCH_SIZE


def as_input(images: torch.Tensor, norm: Normalization) -> torch.Tensor:
    """A model's input from uint8 images (N,H,W) or (N,C,H,W) (or floats in [0,1]): scaled and normalised."""
    x = to_unit(images) if images.dtype == torch.uint8 else images.float()
    return norm.apply(x[:, None] if x.dim() == 3 else x)


@torch.no_grad()
def features_and_probs(model: nn.Module, images: torch.Tensor, norm: Normalization, *,
                       batch_size: int = BATCH_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, D), class probabilities (N, C)), float32, of uint8 images (N,H,W) or (N,C,H,W)
    through `model` in eval mode (its training mode is put back after)."""
    was_training = model.training
    model.eval()
    feats: list = []
    probs = []
    hook = capture_features(model, feats)
    try:
        for start in range(0, len(images), batch_size):
            x = as_input(images[start:start + batch_size], norm)
            probs.append(torch.softmax(model(x).float(), dim=1))
    finally:
        hook.remove()
        model.train(was_training)
    dim = feats[0].shape[1] if feats else 0
    return (torch.cat(feats).float() if feats else torch.empty(0, dim)), (torch.cat(probs) if probs else torch.empty(0))


def features(model: nn.Module, images: torch.Tensor, norm: Normalization, *, batch_size: int = BATCH_SIZE) -> torch.Tensor:
    """(N, D) penultimate features of uint8 images (see `features_and_probs`)."""
    return features_and_probs(model, images, norm, batch_size=batch_size)[0]
