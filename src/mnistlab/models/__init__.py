"""Models: the registry of named models (the zoo itself is in `zoo.py`), checkpoints, and running them.

    model = create_model("m5", in_shape=(1, 28, 28), num_classes=10)
    list_models()          # names, for the CLI's choices and the parametrised tests

Each model is a function decorated with `@register_model` that builds an `nn.Module` from the input
shape (C,H,W) and the class count, plus keyword options. Every model returns logits.

    registry.py    the registry: register_model, create_model, list_models
    default.py     the packaged default model (what predict and serve use without --model)
    features.py    a model's penultimate features over many images, in batches
    classical.py   scikit-learn models behind nn.Module (their arrays: classical_format.py)
    zoo.py         the models, from logistic regression to An et al.'s M3/M5/M7
    checkpoint.py  safetensors files with JSON metadata, validated before anything is built
    inference.py   batched logits, and a model that takes [0,1] images
    predictor.py   one model or an ensemble behind one interface, loaded from any checkpoint
    heads.py       where each model splits into features and classifier head; the penultimate features
"""

from __future__ import annotations

from . import zoo  # noqa: F401  (fills the registry)
from .registry import (
    MODELS,
    ModelEntry,
    count_parameters,
    create_model,
    create_model_from,
    list_models,
    register_model,
)

__all__ = ["MODELS", "ModelEntry", "count_parameters", "create_model", "create_model_from", "list_models", "register_model"]
