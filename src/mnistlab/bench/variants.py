"""The variants suite: a standard CNN on MNIST made messy, plain and with each of mnistlab's remedies.

    mnistlab bench variants            # seeds 0-2: every setting and remedy below (about 30 minutes on 2 cores)
    mnistlab bench variants --quick    # seed 0, small subsets, few epochs: a smoke run of a few minutes

Every row is real runs of `mnistlab train --recipe variants` (the `fast` CNN at width 16, Adam at 1e-3,
batch 128, no label smoothing, no validation split: the last epoch's weights), one per seed, each
drawing its own variant with its seed, the test split read once at the end:

- label noise (symmetric 20% and 50%, pair-flip 45%) on the first 10,000 training images, 10 epochs:
  plain cross-entropy; the generalized cross-entropy (`--loss gce`); and the label audit's remedy
  (`--clean-labels cleanlab`: 4-fold out-of-fold scores of the `fast` recipe, cleanlab's confident
  learning, then training on what it keeps), whose precision and recall on the planted flips are the
  audit's columns;
- imbalance (exp:100 on all 60,000 images, 10 epochs; step:100, 5 epochs: the same ~1,050 optimizer
  steps): plain; class-weighted cross-entropy; class-balanced sampling; logit adjustment;
- 10 labels per class: 100 images, 100 epochs (100 steps).

Clean-test accuracy and balanced accuracy (mean +- std over the seeds), `vs_plain` (points over the
setting's plain row) and the published Co-teaching figure for the noise settings (its README: a
9-layer CNN, 200 epochs; not the same network or budget, set beside for scale).
"""

from __future__ import annotations

import tempfile
import time

from ..stats import over_seeds
from ..training.config import resolve
from ..training.engine import train
from .registry import suite

RECIPE = "variants"
NOISE_ARMS = [("plain", {}), ("generalized cross-entropy", {"loss": "gce"}),
              ("train on what cleanlab keeps", {"clean_labels": "cleanlab"})]
IMBALANCE_ARMS = [("plain", {}), ("class-weighted cross-entropy", {"loss": "class_weighted"}),
                  ("balanced sampling", {"sampling": "balanced"}), ("logit adjustment", {"loss": "logit_adjusted"})]
# Co-teaching (Han et al. 2018), MNIST, as its README reports it: https://github.com/bhanML/Co-teaching
COTEACHING = "Co-teaching (Han et al. 2018), its README's MNIST table"
# setting, its settings (and the quick mode's), remedies, the published Co-teaching accuracy (%)
SETTINGS = [
    ("symmetric 20%", {"label_noise": "sym:0.2", "train_subset": 10000}, {"train_subset": 2000, "epochs": 3},
     NOISE_ARMS, 97.71),
    ("symmetric 50%", {"label_noise": "sym:0.5", "train_subset": 10000}, {"train_subset": 2000, "epochs": 3},
     NOISE_ARMS, 91.68),
    ("pair-flip 45%", {"label_noise": "pair:0.45", "train_subset": 10000}, {"train_subset": 2000, "epochs": 3},
     NOISE_ARMS, 87.58),
    ("exp:100", {"imbalance": "exp:100"}, {"train_subset": 10000, "epochs": 2}, IMBALANCE_ARMS, None),
    ("step:100", {"imbalance": "step:100", "epochs": 5}, {"train_subset": 10000, "epochs": 1}, IMBALANCE_ARMS, None),
    ("10 labels per class", {"labels_per_class": 10, "epochs": 100}, {"epochs": 20}, [("plain", {})], None),
]
FLAGS = {"label_noise": "--label-noise", "imbalance": "--imbalance", "labels_per_class": "--labels-per-class",
         "train_subset": "--train-subset", "epochs": "--epochs", "loss": "--loss", "sampling": "--sampling",
         "clean_labels": "--clean-labels"}


def command(settings: dict, seeds: list[int]) -> str:
    """The row's command, as a reader would type it."""
    flags = " ".join(f"{FLAGS[k]} {v}" for k, v in settings.items())
    return f"mnistlab train --recipe {RECIPE} {flags} --seeds " + (f"{seeds[0]}-{seeds[-1]}" if len(seeds) > 1
                                                                  else str(seeds[0]))


def _train(settings: dict, seed: int, out: str) -> dict:
    return train(resolve(RECIPE, {**settings, "seed": seed, "out": out, "progress": False}), quiet=True)


def row_of(setting: str, remedy: str, settings: dict, seeds: list[int], reference: float | None, train=_train,
           out: str = ".") -> dict:
    """One setting and remedy over `seeds`: accuracy, balanced accuracy, the audit's precision and recall
    of the planted flips (where the remedy audits), seconds. `train(settings, seed, out)` runs one
    training and returns its summary (a seam for the suite's own tests)."""
    runs = [train(settings, seed, out) for seed in seeds]
    acc = over_seeds(100 * r["test_acc"] for r in runs)
    bal = over_seeds(100 * r["test_balanced_acc"] for r in runs)
    found = [(r.get("cleaning") or {}).get("planted_flips") for r in runs]
    found = [f for f in found if f]
    return {"name": f"{setting}: {remedy}", "setting": setting, "remedy": remedy, "seeds": seeds,
            "test_acc": acc["mean"], "test_std": acc["std"], "balanced_acc": bal["mean"], "balanced_std": bal["std"],
            "audit_precision": over_seeds(100 * f["precision"] for f in found)["mean"] if found else None,
            "audit_recall": over_seeds(100 * f["recall"] for f in found)["mean"] if found else None,
            "flip_rate": over_seeds(100 * r["variant"]["flip_rate"] for r in runs)["mean"]
            if "label_noise" in settings else None,
            "train_examples": over_seeds(r["variant"]["count"] for r in runs)["mean"] if runs[0].get("variant") else None,
            "wall_s": over_seeds(r["wall_s"] for r in runs)["mean"], "coteaching": reference,
            "command": command(settings, seeds), "per_seed": [{"seed": s, "test_acc": r["test_acc"],
                                                               "test_balanced_acc": r["test_balanced_acc"],
                                                               "run": r["run_dir"]} for s, r in zip(seeds, runs)]}


def table(seeds: list[int], quick: bool, train=_train, out: str = ".") -> list[dict]:
    """Every setting's rows, each remedy's `vs_plain` in points of clean-test accuracy."""
    rows = []
    for setting, settings, quick_settings, arms, reference in SETTINGS:
        plain = None
        for remedy, extra in arms:
            row = row_of(setting, remedy, {**settings, **(quick_settings if quick else {}), **extra}, seeds,
                         reference if remedy == "plain" else None, train=train, out=out)
            plain = plain or row
            row["vs_plain"] = row["test_acc"] - plain["test_acc"] if row is not plain else None
            rows.append(row)
            print(f"  {row['name']}: test {row['test_acc']:.2f}% +- {row['test_std']:.2f}, balanced "
                  f"{row['balanced_acc']:.2f}% ({row['wall_s']:.0f} s a seed)", flush=True)  # no silent half hour
    return rows


@suite
def bench_variants(quick: bool = False) -> list[dict]:
    """A standard CNN on noisy, imbalanced and few-label MNIST, plain and with each remedy (module docstring)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mnistlab-bench-variants-") as tmp:
        rows = table([0] if quick else [0, 1, 2], quick, out=tmp)
    for r in rows:
        for p in r["per_seed"]:
            p.pop("run")  # a temporary folder, gone
    print(f"variants: {len(rows)} rows in {time.perf_counter() - t0:.0f} s")
    return rows
