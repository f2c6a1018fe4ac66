"""Adversarial training: each batch is replaced by L-inf adversarial examples of the model as it is.

- `fgsm-rs` (Wong, Rice and Kolter 2020, "Fast is better than free"): one FGSM step of 1.25 eps from a
  uniform random start in the eps-ball: about twice the cost of plain training.
- `pgd` (Madry et al. 2018): `adv_steps` PGD steps of 2.5 eps / steps from a random start: about
  steps + 1 times the cost.

The perturbation is found on the augmented [0,1] images with the normalisation inside, as the
attacks in `analysis/attack.py` measure it, from the epoch's augmentation generator (so a resumed
run draws the same starts). The model stays in training mode while the attack runs, as in both
papers' code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..analysis.attack import pgd


def perturb(model, x01: torch.Tensor, labels: torch.Tensor, norm, cfg, generator: torch.Generator) -> torch.Tensor:
    """Adversarial versions of the [0,1] batch `x01` for `cfg.adversarial` (fgsm-rs | pgd)."""
    eps = cfg.adv_eps

    def log_probs(x):
        return F.log_softmax(model(norm.apply(x)).float(), dim=1)

    if cfg.adversarial == "pgd":
        return pgd(log_probs, x01, labels, eps, steps=cfg.adv_steps, step_size=cfg.adv_step_size or None,
                   generator=generator)
    alpha = cfg.adv_step_size or 1.25 * eps
    delta = (torch.rand(x01.shape, generator=generator, device=x01.device) * 2 - 1) * eps
    delta = ((x01 + delta).clamp(0, 1) - x01).requires_grad_(True)
    loss = F.nll_loss(log_probs(x01 + delta), labels)
    (grad,) = torch.autograd.grad(loss, delta)
    delta = (delta.detach() + alpha * grad.sign()).clamp(-eps, eps)
    return (x01 + delta).clamp(0, 1).detach()
