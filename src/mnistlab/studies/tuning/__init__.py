"""Hyperparameter search over any recipe (Optuna): `mnistlab tune`, `mnistlab.tune(...)`."""

from .search import tune
from .space import Space, list_spaces, read_space

__all__ = ["Space", "list_spaces", "read_space", "tune"]
