"""Robust accuracy of a model on images: `attack()` runs FGSM, PGD, APGD, Square or the AutoAttack-style
minimum at each epsilon, and `masking_checks` tests the figure against gradient masking.

    r = mnistlab.attack("runs/seed-cnn-mnist-s0", x_test[:500], y_test[:500], method="pgd", eps=[0.1, 0.3])
    r.accuracy, r.adversarial[0], r.checks
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field

import torch

from ..data.normalization import to_unit
from ..errors import MnistlabError
from ..models.classical import refuse_classical
from ..models.predictor import Predictor, load_predictor
from ..names import did_you_mean
from ..progress import Stages
from .autoattack import square
from .gradient import Attacked, _predict, fgsm, pgd
from .registry import ATTACKS, list_attacks, norms


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
    checks: dict | None = None  # the checks against gradient masking, when run

    def as_dict(self) -> dict:
        return {"method": self.method, "norm": self.norm, "eps": self.eps, "clean_accuracy": self.clean_accuracy,
                "robust_accuracy": self.accuracy, "target_success": self.success, **self.settings,
                "masking_checks": self.checks}


def check_arguments(method: str, eps, norm: str, target: int | None, num_classes: int, steps: int | None,
                    restarts: int, targets: int = 9, queries: int = 5000) -> list[float]:
    """The epsilons as floats; a clear error for anything an attack cannot take (each attack's entry
    says which norms it attacks in and whether it takes a target)."""
    if method not in ATTACKS:
        raise MnistlabError(f"method {method!r}: expected one of {', '.join(list_attacks())}",
                            hint=did_you_mean(method, list_attacks()) or None)
    entry = ATTACKS[method]
    if norm not in norms():
        raise MnistlabError(f"norm {norm!r}: expected {' or '.join(norms())}")
    if norm not in entry.norms:
        able = [n for n, e in ATTACKS.items() if norm in e.norms]
        raise MnistlabError(f"{method} attacks in {' and '.join(entry.norms)} only, not {norm}",
                            hint=f"for --norm {norm}: --method {' or '.join(able)}")
    values = [eps] if isinstance(eps, (int, float)) else list(eps)
    if not values:
        raise MnistlabError("eps: expected at least one value")
    for e in values:
        if isinstance(e, bool) or not isinstance(e, (int, float)) or not math.isfinite(e) or e < 0:
            raise MnistlabError(f"eps {e!r}: expected a finite number >= 0 (pixel units of the [0,1] image)")
    if target is not None and not (isinstance(target, int) and 0 <= target < num_classes):
        raise MnistlabError(f"target {target!r}: expected a class index from 0 to {num_classes - 1}")
    if target is not None and not entry.targeted:
        takes = " and ".join(n for n, e in ATTACKS.items() if e.targeted)
        raise MnistlabError(f"--target is for {takes}; {method} chooses its own targets" if "apgd-t" in entry.components
                            else f"{method} is untargeted; --target is for {takes}")
    if not ((steps is None or (isinstance(steps, int) and 1 <= steps <= 10_000))
            and isinstance(restarts, int) and 1 <= restarts <= 100):
        raise MnistlabError(f"steps={steps!r}, restarts={restarts!r}: expected 1-10000 steps and 1-100 restarts")
    if not (isinstance(targets, int) and 1 <= targets <= 100) or not (
            isinstance(queries, int) and 1 <= queries <= 100_000):
        raise MnistlabError(f"targets={targets!r}, queries={queries!r}: expected 1-100 target classes "
                            "and 1-100000 queries")
    return [float(e) for e in values]


def load_inputs(predictor, images, labels) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.as_tensor(images)
    x = to_unit(x) if x.dtype == torch.uint8 else x.float()
    if x.dim() == 3:
        x = x[:, None]
    y = torch.as_tensor(labels).long()
    if len(x) != len(y) or len(x) == 0:
        raise MnistlabError(f"{len(x)} images and {len(y)} labels: expected the same, non-zero number")
    if list(x.shape[1:]) != list(predictor.meta["in_shape"]):
        raise MnistlabError(f"images of shape {tuple(x.shape[1:])}; the model takes {predictor.meta['in_shape']}")
    if x.min() < 0 or x.max() > 1:
        raise MnistlabError("float images must be in [0,1] (pixel / 255)")
    return x, y


def _add_counts(a: dict, b: dict) -> dict:
    return {k: a.get(k, 0) + b.get(k, 0) for k in [*a, *(k for k in b if k not in a)]}


def _one_batch(net, x, y, eps, method, norm, target, steps, step_size, restarts, targets, queries, generator):
    """Adversarial images for one batch at one epsilon, and how many each component attack was the first
    to break. Each restart (of an attack that takes them) attacks only the examples still standing."""
    entry = ATTACKS[method]
    run = functools.partial(entry.run, net, norm=norm, steps=steps, step_size=step_size, targets=targets,
                            queries=queries, generator=generator)
    if not entry.restarts:
        return run(x, y, eps, target=target)
    best, broke = x.clone(), {}
    idx = torch.arange(len(x))
    for _ in range(restarts):
        xs, ys, ts = x[idx], y[idx], None if target is None else target[idx]
        adv, b = run(xs, ys, eps, target=ts)
        broke = _add_counts(broke, b)
        best[idx] = adv
        pred = _predict(net, best)
        idx = ((pred == y) if target is None else (pred != target)).nonzero()[:, 0]
        if len(idx) == 0:
            break
    return best, broke


def attack(model, images, labels, *, method: str = "pgd", eps=(0.1, 0.2, 0.3), norm: str = "linf",
           target: int | None = None, steps: int | None = None, step_size: float | None = None, restarts: int = 1,
           targets: int = 9, queries: int = 5000, seed: int = 0, batch_size: int = 500,
           checks: bool = True, check_n: int = 200, quiet: bool = True) -> AttackResult:
    """Attack `model` (a Predictor, or a run directory / checkpoint / ensemble file) on `images`
    (uint8 (N,H,W) or (N,C,H,W), or float in [0,1]) with true `labels`; one result per epsilon.

    method: fgsm | pgd | apgd-ce | apgd-t | square | autoattack (APGD-CE, APGD-T against `targets`
    classes, Square with `queries` queries, per-example minimum); steps: iterations (pgd 40, APGD 100).
    checks: also run the checks against gradient masking (`masking_checks`) on `check_n` images;
    quiet=False shows progress (a bar over the batches, a line per epsilon and for the checks)."""
    predictor = model if isinstance(model, Predictor) else load_predictor(model)
    epsilons = check_arguments(method, eps, norm, target, len(predictor.classes), steps, restarts, targets, queries)
    entry = ATTACKS[method]
    if entry.gradient or checks:
        queries_only = " or ".join(f"--method {n}" for n in list_attacks() if not ATTACKS[n].gradient)
        refuse_classical(predictor, f"--method {method}" + (" with the gradient-masking checks" if checks else ""),
                         f"a classical model has no gradient: attack it with {queries_only} --no-checks (queries only)")
    net = Attacked(predictor)
    x, y = load_inputs(predictor, images, labels)
    steps = steps if steps is not None else entry.steps
    t = None if target is None else torch.full_like(y, target)
    generator = torch.Generator().manual_seed(seed)
    clean = _predict(net, x)
    accuracy, success, adversarial, broken_by = [], [] if t is not None else None, [], []
    batches = math.ceil(len(x) / batch_size)
    with Stages(len(epsilons) * batches, f"{method} {norm}", unit="batch", quiet=quiet) as show:
        show.say(f"{method} ({norm}) on {len(x):,} images, clean accuracy {float((clean == y).float().mean()):.2%}")
        for e in epsilons:
            out, counts, t0 = [], {}, time.perf_counter()
            for i in range(0, len(x), batch_size):
                tb = None if t is None else t[i:i + batch_size]
                adv, broke = _one_batch(net, x[i:i + batch_size], y[i:i + batch_size], e, method, norm, tb, steps,
                                        step_size, restarts, targets, queries, generator)
                out.append(adv)
                counts = _add_counts(counts, broke)
                show.update()
            adv_x = torch.cat(out)
            pred = _predict(net, adv_x)
            accuracy.append(float((pred == y).float().mean()))
            if t is not None:
                success.append(float((pred == t).float().mean()))
            adversarial.append(adv_x)
            broken_by.append(counts)
            show.say(f"  eps {e:g}: robust accuracy {accuracy[-1]:.2%} ({time.perf_counter() - t0:.0f}s)")
    settings = {"n": len(x), "targeted": t is not None, "target": target, "seed": seed,
                "restarts": restarts if entry.restarts else 1,
                "steps": steps if entry.restarts and entry.steps else entry.steps,
                "step_size": step_size if step_size is not None and not entry.components else entry.step_size}
    if entry.components:
        settings.update(attacks=[a for a in entry.components if a != "square" or norm == "linf"], broken_by=broken_by)
        if "apgd-t" in entry.components:
            settings["target_classes"] = min(targets, len(predictor.classes) - 1)
        if "square" in entry.components:
            settings["queries"] = queries
    result = AttackResult(method, norm, epsilons, float((clean == y).float().mean()), accuracy, success,
                          adversarial, settings)
    if checks:
        say = (lambda text: None) if quiet else (lambda text: print(text, flush=True))
        say(f"  the checks against gradient masking, on {min(check_n, len(x))} images...")
        result.checks = masking_checks(net, x, y, result, n=check_n, seed=seed)
        say("  checks " + ("passed" if result.checks["passed"] else "FAILED: " + "; ".join(
            c["check"] for c in result.checks["checks"] if not c["passed"])))
    return result


def masking_checks(net, x: torch.Tensor, y: torch.Tensor, result: AttackResult, *, n: int = 200,
                   seed: int = 0, queries: int = 1000) -> dict:
    """Signs that a robust-accuracy figure is an artefact of masked gradients (Athalye et al. 2018,
    Carlini et al. 2019), each with the numbers it rests on:
    1. accuracy falls monotonically with epsilon (clean first);
    2. the attack is never weaker than one signed-gradient step (FGSM; for L2 one normalised-gradient
       step of eps) at any epsilon;
    3. an unbounded epsilon (the whole [0,1] cube) leaves ~nothing standing: PGD-40 on the first `n`;
    4. a gradient-free attack does not beat the gradient attacks: on the first `n` images, at the
       epsilon where the attack left the most standing, Square (L-inf, `queries` queries) breaks at most
       1% of them that the attack left standing (for autoattack: Square, run last, was the first to
       break at most 1% of all examples).
    A targeted result, FGSM and Square themselves get the checks that apply to them."""
    generator = torch.Generator().manual_seed(seed)
    eps, acc = result.eps, result.accuracy
    order = sorted(range(len(eps)), key=lambda i: eps[i])
    curve_ = [result.clean_accuracy, *(acc[i] for i in order)]
    found = [{"check": "accuracy falls monotonically with epsilon",
              "passed": all(a >= b for a, b in zip(curve_, curve_[1:])),
              "eps": [0.0, *(eps[i] for i in order)], "accuracy": curve_}]
    entry = ATTACKS[result.method]
    gradient = entry.steps > 1 and result.success is None  # an iterative attack on the gradient
    if gradient:
        one_step = []
        for e in eps:
            if result.norm == "linf":
                adv = torch.cat([fgsm(net, x[i:i + 500], y[i:i + 500], e) for i in range(0, len(x), 500)])
            else:
                adv = torch.cat([pgd(net, x[i:i + 500], y[i:i + 500], e, norm="l2", steps=1, step_size=e,
                                     random_start=False) for i in range(0, len(x), 500)])
            one_step.append(float((_predict(net, adv) == y).float().mean()))
        found.append({"check": f"not weaker than {'FGSM' if result.norm == 'linf' else 'one L2 gradient step'}",
                      "passed": all(a <= f for a, f in zip(acc, one_step)), "accuracy": acc,
                      "one_step_accuracy": one_step})
    xs, ys = x[:n], y[:n]
    if result.success is None and entry.steps != 1:
        wide = 1.0 if result.norm == "linf" else math.sqrt(xs[0].numel())
        adv = pgd(net, xs, ys, wide, norm=result.norm, steps=40, generator=generator)
        left = float((_predict(net, adv) == ys).float().mean())
        found.append({"check": "an unbounded epsilon leaves ~nothing standing", "passed": left <= 0.01,
                      "eps": wide, "attack": "PGD-40", "n": len(xs), "accuracy": left})
    if gradient and result.norm == "linf":
        # where the gradient attack left the most standing (ties: the larger eps): at an eps where it
        # broke everything, Square has nothing left to find and the check would say nothing
        top = max(range(len(eps)), key=lambda i: (acc[i], eps[i]))
        if "square" in entry.components and len(entry.components) > 1:  # Square ran last, on what stood
            by_square = result.settings["broken_by"][top].get("square", 0)
            found.append({"check": "a gradient-free attack does not beat the gradient attacks",
                          "passed": by_square <= 0.01 * result.settings["n"], "eps": eps[top],
                          "broken_only_by_square": by_square, "n": result.settings["n"],
                          "queries": result.settings["queries"]})
        else:
            standing = _predict(net, result.adversarial[top][:n]) == ys
            sq = square(net, xs[standing], ys[standing], eps[top], queries=queries, generator=generator)
            extra = int((_predict(net, sq) != ys[standing]).sum()) if len(sq) else 0
            found.append({"check": "a gradient-free attack does not beat the gradient attacks",
                          "passed": extra <= 0.01 * len(xs), "eps": eps[top], "broken_only_by_square": extra,
                          "standing": int(standing.sum()), "n": len(xs), "queries": queries})
    return {"passed": all(c["passed"] for c in found), "checks": found}
