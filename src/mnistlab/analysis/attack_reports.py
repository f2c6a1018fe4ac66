"""Adversarial attacks in pixel units: FGSM, PGD, APGD, Square and an AutoAttack-style minimum over
attacks, with checks against gradient masking reported next to every robust-accuracy figure.

    mnistlab attack runs/seed-cnn-mnist-s0 --method pgd --eps 0.1,0.2,0.3
    mnistlab attack runs/adv-pgd-mnist-s0 --method autoattack --eps 0.3
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

- APGD-CE, APGD-T, Square and `autoattack` (their per-example minimum): see `attacks/autoattack.py`.
- `masking_checks`: monotone in epsilon, never weaker than FGSM, ~0% at an unbounded epsilon, and a
  gradient-free attack that does not beat the gradient ones.

A mean ensemble is attacked through its averaged probabilities (log of the mean, computed stably);
a vote has no gradient and is refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from .. import atomic, attacks
from ..attacks import Attacked, AttackResult
from ..attacks.evaluation import load_inputs
from ..errors import MnistlabError
from ..models.predictor import load_predictor
from ..models.source import locate
from ..pictures import figure, image_grid, save_figure, save_png, titled
from ..rundir import RunDir
from .robust import describe
from .splits import target_split


def attack_split(source, *, method: str = "pgd", eps=(0.1, 0.2, 0.3), norm: str = "linf", target: int | None = None,
                 split: str = "test", n: int = 1000, steps: int | None = None, restarts: int = 1, targets: int = 9,
                 queries: int = 5000, seed: int = 0, checks: bool = True, check_n: int = 200, out=None,
                 data_dir=None, quiet: bool = True) -> dict:
    """Attack the first `n` images of a split; write attack-<method>-<norm>.json, the accuracy-vs-epsilon
    curve and a gallery (original, perturbation amplified, adversarial) beside the model (RUN/eval/)."""
    if not (isinstance(n, int) and not isinstance(n, bool) and n >= 1):
        raise MnistlabError(f"--n {n!r}: expected a positive number of images")
    located = locate(source)
    predictor = load_predictor(located.checkpoint)
    ds, part = target_split(predictor, split, None, data_dir)
    images, labels = part.images[:n], part.labels[:n]
    result = attacks.attack(predictor, images, labels, method=method, eps=eps, norm=norm, target=target, steps=steps,
                           restarts=restarts, targets=targets, queries=queries, seed=seed, checks=checks,
                           check_n=check_n, quiet=quiet)
    out_dir = located.output_dir(out, RunDir.EVAL)
    name = f"{RunDir.ATTACK_PREFIX}{method}-{norm}" + (f"-target{target}" if target is not None else "")
    doc = {"source": str(source), "dataset": ds.name, "split": split, **result.as_dict()}
    doc["pictures"] = {"curve": str(curve(result, out_dir / f"{name}-curve.png", f"{ds.name} {split}")),
                       "gallery": str(gallery(predictor, images, labels, result, out_dir / f"{name}-gallery.png"))}
    atomic.write_text(out_dir / f"{name}.json", json.dumps(doc, indent=2))
    doc["json"] = str(out_dir / f"{name}.json")
    return doc


def attack_models(sources: list, *, out=None, method: str = "pgd", norm: str = "linf", **settings) -> dict:
    """`mnistlab attack MODEL...`: each model attacked alike (`attack_split`); with several, each result in
    OUT/N-NAME/ and their curves in one picture, OUT/compare-METHOD-NORM.png. {"docs", "compare"}."""
    sources = list(sources)
    if not sources:
        raise MnistlabError("attack needs at least one model (a run directory, checkpoint or mean ensemble)")
    if len(sources) > 1 and not out:
        raise MnistlabError("several models: name a directory for the results and their comparison with --out")
    docs = [attack_split(s, out=out if len(sources) == 1 else Path(out) / f"{i + 1}-{Path(s).stem}", method=method,
                         norm=norm, **settings) for i, s in enumerate(sources)]
    compare = (compare_curves(docs, Path(out) / f"compare-{method}-{norm}.png", distinct_names(sources))
               if len(docs) > 1 else None)
    return {"docs": docs, "compare": str(compare) if compare else None}


def distinct_names(sources) -> list[str]:
    """A label per model for a legend: its folder's name, with as many parent folders as it takes to tell
    two apart (two groups' seed-0 runs: my-seeds/seed-0 and fast-seeds/seed-0)."""
    paths = [Path(os.fspath(s)).resolve() for s in sources]
    depth = 1
    while depth < 6:
        names = ["/".join(p.parts[-depth:]) for p in paths]
        if len(set(names)) == len(names):
            return names
        depth += 1
    return [str(p) for p in paths]


def attack_table(doc: dict) -> str:
    what = describe(doc)
    if doc["targeted"]:
        what += f", targeted at class {doc['target']}"
    lines = [f"{what} on {doc['n']} {doc['dataset']} {doc['split']} images "
             f"(clean accuracy {doc['clean_accuracy']:.2%})",
             "eps      robust accuracy" + ("  target reached" if doc["targeted"] else "")]
    for i, e in enumerate(doc["eps"]):
        extra = f"  {doc['target_success'][i]:.2%}" if doc["targeted"] else ""
        broke = doc.get("broken_by")
        if broke:
            extra += "  broken first by: " + ", ".join(f"{k} {v}" for k, v in broke[i].items() if k != "clean")
        lines.append(f"{e:<8g} {doc['robust_accuracy'][i]:.2%}{extra}")
    checks = doc.get("masking_checks")
    if checks:
        lines.append("checks against gradient masking: " + ("all passed" if checks["passed"] else "FAILED"))
        for c in checks["checks"]:
            detail = {k: v for k, v in c.items() if k not in ("check", "passed")}
            lines.append(f"  [{'ok' if c['passed'] else 'FAIL'}] {c['check']}: {_short(detail)}")
        if not checks["passed"]:
            lines.append("  what this means: an attack stronger than this one exists for these images, so the robust "
                         "accuracy above overstates how robust the model is (the true figure is lower). For an "
                         "undefended model it is the attack's settings, not a defence, that fall short: more --steps "
                         "or --restarts (or --method autoattack) give a figure that holds (docs/attacks.md).")
    return "\n".join(lines)


def _short(detail: dict) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, list):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        return str(v)
    return ", ".join(f"{k} {fmt(v)}" for k, v in detail.items())


def curve(result: AttackResult, out, title: str):
    plt, fig, ax = figure(5, 3.5)
    eps = [0.0, *result.eps]
    ax.plot(eps, [result.clean_accuracy, *result.accuracy], marker="o", label="robust accuracy")
    if result.success is not None:
        ax.plot(result.eps, result.success, marker="s", label="target reached")
    ax.set_xlabel(f"epsilon ({result.norm}, pixel units of the [0,1] image)")
    ax.set_ylim(0, 1)
    ax.set_title(f"{title}: {result.method.upper()}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, out)


# The PyTorch FGSM tutorial's published figures (LeNet with dropout, MNIST test set), drawn as a
# reference next to FGSM curves: eps -> accuracy.
TUTORIAL_FGSM = {0.0: 0.981, 0.1: 0.851, 0.2: 0.430, 0.3: 0.087}


def compare_curves(docs: list[dict], out, labels: list[str] | None = None):
    """One accuracy-vs-epsilon line per attacked model (the `run` results of one method and norm),
    with the PyTorch FGSM tutorial's published figures beside FGSM curves."""
    plt, fig, ax = figure(6, 4)
    for i, doc in enumerate(docs):
        label = labels[i] if labels else doc["source"]
        ax.plot([0.0, *doc["eps"]], [doc["clean_accuracy"], *doc["robust_accuracy"]], marker="o",
                label=f"{label} ({doc['n']} images)")
    if docs and docs[0]["method"] == "fgsm" and docs[0]["norm"] == "linf":
        ax.plot(list(TUTORIAL_FGSM), list(TUTORIAL_FGSM.values()), linestyle="--", color="grey", marker="x",
                label="PyTorch FGSM tutorial, LeNet (published)")
    ax.set_xlabel(f"epsilon ({docs[0]['norm']}, pixel units of the [0,1] image)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(describe(docs[0]), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, out)


def gallery(predictor, images, labels, result: AttackResult, out, count: int = 8):
    """Rows of (original, perturbation amplified to the full grey range, adversarial) at the largest
    epsilon, with what the model read in each and its probability."""
    net = Attacked(predictor)
    x, _ = load_inputs(predictor, images, labels)
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
    grid = image_grid(np.stack(tiles), captions, scale=4, cols=6)
    return save_png(titled(grid, f"{describe(result.as_dict())} at eps {result.eps[-1]:g}: original (true: read, "
                                 "probability), perturbation amplified, adversarial (read, probability)"), out)
