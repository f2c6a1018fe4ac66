"""Gradient attacks in pixel units: FGSM and PGD (L-inf and L2), on a model with its normalisation
inside (`Attacked`), so epsilon is measured on the [0,1] image whatever scale the model was trained on.

- FGSM (Goodfellow et al. 2015): x' = clip(x + eps * sign(grad_x CE(f(x), y)), 0, 1); targeted,
  x' = clip(x - eps * sign(grad_x CE(f(x), t)), 0, 1).
- PGD (Madry et al. 2018): a random start in the eps-ball, then `steps` steps of size `step_size`
  (default 2.5 * eps / steps), each projected back onto the ball and [0,1]; L-inf steps follow the
  gradient's sign, L2 steps its direction.

A mean ensemble is attacked through its averaged probabilities (log of the mean, computed stably);
a vote has no gradient and is refused.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import MnistlabError
from ..models.inference import NormalizedModel
from .autoattack import ascent_direction, into_ball
from .registry import register_attack


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
    return (x + into_ball(delta, eps, norm)).clamp(0, 1) - x  # inside [0,1]; clipping only shrinks each coordinate


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
        delta = _project(delta + sign * alpha * ascent_direction(g, norm), x, eps, norm)
    return (x + delta).detach()


@register_attack("fgsm", norms=("linf",), targeted=True, steps=1, restarts=False, named=lambda s: "FGSM",
                 summary="FGSM (Goodfellow et al. 2015): one signed-gradient step of size eps", step_size="eps", rank=0)
def run_fgsm(net, x, y, eps, *, norm, steps, step_size, target, targets, queries, generator):
    return fgsm(net, x, y, eps, target=target), {}


@register_attack("pgd", norms=("linf", "l2"), targeted=True, steps=40, named=lambda s: f"PGD-{s.get('steps')}",
                 summary="PGD (Madry et al. 2018): projected steps from a random start in the eps-ball",
                 step_size="2.5*eps/steps", rank=1)
def run_pgd(net, x, y, eps, *, norm, steps, step_size, target, targets, queries, generator):
    return pgd(net, x, y, eps, norm=norm, steps=steps, step_size=step_size, target=target, generator=generator), {}


@torch.no_grad()
def _predict(model, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    return torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])
