"""One typed config per training run, the recipes that fill it, and the overrides on top.

Resolution order: the dataclass defaults, then a recipe (`recipes/<name>.toml` in the package, or
a TOML file path), then `--set key=value` / flag overrides. Unknown keys and values of the wrong
type are errors that name the key. The resolved config is saved in every run directory and
checkpoint, so a run can be resumed or reproduced exactly.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import sys
import typing
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path

from .. import schema, user_code
from ..data.preparation import parse as parse_prepare
from ..data.synthetic import parse as parse_synthetic
from ..data.variants import VALIDATION as VARIANT_VALIDATION
from ..data.variants import VariantSpec, split_name
from ..errors import MnistlabError
from ..models import MODELS
from ..models.classical import CLASSICAL
from ..models.classical import validate_config as validate_classical
from ..models.inference import BATCH_SIZE
from ..models.registry import check_options, is_known
from ..names import check_name, did_you_mean
from ..precision import CHOICES as PRECISIONS
from ..rundir import RunDir
from .augment import PRESETS, preset
from .losses import LOSSES
from .optim import OPTIMIZERS, SCHEDULES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib



def setting(default, help: str):
    """A TrainConfig field with its meaning and units, which `mnistlab train --help` shows."""
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})



@dataclass
class TrainConfig:
    # --- what to train, on what ---
    recipe: str = setting("", "name of the recipe this config started from ('' = none)")
    model: str = setting("mlp", "a name from `mnistlab models`")
    model_args: dict = setting(dict(), "keyword options of the model, e.g. {hidden = [256]}")
    dataset: str = setting("mnist", "a name from `mnistlab data list`")
    data_dir: str = setting("", "directory to look for data in first ('' = $MNISTLAB_DATA_DIR / defaults)")
    validation: float = setting(5000, "examples held out of train for model selection: a count, or a fraction < 1; "
                                "0 = none")
    train_subset: int = setting(0, "train on only the first N remaining examples (smoke runs); 0 = all")
    normalize: str = setting("standardize", "'standardize' (dataset mean/std), 'scale' ([0,1]) or 'none'")
    prepare: str = setting("none", "none | deskew | binarize | deskew,binarize: classical preparations applied to "
                           "every image (training, evaluation, prediction), for any model")
    labels_per_class: int = setting(0, "train on N labelled images of each class (stratified, drawn with the run's "
                                    "seed, after the validation holdout); 0 = all")
    imbalance: str = setting("", "make the training examples imbalanced (after the validation holdout): exp:RHO (class c "
                             "keeps n_max * RHO^(-c/(C-1))) or step:RHO (the last half of the classes keep n_max / RHO); "
                             "'' = as they are (docs/variants.md)")
    label_noise: str = setting("", "flip training labels: sym:P (to another class, uniformly, with probability P), pair:P "
                               "(c -> c+1), trace:T (cleanlab's generate_noise_matrix_from_trace) or matrix:FILE (JSON "
                               "rows: true class x given label); '' = none. The test split is never altered")
    variant_seed: int | None = setting(None, "seed of the variant's draws (imbalance, label_noise, labels_per_class); "
                                       "None = the run's seed")
    variant_validation: str = setting("balanced", "the validation examples of a variant: balanced (held out before "
                                      "it: each class's share, true labels) | as-train (the same imbalance and label "
                                      "noise as the training examples)")

    # --- transfer learning (training/transfer.py) ---
    init_from: str = setting("", "start from a run directory or checkpoint's weights, matched by name ('' = "
                             "random initialisation)")
    head: str = setting("auto", "with init_from: new (a fresh classifier head) | keep (the source's) | auto (keep "
                        "when the source has the same classes, else new)")
    freeze: str = setting("none", "none | features (all but the classifier head) | comma-separated module prefixes; "
                          "frozen parameters leave the optimizer and their BatchNorm statistics stay fixed")
    lr_backbone: float | None = setting(None, "learning rate of the feature extractor (None = lr), e.g. lower "
                                        "for fine-tuning")

    # --- optimisation ---
    epochs: int = setting(10, "passes over the training examples")
    batch_size: int = setting(128, "examples per step, summed over all processes (global batch)")
    optimizer: str = setting("adam", "sgd | adam | adamw | adadelta, or your own: file.py:Name or "
                             "package.module:Name (a torch.optim.Optimizer class or factory)")
    optimizer_args: dict = setting(dict(), "your own optimizer's keyword arguments beyond lr, e.g. {betas = [0.9, 0.99]}")
    loss: str = setting("cross_entropy", "cross_entropy | class_weighted (weights N / (C n_c)) | logit_adjusted "
                        "(Menon et al. 2021) | gce (generalized cross-entropy, Zhang & Sabuncu 2018), or your own: "
                        "file.py:name, a function of (logits, labels) returning a scalar")
    lr: float = setting(1e-3, "learning rate (peak rate for onecycle)")
    momentum: float = setting(0.9, "SGD momentum; Adam beta1")
    nesterov: bool = setting(False, "SGD: Nesterov momentum")
    weight_decay: float = setting(0.0, "L2 (sgd/adam/adadelta) or decoupled (adamw) weight decay")
    schedule: str = setting("none", "none | step | exponential | cosine | onecycle")
    step_size: int = setting(1, "step schedule: epochs between decays")
    gamma: float = setting(0.7, "step/exponential schedules: factor per step_size epochs / per epoch")
    warmup: float = setting(0.25, "onecycle: fraction of steps spent rising to the peak rate")
    label_smoothing: float = setting(0.0, "cross-entropy label smoothing, 0..1")
    grad_clip: float = setting(0.0, "clip the gradient's global norm to this; 0 = off")
    ema: float = setting(0.0, "decay of an exponential moving average of the weights per step (0 = off; "
                         "An et al. 2020: 0.999)")
    early_stopping: int = setting(0, "stop after this many epochs without a better validation accuracy; 0 = off")

    # --- messy data: remedies for imbalance and label noise (docs/variants.md) ---
    sampling: str = setting("uniform", "uniform (each example once per epoch) | balanced (each class equally often: "
                            "examples drawn with replacement, weight 1 / their class's count)")
    logit_tau: float = setting(1.0, "loss=logit_adjusted: tau of the adjustment logits + tau * log(class prior)")
    gce_q: float = setting(0.7, "loss=gce: q of the loss (1 - p_y^q) / q: near 0 cross-entropy, 1 the mean absolute error")
    clean_labels: str = setting("none", "none | cleanlab: train only on the training examples the label audit keeps "
                                "(out-of-fold scores, cleanlab's confident learning)")
    clean_recipe: str = setting("", "clean_labels: the recipe of the out-of-fold models ('' = the run's own settings)")
    clean_epochs: int = setting(3, "clean_labels: epochs of each out-of-fold model (0 = as many as its settings say); "
                                "a few, so it learns the classes before it memorises the flipped labels")
    clean_folds: int = setting(4, "clean_labels: folds of the out-of-fold scores")

    # --- augmentation (on the device, per batch) ---
    augment: str = setting("none", "preset: none | seed (10 deg, 10%, 10%) | an2020 (20 deg, 20%) | elastic | robust "
                           "(all of the below: docs/shift.md)")
    rotate: float | None = setting(None, "max rotation, degrees (None = the preset's)")
    translate: float | None = setting(None, "max shift, fraction of the image size (None = the preset's)")
    zoom: float | None = setting(None, "max zoom in/out, fraction (None = the preset's)")
    elastic_alpha: float | None = setting(None, "elastic distortion strength, pixels (None = the preset's)")
    elastic_sigma: float | None = setting(None, "elastic field smoothness, pixels (None = the preset's)")
    shear: float | None = setting(None, "max shear along x, radians (None = the preset's)")
    stroke: float | None = setting(None, "max stroke growth or shrinkage, pixels (None = the preset's)")
    blur: float | None = setting(None, "max Gaussian blur, pixels (None = the preset's)")
    contrast: float | None = setting(None, "max background lift, ink range lost and illumination, 0..1 (None = the "
                                     "preset's)")
    occlude: float | None = setting(None, "share of images with a rectangle painted over (None = the preset's)")
    noise: float | None = setting(None, "max noise: standard deviation, or share of pixels salted (None = the "
                                  "preset's)")
    augment_share: float | None = setting(None, "share of images each of stroke, blur, contrast and noise touches "
                                          "(None = the preset's)")
    synthetic: str = setting("none", "digits added to the training images (never to validation), e.g. "
                             "printed:5000,drawn:5000: printed in the training fonts, drawn with the training seed "
                             "(docs/shift.md); none = MNIST alone")

    # --- adversarial training (training/adversarial.py) ---
    adversarial: str = setting("none", "none | fgsm-rs (Wong et al. 2020: FGSM from a random start) | pgd (Madry "
                               "et al. 2018): train on L-inf adversarial batches")
    adv_eps: float = setting(0.3, "adversarial training: L-inf radius in pixel units of the [0,1] image")
    adv_steps: int = setting(10, "pgd adversarial training: steps per batch")
    adv_step_size: float = setting(0.0, "0 = the method's default (fgsm-rs: 1.25 eps; pgd: 2.5 eps / steps)")
    adv_eval: int = setting(1000, "adversarial runs: test images attacked at the end (PGD-40 at adv_eps, seed 0); "
                            "0 = none")

    # --- engine ---
    seed: int = setting(0, "seeds weights, data order, augmentation and dropout")
    device: str = setting("auto", "auto (cuda if available, else cpu) | cpu | cuda | cuda:N")
    precision: str = setting("auto", "auto (bf16 autocast where the hardware computes bf16 natively: AVX-512 BF16, "
                              "AMX, Ampere+ GPUs; fp32 elsewhere) | fp32 | bf16")
    channels_last: bool = setting(False, "NHWC memory layout for convolutions (GPUs; CPU max-pooling too)")
    compile: bool = setting(False, "torch.compile the model (GPU; costs start-up time)")
    cuda_graphs: bool = setting(False, "capture each training step (augmentation, forward, backward, fused "
                                "SGD/Adam/AdamW, EMA) as one CUDA graph (one CUDA process)")
    deterministic: bool = setting(False, "GPU: cuDNN's deterministic algorithms and no autotuning, so a rerun or a "
                                  "resumed run gives bit-identical weights (slower); CPU runs are deterministic anyway")
    eval_batch_size: int = setting(BATCH_SIZE, "examples per evaluation batch (validation, test)")
    threads: int = setting(0, "torch CPU threads; 0 = torch's default")
    evaluate_test: bool = setting(True, "evaluate the test set once at the end; false leaves it unread (what "
                                  "`mnistlab tune` does for every trial)")

    # --- output ---
    out: str = setting("runs", "parent directory of run directories")
    name: str = setting("", "run directory name ('' = <recipe or model>-<dataset>-s<seed>)")
    checkpoint_every: int = setting(1, "save the last checkpoint every N epochs (and always at the end)")
    progress: bool = setting(True, "a progress bar per epoch on a terminal (one line per epoch otherwise)")
    tensorboard: bool = setting(False, "also write TensorBoard scalars (needs the tensorboard package)")
    save_outputs: bool = setting(False, "also save the kept weights' class probabilities on validation and test "
                                 "(outputs.safetensors): ensembles built and chosen from them without the models")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in fields(TrainConfig)}
# Fields that do not change the numbers a run produces: a resumed run may differ in these.
RUN_ONLY_FIELDS = {"progress", "tensorboard", "out", "name", "threads", "checkpoint_every", "data_dir", "save_outputs",
                   "evaluate_test"}


def field_type(name: str):
    """The declared type of config field `name` (e.g. `float | None`)."""
    return _field_types()[name]


@functools.cache
def _field_types() -> dict:  # evaluating every annotation again cost each coerced key ~1 ms
    return typing.get_type_hints(TrainConfig)


def coerce(name: str, value, *, source: str):
    """`value` converted to field `name`'s type; strings (from --set) are parsed; errors name the key."""
    if name not in FIELDS:
        raise MnistlabError(f"{source}: unknown config key {name!r}",
                            hint=did_you_mean(name, FIELDS) + "`mnistlab train --help` lists the keys")
    typ = field_type(name)
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
                try:  # JSON ({"hidden": [256]}) or a TOML inline table ({hidden = [256]})
                    value = json.loads(text)
                except json.JSONDecodeError:
                    value = tomllib.loads(f"v = {text}")["v"]
            else:
                value = base(float(text)) if base is int and "." not in text and "e" in text.lower() else base(text)
        except (ValueError, tomllib.TOMLDecodeError, json.JSONDecodeError, RecursionError):
            raise MnistlabError(f"{source}: {name}={value!r} is not a valid {base.__name__}",
                                hint=SEEDS_HINT if name == "seed" else None) from None
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if base is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, base) or (base is not bool and isinstance(value, bool)):
        raise MnistlabError(f"{source}: {name}={value!r} is a {type(value).__name__}, expected {base.__name__}",
                            hint=SEEDS_HINT if name == "seed" else None)
    return value


SEEDS_HINT = "for one run per seed, pass seeds=[0, 1, 2] (on the command line --seeds 0-2); seed is one run's seed"


def list_recipes() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("mnistlab.recipes").iterdir() if p.name.endswith(".toml"))


def recipe_catalog() -> list[dict]:
    """Every packaged recipe: name, model, epochs, and the first line of what it says about itself."""
    rows = []
    for name in list_recipes():
        first = next((line[1:].strip() for line in recipe_path(name).read_text().splitlines() if line.startswith("#")), "")
        r = read_recipe(name)
        rows.append({"recipe": name, "model": r.get("model", ""), "epochs": r.get("epochs", ""), "about": first})
    return rows


def recipe_path(name: str):
    """A packaged recipe by name, or a TOML file by path."""
    if name.endswith(".toml") or "/" in name:
        path = Path(name)
        if not path.is_file():
            raise MnistlabError(f"recipe file {name} does not exist")
        return path
    candidate = resources.files("mnistlab.recipes") / f"{name}.toml"
    if not candidate.is_file():
        raise MnistlabError(f"unknown recipe {name!r}: expected one of {', '.join(list_recipes())} or a .toml file",
                            hint=did_you_mean(name, list_recipes()) + "`mnistlab recipes` lists them")
    return candidate


def read_recipe(name: str) -> dict:
    """A recipe's values, read as every TOML is (size, encoding, depth: mnistlab.schema)."""
    values, _, _ = schema.named_toml(name, "mnistlab.recipes", "recipe")
    values.setdefault("recipe", Path(str(name)).stem if str(name).endswith(".toml") else name)
    return values


def resolve(recipe: str | None = None, overrides: dict | None = None, *, source: str = "override") -> TrainConfig:
    """Defaults, then the recipe, then the overrides; checked field by field, then as a whole."""
    cfg = TrainConfig()
    layers = []
    if recipe:
        layers.append((f"recipe {recipe}", read_recipe(recipe)))
    if overrides:
        if not isinstance(overrides, dict):
            raise MnistlabError(f"{source}: expected an object of config keys and values")
        layers.append((source, overrides))
    for where, values in layers:
        model = cfg.model
        for key, value in values.items():
            setattr(cfg, key, coerce(key, value, source=where))
        if cfg.model != model and "model_args" not in values:  # a recipe's model options are its model's:
            cfg.model_args = {}  # `--recipe seed-cnn --model mine.py:Net` trains Net with the recipe's settings
    validate(cfg)
    return cfg


# Ranges of single fields: key -> (accepts the value, what was expected)
RANGES = {
    "epochs": (lambda v: v >= 1, "at least 1"),
    "batch_size": (lambda v: v >= 1, "at least 1"),
    "eval_batch_size": (lambda v: v >= 1, "at least 1"),
    "lr": (lambda v: v > 0, "a positive number"),
    "label_smoothing": (lambda v: 0 <= v < 1, "0 <= value < 1"),
    "ema": (lambda v: 0 <= v < 1, "0 (off) or a decay below 1, such as 0.999"),
    "warmup": (lambda v: 0 < v < 1, "a fraction between 0 and 1"),
    "validation": (lambda v: v >= 0, "a count, a fraction below 1, or 0 for none"),
    "checkpoint_every": (lambda v: v >= 1, "at least 1"),
    "train_subset": (lambda v: v >= 0, "0 (all) or a count"),
    "labels_per_class": (lambda v: v >= 0, "0 (all) or a count of labelled images per class"),
    "gce_q": (lambda v: 0 < v <= 1, "more than 0, up to 1"),
    "logit_tau": (lambda v: 0 <= v <= 10, "0 to 10"),
    "clean_folds": (lambda v: 2 <= v <= 20, "2 to 20"),
    "clean_epochs": (lambda v: v >= 0, "0 (its settings' own) or a number of epochs"),
    "lr_backbone": (lambda v: v is None or v > 0, "a positive learning rate (or None: lr)"),
    "head": (lambda v: v in ("auto", "new", "keep"), "auto | new | keep"),
    "threads": (lambda v: v >= 0, "0 (torch's default) or a thread count"),
    "weight_decay": (lambda v: v >= 0, "0 or more"),
    "grad_clip": (lambda v: v >= 0, "0 (off) or a norm"),
    "rotate": (lambda v: v is None or 0 <= v <= 180, "0 to 180 degrees"),
    "translate": (lambda v: v is None or 0 <= v < 1, "a fraction of the image size below 1"),
    "zoom": (lambda v: v is None or 0 <= v < 1, "a fraction below 1"),
    "elastic_alpha": (lambda v: v is None or 0 <= v <= 1000, "0 to 1000 pixels"),
    "elastic_sigma": (lambda v: v is None or 0 < v <= 100, "more than 0, up to 100 pixels"),
    "shear": (lambda v: v is None or 0 <= v <= 1.2, "0 to 1.2 radians"),
    "stroke": (lambda v: v is None or 0 <= v <= 2, "0 to 2 pixels"),
    "blur": (lambda v: v is None or 0 <= v <= 4, "0 to 4 pixels"),
    "contrast": (lambda v: v is None or 0 <= v <= 0.95, "0 to 0.95"),
    "occlude": (lambda v: v is None or 0 <= v <= 1, "a share, 0 to 1"),
    "noise": (lambda v: v is None or 0 <= v <= 1, "0 to 1"),
    "augment_share": (lambda v: v is None or 0 <= v <= 1, "a share, 0 to 1"),
    "adv_eps": (lambda v: 0 <= v <= 1, "0 to 1 (pixel units of the [0,1] image)"),
    "adv_steps": (lambda v: 1 <= v <= 1000, "1 to 1000"),
    "adv_step_size": (lambda v: 0 <= v <= 1, "0 (the default) up to 1"),
    "adv_eval": (lambda v: v >= 0, "0 (none) or a number of test images"),
}


GRAPH_OPTIMIZERS = ("sgd", "adam", "adamw")  # fused, and capturable: what a CUDA graph can hold


def validate(cfg: TrainConfig) -> None:
    """Checks of values, ranges and combinations; each error names the key and what was expected."""
    def bad(key, expected):
        raise MnistlabError(f"{key}={getattr(cfg, key)!r}: expected {expected}")

    for key, value in cfg.as_dict().items():
        if isinstance(value, float) and not math.isfinite(value):
            bad(key, "a finite number")
    if cfg.name:  # a run directory's name: one path component under `out`, wherever it was set
        check_name(cfg.name, "name")
    if cfg.recipe and len(cfg.recipe) > 1000:
        bad("recipe", "a recipe name or path of at most 1000 characters")
    for key, (accepts, expected) in RANGES.items():
        if not accepts(getattr(cfg, key)):
            bad(key, expected)
    if cfg.optimizer not in OPTIMIZERS and not user_code.is_reference(cfg.optimizer):
        bad("optimizer", " | ".join(OPTIMIZERS) + ", or your own as path/to/file.py:Name")
    if cfg.loss not in LOSSES and not user_code.is_reference(cfg.loss):
        raise MnistlabError(f"loss={cfg.loss!r}: expected {' | '.join(LOSSES)}, or your own as path/to/file.py:name",
                            hint=did_you_mean(cfg.loss, LOSSES) or None)
    if cfg.loss == "gce" and cfg.label_smoothing:
        raise MnistlabError(f"loss=gce with label_smoothing={cfg.label_smoothing}: smoothing applies to the "
                            "cross-entropy losses", hint="set label_smoothing=0 with the generalized cross-entropy")
    if cfg.optimizer_args and cfg.optimizer in OPTIMIZERS:
        bad("optimizer_args", "nothing for a built-in optimizer (its settings are lr, momentum, weight_decay...)")
    choices = {"schedule": SCHEDULES, "normalize": ("standardize", "scale", "none"),
               "precision": PRECISIONS, "augment": PRESETS, "adversarial": ("none", "fgsm-rs", "pgd"),
               "sampling": ("uniform", "balanced"), "clean_labels": ("none", "cleanlab"),
               "variant_validation": VARIANT_VALIDATION}
    for key, allowed in choices.items():
        if getattr(cfg, key) not in allowed:
            bad(key, " | ".join(allowed))
    if not is_known(cfg.model) and cfg.model not in CLASSICAL:
        raise MnistlabError(f"unknown model {cfg.model!r}: expected one of {', '.join([*MODELS, *CLASSICAL])}, or "
                            "your own as path/to/file.py:Name or package.module:Name",
                            hint=did_you_mean(cfg.model, [*MODELS, *CLASSICAL]) + "`mnistlab models` lists them")
    check_options(cfg.model, cfg.model_args, "")
    parse_prepare(cfg.prepare)
    parse_synthetic(cfg.synthetic)
    if cfg.model in CLASSICAL:
        validate_classical(cfg)
    if cfg.labels_per_class and cfg.train_subset:
        raise MnistlabError("labels_per_class and train_subset both choose training examples: set one of them")
    validate_variant(cfg)
    if cfg.head != "auto" and not cfg.init_from:  # (freezing a random model is allowed: a probe's baseline)
        raise MnistlabError(f"head={cfg.head!r} needs init_from (a run or checkpoint to start from)")
    if cfg.early_stopping and not cfg.validation:
        raise MnistlabError("early_stopping needs a validation split (validation > 0)")
    if cfg.cuda_graphs:
        unsupported = [k for k, off in (("optimizer", cfg.optimizer not in GRAPH_OPTIMIZERS),
                                        ("compile", cfg.compile), ("adversarial", cfg.adversarial != "none")) if off]
        if unsupported:
            raise MnistlabError(f"cuda_graphs=true cannot capture: {', '.join(unsupported)} "
                                f"(optimizer={cfg.optimizer!r}, compile={cfg.compile}, adversarial={cfg.adversarial!r})",
                                hint=f"the graph path captures augmentation, forward, backward, a fused "
                                f"{'/'.join(GRAPH_OPTIMIZERS)} step and the EMA; keep the eager engine for the rest")


def variant_spec(cfg: TrainConfig) -> VariantSpec:
    """The run's dataset variant: its imbalance, label noise and labels per class, with its seed."""
    seed = cfg.seed if cfg.variant_seed is None else cfg.variant_seed
    return VariantSpec(cfg.imbalance, cfg.label_noise, cfg.labels_per_class, seed)


def validate_variant(cfg: TrainConfig) -> None:
    """The variant's spec parses; its validation mode has a validation split; the dataset is a name."""
    base, named = split_name(cfg.dataset)
    if named is not None:  # the variant belongs in the settings, so the run can draw it after its holdout
        flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in (("imbalance", named.imbalance),
                         ("label-noise", named.label_noise), ("labels-per-class", named.labels_per_class),
                         ("variant-seed", named.seed)) if v)
        raise MnistlabError(f"dataset={cfg.dataset!r}: a run takes its variant as settings",
                            hint=f"--dataset {base} {flags} (Python: dataset={base!r}, imbalance=..., label_noise=...)")
    variant_spec(cfg).check()
    if cfg.variant_validation == "as-train" and not cfg.validation:
        raise MnistlabError("variant_validation=as-train needs a validation split (validation > 0)")
    if cfg.clean_labels != "none" and cfg.clean_recipe and not cfg.clean_recipe.endswith(".toml"):
        recipe_path(cfg.clean_recipe)  # an unknown recipe named now, not after the run has started


def augmentation(cfg: TrainConfig):
    """The run's `Augment`: the preset, with any explicitly set field taking precedence."""
    base = preset(cfg.augment)
    explicit = {k: getattr(cfg, k) for k in ("rotate", "translate", "zoom", "elastic_alpha", "elastic_sigma", "shear",
                                             "stroke", "blur", "contrast", "occlude", "noise") if getattr(cfg, k) is not None}
    if cfg.augment_share is not None:
        explicit["share"] = cfg.augment_share
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
    """Keys whose values differ between two config dicts (other than run-only fields). A key that a
    run from an older mnistlab lacks counts as its default."""
    def value(d, k):
        return d[k] if k in d else (FIELDS[k].default if k in FIELDS else None)

    return sorted(k for k in set(a) | set(b) if k not in ignore and value(a, k) != value(b, k))


def read_run_config(run) -> TrainConfig:
    """A run directory's TrainConfig (its config.json), checked like any other config."""
    values = run.read_json(RunDir.CONFIG)
    if values is None:
        raise MnistlabError(f"{run.path} is not a run directory (no {RunDir.CONFIG})",
                            hint="pass the directory `mnistlab train` printed, e.g. runs/seed-cnn-mnist-s0")
    return resolve(None, values, source=str(run.config))
