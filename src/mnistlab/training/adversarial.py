"""Adversarial training: each batch is replaced by L-inf adversarial examples of the model as it is.

- `fgsm-rs` (Wong, Rice and Kolter 2020, "Fast is better than free"): one FGSM step of 1.25 eps from a
  uniform random start in the eps-ball: about twice the cost of plain training.
- `pgd` (Madry et al. 2018): `adv_steps` PGD steps of 2.5 eps / steps from a random start: about
  steps + 1 times the cost.

The perturbation is found on the augmented [0,1] images with the normalisation inside, as the
attacks in `attacks/` measure it, from the epoch's augmentation generator (so a resumed
run draws the same starts). The model stays in training mode while the attack runs, as in both
papers' code.
"""

from __future__ import annotations

import torch.nn.functional as F

from ..attacks import pgd


def perturb(model, x01, labels, norm, cfg, generator):
    """Adversarial versions of the [0,1] batch `x01` for `cfg.adversarial` (fgsm-rs | pgd)."""
    eps = cfg.adv_eps

    def log_probs(x):
        return F.log_softmax(model(norm.apply(x)).float(), dim=1)

    # FGSM from a random start is PGD with one step of 1.25 eps (same start, same projection)
    steps, default_step = (cfg.adv_steps, None) if cfg.adversarial == "pgd" else (1, 1.25 * eps)
    return pgd(log_probs, x01, labels, eps, steps=steps, step_size=cfg.adv_step_size or default_step,
               generator=generator)
