"""Optimizers and learning-rate schedules, each a small registry like the model zoo's: adding one
touches one place, and the config's checks and the CLI's help read the names from here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

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
    return OPTIMIZERS[cfg.optimizer](cfg, params)


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
