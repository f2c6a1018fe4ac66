"""Models: the registry of named models (the zoo itself is in `zoo.py`), checkpoints, and running them.

    model = create_model("m5", in_shape=(1, 28, 28), num_classes=10)
    list_models()          # names, for the CLI's choices and the parametrised tests

Each model is a function decorated with `@register_model` that builds an `nn.Module` from the input
shape (C,H,W) and the class count, plus keyword options. Every model returns logits.

    __init__.py    the registry: register_model, create_model, list_models
    zoo.py         the models, from logistic regression to An et al.'s M3/M5/M7
    checkpoint.py  safetensors files with JSON metadata, validated before anything is built
    inference.py   batched logits, and a model that takes [0,1] images
    predictor.py   one model or an ensemble behind one interface, loaded from any checkpoint
    heads.py       where each model splits into features and classifier head; the penultimate features
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import MnistlabError


@dataclass(frozen=True)
class ModelEntry:
    name: str
    build: Callable[..., nn.Module]
    summary: str  # one line: what it is and where it comes from
    head: tuple[str, ...] | None = None  # the classifier head's modules; None = found by `heads.head_modules`

    def options(self) -> dict[str, object]:
        """The model's keyword options and their defaults."""
        params = inspect.signature(self.build).parameters
        return {k: p.default for k, p in params.items() if k not in ("in_shape", "num_classes")}


MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, summary: str, head: tuple[str, ...] | None = None):
    def wrap(build):
        MODELS[name] = ModelEntry(name, build, summary, head)
        return build

    return wrap


def list_models() -> list[str]:
    return list(MODELS)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def create_model(name: str, in_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10, **options) -> nn.Module:
    """Build a registered model; clear errors for an unknown name, option or an input it cannot take."""
    if name not in MODELS:
        raise MnistlabError(f"unknown model {name!r}: expected one of {', '.join(MODELS)}",
                            hint="`mnistlab models` lists them with their options")
    entry = MODELS[name]
    unknown = set(options) - set(entry.options())
    if unknown:
        raise MnistlabError(f"model {name!r} has no option {', '.join(sorted(unknown))}: its options are "
                            f"{', '.join(f'{k}={v!r}' for k, v in entry.options().items()) or 'none'}")
    in_shape = tuple(int(s) for s in in_shape)
    try:
        model = entry.build(in_shape=in_shape, num_classes=num_classes, **options)
        model.eval()  # a dry run proves the input fits (eval: BatchNorm1d needs >1 sample in training)
        with torch.no_grad():
            out = model(torch.zeros(2, *in_shape))
        model.train()
    except Exception as exc:  # options come from users and files: any failure to build is theirs to fix
        raise MnistlabError(f"model {name!r} does not fit input shape {'x'.join(map(str, in_shape))} "
                            f"with options {options}: {str(exc).splitlines()[0]}",
                            hint="pick a model for this dataset's image size, or change its options") from None
    if tuple(out.shape) != (2, num_classes):
        raise MnistlabError(f"model {name!r} produced {tuple(out.shape)} for a batch of 2, expected (2, {num_classes})")
    model.mnistlab_name = name
    model.mnistlab_args = dict(options)
    model.mnistlab_in_shape = in_shape
    return model


from . import zoo  # noqa: E402,F401  (fills the registry)
