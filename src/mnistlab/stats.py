"""Figures over seeds: the one mean +- std (sample std, n-1) every table of mnistlab reports."""

from __future__ import annotations

import statistics
from collections.abc import Iterable


def over_seeds(values: Iterable[float | None]) -> dict | None:
    """{"mean", "std", "min", "max", "n", "values"} of the values that are not None; None if there are none.
    The std is the sample std (0 for one value), as papers report mean +- std over runs."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            "min": min(vals), "max": max(vals), "n": len(vals), "values": vals}


def mean_pm_std(stat: dict | None, digits: int = 2, scale: float = 1.0, unit: str = "") -> str:
    """'98.58 ± 0.05' (or one value alone, or 'n/a'), for a stat from `over_seeds`."""
    if stat is None:
        return "n/a"
    mean, std = stat["mean"] * scale, stat["std"] * scale
    return f"{mean:.{digits}f} ± {std:.{digits}f}{unit}" if stat["n"] > 1 else f"{mean:.{digits}f}{unit}"
