"""The training loss: cross-entropy (with label smoothing), the remedies for imbalanced and noisy
labels, or one's own.

Built in (`LOSSES`), each a function of the training examples' class counts:
- `cross_entropy`, with `label_smoothing`;
- `class_weighted`: cross-entropy with class c weighted N / (C n_c) (scikit-learn's "balanced");
- `logit_adjusted`: cross-entropy of logits + tau * log(prior), the logit-adjusted loss of Menon et al.
  2021 ("Long-tail learning via logit adjustment"): the model's own logits are then calibrated for a
  balanced test set, with nothing to change at inference;
- `gce`: the generalized cross-entropy (1 - p_y^q) / q of Zhang & Sabuncu 2018, robust to label noise
  (q -> 0 is cross-entropy, q = 1 the mean absolute error); q = `gce_q`.

`loss` names a callable of (logits, labels) that returns a scalar tensor: `file.py:focal_loss`,
`package.module:Name`, or an object adopted from Python. A class is built without arguments
(an `nn.Module` loss such as `nn.CrossEntropyLoss` subclasses); a function or an instance is called
as it is. It is checked once, up front, on a small batch: a scalar, finite, with a gradient.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .. import user_code
from ..errors import MnistlabError

CROSS_ENTROPY = "cross_entropy"
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _cross_entropy(cfg, counts: torch.Tensor) -> Loss:
    smoothing = cfg.label_smoothing
    return lambda logits, labels: F.cross_entropy(logits, labels, label_smoothing=smoothing)


def _class_weighted(cfg, counts: torch.Tensor) -> Loss:
    counts = counts.double()
    weight = torch.where(counts > 0, counts.sum() / (len(counts) * counts.clamp_min(1)), 0.0).float()
    smoothing = cfg.label_smoothing
    return lambda logits, labels: F.cross_entropy(logits, labels, weight=weight.to(logits.device),
                                                  label_smoothing=smoothing)


def _logit_adjusted(cfg, counts: torch.Tensor) -> Loss:
    prior = counts.double().clamp_min(1) / counts.double().clamp_min(1).sum()  # a class never seen: one example
    shift = (cfg.logit_tau * prior.log()).float()
    smoothing = cfg.label_smoothing
    return lambda logits, labels: F.cross_entropy(logits + shift.to(logits.device), labels, label_smoothing=smoothing)


def _gce(cfg, counts: torch.Tensor) -> Loss:
    q = cfg.gce_q

    def gce(logits, labels):
        p = F.softmax(logits, 1).gather(1, labels[:, None])[:, 0].clamp_min(1e-7)
        return ((1 - p ** q) / q).mean()

    return gce


LOSSES = {CROSS_ENTROPY: _cross_entropy, "class_weighted": _class_weighted, "logit_adjusted": _logit_adjusted,
          "gce": _gce}


def loss_function(cfg, num_classes: int, class_counts: torch.Tensor | None = None) -> Loss:
    """The run's loss of (float32 logits, int64 labels); `class_counts` are the training examples' (by
    given label), which the class-weighted and logit-adjusted losses read."""
    if cfg.loss in LOSSES:
        counts = class_counts.cpu() if class_counts is not None else torch.ones(num_classes, dtype=torch.long)
        return LOSSES[cfg.loss](cfg, counts)
    obj, _ = user_code.resolve(cfg.loss, "loss")
    if isinstance(obj, type):
        try:
            obj = obj()
        except (Exception, SystemExit) as exc:
            raise user_code.raised("loss", cfg.loss, "building it", exc) from None
    if not callable(obj):
        raise MnistlabError(f"loss {cfg.loss!r} is a {type(obj).__name__}: expected a function of (logits, labels)")
    check(obj, cfg.loss, num_classes)
    return obj


def check(loss: Loss, ref: str, num_classes: int) -> None:
    """A dry call on 4 random logits: one finite scalar that gradients flow through."""
    logits = torch.randn(4, num_classes, generator=torch.Generator().manual_seed(0), requires_grad=True)
    labels = torch.arange(4) % num_classes
    try:
        value = loss(logits, labels)
    except (Exception, SystemExit) as exc:
        raise user_code.raised("loss", ref, "a dry call with logits (4, classes) and labels (4,)", exc) from None
    if not torch.is_tensor(value) or value.numel() != 1:
        shape = tuple(value.shape) if torch.is_tensor(value) else type(value).__name__
        raise MnistlabError(f"loss {ref!r} returned {shape}, expected one number (a scalar tensor)",
                            hint="reduce over the batch, e.g. .mean()")
    if not torch.isfinite(value).all():
        raise MnistlabError(f"loss {ref!r} returned {value.item()} for random logits, expected a finite number")
    if not value.requires_grad:
        raise MnistlabError(f"loss {ref!r}: its value does not depend on the logits (no gradient flows back)",
                            hint="compute it from the logits with torch operations, without .detach() or .item()")
