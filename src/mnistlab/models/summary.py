"""A model's summary, as Keras' `model.summary()` and torchinfo print it: each layer that computes, its
output shape for one image, its parameters, and the multiply-adds of one image's forward pass.

    mnistlab models --summary keras-cnn
    mnistlab.summary("tutorial.py:network")      # a zoo name, your own model, a run, or a model object
    run.summary()                                # a trained run's model

One forward pass of a zero image with a hook on every leaf module (the torch layers; a Keras model's
layers, its own output layouts kept: (1, 26, 26, 32) for a channels-last convolution) records what
each gives. Multiply-adds are counted for convolutions, dense and recurrent layers (each output
element: its kernel's inputs and its bias), as torchinfo counts them for those layers (it is the
oracle in tests/test_summary.py; it also counts normalisation layers, which we leave out); FLOPs are
twice the multiply-adds. torchinfo itself is not used here: it counts nothing for a Keras
layer's `kernel`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import nn

from .. import user_code
from ..data.registry import get_spec
from .keras_bridge import KerasLayer, KerasNet
from .predictor import load_model
from .registry import create_model, is_known


def summarize(model: nn.Module, in_shape) -> dict:
    """{layers: [{name, type, output_shape, params, macs}], params, trainable, macs, flops, input_shape}."""
    in_shape = tuple(int(s) for s in in_shape)
    rows: list[dict] = []
    hooks = []
    for name, module in model.named_modules():
        if name and not any(True for _ in module.children()):
            target = module.layer if isinstance(module, KerasLayer) else module  # Keras' own output layout
            hooks.append(target.register_forward_hook(
                lambda m, args, out, name=name, module=module: rows.append(_row(name, module, args, out))))
    was_training = model.training
    device = next(model.parameters(), torch.empty(0)).device
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *in_shape, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    macs = sum(r["macs"] for r in rows)
    kind = (f"Keras {type(model.keras_model).__name__} {model.keras_model.name!r}" if isinstance(model, KerasNet)
            else type(model).__name__)
    return {"model": getattr(model, "mnistlab_name", kind), "kind": kind, "input_shape": [1, *in_shape],
            "layers": rows, "params": params, "trainable": trainable, "macs": macs, "flops": 2 * macs,
            "bytes": sum(p.numel() * p.element_size() for p in model.parameters())}


def _row(name: str, module: nn.Module, args, out) -> dict:
    shape = list(out.shape) if torch.is_tensor(out) else [list(o.shape) for o in out if torch.is_tensor(o)]
    kind = f"{type(module.layer).__name__} (Keras)" if isinstance(module, KerasLayer) else type(module).__name__
    return {"name": name, "type": kind, "output_shape": shape, "params": sum(p.numel() for p in module.parameters()),
            "macs": _macs(module, args, out)}


def _macs(module: nn.Module, args, out) -> int:
    """Multiply-adds of one call: each output element of a convolution or dense layer costs its kernel's
    inputs (a convolution: in_channels / groups x kernel area; a dense layer: in_features), plus one for
    its bias; a recurrent layer, its weights once per time step. torchinfo counts the same."""
    if isinstance(module, nn.RNNBase):
        steps = args[0].shape[1 if module.batch_first else 0] if args[0].dim() == 3 else args[0].shape[0]
        return steps * sum(p.numel() for p in module.parameters())
    if not torch.is_tensor(out):
        return 0
    if isinstance(module, KerasLayer):
        weight, kind = getattr(module.layer, "kernel", None), type(module.layer).__name__
        bias = out.numel() if getattr(module.layer, "bias", None) is not None else 0
        if kind in ("Conv1D", "Conv2D", "Conv3D") and weight is not None:  # kernel (..., in / groups, out)
            return out.numel() * math.prod(weight.shape[:-1]) + bias
        if kind == "Dense" and weight is not None:
            return out.numel() * weight.shape[0] + bias
        return 0
    bias = out.numel() if getattr(module, "bias", None) is not None else 0
    if isinstance(module, nn.modules.conv._ConvNd):
        return out.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size) + bias
    if isinstance(module, nn.Linear):
        return out.numel() * module.in_features + bias
    return 0


def summary_of(model, dataset: str | None = None) -> dict:
    """The summary of a zoo name, your own model (a reference, or an object: a class, a function, an
    nn.Module, a Keras model), or a trained run or checkpoint (its own weights and input shape)."""
    if isinstance(model, (str, os.PathLike)) and not is_known(str(model)) and Path(model).exists():
        built, meta = load_model(model)
        return {**summarize(built, meta["in_shape"]), "source": str(model)}
    name = model if isinstance(model, str) else user_code.adopt(model, "model")
    spec = get_spec(dataset or "mnist")
    in_shape = (spec.channels, *spec.image_shape[-2:])
    return {**summarize(create_model(name, in_shape, len(spec.classes)), in_shape), "source": name,
            "dataset": spec.name}
