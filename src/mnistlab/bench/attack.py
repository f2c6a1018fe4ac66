"""The attack suite: adversarial images per second on the packaged default model.

PGD-40 (L-inf, eps 0.3) on the 10,000 test images, FGSM on the same, and the AutoAttack-style
evaluation on 1,000, against a reference measured in the same process: 40 plain PyTorch
gradient-with-respect-to-the-input passes of the bare model on the same batches, the least any
PGD-40 can cost. The ratio shows what mnistlab's attack adds (normalisation inside, projection,
log-softmax).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from .. import data
from ..attacks import attack
from ..models.default import DEFAULT_MODEL
from ..models.predictor import load_predictor
from .registry import suite


def _reference(model, norm, x, y, steps: int, batch: int) -> float:
    """Seconds for `steps` bare input-gradient passes over all of x."""
    t0 = time.perf_counter()
    for i in range(0, len(x), batch):
        xb, yb = x[i:i + batch], y[i:i + batch]
        for _ in range(steps):
            xg = xb.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(F.cross_entropy(model(norm.apply(xg)), yb), xg)
            xb = (xb + 0.01 * g.sign()).clamp(0, 1)
    return time.perf_counter() - t0


@suite
def bench_attack(quick: bool = False) -> list[dict]:
    test = data.load("mnist").test
    n = 1000 if quick else 10_000
    images, labels = test.images[:n], test.labels[:n].long()
    predictor = load_predictor(DEFAULT_MODEL)
    model, norm = predictor.models[0].eval(), predictor.norms[0]
    for p in model.parameters():
        p.requires_grad_(False)
    x = images.float()[:, None] / 255
    rows = []
    ref_s = _reference(model, norm, x, labels, 40, 500)
    rows.append({"name": "reference: 40 bare input-gradient passes", "images": n, "seconds": ref_s,
                 "images_per_s": n / ref_s, "ratio_to_reference": 1.0})
    for name, method, eps, count, kw in (("PGD-40 linf eps 0.3", "pgd", 0.3, n, {"steps": 40}),
                                         ("FGSM linf eps 0.3", "fgsm", 0.3, n, {}),
                                         ("autoattack linf eps 0.1 (APGD 100 steps, 9 targets, Square 5000)",
                                          "autoattack", 0.1, min(n, 1000) // (10 if quick else 1), {})):
        t0 = time.perf_counter()
        r = attack(predictor, images[:count], labels[:count], method=method, eps=[eps], checks=False, **kw)
        s = time.perf_counter() - t0
        row = {"name": name, "images": count, "seconds": s, "images_per_s": count / s,
               "robust_accuracy": r.accuracy[0], "clean_accuracy": r.clean_accuracy}
        if method == "pgd":
            row["ratio_to_reference"] = ref_s / s  # < 1: slower than the bare passes
        rows.append(row)
    return rows
