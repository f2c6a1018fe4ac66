"""Search spaces: a TOML file of ranges and choices over any `TrainConfig` field, checked up front.

    # space.toml
    [fixed]                       # set on every trial, on top of the recipe
    epochs = 1

    [params.lr]                   # a float range, sampled on a log scale
    low = 0.03
    high = 0.5
    log = true

    [params.batch_size]           # a list of choices
    choices = [64, 96, 128]

    [params."model_args.width"]   # a model option (`mnistlab models` lists them)
    low = 8
    high = 32
    step = 8

    [params.nesterov]             # a conditional: searched only when the optimizer is SGD
    choices = [true, false]
    when = { optimizer = "sgd" }

Every problem is found before the first trial and named by its field: an unknown field, a value of
the wrong type, an empty or one-point range, a log range through zero, a bound that the field itself
would refuse (`lr` low = 0), or a condition on a field defined later.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import resources

from ... import schema
from ...errors import MnistlabError
from ...models import MODELS
from ...names import did_you_mean
from ...training import config

# Fields a search may not set: where the run goes and how it reports are the tuner's business.
NOT_SEARCHABLE = {"recipe", "out", "name", "progress", "tensorboard", "evaluate_test", "checkpoint_every"}
PARAM_KEYS = {"low", "high", "log", "step", "choices", "when"}


@dataclass
class Param:
    """One searched setting: a numeric range or a list of choices, maybe conditional."""

    name: str  # a TrainConfig field, or "model_args.OPTION"
    kind: str  # "float" | "int" | "choice"
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: list = field(default_factory=list)
    when: dict = field(default_factory=dict)  # field -> allowed values; searched only when all hold

    def describe(self) -> str:
        if self.kind == "choice":
            text = "{" + ", ".join(map(repr, self.choices)) + "}"
        else:
            text = f"[{self.low:g}, {self.high:g}]" + (" log" if self.log else "") + \
                   (f" step {self.step:g}" if self.step else "")
        if self.when:
            text += " when " + ", ".join(f"{k} in {v!r}" for k, v in self.when.items())
        return f"{self.name} {text}"


@dataclass
class Space:
    """A checked search space: the fixed settings and the searched ones, in file order."""

    source: str
    fixed: dict
    params: list[Param]

    def as_dict(self) -> dict:
        return {"source": self.source, "fixed": self.fixed,
                "params": [{k: v for k, v in vars(p).items() if v not in (None, [], {}, False)} for p in self.params]}


def list_spaces() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("mnistlab.studies.tuning.spaces").iterdir() if p.name.endswith(".toml"))


def read_space(name: str, recipe: str | None, extra_fixed: dict | None = None) -> Space:
    """A packaged space by name (`fast`) or a TOML file by path, checked against the recipe's config;
    `extra_fixed` (the command's --set) joins its [fixed] settings."""
    values, source, _ = schema.named_toml(name, "mnistlab.studies.tuning.spaces", "search space")
    if extra_fixed:
        if not isinstance(values.get("fixed", {}), dict):
            raise MnistlabError(f"search space {source}: [fixed] must be a table")
        values["fixed"] = {**values.get("fixed", {}), **extra_fixed}
    return parse_space(values, recipe, source=source)


def parse_space(values: dict, recipe: str | None, *, source: str = "search space") -> Space:
    """Check a space (the parsed TOML) against the recipe: every error names the field."""
    unknown = set(values) - {"fixed", "params"}
    if unknown:
        raise MnistlabError(f"{source}: unknown section(s) {', '.join(sorted(unknown))}",
                            hint="a space has [fixed] settings and [params.FIELD] tables")
    fixed = values.get("fixed", {})
    params = values.get("params", {})
    if not isinstance(fixed, dict) or not isinstance(params, dict):
        raise MnistlabError(f"{source}: [fixed] and [params] must be tables")
    if not params:
        raise MnistlabError(f"{source}: no [params.FIELD] tables: nothing to search")
    for key in fixed:
        if key in NOT_SEARCHABLE - {"checkpoint_every"}:
            raise MnistlabError(f"{source}: [fixed] {key} is set by the tuner, not the space")
    fixed = {k: config.coerce(k, v, source=f"{source} [fixed]") for k, v in fixed.items()}
    try:
        base = config.resolve(recipe, {k: v for k, v in fixed.items()}, source=f"{source} [fixed]")
    except MnistlabError as exc:
        raise MnistlabError(exc.message, hint=exc.hint) from None
    current = base.as_dict()  # the settings a condition can refer to, growing as params are read
    out = []
    for name, spec in params.items():
        out.append(_param(name, spec, recipe, fixed, current, source))
        current.setdefault(name, None)
    return Space(source, dict(fixed), out)


def _param(name: str, spec, recipe, fixed: dict, current: dict, source: str) -> Param:
    where = f"{source}: [params.{name}]" if "." not in name else f'{source}: [params."{name}"]'
    if not isinstance(spec, dict):
        raise MnistlabError(f"{where}: expected a table with low/high or choices, got {spec!r}")
    extra = set(spec) - PARAM_KEYS
    if extra:
        raise MnistlabError(f"{where}: unknown key(s) {', '.join(sorted(extra))}; expected {', '.join(sorted(PARAM_KEYS))}")
    base_type = _field_type(name, current, where)
    when = _conditions(spec.get("when", {}), current, where)
    has_range, has_choices = "low" in spec or "high" in spec, "choices" in spec
    if has_range == has_choices:
        raise MnistlabError(f"{where}: expected either low and high (a range) or choices (a list)")
    if has_choices:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise MnistlabError(f"{where}: choices must be a non-empty list, got {choices!r}")
        if len(set(map(repr, choices))) != len(choices):
            raise MnistlabError(f"{where}: choices {choices!r} repeat a value")
        for value in choices:
            if not isinstance(value, (str, int, float, bool)):
                raise MnistlabError(f"{where}: choice {value!r} is a {type(value).__name__}; expected strings, "
                                    "numbers or booleans")
            _check_value(name, value, base_type, recipe, fixed, where)
        return Param(name, "choice", choices=list(choices), when=when)
    low, high = spec.get("low"), spec.get("high")
    if low is None or high is None:
        raise MnistlabError(f"{where}: a range needs both low and high")
    if base_type not in (int, float):
        raise MnistlabError(f"{where}: {name} is a {base_type.__name__ if base_type else 'setting'} field; a range "
                            "(low/high) needs a number field: use choices")
    for bound in (low, high, spec.get("step")):
        if bound is not None and (isinstance(bound, bool) or not isinstance(bound, (int, float))):
            raise MnistlabError(f"{where}: {bound!r} is not a number")
        if bound is not None and not math.isfinite(bound):
            raise MnistlabError(f"{where}: {bound!r} is not a finite number")
    kind = "int" if base_type is int else "float"
    if kind == "int" and not all(isinstance(b, int) for b in (low, high, spec.get("step", 1))):
        raise MnistlabError(f"{where}: {name} is an integer field; low, high and step must be integers "
                            f"(got low={low!r}, high={high!r})")
    if low >= high:
        raise MnistlabError(f"{where}: empty range low={low!r} high={high!r}: expected low < high",
                            hint="to pin one value, put it in [fixed]")
    log, step = spec.get("log", False), spec.get("step")
    if not isinstance(log, bool):
        raise MnistlabError(f"{where}: log must be true or false, got {log!r}")
    if log and low <= 0:
        raise MnistlabError(f"{where}: a log range needs low > 0, got low={low!r}")
    if step is not None and (step <= 0 or step > high - low):
        raise MnistlabError(f"{where}: step={step!r} must be positive and at most high - low ({high - low!r})")
    if log and step is not None:
        raise MnistlabError(f"{where}: a range is either log-scaled or stepped, not both")
    for bound in (low, high):
        _check_value(name, bound, base_type, recipe, fixed, where)
    return Param(name, kind, low=low, high=high, log=log, step=step, when=when)


def _field_type(name: str, current: dict, where: str):
    """The Python type a field takes: TrainConfig's declaration, or a model option's default's type."""
    if name.startswith("model_args."):

        option = name.split(".", 1)[1]
        model = current.get("model")
        if model not in MODELS:
            raise MnistlabError(f"{where}: model_args options need a fixed model (the recipe's or [fixed]'s)")
        options = MODELS[model].options()
        if option not in options:
            raise MnistlabError(f"{where}: model {model!r} has no option {option!r}",
                                hint=did_you_mean(option, options) + f"its options: {', '.join(options) or 'none'}")
        default = options[option]
        return type(default) if isinstance(default, (bool, int, float, str)) else None
    if name in NOT_SEARCHABLE:
        raise MnistlabError(f"{where}: {name} is set by the tuner, not searched")
    if name not in config.FIELDS:
        raise MnistlabError(f"{where}: unknown field {name!r}", hint=did_you_mean(name, config.FIELDS)
                            + "`mnistlab train --help` lists the fields; model options are model_args.NAME")
    import typing

    typ = config.field_type(name)
    args = [t for t in typing.get_args(typ) if t is not type(None)]
    return args[0] if args else typ


def _check_value(name: str, value, base_type, recipe, fixed: dict, where: str) -> None:
    """The value is of the field's type, and the field accepts it (its range check, resolved)."""
    if base_type is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if base_type is not None and (not isinstance(value, base_type) or
                                  (base_type is not bool and isinstance(value, bool))):
        raise MnistlabError(f"{where}: {value!r} is a {type(value).__name__}; {name} expects a {base_type.__name__}")
    if name.startswith("model_args."):
        return  # the model checks its own options when it is built; the first trial says so
    try:
        config.resolve(recipe, {**fixed, name: value}, source=where)
    except MnistlabError as exc:
        raise MnistlabError(f"{where}: {exc.message}", hint=exc.hint) from None


def _conditions(when, current: dict, where: str) -> dict:
    if not isinstance(when, dict):
        raise MnistlabError(f"{where}: when must be a table of field = value(s), got {when!r}")
    out = {}
    for key, allowed in when.items():
        if key not in current:
            raise MnistlabError(f"{where}: the condition names {key!r}, which is neither a config field nor a "
                                "parameter defined above it")
        out[key] = allowed if isinstance(allowed, list) else [allowed]
    return out


def suggest(space: Space, trial, base: dict) -> dict:
    """The trial's overrides: each parameter sampled from `trial` (optuna) when its conditions hold on
    the config so far (the recipe and [fixed], then the parameters sampled before it)."""
    current = dict(base)
    overrides: dict = {}
    model_args = dict(current.get("model_args") or {})
    for p in space.params:
        if any(current.get(k) not in allowed for k, allowed in p.when.items()):
            continue
        if p.kind == "choice":
            value = trial.suggest_categorical(p.name, p.choices)
        elif p.kind == "int":
            value = trial.suggest_int(p.name, p.low, p.high, step=p.step or 1, log=p.log)
        else:
            value = trial.suggest_float(p.name, p.low, p.high, step=p.step, log=p.log)
        if p.name.startswith("model_args."):
            model_args[p.name.split(".", 1)[1]] = value
            overrides["model_args"] = dict(model_args)
        else:
            overrides[p.name] = value
        current[p.name] = value
    return overrides
