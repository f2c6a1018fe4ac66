"""Adversarial attacks in pixel units: FGSM and PGD (L-inf and L2), untargeted and targeted.

    mnistlab attack runs/seed-cnn-mnist-s0 --method pgd --eps 0.1,0.2,0.3
    mnistlab.attack(model, images, labels, method="fgsm", eps=[0.1, 0.2])

Epsilon is measured on the [0,1] image whatever normalisation the model was trained with: the
attacked function is the model with its normalisation inside (`NormalizedModel`), so an attack can
never be silently weakened by a scale it does not know about. Adversarial images stay in [0,1].

- FGSM (Goodfellow et al. 2015): x' = clip(x + eps * sign(grad_x CE(f(x), y)), 0, 1); targeted,
  x' = clip(x - eps * sign(grad_x CE(f(x), t)), 0, 1).
- PGD (Madry et al. 2018): a random start in the eps-ball, then `steps` steps of size `step_size`
  (default 2.5 * eps / steps), each projected back onto the ball and [0,1]; L-inf steps follow the
  gradient's sign, L2 steps its direction. With `restarts`, an example counts as broken if any
  restart breaks it (its adversarial image is the first that does).

A mean ensemble is attacked through its averaged probabilities (log of the mean, computed stably);
a vote has no gradient and is refused. Not here yet: AutoAttack-grade APGD and gradient-free
(Square) attacks, adversarial training recipes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..errors import MnistlabError
from ..models.inference import NormalizedModel

METHODS = ("fgsm", "pgd")
NORMS = ("linf", "l2")


class Attacked(torch.nn.Module):
    """[0,1] images -> log-probabilities of a single model or a mean ensemble (normalisation inside)."""

    def __init__(self, predictor):
        super().__init__()
        if predictor.method == "vote":
            raise MnistlabError("a vote ensemble has no gradient to attack",
                                hint="attack a mean ensemble (`mnistlab ensemble ... --method mean`) or its members")
        self.members = torch.nn.ModuleList(NormalizedModel(m, n) for m, n in zip(predictor.models, predictor.norms))
        self.eval()
        for p in self.parameters():  # gradients with respect to the image only
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logs = torch.stack([F.log_softmax(m(x).float(), dim=1) for m in self.members])
        return torch.logsumexp(logs, dim=0) - math.log(len(self.members))


@dataclass
class AttackResult:
    """Robust accuracy (and, targeted, success rate) per epsilon, and the adversarial images."""

    method: str
    norm: str
    eps: list[float]
    clean_accuracy: float
    accuracy: list[float]  # per eps: predictions still equal to the true label
    success: list[float] | None  # targeted: per eps, share of examples now predicted as the target
    adversarial: list[torch.Tensor] = field(repr=False)  # per eps, float (N,C,H,W) in [0,1]
    settings: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"method": self.method, "norm": self.norm, "eps": self.eps, "clean_accuracy": self.clean_accuracy,
                "robust_accuracy": self.accuracy, "target_success": self.success, **self.settings}


def check_arguments(method: str, eps, norm: str, target: int | None, num_classes: int, steps: int,
                    restarts: int) -> list[float]:
    """The epsilons as floats; a clear error for anything an attack cannot take."""
    if method not in METHODS:
        raise MnistlabError(f"method {method!r}: expected one of {', '.join(METHODS)}")
    if norm not in NORMS:
        raise MnistlabError(f"norm {norm!r}: expected linf or l2")
    if method == "fgsm" and norm != "linf":
        raise MnistlabError("FGSM is an L-inf attack", hint="use --method pgd for --norm l2")
    values = [eps] if isinstance(eps, (int, float)) else list(eps)
    if not values:
        raise MnistlabError("eps: expected at least one value")
    for e in values:
        if isinstance(e, bool) or not isinstance(e, (int, float)) or not math.isfinite(e) or e < 0:
            raise MnistlabError(f"eps {e!r}: expected a finite number >= 0 (pixel units of the [0,1] image)")
    if target is not None and not (isinstance(target, int) and 0 <= target < num_classes):
        raise MnistlabError(f"target {target!r}: expected a class index from 0 to {num_classes - 1}")
    if not (isinstance(steps, int) and 1 <= steps <= 10_000) or not (
            isinstance(restarts, int) and 1 <= restarts <= 100):
        raise MnistlabError(f"steps={steps!r}, restarts={restarts!r}: expected 1-10000 steps and 1-100 restarts")
    return [float(e) for e in values]


def _loss_grad(model, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-example cross-entropy, its gradient with respect to x)."""
    x = x.detach().requires_grad_(True)
    loss = F.nll_loss(model(x), y, reduction="none")
    (grad,) = torch.autograd.grad(loss.sum(), x)
    return loss.detach(), grad


def fgsm(model, x: torch.Tensor, y: torch.Tensor, eps: float, *, target: torch.Tensor | None = None) -> torch.Tensor:
    """One signed-gradient step of size eps (away from y, or toward the target), clipped to [0,1]."""
    if target is None:
        _, g = _loss_grad(model, x, y)
        return (x + eps * g.sign()).clamp(0, 1)
    _, g = _loss_grad(model, x, target)
    return (x - eps * g.sign()).clamp(0, 1)


def _project(delta: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        size = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (delta.dim() - 1))
        delta = delta * torch.clamp(eps / size, max=1.0)
    return (x + delta).clamp(0, 1) - x  # inside [0,1]; clipping only shrinks each coordinate


def pgd(model, x: torch.Tensor, y: torch.Tensor, eps: float, *, norm: str = "linf", steps: int = 40,
        step_size: float | None = None, random_start: bool = True, target: torch.Tensor | None = None,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """Projected gradient descent on the cross-entropy within the eps-ball (see the module docstring)."""
    alpha = step_size if step_size is not None else 2.5 * eps / steps
    sign = -1.0 if target is not None else 1.0
    labels = target if target is not None else y
    if random_start and eps > 0:
        if norm == "linf":
            delta = (torch.rand(x.shape, generator=generator, device=x.device) * 2 - 1) * eps
        else:
            d = torch.randn(x.shape, generator=generator, device=x.device)
            radius = torch.rand(x.shape[0], generator=generator, device=x.device) ** (1 / x[0].numel())
            delta = d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * (eps * radius).view(-1, 1, 1, 1)
        delta = _project(delta, x, eps, norm)
    else:
        delta = torch.zeros_like(x)
    for _ in range(steps):
        _, g = _loss_grad(model, x + delta, labels)
        if norm == "linf":
            step = g.sign()
        else:
            step = g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (g.dim() - 1))
        delta = _project(delta + sign * alpha * step, x, eps, norm)
    return (x + delta).detach()


@torch.no_grad()
def _predict(model, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    return torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])


def attack(model, images, labels, *, method: str = "pgd", eps=(0.1, 0.2, 0.3), norm: str = "linf",
           target: int | None = None, steps: int = 40, step_size: float | None = None, restarts: int = 1,
           seed: int = 0, batch_size: int = 500) -> AttackResult:
    """Attack `model` (a Predictor, or a run directory / checkpoint / ensemble file) on `images`
    (uint8 (N,H,W) or (N,C,H,W), or float in [0,1]) with true `labels`; one result per epsilon."""
    from ..models.predictor import Predictor, load_predictor

    predictor = model if isinstance(model, Predictor) else load_predictor(model)
    net = Attacked(predictor)
    x = torch.as_tensor(images)
    x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
    if x.dim() == 3:
        x = x[:, None]
    y = torch.as_tensor(labels).long()
    if len(x) != len(y) or len(x) == 0:
        raise MnistlabError(f"{len(x)} images and {len(y)} labels: expected the same, non-zero number")
    if list(x.shape[1:]) != list(predictor.meta["in_shape"]):
        raise MnistlabError(f"images of shape {tuple(x.shape[1:])}; the model takes {predictor.meta['in_shape']}")
    if x.min() < 0 or x.max() > 1:
        raise MnistlabError("float images must be in [0,1] (pixel / 255)")
    epsilons = check_arguments(method, eps, norm, target, len(predictor.classes), steps, restarts)
    t = None if target is None else torch.full_like(y, target)
    generator = torch.Generator().manual_seed(seed)
    clean = _predict(net, x)
    accuracy, success, adversarial = [], [] if t is not None else None, []
    for e in epsilons:
        out = []
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            tb = None if t is None else t[i:i + batch_size]
            if method == "fgsm":
                out.append(fgsm(net, xb, yb, e, target=tb))
                continue
            best = None
            for _ in range(restarts):
                adv = pgd(net, xb, yb, e, norm=norm, steps=steps, step_size=step_size, target=tb, generator=generator)
                if best is None:
                    best = adv
                else:  # keep the first restart that breaks each example
                    pred = _predict(net, best)
                    unbroken = (pred == yb) if tb is None else (pred != tb)
                    best[unbroken] = adv[unbroken]
            out.append(best)
        adv_x = torch.cat(out)
        pred = _predict(net, adv_x)
        accuracy.append(float((pred == y).float().mean()))
        if t is not None:
            success.append(float((pred == t).float().mean()))
        adversarial.append(adv_x)
    settings = {"n": len(x), "targeted": t is not None, "target": target, "seed": seed,
                "steps": steps if method == "pgd" else 1, "restarts": restarts if method == "pgd" else 1,
                "step_size": step_size if step_size is not None else ("2.5*eps/steps" if method == "pgd" else "eps")}
    return AttackResult(method, norm, epsilons, float((clean == y).float().mean()), accuracy, success, adversarial,
                        settings)


def run(source, *, method: str = "pgd", eps=(0.1, 0.2, 0.3), norm: str = "linf", target: int | None = None,
        split: str = "test", n: int = 1000, steps: int = 40, restarts: int = 1, seed: int = 0,
        out=None, data_dir=None) -> dict:
    """`mnistlab attack`: attack the first `n` images of a split; write attack-<method>.json, the
    accuracy-vs-epsilon curve and a gallery (original, perturbation amplified, adversarial)."""
    import json
    from pathlib import Path

    from .. import atomic
    from ..models.predictor import load_predictor
    from .evaluate import default_out_dir, target_split

    if not (isinstance(n, int) and n >= 1):
        raise MnistlabError(f"--n {n!r}: expected a positive number of images")
    predictor = load_predictor(source)
    ds, part = target_split(predictor, split, None, data_dir)
    images, labels = part.images[:n], part.labels[:n]
    result = attack(predictor, images, labels, method=method, eps=eps, norm=norm, target=target, steps=steps,
                    restarts=restarts, seed=seed)
    out_dir = Path(out) if out else default_out_dir(source)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"attack-{method}-{norm}" + (f"-target{target}" if target is not None else "")
    doc = {"source": str(source), "dataset": ds.name, "split": split, **result.as_dict()}
    doc["pictures"] = {"curve": str(curve(result, out_dir / f"{name}-curve.png", f"{ds.name} {split}")),
                       "gallery": str(gallery(predictor, images, labels, result, out_dir / f"{name}-gallery.png"))}
    atomic.write_text(out_dir / f"{name}.json", json.dumps(doc, indent=2))
    doc["json"] = str(out_dir / f"{name}.json")
    return doc


def format_table(doc: dict) -> str:
    what = f"{doc['method'].upper()} {doc['norm']}"
    if doc["targeted"]:
        what += f", targeted at class {doc['target']}"
    lines = [f"{what} on {doc['n']} {doc['dataset']} {doc['split']} images "
             f"(clean accuracy {doc['clean_accuracy']:.2%})",
             "eps      robust accuracy" + ("  target reached" if doc["targeted"] else "")]
    for i, e in enumerate(doc["eps"]):
        extra = f"  {doc['target_success'][i]:.2%}" if doc["targeted"] else ""
        lines.append(f"{e:<8g} {doc['robust_accuracy'][i]:.2%}{extra}")
    return "\n".join(lines)


def curve(result: AttackResult, out, title: str):
    from .plots import _figure, _save_figure

    plt, fig, ax = _figure(5, 3.5)
    eps = [0.0, *result.eps]
    ax.plot(eps, [result.clean_accuracy, *result.accuracy], marker="o", label="robust accuracy")
    if result.success is not None:
        ax.plot(result.eps, result.success, marker="s", label="target reached")
    ax.set_xlabel(f"epsilon ({result.norm}, pixel units of the [0,1] image)")
    ax.set_ylim(0, 1)
    ax.set_title(f"{title}: {result.method.upper()}")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save_figure(plt, fig, out)


def gallery(predictor, images, labels, result: AttackResult, out, count: int = 8):
    """Rows of (original, perturbation amplified to the full grey range, adversarial) at the largest
    epsilon, with what the model read in each and its probability."""
    import numpy as np

    from .plots import image_grid, save_png

    net = Attacked(predictor)
    x = torch.as_tensor(images).float() / 255
    x = x[:, None] if x.dim() == 3 else x
    adv = result.adversarial[-1]
    eps = result.eps[-1] or 1.0
    with torch.no_grad():
        p_clean, p_adv = net(x[:count]).exp(), net(adv[:count]).exp()
    classes = predictor.classes
    tiles, captions = [], []
    for i in range(min(count, len(x))):
        delta = (adv[i] - x[i]) / (2 * eps) + 0.5
        for img, caption in ((x[i], f"{classes[int(labels[i])]}: {classes[int(p_clean[i].argmax())]} "
                                    f"{float(p_clean[i].max()):.0%}"),
                             (delta.clamp(0, 1), f"x{1 / (2 * eps):.1f} +0.5"),
                             (adv[i], f"-> {classes[int(p_adv[i].argmax())]} {float(p_adv[i].max()):.0%}")):
            tiles.append((img[0] if img.shape[0] == 1 else img).mul(255).round().byte().numpy())
            captions.append(caption)
    return save_png(image_grid(np.stack(tiles), captions, scale=4, cols=6), out)
