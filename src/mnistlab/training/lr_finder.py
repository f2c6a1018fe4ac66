"""The learning-rate finder: a short run whose rate grows exponentially, and the rates its loss suggests.

    mnistlab lr-find --recipe seed-cnn                  # three seeds; the plot; `train --lr` takes what it says
    mnistlab lr-find --model mynet.py:Net --optimizer sgd --batch-size 64

As fastai's `lr_find` and Lightning's `Tuner.lr_find` do (Smith 2015): from the model's initial
weights, take `steps` optimizer steps with the rate going from `start` to `end` geometrically, and
follow the loss smoothed by a bias-corrected exponential moving average; stop when the smoothed loss
passes `diverge` times its lowest, or the loss stops being finite. The weights and the optimizer's
state are put back after, and every run of the sweep is the engine's own step (the recipe's batch,
augmentation, precision, optimizer; no schedule, EMA or CUDA graph: the rate is the sweep's).

Rules, on the smoothed curve (each said, with the rate it gives):
- valley (fastai's default): the middle of the longest stretch over which the loss keeps falling;
- steepest: where the loss falls fastest against log(rate), after the first tenth of the sweep
  (early spikes fooled this rule in Lightning, #1767) and before the lowest point;
- minimum: the rate at the lowest smoothed loss, the largest that still trains.
The recommendation depends on the schedule the rate is for: a rate held for the whole run (no
schedule, step, exponential, cosine) is the steepest descent's (Smith 2015; fastai's `lr_steep`); the
peak of a one-cycle schedule, reached once and left at once, is the minimum's (Smith 2018, "A
disciplined approach...": the largest rate that still trains). It is the median over seeds (a rule's
answer moves with the seed and the range: the spread over seeds is reported). The failure modes the anchors' trackers show are handled:
too few points before divergence gives no suggestion and says why (Lightning #13844), a NaN loss ends
the sweep and is not a point of the curve (fastai #3477).
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
from pathlib import Path

import torch

from .. import atomic, names, rundir
from ..errors import MnistlabError
from ..models.classical import is_classical
from ..pictures import figure, save_figure
from . import config
from .engine import build, make_step
from .setup import epoch_seed, load_data, set_up

RULES = ("valley", "steepest", "minimum")
MIN_POINTS = 20  # finite points before divergence that a suggestion needs
SKIP_START = 0.1  # the first tenth of a sweep: too early for the steepest slope (noise, early spikes)
SMOOTHING = 0.98  # fastai's and Lightning's beta: about the last 50 steps


def smoothed(losses: list[float], beta: float = SMOOTHING) -> list[float]:
    """The bias-corrected exponential moving average of `losses` (the first value is the first loss)."""
    out, avg = [], 0.0
    for i, loss in enumerate(losses, 1):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta**i))
    return out


def valley(lrs: list[float], losses: list[float]) -> float | None:
    """The rate in the middle of the longest falling stretch of the curve (the longest run of points,
    in order, each below the one before it; not necessarily adjacent)."""
    n = len(losses)
    if n < 3:
        return None
    length, start = [1] * n, list(range(n))
    for i in range(n):
        for j in range(i):
            if losses[i] < losses[j] and length[j] + 1 > length[i]:
                length[i], start[i] = length[j] + 1, start[j]
    end = max(range(n), key=lambda i: (length[i], -i))
    if length[end] < 3:
        return None
    return lrs[start[end] + (end - start[end]) // 2]


def steepest(lrs: list[float], losses: list[float], skip_start: float = SKIP_START) -> float | None:
    """The rate where the loss falls fastest against log(rate), between the first tenth and the minimum."""
    lowest = min(range(len(losses)), key=losses.__getitem__)
    first = max(1, int(len(losses) * skip_start))
    if lowest - first < 2:
        return None
    slopes = [(losses[i + 1] - losses[i - 1]) / (math.log(lrs[i + 1]) - math.log(lrs[i - 1]))
              for i in range(first, lowest)]
    best = min(range(len(slopes)), key=slopes.__getitem__)
    return lrs[first + best] if slopes[best] < 0 else None


def minimum(lrs: list[float], losses: list[float]) -> float | None:
    lowest = min(range(len(losses)), key=losses.__getitem__)
    return lrs[lowest] if lowest > 0 else None  # lowest at the first point: the loss never fell


def recommended_rule(schedule: str) -> str:
    """The rule whose rate suits the schedule: the minimum for a one-cycle peak, else the steepest."""
    return "minimum" if schedule == "onecycle" else "steepest"


def suggestions(lrs: list[float], losses: list[float],
                rule: str = "steepest") -> tuple[dict[str, float | None], str | None]:
    """({rule: rate or None}, why `rule` has none) of one sweep's smoothed curve (finite points only)."""
    if len(losses) < MIN_POINTS:
        return dict.fromkeys(RULES), (f"only {len(losses)} point(s) before the loss diverged (at least {MIN_POINTS} "
                                      "are needed): start lower, or take more steps")
    found = {"valley": valley(lrs, losses), "steepest": steepest(lrs, losses), "minimum": minimum(lrs, losses)}
    why = None if found[rule] else "the loss never fell over the range: start lower"
    return found, why


@dataclasses.dataclass
class Sweep:
    """One seed's sweep: the rates, the raw and smoothed losses, and why it stopped."""

    seed: int
    lrs: list[float]
    losses: list[float]
    smooth: list[float]
    stopped: str  # "end of range" | "diverged at ..." | "non-finite loss at ..."
    seconds: float


def sweep(model, opt, step, batches, lrs: list[float], diverge: float) -> tuple[list[float], list[float], str]:
    """(rates reached, raw losses) of an exponential sweep run by `step` (the engine's) over `batches`,
    and why it stopped; the model's weights and the optimizer's state are put back after."""
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state = opt.state_dict()
    bases = [g["lr"] for g in opt.param_groups]  # several groups (lr_backbone): each keeps its ratio
    reached, losses, stopped, avg, best = [], [], "end of range", 0.0, math.inf
    try:
        for i, (lr, (idx, gen)) in enumerate(zip(lrs, batches)):
            for group, base in zip(opt.param_groups, bases):
                group["lr"] = lr * base / bases[0]
            loss = float(step(idx, gen)[0].detach())
            if not math.isfinite(loss):
                stopped = f"the loss became {loss} at lr {lr:.3g}"
                break
            reached.append(lr)
            losses.append(loss)
            avg = SMOOTHING * avg + (1 - SMOOTHING) * loss
            now = avg / (1 - SMOOTHING ** (i + 1))
            best = min(best, now)
            if i >= MIN_POINTS // 2 and now > diverge * best:
                stopped = f"diverged at lr {lr:.3g} (smoothed loss {now:.3g} > {diverge:g} x its lowest, {best:.3g})"
                break
    finally:
        model.load_state_dict(weights)
        opt.load_state_dict(state)
        for group, base in zip(opt.param_groups, bases):
            group["lr"] = base
    return reached, losses, stopped


def lr_find(cfg, *, seeds=(0, 1, 2), start: float = 1e-7, end: float = 10.0, steps: int = 100,
            diverge: float = 4.0, quiet: bool = False) -> dict:
    """Sweep the rate for each seed (see the module docstring); the record (rules, recommendation,
    spread, the command that trains with it), with lr-find.json and lr-find.png written in
    OUT/NAME (default NAME: lr-find-<recipe or model>-<dataset>; run again, they are replaced)."""
    if not 0 < start < end or not math.isfinite(end):
        raise MnistlabError(f"--start {start:g} --end {end:g}: expected 0 < start < end")
    if not MIN_POINTS <= steps <= 10_000:
        raise MnistlabError(f"--steps {steps}: expected {MIN_POINTS} to 10000 (fastai and Lightning take 100)")
    if diverge <= 1:
        raise MnistlabError(f"--diverge {diverge:g}: expected a factor above 1 (4: fastai's)")
    seeds = list(seeds)
    if not seeds:
        raise MnistlabError("--seeds: expected at least one seed")
    if is_classical(cfg.model):
        raise MnistlabError(f"{cfg.model} is fitted in one step: it has no learning rate to find")
    # the sweep's own rate: no schedule, EMA or CUDA graph; nothing written, the test set not read
    schedule = cfg.schedule
    cfg = dataclasses.replace(cfg, schedule="none", ema=0.0, cuda_graphs=False, compile=False, progress=False,
                              evaluate_test=False, early_stopping=0)
    config.validate(cfg)
    env = set_up(cfg, quiet=True)
    if env.world > 1:
        raise MnistlabError("lr-find runs in one process", hint="run it outside torchrun")
    data = load_data(cfg, env)
    lrs = [start * (end / start) ** (i / (steps - 1)) for i in range(steps)]
    runs = []
    for seed in seeds:
        t0 = time.perf_counter()
        seeded = dataclasses.replace(cfg, seed=seed)
        parts = build(seeded, data, env)
        step = make_step(seeded, data, parts, env)
        reached, losses, stopped = sweep(parts.model, parts.opt, step, _batches(seeded, data, parts, env, steps),
                                         lrs, diverge)
        runs.append(Sweep(seed, reached, losses, smoothed(losses), stopped, time.perf_counter() - t0))
        if not quiet:
            print(f"seed {seed}: {len(losses)} steps, {stopped}, {runs[-1].seconds:.1f}s", flush=True)
    record = summarise(cfg, runs, dict(start=start, end=end, steps=steps, diverge=diverge), schedule)
    name = cfg.name or f"lr-find-{names.short(cfg.recipe or cfg.model)}-{names.short(cfg.dataset)}"
    where = rundir.output_dir(names.inside(cfg.out, name, "lr-find folder name"))
    record["files"] = {"json": str(where / "lr-find.json"), "png": str(where / "lr-find.png")}
    plot(record, runs, where / "lr-find.png")
    atomic.write_text(where / "lr-find.json", json.dumps(record, indent=2))
    return record


def _batches(cfg, data, parts, env, steps: int):
    """(indices, augmentation generator) of each step: the epoch-1 order of the run's seed, again from
    the start when a sweep outlasts an epoch."""
    gen = torch.Generator(device=env.device).manual_seed(epoch_seed(cfg.seed, 1, 1))
    n, batch = len(data.train_y), parts.per_rank_batch
    order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(cfg.seed, 1, 0))).to(env.device)
    torch.manual_seed(epoch_seed(cfg.seed, 1, 2))
    per_epoch = max(1, n // batch)
    for i in range(steps):
        k = i % per_epoch
        yield order[k * batch:(k + 1) * batch], gen


def summarise(cfg, runs: list[Sweep], sweep_settings: dict, schedule: str = "none") -> dict:
    """Each seed's suggestions, the recommendation (the median over seeds of the schedule's rule), its spread."""
    rule = recommended_rule(schedule)
    per_seed = []
    for r in runs:
        found, why = suggestions(r.lrs, r.smooth, rule)
        per_seed.append({"seed": r.seed, "steps": len(r.losses), "stopped": r.stopped, "seconds": r.seconds,
                         "suggestions": found, "no_suggestion": why, "lrs": r.lrs, "losses": r.losses,
                         "smoothed": r.smooth})
    rules = {}
    for name in RULES:
        values = [s["suggestions"][name] for s in per_seed if s["suggestions"][name]]
        rules[name] = ({"median": _geometric_median(values), "min": min(values), "max": max(values),
                        "spread": max(values) / min(values), "seeds": len(values)} if values else None)
    chosen = rules[rule]
    lr = float(f"{chosen['median']:.2g}") if chosen else None  # two significant figures: what --lr takes
    why = None if chosen else next((s["no_suggestion"] for s in per_seed if s["no_suggestion"]), "no suggestion")
    return {"model": cfg.model, "recipe": cfg.recipe, "dataset": cfg.dataset, "optimizer": cfg.optimizer,
            "batch_size": cfg.batch_size, "schedule": schedule, "given_lr": cfg.lr, "sweep": sweep_settings,
            "rules": rules, "recommended": {"rule": rule, "lr": lr, "command": train_command(cfg, lr) if lr else None,
                            "ratio_to_given": lr / cfg.lr if lr else None},
            "no_suggestion": why, "seeds": per_seed}


def _geometric_median(values: list[float]) -> float:
    """The median of rates on a log scale (for an even count, the geometric mean of the middle two)."""
    return math.exp(statistics.median(math.log(v) for v in values))


COMMAND_KEYS = ("model", "dataset", "optimizer", "loss", "batch_size", "momentum", "weight_decay", "normalize",
                "augment")


def command(verb: str, cfg, extra: str = "") -> str:
    """`mnistlab VERB` with the settings of `cfg` that differ from its recipe (or the defaults), as flags."""
    base = config.resolve(cfg.recipe or None) if cfg.recipe else config.TrainConfig()
    parts = ["mnistlab", verb] + ([f"--recipe {cfg.recipe}"] if cfg.recipe else [])
    for key in COMMAND_KEYS:
        value = getattr(cfg, key)
        if value != getattr(base, key):
            parts.append(f"--{key.replace('_', '-')} {_shell(value)}")
    if cfg.model_args and cfg.model_args != base.model_args:
        parts.append(f"--set 'model_args={json.dumps(cfg.model_args)}'")
    return " ".join(parts) + (f" {extra}" if extra else "")


def train_command(cfg, lr: float) -> str:
    return command("train", cfg, f"--lr {lr:g}")


def _shell(value) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return text if all(c.isalnum() or c in "-_.:/+=," for c in text) else "'" + text.replace("'", "'\\''") + "'"


def plot(record: dict, runs: list[Sweep], out: Path) -> Path:
    """Smoothed loss against the rate (log scale), a line per seed (the raw losses faint), each rule's
    suggestion marked on it, the recommendation and the rate the settings give as vertical lines."""
    plt, fig, ax = figure(8, 4.5)
    markers = {"valley": "o", "steepest": "v", "minimum": "s"}
    for r, s in zip(runs, record["seeds"]):
        if not r.lrs:
            continue
        line, = ax.plot(r.lrs, r.smooth, label=f"seed {r.seed} (smoothed)")
        ax.plot(r.lrs, r.losses, color=line.get_color(), alpha=0.2, linewidth=0.8)
        for rule, lr in s["suggestions"].items():
            if lr:
                i = min(range(len(r.lrs)), key=lambda k: abs(math.log(r.lrs[k] / lr)))
                ax.plot([lr], [r.smooth[i]], markers[rule], color=line.get_color(), markersize=7,
                        markeredgecolor="black", label=rule if s is record["seeds"][0] else None)
    rec = record["recommended"]["lr"]
    if rec:
        ax.axvline(rec, color="black", linewidth=1.5, label=f"recommended ({record['recommended']['rule']}, median): {rec:g}")
    ax.axvline(record["given_lr"], color="grey", linestyle="--", label=f"the settings' lr: {record['given_lr']:g}")
    finite = [v for r in runs for v in r.smooth]
    if finite:  # the diverging tail would flatten the rest: up to twice the first loss
        first = [r.smooth[0] for r in runs if r.smooth]
        ax.set_ylim(min(finite) * 0.9, max(first) * 2 if first else None)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(f"lr-find: {record['recipe'] or record['model']} on {record['dataset']} ({record['optimizer']}, "
                 f"batch {record['batch_size']}, schedule {record['schedule']})")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return save_figure(fig, out)
