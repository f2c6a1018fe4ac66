"""The training loss: cross-entropy (with label smoothing), or one's own.

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


def loss_function(cfg, num_classes: int) -> Loss:
    """The run's loss of (float32 logits, int64 labels)."""
    if cfg.loss == CROSS_ENTROPY:
        smoothing = cfg.label_smoothing
        return lambda logits, labels: F.cross_entropy(logits, labels, label_smoothing=smoothing)
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
