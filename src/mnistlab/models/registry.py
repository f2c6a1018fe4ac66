"""The model registry: `@register_model` fills it, `create_model` builds from it, `list_models` names it.

Anywhere a model name goes, user code goes too: `path/to/file.py:Name`, `package.module:Name`, or an
object adopted from Python (see `user_code`). The contract a model of one's own meets is the zoo's:
it receives normalized float batches (N, C, H, W) and returns logits (N, classes); a class or factory
may take `num_classes`, `in_channels` and `in_shape` arguments, which it then gets; every other
argument comes from `model_args`. `create_model` checks it with one dry batch before training.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .. import user_code
from ..errors import MnistlabError
from ..names import did_you_mean
from . import keras_bridge

GIVEN = ("in_shape", "num_classes", "in_channels")  # what mnistlab passes to a builder that asks for it


@dataclass(frozen=True)
class ModelEntry:
    name: str
    build: Callable[..., nn.Module]
    summary: str  # one line: what it is and where it comes from
    head: tuple[str, ...] | None = None  # the classifier head's modules; None = found by `heads.head_modules`
    user: object = None  # user code: the class, factory or instance the entry builds from
    code: user_code.Code | None = None  # ... and where it came from

    def make(self, in_shape: tuple, num_classes: int, options: dict) -> nn.Module:
        """The model, unchecked (`build` checks it): options as a dict, so none can take a given's place."""
        if self.user is not None:
            return self.build(in_shape, num_classes, options)
        return self.build(in_shape=in_shape, num_classes=num_classes, **options)

    def options(self) -> dict[str, object]:
        """The model's keyword options and their defaults."""
        target = self.build if self.user is None else self.user
        if isinstance(target, nn.Module):
            return {}
        try:
            params = inspect.signature(target).parameters
        except (TypeError, ValueError):
            return {}
        return {k: p.default for k, p in params.items()
                if k not in GIVEN and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}

    def takes_any_option(self) -> bool:
        """A factory with **kwargs: its options cannot be checked before it is called."""
        if self.user is None or isinstance(self.user, nn.Module):
            return False
        try:
            return any(p.kind == p.VAR_KEYWORD for p in inspect.signature(self.user).parameters.values())
        except (TypeError, ValueError):
            return True


MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, summary: str, head: tuple[str, ...] | None = None):
    def wrap(build):
        MODELS[name] = ModelEntry(name, build, summary, head)
        return build

    return wrap


MAX_OPTION = 4096  # an integer option of a zoo network (a width, a depth): what building one may cost is bounded


def check_options(name: str, options: dict, where: str) -> None:
    """A zoo network's options within what can be built in seconds (an `rnn` of 3 million layers,
    asked for by a checkpoint someone sent, took minutes before its shapes could be compared)."""
    if name not in MODELS:
        return
    for key, value in options.items():
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) > MAX_OPTION:
                raise MnistlabError(f"{where}model option {key}={value!r}: expected numbers within +-{MAX_OPTION}",
                                    hint="a zoo network's widths and depths are at most 4096")


def list_models() -> list[str]:
    return list(MODELS)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def is_known(name: str) -> bool:
    """A zoo name, or a reference to user code (checked when it is built)."""
    return name in MODELS or user_code.is_reference(name)


def model_entry(name: str, recorded: user_code.Carried | None = None) -> ModelEntry:
    """The zoo's entry for `name`, or one for user code: resolved from the reference the user gave, or,
    with `recorded` (what a checkpoint carries), from the run's record under the consent rules."""
    if name in MODELS:
        return MODELS[name]
    if not user_code.is_reference(name):
        raise MnistlabError(f"unknown model {name!r}: expected one of {', '.join(MODELS)}, or your own as "
                            "path/to/file.py:Name or package.module:Name",
                            hint=did_you_mean(name, MODELS) + "`mnistlab models` lists them with their options")
    if recorded is not None:
        obj, code = user_code.from_record(recorded, "model"), None
    else:
        obj, code = user_code.resolve(name, "model")
    if keras_bridge.is_keras(obj):
        keras_bridge.keras_module()  # Keras 3 on the torch backend, or an error that says how
    if not isinstance(obj, nn.Module) and not callable(obj):
        raise MnistlabError(f"model {name!r} is a {type(obj).__name__}: expected an nn.Module class, a function "
                            "that returns one, or an nn.Module")
    return ModelEntry(name, _user_build(obj, name), "your own model", user=obj, code=code)


def _user_build(obj, name: str = "") -> Callable[..., nn.Module]:
    """The zoo's builder signature around a user's class, factory or instance. A Keras model (or a
    factory that returns one) is put behind the contract by `keras_bridge`: a fresh copy per build."""
    if keras_bridge.is_keras(obj):
        return lambda in_shape, num_classes, options: keras_bridge.adapt(obj, tuple(in_shape), name)
    if isinstance(obj, nn.Module):
        def from_instance(in_shape, num_classes, options):
            model = copy.deepcopy(obj)
            for module in model.modules():  # fresh weights from the run's seed, as a class would get
                if callable(getattr(module, "reset_parameters", None)):
                    module.reset_parameters()
            return model
        return from_instance
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        params = {}

    def from_callable(in_shape, num_classes, options):
        given = {"in_shape": tuple(in_shape), "num_classes": num_classes, "in_channels": in_shape[0]}
        model = obj(**{k: v for k, v in given.items() if k in params and k not in options}, **options)
        if keras_bridge.is_keras(model):
            return keras_bridge.adapt(model, tuple(in_shape), name)
        if not isinstance(model, nn.Module):
            raise TypeError(f"it returned a {type(model).__name__}, expected an nn.Module")
        return model
    return from_callable


def create_model(name: str, in_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10, **options) -> nn.Module:
    """Build a registered model or a user's own; clear errors for an unknown name, option or an input
    it cannot take."""
    return build(model_entry(name), in_shape, num_classes, options)


def create_model_from(name: str, in_shape: Sequence[int], num_classes: int, options: dict) -> nn.Module:
    """`create_model` for a run's settings: the options as a dict (from a file, so any name may come)."""
    return build(model_entry(name), in_shape, num_classes, dict(options))


def build(entry: ModelEntry, in_shape: Sequence[int], num_classes: int, options: dict) -> nn.Module:
    """The model `entry` builds with `options` (a dict: an option may have any name, `source` included),
    checked with one dry batch."""
    name = entry.name
    if entry.user is not None:
        return _create_user_model(entry, tuple(int(s) for s in in_shape), num_classes, options)
    unknown = set(options) - set(entry.options())
    if unknown:
        raise MnistlabError(f"model {name!r} has no option {', '.join(sorted(unknown))}: its options are "
                            f"{', '.join(f'{k}={v!r}' for k, v in entry.options().items()) or 'none'}")
    in_shape = tuple(int(s) for s in in_shape)
    try:
        model = entry.make(in_shape, num_classes, options)
        if _is_skeleton(model):
            return _named(model, name, options, in_shape)
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
    return _named(model, name, options, in_shape)


def _named(model: nn.Module, name: str, options: dict, in_shape: tuple, entry: ModelEntry | None = None) -> nn.Module:
    if entry is not None:
        model.mnistlab_entry = entry  # user code: what built it (heads, options), without resolving it again
    model.mnistlab_name = name
    model.mnistlab_args = dict(options)
    model.mnistlab_in_shape = in_shape
    return model


def _create_user_model(entry: ModelEntry, in_shape: tuple, num_classes: int, options: dict) -> nn.Module:
    """The contract, checked up front: it builds, takes one dry batch of normalized (2, C, H, W) floats
    and returns finite float logits of shape (2, classes); each failure named in one line."""
    name = entry.name
    if isinstance(entry.user, nn.Module) and options:
        raise MnistlabError(f"model {name!r} is an nn.Module object: it takes no model_args ({', '.join(options)})",
                            hint="pass its class (and the arguments as model_args) instead")
    unknown = set(options) - set(entry.options())
    if unknown and not entry.takes_any_option():
        raise MnistlabError(f"model {name!r} has no argument {', '.join(sorted(unknown))}: its arguments are "
                            f"{', '.join(entry.options()) or 'none'}")
    try:
        model = entry.make(in_shape, num_classes, options)
    except (Exception, SystemExit) as exc:  # user code: its failure, in one line with its own line number
        raise user_code.raised("model", name, "building it", exc) from None
    if _is_skeleton(model):
        return _named(model, name, options, in_shape, entry)
    try:
        model.eval()
        with torch.no_grad():
            out = model(torch.zeros(2, *in_shape, device=_device_of(model)))
        model.train()
    except (Exception, SystemExit) as exc:
        raise user_code.raised("model", name, f"a dry batch of shape (2, {', '.join(map(str, in_shape))})",
                               exc) from None
    if not torch.is_tensor(out):
        raise MnistlabError(f"model {name!r} returned a {type(out).__name__} for a batch, expected a tensor of "
                            "logits", hint="return the logits tensor (N, classes) from forward()")
    if tuple(out.shape) != (2, num_classes):
        raise MnistlabError(f"model {name!r} returned shape {tuple(out.shape)} for a batch of 2 images "
                            f"{'x'.join(map(str, in_shape))}, expected (2, {num_classes}): one logit per class",
                            hint="the last layer should have num_classes outputs (accept num_classes= to get it)")
    if not out.is_floating_point():
        raise MnistlabError(f"model {name!r} returned {out.dtype} logits, expected floating point")
    if not torch.isfinite(out).all():
        raise MnistlabError(f"model {name!r} returned NaN or infinite logits for a batch of zeros")
    return _named(model, name, options, in_shape, entry)


def _is_skeleton(model: nn.Module) -> bool:
    """Built on the meta device for its shapes (checkpoint loading checks them before allocating):
    the real build that follows runs the dry batch. On the meta device the batch would go through
    PyTorch's decompositions, whose batch norm imports torch._dynamo: 1.3 s of every process's start."""
    device = _device_of(model)
    return device is not None and device.type == "meta"


def _device_of(model: nn.Module) -> torch.device | None:
    tensor = next(iter(model.parameters()), None)
    return tensor.device if tensor is not None else None


def catalog() -> list[dict]:
    """Every registered network: name, parameters at MNIST's shape, what it is, its options."""
    rows = []
    for name, entry in MODELS.items():
        options = ", ".join(f"{k}={v!r}" for k, v in entry.options().items())
        rows.append({"model": name, "params": count_parameters(create_model(name, (1, 28, 28), 10)),
                     "description": entry.summary + (f" [options: {options}]" if options else "")})
    return rows
