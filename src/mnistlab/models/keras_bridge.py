"""Keras 3 models through mnistlab, unchanged: a `keras.Model` on the PyTorch backend, in torch's clothes.

    mnistlab train --recipe seed-cnn --model tutorial.py:network      # network = models.Sequential() ...
    mnistlab.train(recipe="seed-cnn", model=network)                  # the same from a notebook

Under KERAS_BACKEND=torch a Keras model *is* a `torch.nn.Module` whose variables are torch parameters
(keras/src/backend/torch/layer.py), and each Keras layer runs through `nn.Module.__call__`, so torch's
hooks see it. `KerasNet` puts such a model behind mnistlab's contract (normalized float (N, C, H, W) in,
logits out) without changing what it computes:

- the input goes in the layout the model declares: (28, 28, 1) channels-last, (1, 28, 28)
  channels-first, (28, 28) or (784,) flat; a model that declares none gets Keras' image_data_format;
- a final softmax (the last layer's `activation="softmax"`, a `Softmax()` or `Activation("softmax")`
  layer) is taken off: the model is trained on its logits with cross-entropy, which is what Keras'
  cross-entropy of the softmax computes, without its clipping of probabilities; every verb that shows
  probabilities applies the softmax again;
- each run gets a fresh copy (`keras.models.clone_model`) made with the layers' own initializers
  (`he_uniform` stays `he_uniform`), seeded from the run's seed; the layers Keras named itself get
  the names a fresh Python process gives them (conv2d, dense, dense_1), so a checkpoint's names are
  the same in any process;
- its layers are torch modules under their Keras names (`conv2d.kernel`, `dense_1.bias`, in Keras'
  own layouts), so checkpoints, heads, features, inspect and hooks work as for any network.

The model's `compile()` settings are not used: mnistlab trains with the run's optimizer, loss and
schedule (the recipe's), and the run says so as it starts. Keras is imported only for a model that is Keras-made.
"""

from __future__ import annotations

import os
import random
import re
import sys

import numpy as np
import torch
from torch import nn

from ..errors import MnistlabError

HINT = "pip install 'mnistlab[keras]' (Keras 3; it runs on PyTorch, no TensorFlow needed)"


def is_keras(obj) -> bool:
    """Whether `obj` is a Keras model (of any backend), without importing Keras."""
    return any(c.__module__.split(".", 1)[0] == "keras" and c.__name__ in ("Model", "Layer")
               for c in type(obj).__mro__)


def keras_module():
    """Keras, on the PyTorch backend: imported with KERAS_BACKEND=torch when it is not yet, an error that
    says what to do when it was imported with another backend or is not installed."""
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "torch"
    try:
        import keras
    except ImportError:
        raise MnistlabError("a Keras model needs Keras 3", hint=HINT) from None
    backend = keras.config.backend()
    if backend != "torch":
        raise MnistlabError(f"Keras was imported with the {backend} backend before mnistlab could choose PyTorch: "
                            "mnistlab trains a Keras model as the torch module it is on the torch backend",
                            hint="set KERAS_BACKEND=torch before Keras is first imported (in a notebook: "
                            "`import os; os.environ['KERAS_BACKEND'] = 'torch'` in the first cell, then restart "
                            "the kernel)")
    if int(keras.__version__.split(".")[0]) < 3:
        raise MnistlabError(f"Keras {keras.__version__}: mnistlab takes Keras 3 models", hint=HINT)
    return keras


class KerasLayer(nn.Module):
    """One Keras layer seen from torch: its variables as parameters under their Keras names (`kernel`,
    `bias`, in Keras' layouts), hooks put on it registered on the layer itself (they see the input and,
    for an image layer, the output channels-first, as torch's own layers give them)."""

    def __init__(self, layer):
        super().__init__()
        self.__dict__["layer"] = layer  # not a torch child: its parameters are registered here, once
        for variable in layer.weights:
            self.register_parameter(_safe(variable.name), variable.value)

    @property
    def kind(self) -> str:
        """Conv2d, Linear or the Keras class name: what inspection draws it as."""
        name = type(self.layer).__name__
        return {"Conv2D": "Conv2d", "Dense": "Linear"}.get(name, name)

    @property
    def weight(self) -> torch.Tensor:
        """The kernel in torch's layout: (out, in, kh, kw) for a convolution, (out, in) for a dense layer."""
        kernel = self.layer.kernel.value
        return kernel.permute(3, 2, 0, 1) if kernel.dim() == 4 else kernel.T

    def channels_first(self, out):
        if torch.is_tensor(out) and out.dim() == 4 and getattr(self.layer, "data_format", "") == "channels_last":
            return out.permute(0, 3, 1, 2)
        return out

    def register_forward_pre_hook(self, hook, **kwargs):
        return self.layer.register_forward_pre_hook(lambda module, args: hook(self, args), **kwargs)

    def register_forward_hook(self, hook, **kwargs):
        return self.layer.register_forward_hook(
            lambda module, args, out: hook(self, args, self.channels_first(out)), **kwargs)

    def forward(self, *args, **kwargs):  # the layer alone, as Keras calls it
        return self.layer(*args, **kwargs)

    def extra_repr(self) -> str:
        return f"keras {type(self.layer).__name__}"


class KerasNet(nn.Module):
    """A Keras model behind mnistlab's contract (see the module docstring)."""

    def __init__(self, keras_model, layout: str, softmax_removed: str | None):
        super().__init__()
        self.__dict__["keras_model"] = keras_model  # outside torch's tree: its layers are registered below, once
        self.layout = layout  # channels_last | channels_first | hw | flat
        self.softmax_removed = softmax_removed  # which final softmax was taken off, in words (None: none)
        self.compiled_with = None  # the user's compile() settings, in words: not what mnistlab trains with
        owned = set()
        for layer in _leaf_layers(keras_model):
            view = KerasLayer(layer)
            name = _unique(_safe(layer.name), self)
            self.add_module(name, view)
            owned.update(id(v.value) for v in layer.weights)
        rest = {_safe(v.path): v.value for v in keras_model.weights if id(v.value) not in owned}
        if rest:  # variables of a layer that also has layers inside it
            self.own = nn.ParameterDict(rest)

    def forward(self, x):
        if self.layout == "channels_last":
            x = x.permute(0, 2, 3, 1)
        elif self.layout == "hw":
            x = x[:, 0]
        elif self.layout == "flat":
            x = x.flatten(1)
        return self.keras_model(x, training=self.training)

    def __deepcopy__(self, memo):
        """A copy with its own Keras model (the same layer names, weights copied), as deepcopy gives."""
        keras = keras_module()
        device = next(self.parameters(), torch.empty(0)).device
        with torch.device("cpu"):
            clone = keras.models.clone_model(self.keras_model)
        copy = KerasNet(clone, self.layout, self.softmax_removed).to(device)
        copy.compiled_with = self.compiled_with
        copy.load_state_dict(self.state_dict())
        copy.train(self.training)
        for key, value in self.__dict__.items():
            if key.startswith(("mnistlab_", "_mnistlab_")):
                copy.__dict__[key] = value
        memo[id(self)] = copy
        return copy

    def extra_repr(self) -> str:
        return f"keras {type(self.keras_model).__name__} {self.keras_model.name!r}, input {self.layout}"


def adapt(model, in_shape: tuple[int, ...], name: str) -> KerasNet:
    """A fresh copy of Keras model `model` (weights from its initializers, seeded from torch's seeded
    generator), its final softmax taken off, behind mnistlab's contract for images of `in_shape` (C, H, W)."""
    keras = keras_module()
    seed = int(torch.randint(0, 2**31 - 1, (), device="cpu"))  # the run seeded torch: this follows from it
    with torch.device("cpu"):  # Keras makes its variables itself (a meta-device build would have none to read)
        layout = _layout(keras, model, in_shape, name)
        if not model.built:
            model(np.zeros((1, *_keras_shape(layout, in_shape)), dtype="float32"))
        clone, removed = _fresh_copy(keras, model, seed, name)
    net = KerasNet(clone, layout, removed)
    net.compiled_with = compiled_with(model)
    return net


def _layout(keras, model, in_shape, name: str) -> str:
    """How the model takes an image: the layout its declared input shape says."""
    c, h, w = in_shape
    try:
        declared = tuple(model.inputs[0].shape[1:]) if model.inputs else None
    except (AttributeError, ValueError, IndexError, TypeError):
        declared = None
    if declared is None:
        return "channels_last" if keras.config.image_data_format() == "channels_last" else "channels_first"
    for layout in ("channels_last", "channels_first", "hw", "flat"):
        if tuple(_keras_shape(layout, in_shape)) == declared:
            return layout
    raise MnistlabError(f"model {name!r} takes inputs of shape {declared}; the dataset's images are {c}x{h}x{w}",
                        hint=f"declare input_shape=({h}, {w}, {c}) (channels-last), ({c}, {h}, {w}), "
                        f"({h}, {w}) or ({c * h * w},)" if c == 1 else f"declare input_shape=({h}, {w}, {c})")


def _keras_shape(layout: str, in_shape) -> tuple[int, ...]:
    c, h, w = in_shape
    return {"channels_last": (h, w, c), "channels_first": (c, h, w), "hw": (h, w) if c == 1 else (-1,),
            "flat": (c * h * w,)}[layout]


def _fresh_copy(keras, model, seed: int, name: str):
    """(a clone with fresh weights from the layers' initializers under `seed`, which final softmax was
    taken off, in words). Initializers without a seed of their own draw one from Python's `random` when
    they are made, and Keras' random ops from its global seed generator: both come from `seed` here,
    and Python's and NumPy's global generators are put back after."""
    layers = list(getattr(model, "layers", []))
    output = _output_layer(model)
    canonical = _canonical_names(keras, layers)
    removed = []

    def clone_layer(layer):
        config = layer.get_config()
        config["name"] = canonical.get(id(layer), layer.name)
        if layer is output:
            if isinstance(layer, keras.layers.Softmax) or (isinstance(layer, keras.layers.Activation)
                                                           and config.get("activation") == "softmax"):
                removed.append(f"the final {type(layer).__name__} layer {config['name']!r}")
                return keras.layers.Identity(name=config["name"])
            if config.get("activation") == "softmax":
                removed.append(f"the softmax activation of its last layer {config['name']!r}")
                config["activation"] = "linear"
        return layer.__class__.from_config(config)

    saved = random.getstate(), np.random.get_state()
    try:
        keras.utils.set_random_seed(seed)
        try:
            clone = keras.models.clone_model(model, clone_function=clone_layer)
        except Exception as exc:  # a subclassed model without get_config/from_config
            raise MnistlabError(f"model {name!r}: Keras cannot make a fresh copy of this {type(model).__name__} "
                                f"({str(exc).splitlines()[0][:200]})",
                                hint="pass the class, or a function that builds the model, instead of the "
                                "object: each run builds its own") from None
        if not clone.built or not clone.weights:
            clone(np.zeros((1, *model.inputs[0].shape[1:]), dtype="float32"))
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
    return clone, (removed[0] if removed else None)


def _output_layer(model):
    """The layer that gives the model's output (Sequential: the last; functional: its output's maker)."""
    try:
        history = model.outputs[0]._keras_history
        return history[0] if history else None
    except (AttributeError, IndexError, TypeError, ValueError):
        layers = getattr(model, "layers", [])
        return layers[-1] if layers else None


def _canonical_names(keras, layers) -> dict[int, str]:
    """The names a fresh process gives the layers Keras named itself (conv2d, dense, dense_1: Keras
    numbers names per process); a name the user chose is kept."""
    from keras.src.utils.naming import to_snake_case

    taken = {layer.name for layer in layers}
    out, counts = {}, {}
    for layer in layers:
        base = to_snake_case(type(layer).__name__)
        if not re.fullmatch(rf"{re.escape(base)}(_\d+)?", layer.name):
            continue
        n = counts.get(base, 0)
        while True:
            candidate = base if n == 0 else f"{base}_{n}"
            n += 1
            if candidate == layer.name or candidate not in taken:
                break
        counts[base] = n
        taken.add(candidate)
        out[id(layer)] = candidate
    return out


def _leaf_layers(model) -> list:
    """The layers that compute (no layers inside them), in order; input layers left out."""
    found = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if type(layer).__name__ == "InputLayer" or list(layer._flatten_layers(include_self=False, recursive=False)):
            continue
        found.append(layer)
    return found


def _safe(name: str) -> str:
    return re.sub(r"[^\w]", "_", name) or "layer"


def _unique(name: str, module: nn.Module) -> str:
    candidate, n = name, 1
    while candidate in module._modules or hasattr(nn.Module, candidate) or candidate in module.__dict__:
        candidate, n = f"{name}_{n}", n + 1
    return candidate


def compiled_with(model) -> str | None:
    """What a model was compiled with (optimizer, loss), in words; None if it was not compiled."""
    if not getattr(model, "compiled", False):
        return None
    loss = getattr(model, "loss", None)
    return (f"optimizer {type(getattr(model, 'optimizer', None)).__name__}, "
            f"loss {loss if isinstance(loss, str) else type(loss).__name__}")


def describe(model: nn.Module) -> str | None:
    """What a run says about a Keras model as it starts: the softmax taken off, the compile() not used."""
    if not isinstance(model, KerasNet):
        return None
    said = [f"Keras {type(model.keras_model).__name__} on the torch backend, input {model.layout}"]
    if model.softmax_removed:
        said.append(f"{model.softmax_removed} taken off: it trains on logits (cross-entropy), and the verbs "
                    "apply the softmax")
    if model.compiled_with:
        said.append(f"its compile() settings ({model.compiled_with}) are not used: the run's optimizer, "
                    "learning rate and loss are")
    return "; ".join(said)
