"""The attack algorithms, below training (adversarial training uses them) and analysis (the
`mnistlab attack` verb writes their results): FGSM and PGD (gradient.py), APGD, Square and the
AutoAttack-style minimum (autoattack.py), and robust accuracy with checks against gradient masking
(evaluation.py). Epsilon is in pixel units of the [0,1] image; adversarial images stay in [0,1]."""

from .autoattack import apgd, autoattack, square
from .evaluation import AttackResult, attack, masking_checks
from .gradient import Attacked, fgsm, pgd
from .registry import ATTACKS, list_attacks, norms, register_attack

__all__ = ["ATTACKS", "AttackResult", "Attacked", "apgd", "attack", "autoattack", "fgsm", "list_attacks",
           "masking_checks", "norms", "pgd", "register_attack", "square"]
