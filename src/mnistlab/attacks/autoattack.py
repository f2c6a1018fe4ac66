"""The strongest evaluation mnistlab runs, in the spirit of AutoAttack (Croce and Hein, ICML 2020):

- APGD (`apgd`): PGD with momentum whose step size starts at 2 eps and halves, per example, at
  checkpoints where progress stalled (fewer than 75% of the steps since the last checkpoint raised
  the loss, or the best loss and the step size both stood still), restarting from the best point.
  It needs no step-size tuning, which is what makes a weak, hand-tuned PGD look like robustness.
  Losses: cross-entropy (APGD-CE) and the targeted difference of logits ratio (APGD-T, DLR-T),
  -(z_y - z_t) / (z_1 - (z_3 + z_4) / 2): invariant to the logits' shift and scale, so a model that
  saturates its softmax cannot hide behind a vanishing cross-entropy gradient.
- Square (`square`, Andriushchenko et al. ECCV 2020), L-inf: gradient-free. From vertical stripes of
  +-eps, it repeatedly sets a random square window to a random +-eps per channel and keeps the change
  if the margin z_y - max_{j!=y} z_j fell; the window shrinks on a fixed schedule. It needs no
  gradient at all, so it is the check on gradient masking.
- `autoattack`: APGD-CE, then APGD-T against each of the most likely wrong classes, then Square, each
  on the examples still standing: an example counts as robust only if every attack failed, the
  per-example minimum over attacks.

The models here return log-probabilities; DLR and the margin are shift-invariant, so they equal the
same losses on the logits. Each function returns adversarial images in [0,1] within the eps-ball of
`x` and attacks the examples it is given (the caller passes only those still classified correctly).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .registry import register_attack

# the fraction of the iterations at which APGD checks its progress: 0, 0.22, then steps shrinking by
# 0.03 down to 0.06 (Croce and Hein 2020, section 3.2)


def checkpoints(steps: int) -> list[int]:
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({math.ceil(round(q * steps, 6)) for q in p[1:] if q < 1})  # round: 0.57 * 100 is 57


def dlr_targeted(out: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Per example: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2), the loss APGD-T maximises."""
    top = out.sort(dim=1, descending=True).values
    z_y, z_t = out.gather(1, y[:, None])[:, 0], out.gather(1, t[:, None])[:, 0]
    return -(z_y - z_t) / (top[:, 0] - (top[:, 2] + top[:, 3]) / 2 + 1e-12)


def margin(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z_y - max_{j != y} z_j: negative once the example is misclassified."""
    z_y = out.gather(1, y[:, None])[:, 0]
    other = out.scatter(1, y[:, None], float("-inf")).max(1).values
    return z_y - other


def _view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *[1] * (like.dim() - 1))


def into_ball(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Each example's perturbation clipped (L-inf) or scaled down (L2) into the eps-ball."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    size = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
    return delta * _view(torch.clamp(eps / size, max=1.0), delta)


def ascent_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """The steepest-ascent step of unit size in the norm: the gradient's sign (L-inf) or direction (L2)."""
    if norm == "linf":
        return grad.sign()
    return grad / _view(grad.flatten(1).norm(dim=1).clamp_min(1e-12), grad)


def _project(x_new: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    return (x + into_ball(x_new - x, eps, norm)).clamp(0, 1)


def _random_start(x: torch.Tensor, eps: float, norm: str, generator) -> torch.Tensor:
    """A point near the eps-sphere: a random direction scaled to eps (as AutoAttack starts)."""
    if norm == "linf":
        t = torch.rand(x.shape, generator=generator) * 2 - 1
        t = t / _view(t.flatten(1).abs().amax(1).clamp_min(1e-12), t)
    else:
        t = torch.randn(x.shape, generator=generator)
        t = t / _view(t.flatten(1).norm(dim=1).clamp_min(1e-12), t)
    return _project(x + eps * t.to(x.device), x, eps, norm)


def apgd(model, x: torch.Tensor, y: torch.Tensor, eps: float, *, norm: str = "linf", steps: int = 100,
         target: torch.Tensor | None = None, generator: torch.Generator | None = None,
         rho: float = 0.75, momentum: float = 0.75) -> torch.Tensor:
    """APGD on the cross-entropy (untargeted), or on DLR-T toward `target`; returns, per example, the
    first iterate that is misclassified, else the point of highest loss."""
    n = len(x)
    if n == 0 or eps == 0:
        return x.clone()

    def objective(xa):
        xa = xa.detach().requires_grad_(True)
        out = model(xa)
        loss = F.nll_loss(out, y, reduction="none") if target is None else dlr_targeted(out, y, target)
        (grad,) = torch.autograd.grad(loss.sum(), xa)
        return loss.detach(), grad, out.detach().argmax(1) != y

    def ascend(xk, grad, eta):
        return _project(xk + _view(eta, xk) * ascent_direction(grad, norm), x, eps, norm)

    adv = x.clone()
    broken = torch.zeros(n, dtype=torch.bool, device=x.device)

    def record(xa, wrong):
        nonlocal broken
        new = wrong & ~broken
        adv[new] = xa[new]
        broken = broken | wrong

    x0 = _random_start(x, eps, norm, generator)
    f0, g0, w0 = objective(x0)
    record(x0, w0)
    eta = torch.full((n,), 2.0 * eps, device=x.device)
    x1 = ascend(x0, g0, eta)
    f1, g1, w1 = objective(x1)
    record(x1, w1)
    better = f1 > f0
    best_x, best_f, best_g = torch.where(_view(better, x0), x1, x0), torch.maximum(f0, f1), torch.where(
        _view(better, x0), g1, g0)
    x_prev, xk, gk, fk = x0, x1, g1, f1
    ups = better.float()
    last, eta_last, best_last = 0, eta.clone(), best_f.clone()
    marks = set(checkpoints(steps))
    for k in range(1, steps - 1):
        z = ascend(xk, gk, eta)
        x_new = _project(xk + momentum * (z - xk) + (1 - momentum) * (xk - x_prev), x, eps, norm)
        f_new, g_new, w_new = objective(x_new)
        record(x_new, w_new)
        ups += (f_new > fk).float()
        improved = f_new > best_f
        best_x = torch.where(_view(improved, x_new), x_new, best_x)
        best_g = torch.where(_view(improved, x_new), g_new, best_g)
        best_f = torch.where(improved, f_new, best_f)
        x_prev, xk, gk, fk = xk, x_new, g_new, f_new
        if k + 1 in marks:
            stalled = (ups < rho * (k + 1 - last)) | ((eta == eta_last) & (best_f == best_last))
            eta_last, best_last = eta.clone(), best_f.clone()
            eta = torch.where(stalled, eta / 2, eta)
            s = _view(stalled, xk)
            xk, gk, fk = torch.where(s, best_x, xk), torch.where(s, best_g, gk), torch.where(stalled, best_f, fk)
            x_prev = torch.where(s, best_x, x_prev)
            ups.zero_()
            last = k + 1
    adv[~broken] = best_x[~broken]
    return adv.detach()


_SQUARE_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)  # per 10,000 iterations


def _square_fraction(p_init: float, i: int, queries: int) -> float:
    i = int(i / queries * 10_000)
    return p_init / 2 ** sum(i > h for h in _SQUARE_HALVINGS)


@torch.no_grad()
def square(model, x: torch.Tensor, y: torch.Tensor, eps: float, *, queries: int = 5000, p_init: float = 0.8,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Square attack, L-inf: at most `queries` forward passes per example; stops on an example as soon
    as it is misclassified."""
    n, c, h, w = x.shape
    if n == 0 or eps == 0:
        return x.clone()
    stripes = torch.randint(0, 2, (n, c, 1, w), generator=generator).float().mul(2).sub(1).to(x.device)
    adv = (x + eps * stripes).clamp(0, 1)
    m = margin(model(adv), y)
    rows = torch.arange(h, device=x.device).view(1, 1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, 1, w)
    for i in range(1, queries):
        live = (m > 0).nonzero()[:, 0]
        if len(live) == 0:
            break
        xs, cur = x[live], adv[live]
        side = max(round(math.sqrt(_square_fraction(p_init, i, queries) * h * w)), 1)
        side = min(side, h - 1, w - 1)
        r = torch.randint(0, h - side + 1, (len(live), 1, 1, 1), generator=generator).to(x.device)
        q = torch.randint(0, w - side + 1, (len(live), 1, 1, 1), generator=generator).to(x.device)
        window = (rows >= r) & (rows < r + side) & (cols >= q) & (cols < q + side)
        signs = torch.randint(0, 2, (len(live), c, 1, 1), generator=generator).float().mul(2).sub(1).to(x.device)
        candidate = torch.where(window, (xs + eps * signs).clamp(0, 1), cur)
        # a window already at those values would waste the query: flip its signs instead
        same = ((candidate - cur).abs().flatten(1).amax(1) < 1e-7)
        if same.any():
            flipped = torch.where(window, (xs - eps * signs).clamp(0, 1), cur)
            candidate = torch.where(_view(same, candidate), flipped, candidate)
        m_new = margin(model(candidate), y[live])
        better = m_new < m[live]
        keep = live[better]
        adv[keep] = candidate[better]
        m[keep] = m_new[better]
    return adv


COMPONENTS = ("apgd-ce", "apgd-t", "square")  # the AutoAttack-style minimum runs these in turn


def autoattack(model, x: torch.Tensor, y: torch.Tensor, eps: float, *, norm: str = "linf", steps: int = 100,
               targets: int = 9, queries: int = 5000, attacks=COMPONENTS, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, dict]:
    """APGD-CE, APGD-T (`targets` classes), Square (L-inf) in turn, each on the examples still
    standing (any subset of them, in that order). Returns the adversarial images and, per attack, how
    many examples it was the first to break ("clean": misclassified before any attack)."""
    adv = x.clone()
    with torch.no_grad():
        out = model(x)
    standing = out.argmax(1) == y
    broke = {"clean": int((~standing).sum())}
    targets = min(targets, out.shape[1] - 1) if out.shape[1] >= 4 else 0  # DLR-T needs four classes

    def attempt(name, fn):
        idx = standing.nonzero()[:, 0]
        found = fn(idx) if len(idx) else x[idx]
        with torch.no_grad():
            wrong = model(found).argmax(1) != y[idx] if len(idx) else standing[idx]
        adv[idx[wrong]] = found[wrong]
        standing[idx[wrong]] = False
        broke[name] = broke.get(name, 0) + int(wrong.sum())

    if "apgd-ce" in attacks:
        attempt("apgd-ce", lambda i: apgd(model, x[i], y[i], eps, norm=norm, steps=steps, generator=generator))
    if "apgd-t" in attacks and targets:
        candidates = out.scatter(1, y[:, None], float("-inf")).topk(targets, dim=1).indices
        for k in range(targets):
            attempt("apgd-t", lambda i, k=k: apgd(model, x[i], y[i], eps, norm=norm, steps=steps,
                                                  target=candidates[i, k], generator=generator))
    if "square" in attacks and norm == "linf":
        attempt("square", lambda i: square(model, x[i], y[i], eps, queries=queries, generator=generator))
    return adv, broke


def _apgd_family(parts: tuple[str, ...]):
    """An entry's run: the components in turn on the images still standing (autoattack above)."""
    def run(net, x, y, eps, *, norm, steps, step_size, target, targets, queries, generator):
        return autoattack(net, x, y, eps, norm=norm, steps=steps, targets=targets, queries=queries, attacks=parts,
                          generator=generator)
    return run


def _apgd_t(s: dict) -> str:
    return f"APGD-T ({s.get('steps')} steps, {s.get('target_classes')} targets)"


def _autoattack_named(s: dict) -> str:
    parts = [f"APGD-CE ({s.get('steps')} steps)"]
    if "apgd-t" in s.get("attacks", ()):
        parts.append(_apgd_t(s))
    if "square" in s.get("attacks", ()):
        parts.append(f"Square ({s.get('queries')} queries)")
    return "AutoAttack-style minimum over " + " + ".join(parts)


APGD_STEP = "APGD: 2*eps, halved on stalls"
register_attack("apgd-ce", norms=("linf", "l2"), targeted=False, steps=100, components=("apgd-ce",), rank=2,
                named=lambda s: f"APGD-CE ({s.get('steps')} steps)", step_size=APGD_STEP,
                summary="APGD-CE (Croce and Hein 2020): step-size-free PGD on the cross-entropy")(_apgd_family(("apgd-ce",)))
register_attack("apgd-t", norms=("linf", "l2"), targeted=False, steps=100, components=("apgd-t",), named=_apgd_t, rank=3,
                step_size=APGD_STEP, summary="APGD-T: APGD on the targeted DLR loss, toward each of --targets "
                "classes")(_apgd_family(("apgd-t",)))
register_attack("square", norms=("linf",), targeted=False, steps=0, components=("square",), rank=4, gradient=False,
                named=lambda s: f"Square ({s.get('queries')} queries)", step_size=APGD_STEP,
                summary="Square (Andriushchenko et al. 2020): random square updates, no gradient (queries only)"
                )(_apgd_family(("square",)))
register_attack("autoattack", norms=("linf", "l2"), targeted=False, steps=100, components=COMPONENTS, rank=5,
                named=_autoattack_named, step_size=APGD_STEP,
                summary="the AutoAttack-style minimum: APGD-CE, APGD-T and (L-inf) Square, each on what stands"
                )(_apgd_family(COMPONENTS))
