"""Hyperparameter search over any recipe (Optuna): `mnistlab tune`, `mnistlab.tune(...)`."""

from .space import Space, list_spaces, read_space
from .study import tune

__all__ = ["Space", "list_spaces", "read_space", "tune"]
