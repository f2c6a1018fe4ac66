"""Where every model splits into a feature extractor and a classifier head, and the features themselves.

    head_modules("m5", (1, 28, 28))      # ('1', '2'): the bias-free linear layer and its BatchNorm1d
    is_head_key("1.weight", heads)       # True: a parameter or buffer of the head
    penultimate(model, images)           # what the head reads: the features, (N, D)
    capture_features(model, store)       # the same, as a hook that collects them on every forward

The head is what depends on the number of classes. A model registered with `head=` names its head
modules; otherwise they are found by building the model for two class counts and comparing the
shapes of every parameter and buffer (the head's differ; the features' cannot). A model of one's own
that does not take `num_classes` has its last module with weights of its own as its head. Transfer learning
(`training/transfer.py`) replaces or keeps the head and freezes the rest; maps and probes read the
penultimate features.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .registry import ModelEntry, model_entry


def head_modules(name: str, in_shape: Sequence[int] = (1, 28, 28), model_args: dict | None = None,
                 entry: ModelEntry | None = None) -> tuple[str, ...]:
    """The names (as in `named_modules`) of model `name`'s classifier head, in forward order."""
    entry = entry or model_entry(name)
    if entry.head is not None:
        return tuple(entry.head)
    shapes, in_shape = [], tuple(int(s) for s in in_shape)
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        for classes in (10, 11):
            model = entry.make(in_shape, classes, dict(model_args or {}))
            shapes.append({k: tuple(v.shape) for k, v in model.state_dict().items()})
    if entry.user is not None and shapes[0] == shapes[1]:  # a fixed class count: its last weighted module
        owners = [n for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]
        if owners:
            return (owners[-1],)
    differ = [k for k in shapes[0] if shapes[0][k] != shapes[1].get(k)]
    modules = []
    for key in differ:
        module = key.rsplit(".", 1)[0] if "." in key else ""
        if module not in modules:
            modules.append(module)
    if not modules:
        raise ValueError(f"model {name!r}: no parameter depends on the number of classes; register it with head=")
    return tuple(modules)


def is_head_key(key: str, heads: Sequence[str]) -> bool:
    """Whether a state-dict key (`1.weight`, `head.bias`) belongs to one of the head modules."""
    return any(key == h or key.startswith(h + ".") for h in heads)


def heads_of(model: nn.Module) -> tuple[str, ...]:
    """The head modules of a model `create_model` built (it records the name, input shape and options),
    found once per model: finding them builds the model twice on the meta device (40 ms for `fast`,
    which `predict` would pay per picture for its not-a-digit features)."""
    if "_mnistlab_heads" not in model.__dict__:
        model._mnistlab_heads = head_modules(model.mnistlab_name, model.mnistlab_in_shape, model.mnistlab_args,
                                             getattr(model, "mnistlab_entry", None))
    return model._mnistlab_heads


def capture_features(model: nn.Module, store: list, heads: Sequence[str] | None = None):
    """Hook the model so that each forward appends the head's input, flattened, to `store` (with its
    gradient, for training on features); returns the hook's handle, to `remove()` when done."""
    first = dict(model.named_modules())[(heads or heads_of(model))[0]]
    return first.register_forward_pre_hook(lambda module, args: store.append(args[0].flatten(1)))


def penultimate(model: nn.Module, images: torch.Tensor, heads: Sequence[str] | None = None) -> torch.Tensor:
    """The input of the model's head for a batch of prepared images: the learned features, flattened."""
    seen: list = []
    handle = capture_features(model, seen, heads)
    try:
        model(images)
    finally:
        handle.remove()
    return seen[0]
