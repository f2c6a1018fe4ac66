"""Optimizers and learning-rate schedules, each a small registry like the model zoo's: adding one
touches one place, and the config's checks and the CLI's help read the names from here.

`optimizer` may also name one's own (`file.py:Lion`, `package.module:Name`, or an object adopted from
Python): a `torch.optim.Optimizer` subclass or a factory of one, called with the parameters, `lr`
(and `weight_decay` where it takes one) plus `optimizer_args`."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .. import user_code
from ..errors import MnistlabError

OPTIMIZERS: dict[str, Callable] = {}  # name -> build(cfg, params) -> torch.optim.Optimizer


@dataclass(frozen=True)
class Schedule:
    build: Callable  # (cfg, optimizer, total steps) -> an LR scheduler, or None
    per_step: bool  # stepped after every batch (else after every epoch)


SCHEDULES: dict[str, Schedule] = {}


def register_optimizer(name: str):
    def wrap(build):
        OPTIMIZERS[name] = build
        return build

    return wrap


def register_schedule(name: str, per_step: bool):
    def wrap(build):
        SCHEDULES[name] = Schedule(build, per_step)
        return build

    return wrap


def make_optimizer(cfg, params) -> torch.optim.Optimizer:
    if cfg.optimizer in OPTIMIZERS:
        return OPTIMIZERS[cfg.optimizer](cfg, params)
    build, _ = user_code.resolve(cfg.optimizer, "optimizer")
    return user_optimizer(build, cfg, params)


def user_optimizer(build, cfg, params) -> torch.optim.Optimizer:
    """One's own optimizer class or factory, called as torch's are; a clear error if it is not one."""
    ref = cfg.optimizer
    if isinstance(build, type) and not issubclass(build, torch.optim.Optimizer):
        raise MnistlabError(f"optimizer {ref!r} is the class {build.__name__}, not a torch.optim.Optimizer subclass",
                            hint="subclass torch.optim.Optimizer, or pass a function that returns one")
    if isinstance(build, torch.optim.Optimizer) or not callable(build):
        raise MnistlabError(f"optimizer {ref!r} is a {type(build).__name__} object: expected a "
                            "torch.optim.Optimizer class or a function that makes one from the parameters",
                            hint="pass the class (MyOptimizer), not an instance (MyOptimizer(params))")
    try:
        accepts = inspect.signature(build).parameters
    except (TypeError, ValueError):
        accepts = {}
    kwargs = dict(cfg.optimizer_args)
    kwargs.setdefault("lr", cfg.lr)
    if cfg.weight_decay and "weight_decay" in accepts:
        kwargs.setdefault("weight_decay", cfg.weight_decay)
    if not any(p.kind == p.VAR_KEYWORD for p in accepts.values()):
        unknown = sorted(k for k in kwargs if k not in accepts and k != "lr")
        if unknown:
            raise MnistlabError(f"optimizer {ref!r} has no argument {', '.join(unknown)}: it takes "
                                f"{', '.join(k for k in accepts if k != 'params') or 'none'}")
        if "lr" not in accepts:
            kwargs.pop("lr")
    try:
        opt = build(params, **kwargs)
    except (Exception, SystemExit) as exc:
        raise user_code.raised("optimizer", ref, "making it", exc) from None
    if not isinstance(opt, torch.optim.Optimizer):
        raise MnistlabError(f"optimizer {ref!r} made a {type(opt).__name__}, expected a torch.optim.Optimizer",
                            hint="subclass torch.optim.Optimizer: schedules, checkpoints and resume need its "
                            "param_groups and state_dict")
    return opt


def make_schedule(cfg, opt: torch.optim.Optimizer, steps_per_epoch: int):
    """(scheduler or None, whether it steps per batch)."""
    schedule = SCHEDULES[cfg.schedule]
    return schedule.build(cfg, opt, cfg.epochs * steps_per_epoch), schedule.per_step


def _fused(params) -> tuple[list, bool]:
    """(the parameters, whether PyTorch's fused update applies to them): one kernel per step for all
    tensors instead of a Python loop over them, on CPUs (torch >= 2.4) and GPUs alike. At batch 32
    the update is a large share of a step; the CUDA-graph path needs it to capture the update."""
    params = list(params)  # tensors, or parameter groups (dicts) when the backbone has its own rate
    flat = [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])]
    return params, all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in flat)


@register_optimizer("sgd")
def _sgd(cfg, params):
    params, fused = _fused(params)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                           weight_decay=cfg.weight_decay, fused=fused or None)


@register_optimizer("adam")
def _adam(cfg, params):
    params, fused = _fused(params)
    return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.momentum, 0.999), weight_decay=cfg.weight_decay,
                            fused=fused or None, capturable=bool(cfg.cuda_graphs))


@register_optimizer("adamw")
def _adamw(cfg, params):
    params, fused = _fused(params)
    return torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.momentum, 0.999), weight_decay=cfg.weight_decay,
                             fused=fused or None, capturable=bool(cfg.cuda_graphs))


@register_optimizer("adadelta")
def _adadelta(cfg, params):
    return torch.optim.Adadelta(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


@register_schedule("none", per_step=False)
def _constant(cfg, opt, total):
    return None


@register_schedule("step", per_step=False)
def _step(cfg, opt, total):
    return torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_size, gamma=cfg.gamma)


@register_schedule("exponential", per_step=False)
def _exponential(cfg, opt, total):
    return torch.optim.lr_scheduler.ExponentialLR(opt, gamma=cfg.gamma)


@register_schedule("cosine", per_step=True)
def _cosine(cfg, opt, total):
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)


@register_schedule("onecycle", per_step=True)
def _onecycle(cfg, opt, total):
    # A captured CUDA-graph step bakes momentum in, so that path keeps it constant.
    return torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[float(g["lr"]) for g in opt.param_groups], total_steps=total, pct_start=cfg.warmup,
        cycle_momentum=cfg.optimizer in ("sgd", "adam", "adamw") and not cfg.cuda_graphs)
