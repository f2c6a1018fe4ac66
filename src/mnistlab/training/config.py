"""One typed config per training run, the recipes that fill it, and the overrides on top.

Resolution order: the dataclass defaults, then a recipe (`recipes/<name>.toml` in the package, or
a TOML file path), then `--set key=value` / flag overrides. Unknown keys and values of the wrong
type are errors that name the key. The resolved config is saved in every run directory and
checkpoint, so a run can be resumed or reproduced exactly.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import typing
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path

from ..errors import MnistlabError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

OPTIMIZERS = ("sgd", "adam", "adamw", "adadelta")
SCHEDULES = ("none", "step", "exponential", "cosine", "onecycle")


@dataclass
class TrainConfig:
    # --- what to train, on what ---
    recipe: str = ""  # name of the recipe this config started from ("" = none)
    model: str = "mlp"  # a name from `mnistlab models`
    model_args: dict = field(default_factory=dict)  # keyword options of the model, e.g. {hidden = [256]}
    dataset: str = "mnist"  # a name from `mnistlab data list`
    data_dir: str = ""  # directory to look for data in first ("" = $MNISTLAB_DATA_DIR / defaults)
    validation: float = 5000  # examples held out of train for model selection: a count, or a fraction < 1; 0 = none
    train_subset: int = 0  # train on only the first N remaining examples (smoke runs); 0 = all
    normalize: str = "standardize"  # "standardize" (dataset mean/std), "scale" ([0,1]) or "none"

    # --- optimisation ---
    epochs: int = 10  # passes over the training examples
    batch_size: int = 128  # examples per step, summed over all processes (global batch)
    optimizer: str = "adam"  # sgd | adam | adamw | adadelta
    lr: float = 1e-3  # learning rate (peak rate for onecycle)
    momentum: float = 0.9  # SGD momentum; Adam beta1
    nesterov: bool = False  # SGD: Nesterov momentum
    weight_decay: float = 0.0  # L2 (sgd/adam/adadelta) or decoupled (adamw) weight decay
    schedule: str = "none"  # none | step | exponential | cosine | onecycle
    step_size: int = 1  # step schedule: epochs between decays
    gamma: float = 0.7  # step/exponential schedules: factor per step_size epochs / per epoch
    warmup: float = 0.25  # onecycle: fraction of steps spent rising to the peak rate
    label_smoothing: float = 0.0  # cross-entropy label smoothing, 0..1
    grad_clip: float = 0.0  # clip the gradient's global norm to this; 0 = off
    ema: float = 0.0  # decay of an exponential moving average of the weights per step (0 = off, An 2020: 0.999)
    early_stopping: int = 0  # stop after this many epochs without a better validation accuracy; 0 = off

    # --- augmentation (on the device, per batch) ---
    augment: str = "none"  # preset: none | seed (10 deg, 10%, 10%) | an2020 (20 deg, 20%) | elastic
    rotate: float | None = None  # max rotation, degrees (None = the preset's)
    translate: float | None = None  # max shift, fraction of the image size (None = the preset's)
    zoom: float | None = None  # max zoom in/out, fraction (None = the preset's)
    elastic_alpha: float | None = None  # elastic distortion strength, pixels (None = the preset's)
    elastic_sigma: float | None = None  # elastic field smoothness, pixels (None = the preset's)

    # --- engine ---
    seed: int = 0  # seeds weights, data order, augmentation and dropout
    device: str = "auto"  # auto (cuda if available, else cpu) | cpu | cuda | cuda:N
    precision: str = "fp32"  # fp32 | bf16 (autocast)
    channels_last: bool = False  # NHWC memory layout for convolutions (GPU)
    compile: bool = False  # torch.compile the model (GPU; costs start-up time)
    cuda_graphs: bool = False  # capture each training step (forward, backward, fused SGD) as one CUDA graph
    eval_batch_size: int = 2000  # examples per evaluation batch
    threads: int = 0  # torch CPU threads; 0 = torch's default

    # --- output ---
    out: str = "runs"  # parent directory of run directories
    name: str = ""  # run directory name ("" = <recipe or model>-<dataset>-s<seed>)
    checkpoint_every: int = 1  # save the last checkpoint every N epochs (and always at the end)
    progress: bool = True  # a progress bar per epoch
    tensorboard: bool = False  # also write TensorBoard scalars (needs the tensorboard package)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in fields(TrainConfig)}
# Fields that do not change the numbers a run produces: a resumed run may differ in these.
RUN_ONLY_FIELDS = {"progress", "tensorboard", "out", "name", "threads", "checkpoint_every", "data_dir"}


def _expected_type(name: str):
    hints = typing.get_type_hints(TrainConfig)
    return hints[name]


def coerce(name: str, value, *, source: str):
    """`value` converted to field `name`'s type; strings (from --set) are parsed; errors name the key."""
    if name not in FIELDS:
        import difflib

        close = difflib.get_close_matches(name, FIELDS, n=1)
        raise MnistlabError(f"{source}: unknown config key {name!r}",
                            hint=(f"did you mean {close[0]!r}? " if close else "")
                            + "`mnistlab train --help` lists the keys")
    typ = _expected_type(name)
    optional = typing.get_origin(typ) in (typing.Union, getattr(__import__("types"), "UnionType", None))
    base = [t for t in typing.get_args(typ) if t is not type(None)][0] if optional else typ
    if value is None:
        if optional:
            return None
        raise MnistlabError(f"{source}: {name} may not be empty")
    if isinstance(value, str) and base is not str:
        text = value.strip()
        if optional and text.lower() in ("none", "null", ""):
            return None
        try:
            if base is bool:
                if text.lower() in ("true", "1", "yes", "on"):
                    return True
                if text.lower() in ("false", "0", "no", "off"):
                    return False
                raise ValueError
            if base is dict:
                value = json.loads(text) if text.startswith("{") else tomllib.loads(f"v = {text}")["v"]
            else:
                value = base(float(text)) if base is int and "." not in text and "e" in text.lower() else base(text)
        except (ValueError, tomllib.TOMLDecodeError, json.JSONDecodeError):
            raise MnistlabError(f"{source}: {name}={value!r} is not a valid {base.__name__}") from None
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if base is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, base) or (base is not bool and isinstance(value, bool)):
        raise MnistlabError(f"{source}: {name}={value!r} is a {type(value).__name__}, expected {base.__name__}")
    return value


def list_recipes() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("mnistlab.recipes").iterdir() if p.name.endswith(".toml"))


def recipe_path(name: str):
    """A packaged recipe by name, or a TOML file by path."""
    if name.endswith(".toml") or "/" in name:
        path = Path(name)
        if not path.is_file():
            raise MnistlabError(f"recipe file {name} does not exist")
        return path
    candidate = resources.files("mnistlab.recipes") / f"{name}.toml"
    if not candidate.is_file():
        raise MnistlabError(f"unknown recipe {name!r}: expected one of {', '.join(list_recipes())} or a .toml file")
    return candidate


def read_recipe(name: str) -> dict:
    path = recipe_path(name)
    try:
        values = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise MnistlabError(f"recipe {path}: invalid TOML ({exc})") from None
    values.setdefault("recipe", Path(str(name)).stem if str(name).endswith(".toml") else name)
    return values


def resolve(recipe: str | None = None, overrides: dict | None = None) -> TrainConfig:
    """Defaults, then the recipe, then the overrides; checked field by field, then as a whole."""
    cfg = TrainConfig()
    layers = []
    if recipe:
        layers.append((f"recipe {recipe}", read_recipe(recipe)))
    if overrides:
        layers.append(("override", overrides))
    for source, values in layers:
        for key, value in values.items():
            setattr(cfg, key, coerce(key, value, source=source))
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> None:
    """Checks that span fields or ranges; each error names the key and what was expected."""

    def bad(key, expected):
        raise MnistlabError(f"{key}={getattr(cfg, key)!r}: expected {expected}")

    if cfg.optimizer not in OPTIMIZERS:
        bad("optimizer", " | ".join(OPTIMIZERS))
    if cfg.schedule not in SCHEDULES:
        bad("schedule", " | ".join(SCHEDULES))
    if cfg.normalize not in ("standardize", "scale", "none"):
        bad("normalize", "standardize | scale | none")
    if cfg.precision not in ("fp32", "bf16"):
        bad("precision", "fp32 | bf16")
    if cfg.epochs < 1:
        bad("epochs", "at least 1")
    if cfg.batch_size < 1:
        bad("batch_size", "at least 1")
    if cfg.lr <= 0:
        bad("lr", "a positive number")
    if not 0 <= cfg.label_smoothing < 1:
        bad("label_smoothing", "0 <= value < 1")
    if not 0 <= cfg.ema < 1:
        bad("ema", "0 (off) or a decay below 1, such as 0.999")
    if cfg.validation < 0:
        bad("validation", "a count, a fraction below 1, or 0 for none")
    if cfg.early_stopping and not cfg.validation:
        raise MnistlabError("early_stopping needs a validation split (validation > 0)")
    if cfg.eval_batch_size < 1:
        bad("eval_batch_size", "at least 1")
    if cfg.checkpoint_every < 1:
        bad("checkpoint_every", "at least 1")
    from .augment import PRESETS

    if cfg.cuda_graphs:
        unsupported = [k for k, bad in (("optimizer", cfg.optimizer != "sgd"), ("ema", cfg.ema), ("grad_clip", cfg.grad_clip),
                                        ("compile", cfg.compile), ("augment", cfg.augment != "none"))
                       if bad]
        if unsupported:
            raise MnistlabError(f"cuda_graphs=true supports plain SGD training only; turn off: {', '.join(unsupported)}",
                                hint="the graph path captures forward, backward and a fused SGD step; keep the "
                                "eager engine for the rest")
    if cfg.augment not in PRESETS:
        bad("augment", " | ".join(PRESETS))
    from ..models import MODELS

    if cfg.model not in MODELS:
        raise MnistlabError(f"unknown model {cfg.model!r}: expected one of {', '.join(MODELS)}",
                            hint="`mnistlab models` lists them")


def augmentation(cfg: TrainConfig):
    """The run's `Augment`: the preset, with any explicitly set field taking precedence."""
    from .augment import preset

    base = preset(cfg.augment)
    explicit = {k: getattr(cfg, k) for k in ("rotate", "translate", "zoom", "elastic_alpha", "elastic_sigma")
                if getattr(cfg, k) is not None}
    return dataclasses.replace(base, **explicit)


def parse_set(items: list[str]) -> dict:
    """`--set key=value` pairs into a dict (values parsed later, by type)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise MnistlabError(f"--set {item!r}: expected key=value")
        key, value = item.split("=", 1)
        out[key.strip().replace("-", "_")] = value
    return out


def differences(a: dict, b: dict, ignore=RUN_ONLY_FIELDS) -> list[str]:
    """Keys whose values differ between two config dicts (other than run-only fields)."""
    return sorted(k for k in set(a) | set(b) if k not in ignore and a.get(k) != b.get(k))
