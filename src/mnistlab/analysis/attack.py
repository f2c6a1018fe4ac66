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

- APGD-CE, APGD-T, Square and `autoattack` (their per-example minimum): see `autoattack.py`.
- `masking_checks`: monotone in epsilon, never weaker than FGSM, ~0% at an unbounded epsilon, and a
  gradient-free attack that does not beat the gradient ones.

A mean ensemble is attacked through its averaged probabilities (log of the mean, computed stably);
a vote has no gradient and is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..errors import MnistlabError
from ..models.inference import NormalizedModel
from .autoattack import ATTACKS, ascent_direction, autoattack, into_ball

METHODS = ("fgsm", "pgd", "apgd-ce", "apgd-t", "square", "autoattack")
NORMS = ("linf", "l2")
DEFAULT_STEPS = {"fgsm": 1, "pgd": 40, "apgd-ce": 100, "apgd-t": 100, "square": 0, "autoattack": 100}
ATTACKS_OF = {"apgd-ce": ("apgd-ce",), "apgd-t": ("apgd-t",), "square": ("square",), "autoattack": ATTACKS}


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
    checks: dict | None = None  # the checks against gradient masking, when run

    def as_dict(self) -> dict:
        return {"method": self.method, "norm": self.norm, "eps": self.eps, "clean_accuracy": self.clean_accuracy,
                "robust_accuracy": self.accuracy, "target_success": self.success, **self.settings,
                "masking_checks": self.checks}


def check_arguments(method: str, eps, norm: str, target: int | None, num_classes: int, steps: int | None,
                    restarts: int, targets: int = 9, queries: int = 5000) -> list[float]:
    """The epsilons as floats; a clear error for anything an attack cannot take."""
    if method not in METHODS:
        raise MnistlabError(f"method {method!r}: expected one of {', '.join(METHODS)}")
    if norm not in NORMS:
        raise MnistlabError(f"norm {norm!r}: expected linf or l2")
    if method == "fgsm" and norm != "linf":
        raise MnistlabError("FGSM is an L-inf attack", hint="use --method pgd for --norm l2")
    if method == "square" and norm != "linf":
        raise MnistlabError("the Square attack here is L-inf only", hint="use --method apgd-ce or autoattack for l2")
    values = [eps] if isinstance(eps, (int, float)) else list(eps)
    if not values:
        raise MnistlabError("eps: expected at least one value")
    for e in values:
        if isinstance(e, bool) or not isinstance(e, (int, float)) or not math.isfinite(e) or e < 0:
            raise MnistlabError(f"eps {e!r}: expected a finite number >= 0 (pixel units of the [0,1] image)")
    if target is not None and not (isinstance(target, int) and 0 <= target < num_classes):
        raise MnistlabError(f"target {target!r}: expected a class index from 0 to {num_classes - 1}")
    if target is not None and method not in ("fgsm", "pgd"):
        raise MnistlabError(f"--target is for fgsm and pgd; {method} chooses its own targets"
                            if method in ("apgd-t", "autoattack") else f"{method} is untargeted; --target is for fgsm and pgd")
    if not ((steps is None or (isinstance(steps, int) and 1 <= steps <= 10_000))
            and isinstance(restarts, int) and 1 <= restarts <= 100):
        raise MnistlabError(f"steps={steps!r}, restarts={restarts!r}: expected 1-10000 steps and 1-100 restarts")
    if not (isinstance(targets, int) and 1 <= targets <= 100) or not (
            isinstance(queries, int) and 1 <= queries <= 100_000):
        raise MnistlabError(f"targets={targets!r}, queries={queries!r}: expected 1-100 target classes "
                            "and 1-100000 queries")
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


@torch.no_grad()
def _predict(model, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    return torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])


def _load_inputs(predictor, images, labels) -> tuple[torch.Tensor, torch.Tensor]:
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
    return x, y


def _add_counts(a: dict, b: dict) -> dict:
    return {k: a.get(k, 0) + b.get(k, 0) for k in [*a, *(k for k in b if k not in a)]}


def _one_batch(net, x, y, eps, method, norm, target, steps, step_size, restarts, targets, queries, generator):
    """Adversarial images for one batch at one epsilon, and (APGD/Square/AutoAttack) how many each
    attack was the first to break. Each restart attacks only the examples still standing."""
    if method == "fgsm":
        return fgsm(net, x, y, eps, target=target), {}
    best, broke = x.clone(), {}
    idx = torch.arange(len(x))
    for _ in range(restarts):
        xs, ys, ts = x[idx], y[idx], None if target is None else target[idx]
        if method == "pgd":
            adv = pgd(net, xs, ys, eps, norm=norm, steps=steps, step_size=step_size, target=ts, generator=generator)
        else:
            adv, b = autoattack(net, xs, ys, eps, norm=norm, steps=steps, targets=targets, queries=queries,
                                attacks=ATTACKS_OF[method], generator=generator)
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
           checks: bool = True, check_n: int = 200) -> AttackResult:
    """Attack `model` (a Predictor, or a run directory / checkpoint / ensemble file) on `images`
    (uint8 (N,H,W) or (N,C,H,W), or float in [0,1]) with true `labels`; one result per epsilon.

    method: fgsm | pgd | apgd-ce | apgd-t | square | autoattack (APGD-CE, APGD-T against `targets`
    classes, Square with `queries` queries, per-example minimum); steps: iterations (pgd 40, APGD 100).
    checks: also run the checks against gradient masking (`masking_checks`) on `check_n` images."""
    from ..models.predictor import Predictor, load_predictor

    predictor = model if isinstance(model, Predictor) else load_predictor(model)
    if method != "square" or checks:
        from ..models.classical import refuse_classical

        refuse_classical(predictor, f"--method {method}" + (" with the gradient-masking checks" if checks else ""),
                         "a classical model has no gradient: attack it with --method square --no-checks (queries only)")
    net = Attacked(predictor)
    x, y = _load_inputs(predictor, images, labels)
    epsilons = check_arguments(method, eps, norm, target, len(predictor.classes), steps, restarts, targets, queries)
    steps = steps if steps is not None else DEFAULT_STEPS[method]
    t = None if target is None else torch.full_like(y, target)
    generator = torch.Generator().manual_seed(seed)
    clean = _predict(net, x)
    accuracy, success, adversarial, broken_by = [], [] if t is not None else None, [], []
    for e in epsilons:
        out, counts = [], {}
        for i in range(0, len(x), batch_size):
            tb = None if t is None else t[i:i + batch_size]
            adv, broke = _one_batch(net, x[i:i + batch_size], y[i:i + batch_size], e, method, norm, tb, steps,
                                    step_size, restarts, targets, queries, generator)
            out.append(adv)
            counts = _add_counts(counts, broke)
        adv_x = torch.cat(out)
        pred = _predict(net, adv_x)
        accuracy.append(float((pred == y).float().mean()))
        if t is not None:
            success.append(float((pred == t).float().mean()))
        adversarial.append(adv_x)
        broken_by.append(counts)
    settings = {"n": len(x), "targeted": t is not None, "target": target, "seed": seed, "restarts": restarts,
                "steps": steps}
    if method == "pgd":
        settings["step_size"] = step_size if step_size is not None else "2.5*eps/steps"
    elif method == "fgsm":
        settings.update(steps=1, restarts=1, step_size="eps")
    else:
        settings.update(attacks=[a for a in ATTACKS_OF[method] if a != "square" or norm == "linf"],
                        broken_by=broken_by, step_size="APGD: 2*eps, halved on stalls")
        if "apgd-t" in ATTACKS_OF[method]:
            settings["target_classes"] = min(targets, len(predictor.classes) - 1)
        if "square" in ATTACKS_OF[method]:
            settings["queries"] = queries
        if method == "square":
            settings["steps"] = 0
    result = AttackResult(method, norm, epsilons, float((clean == y).float().mean()), accuracy, success,
                          adversarial, settings)
    if checks:
        result.checks = masking_checks(net, x, y, result, n=check_n, seed=seed)
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
    gradient = result.method not in ("fgsm", "square") and result.success is None
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
    if result.success is None and result.method != "fgsm":
        wide = 1.0 if result.norm == "linf" else math.sqrt(xs[0].numel())
        adv = pgd(net, xs, ys, wide, norm=result.norm, steps=40, generator=generator)
        left = float((_predict(net, adv) == ys).float().mean())
        found.append({"check": "an unbounded epsilon leaves ~nothing standing", "passed": left <= 0.01,
                      "eps": wide, "attack": "PGD-40", "n": len(xs), "accuracy": left})
    if gradient and result.norm == "linf":
        # where the gradient attack left the most standing (ties: the larger eps): at an eps where it
        # broke everything, Square has nothing left to find and the check would say nothing
        top = max(range(len(eps)), key=lambda i: (acc[i], eps[i]))
        if result.method == "autoattack":
            by_square = result.settings["broken_by"][top].get("square", 0)
            found.append({"check": "a gradient-free attack does not beat the gradient attacks",
                          "passed": by_square <= 0.01 * result.settings["n"], "eps": eps[top],
                          "broken_only_by_square": by_square, "n": result.settings["n"],
                          "queries": result.settings["queries"]})
        else:
            standing = _predict(net, result.adversarial[top][:n]) == ys
            from .autoattack import square

            sq = square(net, xs[standing], ys[standing], eps[top], queries=queries, generator=generator)
            extra = int((_predict(net, sq) != ys[standing]).sum()) if len(sq) else 0
            found.append({"check": "a gradient-free attack does not beat the gradient attacks",
                          "passed": extra <= 0.01 * len(xs), "eps": eps[top], "broken_only_by_square": extra,
                          "standing": int(standing.sum()), "n": len(xs), "queries": queries})
    return {"passed": all(c["passed"] for c in found), "checks": found}


def run(source, *, method: str = "pgd", eps=(0.1, 0.2, 0.3), norm: str = "linf", target: int | None = None,
        split: str = "test", n: int = 1000, steps: int | None = None, restarts: int = 1, targets: int = 9,
        queries: int = 5000, seed: int = 0, checks: bool = True, check_n: int = 200, out=None,
        data_dir=None) -> dict:
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
                    restarts=restarts, targets=targets, queries=queries, seed=seed, checks=checks, check_n=check_n)
    out_dir = Path(out) if out else default_out_dir(source)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"attack-{method}-{norm}" + (f"-target{target}" if target is not None else "")
    doc = {"source": str(source), "dataset": ds.name, "split": split, **result.as_dict()}
    doc["pictures"] = {"curve": str(curve(result, out_dir / f"{name}-curve.png", f"{ds.name} {split}")),
                       "gallery": str(gallery(predictor, images, labels, result, out_dir / f"{name}-gallery.png"))}
    atomic.write_text(out_dir / f"{name}.json", json.dumps(doc, indent=2))
    doc["json"] = str(out_dir / f"{name}.json")
    return doc


def describe(doc: dict) -> str:
    """The attack in words, as a robust-accuracy figure should name it."""
    m, steps = doc["method"], doc.get("steps")
    what = {"fgsm": "FGSM", "pgd": f"PGD-{steps}", "apgd-ce": f"APGD-CE ({steps} steps)",
            "apgd-t": f"APGD-T ({steps} steps, {doc.get('target_classes')} targets)",
            "square": f"Square ({doc.get('queries')} queries)"}.get(m)
    if m == "autoattack":
        parts = [f"APGD-CE ({steps} steps)"]
        if "apgd-t" in doc.get("attacks", ()):
            parts.append(f"APGD-T ({steps} steps, {doc.get('target_classes')} targets)")
        if "square" in doc.get("attacks", ()):
            parts.append(f"Square ({doc.get('queries')} queries)")
        what = "AutoAttack-style minimum over " + " + ".join(parts)
    restarts = doc.get("restarts", 1)
    return f"{what} {doc['norm']}" + (f", {restarts} restarts" if restarts > 1 else "")


def robust_figures(source) -> list[dict]:
    """The robust accuracies recorded for a run directory, each with its attack named: the end-of-training
    figure in summary.json (adversarially trained runs) and every `mnistlab attack` result in RUN/eval/.
    One row per epsilon; [] for anything else (a checkpoint, an ensemble file, a run never attacked)."""
    from pathlib import Path

    from ..rundir import RunDir

    path = Path(source)
    if not path.is_dir():
        return []
    rows = []
    run = RunDir(path)
    summary = run.read_summary() or {}
    if summary.get("robust"):
        r = summary["robust"]
        checks = r.get("masking_checks")
        rows.append({"attack": r["attack"], "eps": r.get("eps"), "accuracy": r["accuracy"], "n": r["n"],
                     "split": r["split"], "clean_accuracy": r["clean_accuracy"],
                     "checks_passed": None if checks is None else checks.get("passed"), "file": str(run.summary)})
    for file, doc in run.attack_results():  # each checked against RunDir's ATTACK_SPEC
        for e, a in zip(doc["eps"], doc["robust_accuracy"]):
            checks = doc.get("masking_checks")
            rows.append({"attack": describe(doc) + (f", targeted at {doc['target']}" if doc["targeted"] else ""),
                         "eps": e, "accuracy": a, "n": doc["n"], "split": doc["split"],
                         "clean_accuracy": doc["clean_accuracy"],
                         "checks_passed": None if checks is None else checks.get("passed"), "file": str(file)})
    return rows


def format_robust(rows: list[dict]) -> list[str]:
    """Lines for `evaluate` and `report`: robust accuracy, attack, eps, images, the checks' verdict."""
    out = []
    for r in rows:
        verdict = {None: "masking checks not run", True: "masking checks passed",
                   False: "masking checks FAILED"}[r["checks_passed"]]
        eps = f" at eps {r['eps']:g}" if r.get("eps") is not None else ""
        out.append(f"{r['accuracy']:.2%} under {r['attack']}{eps} ({r['n']} {r['split']} images; clean "
                   f"{r['clean_accuracy']:.2%}; {verdict})")
    return out


def format_table(doc: dict) -> str:
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
    from .plots import _figure, _save_figure

    plt, fig, ax = _figure(5, 3.5)
    eps = [0.0, *result.eps]
    ax.plot(eps, [result.clean_accuracy, *result.accuracy], marker="o", label="robust accuracy")
    if result.success is not None:
        ax.plot(result.eps, result.success, marker="s", label="target reached")
    ax.set_xlabel(f"epsilon ({result.norm}, pixel units of the [0,1] image)")
    ax.set_ylim(0, 1)
    ax.set_title(f"{title}: {result.method.upper()}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save_figure(plt, fig, out)


# The PyTorch FGSM tutorial's published figures (LeNet with dropout, MNIST test set), drawn as a
# reference next to FGSM curves: eps -> accuracy.
TUTORIAL_FGSM = {0.0: 0.981, 0.1: 0.851, 0.2: 0.430, 0.3: 0.087}


def compare_curves(docs: list[dict], out, labels: list[str] | None = None):
    """One accuracy-vs-epsilon line per attacked model (the `run` results of one method and norm),
    with the PyTorch FGSM tutorial's published figures beside FGSM curves."""
    from .plots import _figure, _save_figure

    plt, fig, ax = _figure(6, 4)
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
    return _save_figure(plt, fig, out)


def gallery(predictor, images, labels, result: AttackResult, out, count: int = 8):
    """Rows of (original, perturbation amplified to the full grey range, adversarial) at the largest
    epsilon, with what the model read in each and its probability."""
    import numpy as np

    from .plots import image_grid, save_png

    net = Attacked(predictor)
    x, _ = _load_inputs(predictor, images, labels)
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
