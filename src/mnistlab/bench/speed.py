"""The speed suite: time to 99% test accuracy, the `fast` recipe over seeds against the reference recipes."""

from __future__ import annotations

import statistics as st
import tempfile
import time

import torch

from . import device, suite, sync


def fast_recipe() -> str:
    """The time-to-accuracy recipe for this machine: `fast-gpu` with a GPU, `fast` on CPUs."""
    return "fast-gpu" if torch.cuda.is_available() else "fast"


def _train_timed(recipe: str, seed: int, **overrides) -> dict:
    """Wall time of a whole `mnistlab train` (data load, model creation, training, the test pass)."""
    from ..training.config import resolve
    from ..training.train import train

    with tempfile.TemporaryDirectory() as out:
        cfg = resolve(recipe, {"seed": seed, "out": out, "progress": False, "device": device(), **overrides})
        sync()
        t0 = time.perf_counter()
        summary = train(cfg, quiet=True)
        sync()
        wall = time.perf_counter() - t0
    return {"wall_s": wall, "train_s": summary["train_s"], "test_acc": summary["test_acc"],
            "epochs": summary["epochs_run"]}


def epoch_flops(model_name: str, n_images: int = 60000, **model_args) -> float:
    """FLOPs of one training epoch (forward + backward) of a model on 1x28x28 images, counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    from ..models import create_model

    model = create_model(model_name, (1, 28, 28), 10, **model_args)
    x = torch.randn(64, 1, 28, 28)
    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    return counter.get_total_flops() / 64 * n_images


@suite
def bench_speed(quick: bool = False) -> list[dict]:
    """Time to 99% test accuracy: the fast recipe over seeds (wall time including data load and model
    creation, measured after one discarded warm-up run), against reference recipes run in the same
    process through the same engine. The recipes are fixed in advance; the test set is evaluated once
    per run, at its end, and decides nothing."""

    recipe = fast_recipe()
    seeds = [0, 1] if quick else [0, 1, 2, 3, 4]
    _train_timed(recipe, seed=1000)  # warm-up: caches, kernels, compilation; not counted
    runs = [_train_timed(recipe, seed=s) for s in seeds]
    accs = [r["test_acc"] for r in runs]
    walls = [r["wall_s"] for r in runs]
    rows = [{"name": f"{recipe} (seeds {seeds[0]}-{seeds[-1]})", "test_acc_mean": st.fmean(accs),
             "test_acc_min": min(accs), "test_acc_max": max(accs), "wall_s_mean": st.fmean(walls),
             "wall_s_min": min(walls), "wall_s_max": max(walls), "epochs": runs[0]["epochs"],
             "reached_99": all(a >= 0.99 for a in accs), "seeds": seeds,
             "per_seed": [{"seed": s, **r} for s, r in zip(seeds, runs)]}]
    refs = [("pytorch-example", {"epochs": 1}, "first epoch of the pytorch/examples recipe"),
            ("seed-cnn", {"epochs": 1} if quick else {}, "the Keras tutorial CNN recipe")]
    for ref, overrides, about in refs:
        r = _train_timed(ref, seed=0, **overrides)
        rows.append({"name": f"{ref} ({about}, {r['epochs']} epoch(s), seed 0)", "test_acc_mean": r["test_acc"],
                     "wall_s_mean": r["wall_s"], "epochs": r["epochs"], "reached_99": r["test_acc"] >= 0.99})
    base = rows[0]["wall_s_mean"]
    for row in rows:
        row["time_ratio_to_fast"] = row["wall_s_mean"] / base
    from ..training.config import resolve

    cfg = resolve(recipe)
    flops = epoch_flops(cfg.model, **cfg.model_args) * cfg.epochs * (1 if cfg.validation == 0 else 55 / 60)
    rows[0]["train_gflop"] = flops / 1e9
    rows[0]["achieved_gflop_s"] = flops / 1e9 / st.fmean(r["train_s"] for r in runs)
    return rows
