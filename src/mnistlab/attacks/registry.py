"""The attack registry, as the model zoo's: `@register_attack` beside each algorithm fills it, and
everything that names attacks reads it (the checks of arguments, the dispatch, the words a figure is
named by, the CLI's choices, the tests' parametrisation). Adding an attack is one entry beside its code.

    @register_attack("fgsm", norms=("linf",), targeted=True, steps=1, restarts=False,
                     named=lambda s: "FGSM", summary="one signed-gradient step")
    def run_fgsm(net, x, y, eps, *, norm, steps, step_size, target, targets, queries, generator):
        return fgsm(net, x, y, eps, target=target), {}

An entry's `run` attacks one batch at one epsilon and returns (adversarial images, how many examples
each component attack was the first to break: {} where there is one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class AttackEntry:
    name: str
    run: Callable  # (net, x, y, eps, *, norm, steps, step_size, target, targets, queries, generator) -> (adv, broke)
    norms: tuple[str, ...]  # the norms it attacks in
    targeted: bool  # whether it takes --target (a class every image is pushed toward)
    steps: int  # its default iterations (0: it counts queries instead)
    restarts: bool  # whether --restarts repeats it on the images still standing
    named: Callable[[dict], str]  # a result's settings -> the attack in words ("PGD-40")
    summary: str  # one line: what it is
    step_size: str = ""  # the step-size rule, as results record it
    components: tuple[str, ...] = field(default=())  # the attacks it runs in turn (AutoAttack-style)
    rank: int = 100  # where it stands in a list (the strongest last)
    gradient: bool = True  # whether it needs the model's gradient (False: queries only, so classical models too)


ATTACKS: dict[str, AttackEntry] = {}


def register_attack(name: str, *, norms: tuple[str, ...], targeted: bool, steps: int, restarts: bool = True,
                    named: Callable[[dict], str], summary: str, step_size: str = "",
                    components: tuple[str, ...] = (), rank: int = 100, gradient: bool = True):
    def wrap(run):
        ATTACKS[name] = AttackEntry(name, run, tuple(norms), targeted, steps, restarts, named, summary, step_size,
                                    tuple(components), rank, gradient)
        return run

    return wrap


def list_attacks() -> list[str]:
    return sorted(ATTACKS, key=lambda name: (ATTACKS[name].rank, name))


def norms() -> list[str]:
    """Every norm some attack takes."""
    return sorted({n for e in ATTACKS.values() for n in e.norms}, key=["linf", "l2"].index)
