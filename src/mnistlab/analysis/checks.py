"""Does my implementation work? `mnistlab check MODEL`: a verdict on a model, an optimizer or a loss
of one's own, against the zoo, with the usual bugs caught by name.

    mnistlab check mynet.py:Net                          # a model of one's own (or a zoo name)
    mnistlab check fast --set optimizer=opt.py:Lion      # an optimizer, on a zoo model
    mnistlab.check(MyNet, loss=my_loss)                  # from Python: a class, a function, an nn.Module

1. Mechanics, in seconds, before any real training: the checks practitioners do by hand (Karpathy,
   "A Recipe for Training Neural Networks", 2019), each with a name a failure is reported under:
   `output` (shape, dtype, finite), `softmax` (an output that is already a probability, which the
   cross-entropy then softmaxes again), `initial loss` (about ln(classes) for balanced classes),
   `gradients` (every parameter gets a finite, non-zero gradient; frozen ones are named), `dead
   units` (a ReLU layer none of whose units is ever positive), `nonlinearity` (an output that is an
   affine function of the input), `batch independence` (in eval mode, an image's output must not
   depend on the other images of its batch), `train vs eval` (reported), `normalization` (what the
   model is fed), `optimizer` (its first step changes the parameters), `overfit one batch` (32
   images fitted to 100% within 200 steps), and speed and parameter count.
2. Learning, in minutes: the model trained over 3 seeds at a fixed budget (2 epochs of 10,000
   training images, the validation split of 5,000 held-out training images scored, never test),
   beside references trained in the same process at the same budget: the zoo's logistic regression,
   MLP and `fast` CNN for a model; Adam and SGD on the same model for an optimizer; cross-entropy on
   the same model for a loss.
3. The verdict: "works: ... between the MLP and the fast CNN", "something is wrong: ...", or
   "unstable: ...", with the checks behind it; `check.json` in `out` holds everything.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .. import atomic, precision, stats, user_code
from ..data import load, preparation
from ..data.normalization import Normalization
from ..errors import MnistlabError
from ..models import create_model_from
from ..models.features import as_input
from ..models.registry import is_known
from ..pictures import figure, save_figure
from ..training import config
from ..training.engine import fit
from ..training.losses import CROSS_ENTROPY, loss_function
from ..training.lr_finder import command as command_for
from ..training.optim import make_optimizer
from .evaluation import compute_metrics
from .plots import confusion_heatmap, mistakes_gallery

BUDGET = {"epochs": 2, "train_images": 10_000, "validation": 5_000}
QUICK_BUDGET = {"epochs": 1, "train_images": 5_000, "validation": 2_000}
REFERENCE_MODELS = {"logreg": "logistic regression", "mlp": "the MLP", "fast": "the fast CNN"}
OVERFIT_IMAGES, OVERFIT_STEPS = 32, 200
CHANCE_FACTOR = 2.0  # mean accuracy under this many times chance is "chance level"
UNSTABLE_STD = 0.03  # a std over seeds above 3 points
# the failure a verdict names first: the most specific cause (dead units also zero the gradients and
# make the output constant, hence "affine")
PRIORITY = ["output", "softmax", "buffers", "dead units", "eval determinism", "batch independence", "optimizer",
            "step direction", "weight decay", "zero gradient", "momentum", "reproducible step", "optimizer mechanics",
            "nonlinearity", "gradients", "initial loss", "overfit one batch", "normalization"]


@dataclasses.dataclass
class Finding:
    """One check: its name, whether it passed (None: reported, not judged), and what it found;
    `skipped`: it could not run (nothing to watch, an argument the optimizer does not take), which is
    said as such, never as "ok"."""

    name: str
    ok: bool | None
    detail: str
    skipped: bool = False

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def skipped(name: str, why: str) -> Finding:
    return Finding(name, None, why, skipped=True)


# ----------------------------------------------------------------------------------------------
# 1. Mechanics


def _batch(ds, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n training images, balanced over the classes as far as they go, and their labels."""
    gen = torch.Generator().manual_seed(seed)
    labels = ds.train.labels
    per = max(1, n // ds.num_classes)
    idx = torch.cat([torch.nonzero(labels == c).flatten()[:per] for c in range(ds.num_classes)])
    idx = idx[torch.randperm(len(idx), generator=gen)][:n]
    return ds.train.images[idx], labels[idx]


def mechanics(cfg, ds, say=None) -> list[Finding]:
    """The checks of part 1, on the CPU in fp32, on a copy of the model as training builds it; `say`
    sees each finding's line as it is made."""
    found = _Said(say)
    try:
        _mechanics(cfg, ds, found)
    except MnistlabError:
        raise
    except Exception as exc:  # the user's own code raised: its line, not a traceback of ours
        error = user_code.raised_in_own_code(exc, own_refs(cfg), "a mechanics check")
        if error is None:
            raise
        raise error from None
    return list(found)


class _Said(list):
    """The findings so far; each one's line is said as it is added."""

    def __init__(self, say):
        super().__init__()
        self.say = say

    def append(self, finding: Finding) -> None:
        super().append(finding)
        if self.say is not None:
            self.say(finding_line(finding.as_dict()))

    def __iadd__(self, findings):
        for f in findings:
            self.append(f)
        return self


def finding_line(f: dict) -> str:
    mark = "skip" if f.get("skipped") else {True: "ok  ", False: "FAIL", None: "    "}[f["ok"]]
    return f"  {mark} {f['name']:<20} {f['detail']}"


def own_refs(cfg) -> dict[str, str]:
    """role -> reference of each piece of the user's own code a config names."""
    return {r: getattr(cfg, r) for r in ("model", "optimizer", "loss") if user_code.is_reference(getattr(cfg, r))}


def _mechanics(cfg, ds, out: list) -> None:
    torch.manual_seed(cfg.seed)
    in_shape = (ds.spec.channels, *ds.image_shape[-2:])
    classes = ds.num_classes
    model = create_model_from(cfg.model, in_shape, classes, cfg.model_args).float()
    mean, std = ds.stats
    norm = Normalization(cfg.normalize, mean, std, preparation.parse(cfg.prepare))
    loss_fn = loss_function(cfg, classes)
    images, labels = _batch(ds, 256)
    x = as_input(images, norm)

    model.eval()
    with torch.no_grad():
        y = model(x[:8])
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != (8, classes) or not y.is_floating_point():
        shape = list(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        out.append(Finding("output", False, f"for 8 images the model returns {shape}: expected float logits of "
                                            f"shape [8, {classes}]"))
        return
    if not torch.isfinite(y).all():
        out.append(Finding("output", False, "the output of 8 training images is not finite (NaN or inf)"))
        return
    out.append(Finding("output", True, f"[batch, {classes}] {str(y.dtype).removeprefix('torch.')} logits, finite"))
    probs_like = bool((y >= 0).all() and (y <= 1).all() and torch.allclose(y.sum(1), torch.ones(8), atol=1e-3))
    out.append(Finding("softmax", not probs_like,
                       "every output row is already a probability distribution (non-negative, sums to 1): "
                       "the model applies softmax, and the cross-entropy applies it again; return logits"
                       if probs_like else "the output is logits (not already softmaxed)"))

    model.train()
    torch.manual_seed(cfg.seed)
    with ReluWatch() as watch:  # every ReLU the forward pass calls: nn.ReLU, F.relu, torch.relu, x.relu()
        logits = model(x)
    dead = watch.dead
    loss = loss_fn(logits.float(), labels)
    expected = math.log(classes)
    value = loss.item()
    ok = math.isfinite(value) and 0.5 * expected <= value <= 1.6 * expected
    out.append(Finding("initial loss", ok, f"{value:.3f} at initialisation; about ln({classes}) = {expected:.3f} "
                       "expected for balanced classes" + ("" if ok else ": the last layer starts with large weights, "
                                                          "or the loss is not a mean cross-entropy")))
    model.zero_grad(set_to_none=True)
    loss.backward()
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    none = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    zero = [n for n, p in model.named_parameters() if p.grad is not None and not bool(p.grad.abs().sum() > 0)]
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    problems = ([f"frozen (requires_grad=False): {', '.join(frozen)}"] if frozen else []) + \
               ([f"no gradient (not on the path to the loss): {', '.join(none)}"] if none else []) + \
               ([f"a zero gradient: {', '.join(zero)}"] if zero else []) + \
               ([f"a gradient that is not finite: {', '.join(bad)}"] if bad else [])
    count = sum(1 for _ in model.parameters())
    out.append(Finding("gradients", not problems, "; ".join(problems) if problems
                       else f"all {count} parameter tensors get a finite, non-zero gradient"))
    tracked = [n for n, b in model.named_buffers() if b.grad_fn is not None or b.requires_grad]
    out.append(Finding("buffers", not tracked, f"buffer(s) {', '.join(tracked)} carry gradient history: they were "
                       "updated from tensors that require grad (running_mean.lerp_(x.mean(0)), say), so every step "
                       "keeps the graph of the last, and the model cannot be copied: update running statistics "
                       "under torch.no_grad() or from .detach()" if tracked
                       else "no buffer carries gradient history (running statistics updated without it)"))
    for module in model.modules():  # the other checks go on with them detached
        for name, b in module._buffers.items():
            if b is not None and b.grad_fn is not None:
                module._buffers[name] = b.detach()
    dead_layers = [n for n, d in dead.items() if d]
    out.append(Finding("dead units", not dead_layers,
                       f"ReLU call(s) {', '.join(dead_layers)}: no unit is positive for any of 256 images "
                       "(a large negative bias, or weights that drive every input below zero)" if dead_layers
                       else f"{len(dead)} ReLU call(s) in the forward pass, each with units that fire") if dead
               else skipped("dead units", "no ReLU in the forward pass (nn.ReLU, F.relu, torch.relu) to watch"))

    model.eval()
    with torch.no_grad():
        first, again = model(x[:32]), model(x[:32])
    deterministic = bool(torch.equal(first, again))
    out.append(Finding("eval determinism", deterministic, "two eval-mode passes of the same 32 images agree"
                       if deterministic else "two eval-mode passes of the same 32 images give different outputs: "
                       "something random stays on in eval() (F.dropout without training=self.training, noise "
                       "added in forward?), so every evaluation differs"))
    with torch.no_grad():
        a, b = x[:16], x[16:32]
        fa, fb, fm = model(a), model(b), model((a + b) / 2)
        scale = float((fa - fb).abs().max()) + 1e-12
        affine = float((fm - (fa + fb) / 2).abs().max()) / scale
        whole = model(x[:32])
        alone = torch.cat([model(x[i:i + 1]) for i in range(4)])
        leak = float((whole[:4] - alone).abs().max()) / (float(whole[:4].abs().max()) + 1e-12)
        model.train()
        torch.manual_seed(0)
        trained_mode = model(x[:32])
        model.eval()
    layers = sum(1 for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.Conv1d)))
    if affine > 1e-3:
        out.append(Finding("nonlinearity", True, "the output is not affine in the input"))
    elif layers <= 1:  # logistic regression: linear by design
        out.append(Finding("nonlinearity", None, "a linear model (one weighted layer): affine in its input by design"))
    else:
        out.append(Finding("nonlinearity", False, f"the output is an affine function of the input (f((a+b)/2) = "
                           f"(f(a)+f(b))/2 to {affine:.1e}) though the model has {layers} weighted layers: there is "
                           "no nonlinearity between them, so together they are one linear layer"))
    out.append(Finding("batch independence", leak <= 1e-3,
                       f"in eval mode an image's output depends on the other images of its batch (relative "
                       f"difference {leak:.2g} alone vs in a batch of 32): statistics across the batch "
                       "dimension leak into the forward pass" if leak > 1e-3
                       else "in eval mode each image's output is its own") if deterministic
               else skipped("batch independence", "eval mode is not deterministic (above), so a batch's "
                            "influence cannot be told from noise"))
    differs = float((trained_mode - whole).abs().max()) > 1e-5
    out.append(Finding("train vs eval", None, "train() and eval() give different outputs (dropout or "
                       "batch-norm, as expected if the model has them)" if differs
                       else "train() and eval() give the same outputs"))
    seen = x.float()
    out.append(Finding("normalization", cfg.normalize != "none",
                       f"normalize={cfg.normalize}: the model is fed mean {float(seen.mean()):.2f}, std "
                       f"{float(seen.std()):.2f}" + (": raw pixel values, not normalised" if cfg.normalize == "none"
                                                     else "")))

    out += optimizer_mechanics(cfg)
    out += _overfit(cfg, model, images[:OVERFIT_IMAGES], labels[:OVERFIT_IMAGES], norm, loss_fn)
    out.append(_speed(model, x[:128], labels[:128], loss_fn))


class ReluWatch(torch.overrides.TorchFunctionMode):
    """Within it, every ReLU a forward pass calls (a module or a function) is seen; `dead[name]` says
    whether none of its outputs was positive. Names are the call's order and where it came from."""

    RELUS = {torch.relu, torch.relu_, torch.nn.functional.relu, torch.Tensor.relu, torch.Tensor.relu_}

    def __init__(self):
        super().__init__()
        self.dead: dict[str, bool] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in self.RELUS and isinstance(out, torch.Tensor) and out.dim() >= 1:
            frame = _caller()
            name = f"#{len(self.dead) + 1} ({frame})"
            self.dead[name] = bool((out.detach().reshape(len(out), -1) <= 0).all())
        return out


def _caller() -> str:
    """file:line of the model code that called the ReLU (the innermost frame outside torch and mnistlab)."""
    import traceback

    skip = (str(Path(torch.__file__).parent), str(Path(__file__).parents[1]))
    for frame in reversed(traceback.extract_stack()):
        if not frame.filename.startswith(skip):
            return f"{Path(frame.filename).name}:{frame.lineno}"
    return "?"


def optimizer_mechanics(cfg) -> list[Finding]:
    """What any correct optimizer does, with no reference implementation to compare with, on one small
    parameter tensor: under a zero gradient, weight decay > 0 shrinks the weights and 0 leaves them
    still; under a constant gradient the steps go against it, and grow where there is momentum; two
    optimizers built the same way from the same state take the same step."""
    def build(weight_decay: float, start: torch.Tensor):
        p = torch.nn.Parameter(start.clone())
        return p, make_optimizer(dataclasses.replace(cfg, weight_decay=weight_decay), [p])

    def steps(opt, p, grad: torch.Tensor, n: int) -> list[torch.Tensor]:
        moves = []
        for _ in range(n):
            before = p.detach().clone()
            p.grad = grad.clone()
            opt.step()
            moves.append(p.detach() - before)
        return moves

    start = torch.linspace(-1, 1, 16) + 0.5
    try:
        p, opt = build(0.0, start)
        takes_decay = "weight_decay" in opt.param_groups[0]
        still = steps(opt, p, torch.zeros_like(start), 3)
        p, opt = build(0.0, start)
        grad = torch.full_like(start, 0.5)
        moves = steps(opt, p, grad, 5)
        p2, opt2 = build(0.0, start)
        moves2 = steps(opt2, p2, grad, 5)
        if takes_decay:
            p, opt = build(0.1, start)
            steps(opt, p, torch.zeros_like(start), 3)
    except MnistlabError as exc:
        return [Finding("optimizer mechanics", False, str(exc))]
    except Exception as exc:  # the user's step(): its failure, with its line
        return [Finding("optimizer mechanics", False, str(user_code.raised("optimizer", cfg.optimizer,
                                                                             "a step on a test tensor", exc)))]
    found = []
    moved_still = max(float(m.abs().max()) for m in still)
    found.append(Finding("zero gradient", moved_still == 0, "with a zero gradient and weight_decay=0 the weights "
                         "stay where they are" if moved_still == 0 else f"with a zero gradient and weight_decay=0 "
                         f"the weights moved by up to {moved_still:.2g}: the step does something besides the gradient"))
    if takes_decay:
        grew = float(p.detach().norm()) >= float(start.norm())
        found.append(Finding("weight decay", not grew, f"with a zero gradient and weight_decay=0.1 the weights' norm "
                             f"went {float(start.norm()):.4f} -> {float(p.detach().norm()):.4f}"
                             + (": weight decay must shrink the weights (its sign is wrong?)" if grew else "")))
    else:
        found.append(skipped("weight decay", f"{cfg.optimizer} takes no weight_decay argument"))
    against = all(float((m * grad).sum()) < 0 for m in moves)
    found.append(Finding("step direction", against, "under a constant gradient every step goes against it"
                         if against else "under a constant gradient a step went along it (or nowhere): the update's "
                         "sign is wrong, or the gradient is not used"))
    momentum = opt.param_groups[0].get("momentum", 0) if opt.param_groups else 0
    if isinstance(momentum, (int, float)) and momentum > 0:
        sizes = [float(m.norm()) for m in moves]
        grows = sizes[-1] > sizes[0] * 1.05
        found.append(Finding("momentum", grows, f"momentum={momentum:g}: under a constant gradient the steps grew "
                             f"{sizes[0]:.3g} -> {sizes[-1]:.3g}" if grows else f"momentum={momentum:g}, but under a "
                             f"constant gradient the steps stayed {sizes[0]:.3g} -> {sizes[-1]:.3g}: the momentum "
                             "buffer is not kept between steps (store it in self.state[p])?"))
    else:
        found.append(skipped("momentum", "no momentum setting in the optimizer's param_groups"))
    same = all(torch.equal(a, b) for a, b in zip(moves, moves2))
    found.append(Finding("reproducible step", same, "two optimizers built the same way from the same state take "
                         "the same steps" if same else "two optimizers built the same way from the same state took "
                         "different steps: the step depends on something besides its state (global randomness?)"))
    return found


def _overfit(cfg, model, images, labels, norm, loss_fn) -> list[Finding]:
    """`optimizer` (its first step changes the parameters) and `overfit one batch`."""
    model = copy.deepcopy(model).train()
    try:
        opt = make_optimizer(cfg, [p for p in model.parameters() if p.requires_grad])
    except MnistlabError as exc:
        return [Finding("optimizer", False, str(exc))]
    x = as_input(images, norm)
    before = [p.detach().clone() for p in model.parameters()]
    first_loss, last_loss, steps, acc = None, None, 0, 0.0
    for step in range(1, OVERFIT_STEPS + 1):
        torch.manual_seed(step)
        opt.zero_grad(set_to_none=True)
        logits = model(x)
        loss = loss_fn(logits.float(), labels)
        if not torch.isfinite(loss):
            return [Finding("optimizer", True, "the first step changed the parameters"),
                    Finding("overfit one batch", False, f"the loss became {loss.item()} at step {step} on "
                            f"{len(x)} images: the learning rate (lr={cfg.lr:g}) is too high? {find_rate(cfg)}")]
        loss.backward()
        opt.step()
        if step == 1:
            moved = any(not torch.equal(a, p.detach()) for a, p in zip(before, model.parameters()))
            first_loss = loss.item()
            if not moved:
                return [Finding("optimizer", False, f"the optimizer's step ({cfg.optimizer}, lr={cfg.lr:g}) changed "
                                "no parameter"),
                        Finding("overfit one batch", False, "nothing can be fitted while no parameter moves")]
        last_loss = loss.item()
        with torch.no_grad():
            acc = float((model.eval()(x).argmax(1) == labels).float().mean())
            model.train()
        steps = step
        if acc == 1.0:
            break
    findings = [Finding("optimizer", True, "its first step changed the parameters")]
    if acc == 1.0:
        findings.append(Finding("overfit one batch", True, f"{len(x)} images fitted to 100% in {steps} steps "
                                f"(loss {first_loss:.3f} -> {last_loss:.4f})"))
    else:
        hint = (f": the loss rose from {first_loss:.3f} to {last_loss:.3f}, the learning rate (lr={cfg.lr:g}) is "
                f"too high? {find_rate(cfg)}" if last_loss > first_loss else f" (loss {first_loss:.3f} -> {last_loss:.3f})")
        findings.append(Finding("overfit one batch", False, f"{len(x)} images reach {acc:.0%} after {steps} steps, "
                                f"not 100%{hint}"))
    return findings


def _speed(model, x, labels, loss_fn) -> Finding:
    model = copy.deepcopy(model).train()
    params = sum(p.numel() for p in model.parameters())

    def step():
        model.zero_grad(set_to_none=True)
        loss_fn(model(x).float(), labels).backward()

    step()
    t0 = time.perf_counter()
    for _ in range(3):
        step()
    ms = (time.perf_counter() - t0) / 3 * 1000
    return Finding("speed", None, f"{params:,} parameters; {ms:.0f} ms per forward+backward of {len(x)} images "
                   f"on the CPU ({torch.get_num_threads()} threads, fp32)")


# ----------------------------------------------------------------------------------------------
# 2. Learning


def _split(ds, budget: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train images, labels, validation images, labels): a stratified holdout (seed 0) and the first
    `train_images` of the rest."""
    val_idx = ds.train.validation_indices(budget["validation"], seed=0, stratified=True)
    keep = torch.ones(len(ds.train), dtype=torch.bool)
    keep[val_idx] = False
    train_idx = torch.nonzero(keep).flatten()[:budget["train_images"]]
    return ds.train.images[train_idx], ds.train.labels[train_idx], ds.train.images[val_idx], ds.train.labels[val_idx]


def _val_probs(model, norm, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([torch.softmax(model(as_input(images[i:i + 1000], norm)).float(), 1)
                          for i in range(0, len(images), 1000)])


def _val_accuracy(cfg, ds, data, seed: int) -> dict:
    """One seed: validation accuracy after each epoch (the curve) and at the end, and the final
    validation probabilities (for the confusion matrix and the mistakes)."""
    xtr, ytr, xval, yval = data
    run_cfg = dataclasses.replace(cfg, seed=seed)
    curve = []

    def after_epoch(epoch, model, norm):
        curve.append(float((_val_probs(model, norm, xval).argmax(1) == yval).float().mean()))

    t0 = time.perf_counter()
    try:
        model, norm = fit(run_cfg, ds, xtr, ytr, after_epoch=after_epoch)
    except MnistlabError as exc:
        if "diverged" in str(exc):
            return {"seed": seed, "diverged": str(exc), "seconds": time.perf_counter() - t0, "curve": curve}
        raise
    probs = _val_probs(model, norm, xval)
    return {"seed": seed, "val_acc": curve[-1], "curve": curve, "seconds": time.perf_counter() - t0,
            "_probs": probs}


LR_FACTORS = (0.1, 0.3, 1.0, 3.0)  # around each arm's own learning rate, the same for every arm


def tuned(cfg, ds, data, seed: int) -> tuple[object, list[dict], dict]:
    """`cfg` at the best of the same small learning-rate grid every arm gets (its own lr x 0.1, 0.3, 1, 3),
    each trial the arm's own budget for its first seed, scored on the validation split: each method is
    compared at a rate that suits it, not at one tuned for another. (config at the chosen rate, the
    trials, the winning trial's run: it is that seed's run, not trained again)."""
    trials, results = [], {}
    for factor in LR_FACTORS:
        trial = dataclasses.replace(cfg, lr=cfg.lr * factor)
        results[trial.lr] = _val_accuracy(trial, ds, data, seed)
        trials.append({"lr": trial.lr, "val_acc": results[trial.lr].get("val_acc", float("nan"))})
    scored = [t for t in trials if t["val_acc"] == t["val_acc"]]
    best = max(scored, key=lambda t: (round(t["val_acc"], 3), -abs(math.log(t["lr"] / cfg.lr)))) if scored \
        else {"lr": cfg.lr}
    return dataclasses.replace(cfg, lr=best["lr"]), trials, results[best["lr"]]


def _arm(name: str, cfg, ds, data, seeds, say=None) -> dict:
    cfg, trials, first = tuned(cfg, ds, data, seeds[0])
    if say:
        say(f"  {name}: learning rate {cfg.lr:g} chosen on validation (seed {seeds[0]}: "
            + ", ".join(f"{t['lr']:g} {t['val_acc']:.1%}" if t["val_acc"] == t["val_acc"] else f"{t['lr']:g} diverged"
                        for t in trials) + ")")
    runs = [first]
    for seed in seeds[1:]:
        runs.append(_val_accuracy(cfg, ds, data, seed))
        if say:
            r = runs[-1]
            say(f"  {name}, seed {seed}: " + (f"validation {r['val_acc']:.2%} ({r['seconds']:.0f}s)" if "val_acc" in r
                                               else "diverged"))
    accs = [r["val_acc"] for r in runs if "val_acc" in r]
    stat = stats.over_seeds(accs)
    mean, std = (stat["mean"], stat["std"]) if stat else (float("nan"), float("nan"))
    probs = next((r.pop("_probs") for r in runs if "_probs" in r), None)
    for r in runs:
        r.pop("_probs", None)
    return {"name": name, "model": cfg.model, "optimizer": cfg.optimizer, "loss": cfg.loss, "lr": cfg.lr,
            "lr_search": trials, "runs": runs, "mean": mean, "std": std,
            "diverged": [r["seed"] for r in runs if "diverged" in r], "_probs": probs}


def pictures(mine: dict, refs: list[dict], data, classes, out: Path) -> dict[str, str]:
    """The learning curves (validation accuracy per epoch, mean over seeds) against the references,
    and the confusion matrix and mistakes of the first seed's model of yours, as PNGs in `out`."""
    _, fig, ax = figure(6, 3.6)
    for arm in [mine, *refs]:
        curves = [r["curve"] for r in arm["runs"] if r.get("curve")]
        if curves:
            width = min(len(c) for c in curves)
            mean = np.mean([c[:width] for c in curves], axis=0)
            ax.plot(range(1, width + 1), 100 * mean, marker="o", lw=2.5 if arm is mine else 1.2, label=arm["name"])
    ax.xaxis.get_major_locator().set_params(integer=True)  # whole epochs
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy, mean over seeds (%)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    out.mkdir(parents=True, exist_ok=True)
    files = {"curves": str(save_figure(fig, out / "curves.png"))}
    if mine.get("_probs") is not None:
        _, _, xval, yval = data
        metrics = compute_metrics(mine["_probs"], yval, list(classes))
        files["confusion"] = str(confusion_heatmap(metrics["confusion_matrix"], list(classes), out / "confusion.png",
                                                   title="yours, seed %d: validation confusion matrix"
                                                   % mine["runs"][0]["seed"]))
        gallery = mistakes_gallery(xval, yval, mine["_probs"], list(classes), out / "mistakes.png")
        if gallery is not None:
            files["mistakes"] = str(gallery)
    return files


# Reference arms already trained in this process, by everything that decides their numbers: checking
# a model again after a fix (in a notebook, say) trains only the model checked.
_REFERENCE_ARMS: dict[tuple, dict] = {}


def _reference_arm(name: str, cfg, ds, data, seeds, say=None) -> dict:
    key = (name, ds.name, ds.content_hash, repr(cfg), tuple(seeds), len(data[0]), len(data[2]),
           torch.get_num_threads(), torch.__version__, precision.native_bf16(torch.device("cpu"))[0])
    if key not in _REFERENCE_ARMS:
        _REFERENCE_ARMS[key] = _arm(name, cfg, ds, data, seeds, say)
    elif say:
        say(f"  {name}: trained earlier in this process, {_REFERENCE_ARMS[key]['mean']:.2%}")
    return copy.deepcopy(_REFERENCE_ARMS[key])  # the caller pops what it draws from


def references(cfg, role: str) -> dict[str, object]:
    """The configs trained beside the one checked (see the module docstring)."""
    if role == "optimizer":
        return {f"{o} on the same model": dataclasses.replace(cfg, optimizer=o, optimizer_args={}, lr=lr)
                for o, lr in (("adam", 1e-3), ("sgd", 0.05))}
    if role == "loss":
        return {"cross-entropy on the same model": dataclasses.replace(cfg, loss=CROSS_ENTROPY)}
    return {label: dataclasses.replace(cfg, model=name, model_args={}, optimizer="adam", optimizer_args={}, lr=1e-3,
                                       loss=CROSS_ENTROPY)
            for name, label in REFERENCE_MODELS.items()}


# ----------------------------------------------------------------------------------------------
# 3. The verdict


def verdict(findings: list[Finding], mine: dict | None, refs: list[dict], classes: int,
            lr: float = float("nan"), find: str = "") -> tuple[str, str]:
    """(status: works | something is wrong | unstable, the sentence); `find`: the sentence that says how to
    sweep the learning rate (`find_rate`), added wherever the rate is the advice."""
    failed = sorted((f for f in findings if f.ok is False), key=lambda f: PRIORITY.index(f.name)
                    if f.name in PRIORITY else len(PRIORITY))
    if failed:
        return "something is wrong", f"{failed[0].name}: {failed[0].detail}"
    if mine is None:
        return "works", "the mechanics pass (learning not run)"
    if mine["diverged"]:
        return "something is wrong", (f"training diverged for seed(s) {mine['diverged']}: lower the learning rate?"
                                      + (f" {find}" if find else ""))
    mean, std = mine["mean"], mine["std"]
    if mean < CHANCE_FACTOR / classes:
        overfits = any(f.name == "overfit one batch" and f.ok for f in findings)
        return "something is wrong", (f"{mean:.1%} on validation is chance level ({1 / classes:.0%})"
                                      + (", though it fits one batch: are the labels shuffled against the images?"
                                         if overfits else ""))
    ranked = sorted((r for r in refs if r["mean"] == r["mean"]), key=lambda r: r["mean"])
    below = [r for r in ranked if r["mean"] <= mean]
    above = [r for r in ranked if r["mean"] > mean]
    where = (f"between {below[-1]['name']} ({below[-1]['mean']:.1%}) and {above[0]['name']} ({above[0]['mean']:.1%})"
             if below and above else f"above every reference (best: {ranked[-1]['name']}, {ranked[-1]['mean']:.1%})"
             if below else f"below every reference (lowest: {ranked[0]['name']}, {ranked[0]['mean']:.1%})"
             if ranked else "")
    if ranked and not below and ranked[0]["mean"] - mean > 0.02:
        return "something is wrong", (f"{mean:.1%} +- {std:.1%}, {where}: it learns, but worse than the simplest "
                                      f"reference at the same budget, each at the best of the same learning-rate "
                                      f"grid (yours: lr={lr:g})" + (" and the seeds' spread" if std > UNSTABLE_STD
                                                                     else ""))
    advice = _rate_advice(mine, find)
    if std > UNSTABLE_STD:
        return "unstable", (f"{mean:.1%} +- {std:.1%}: the accuracy varies by {std * 100:.1f} points across seeds"
                            + advice)
    return "works", f"{mean:.1%} +- {std:.1%}, {where}" + advice


def find_rate(cfg) -> str:
    """The sentence that points to the learning-rate finder, its command filled in with these settings."""
    return f"`{command_for('lr-find', cfg)}` sweeps the rate and suggests one"


def _rate_advice(mine: dict, find: str = "") -> str:
    """Where the learning-rate search chose another rate than the one given: which, and what the given
    one reached, as advice (the model works; its rate did not), and how to sweep it finer."""
    trials = mine.get("lr_search") or []
    given = next((t for t, f in zip(trials, LR_FACTORS) if f == 1.0), None)
    if not given or math.isclose(given["lr"], mine["lr"]):
        return ""
    reached = f"{given['val_acc']:.1%}" if given["val_acc"] == given["val_acc"] else "diverged"
    return (f"; at this budget it learns best at lr={mine['lr']:g}, not at the lr={given['lr']:g} it was given ({reached} there "
            f"in the search): train it with --lr {mine['lr']:g}" + (f"; {find}" if find else ""))


def check(cfg, *, role: str = "model", seeds=(0, 1, 2), quick: bool = False, learning: bool = True,
          out=None, quiet: bool = True) -> dict:
    """`mnistlab check`: the findings, the learning arms and the verdict (see the module docstring)."""
    if role not in ("model", "optimizer", "loss"):
        raise MnistlabError(f"role {role!r}: expected model, optimizer or loss")
    if not is_known(cfg.model):
        raise MnistlabError(f"model {cfg.model!r}: not a zoo model or a reference like file.py:Name")
    ds = load(cfg.dataset)
    budget = QUICK_BUDGET if quick else BUDGET
    cfg = dataclasses.replace(cfg, epochs=budget["epochs"], validation=0, train_subset=0, progress=False,
                              label_smoothing=0.0, early_stopping=0)
    config.validate(cfg)
    say = None if quiet else (lambda text: print(text, flush=True))
    settings = describe_settings(cfg)
    if say:
        say(f"check of {cfg.model} (optimizer {cfg.optimizer}, loss {cfg.loss}) on {ds.name}; {settings['text']}")
        say("mechanics:")
    t0 = time.perf_counter()
    findings = mechanics(cfg, ds, say)
    mechanics_s = time.perf_counter() - t0
    mine, refs = None, []
    if learning and not any(f.ok is False for f in findings):
        data = _split(ds, budget)
        if say:
            say(f"learning ({budget['epochs']} epoch{'s' if budget['epochs'] != 1 else ''} of {budget['train_images']:,} training images, validation on "
                f"{budget['validation']:,} held-out images, seeds {list(seeds)}; each arm at the best of lr x "
                f"{', '.join(f'{f:g}' for f in LR_FACTORS)} of its own):")
        try:
            mine = _arm("yours", cfg, ds, data, list(seeds), say)
        except MnistlabError:
            raise
        except Exception as exc:
            error = user_code.raised_in_own_code(exc, own_refs(cfg), "training")
            if error is None:
                raise
            raise error from None
        refs = [_reference_arm(name, ref_cfg, ds, data, list(seeds), say)
                for name, ref_cfg in references(cfg, role).items()]
    status, sentence = verdict(findings, mine, refs, ds.num_classes, mine["lr"] if mine else cfg.lr, find_rate(cfg))
    drawn = {}
    if mine is not None:
        where = Path(out) if out is not None else _scratch()
        drawn = pictures(mine, refs, data, ds.classes, where)
        for arm in [mine, *refs]:
            arm.pop("_probs", None)
    result = {"model": cfg.model, "optimizer": cfg.optimizer, "loss": cfg.loss, "role": role, "dataset": ds.name,
              "settings": settings, "status": status, "verdict": f"{status}: {sentence}",
              "findings": [f.as_dict() for f in findings],
              "mechanics_s": mechanics_s, "budget": budget, "seeds": list(seeds), "yours": mine, "references": refs,
              "seconds": time.perf_counter() - t0, "split": "validation (held-out training images; test never read)",
              "pictures": drawn}
    if out is not None:
        path = Path(out)
        path.mkdir(parents=True, exist_ok=True)
        atomic.write_text(path / "check.json", json.dumps(result, indent=2, default=float))
        result["out"] = str(path)
    return result


def own_default_lr(cfg) -> float | None:
    """The default `lr` of an optimizer of the user's own (its signature's), if it declares one."""
    if not user_code.is_reference(cfg.optimizer):
        return None
    build, _ = user_code.resolve(cfg.optimizer, "optimizer")
    try:
        default = inspect.signature(build).parameters["lr"].default
    except (KeyError, TypeError, ValueError):
        return None
    return float(default) if isinstance(default, (int, float)) and not isinstance(default, bool) and default > 0 \
        else None


def describe_settings(cfg) -> dict:
    """The settings the check trains with (what check.json and its first line say)."""
    keys = ("optimizer", "lr", "optimizer_args", "weight_decay", "schedule", "batch_size", "loss", "normalize",
            "augment", "precision", "model_args")
    values = {k: getattr(cfg, k) for k in keys}
    values["text"] = (f"optimizer {cfg.optimizer} at lr {cfg.lr:g}" + (f" {cfg.optimizer_args}" if cfg.optimizer_args
                                                                         else "")
                      + f", weight decay {cfg.weight_decay:g}, batch {cfg.batch_size}, schedule {cfg.schedule}, "
                      f"precision {cfg.precision}")
    return values


# Without `out`, the pictures go to temporary folders removed when the process ends: a notebook
# shows them while its kernel runs, and nothing is left behind in /tmp.
_SCRATCH: list[tempfile.TemporaryDirectory] = []


def _scratch() -> Path:
    _SCRATCH.append(tempfile.TemporaryDirectory(prefix="mnistlab-check-"))
    return Path(_SCRATCH[-1].name)
