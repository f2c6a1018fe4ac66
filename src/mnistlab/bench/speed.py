"""The speed suite: time to 99% test accuracy, the `fast` recipe over seeds against the reference recipes."""

from __future__ import annotations

import statistics as st
import tempfile
import time

import torch

from .. import machine
from ..models import create_model
from ..training.config import resolve
from ..training.engine import train
from .references import keras_tutorial, plain_script
from .registry import device, suite, sync


def fast_recipe() -> str:
    """The time-to-accuracy recipe for this machine: `fast-gpu` with a GPU, `fast` on CPUs."""
    return "fast-gpu" if torch.cuda.is_available() else "fast"


def _train_timed(recipe: str, seed: int, **overrides) -> dict:
    """Wall time of a whole `mnistlab train` (data load, model creation, training, the test pass)."""

    with tempfile.TemporaryDirectory() as out:
        cfg = resolve(recipe, {"seed": seed, "out": out, "progress": False, "device": device(), **overrides})
        sync()
        t0 = time.perf_counter()
        summary = train(cfg, quiet=True)
        sync()
        wall = time.perf_counter() - t0
    return {"wall_s": wall, "train_s": summary["train_s"], "test_acc": summary["test_acc"],
            "epochs": summary["epochs_run"], "precision": summary["precision"]["chosen"],
            "precision_reason": summary["precision"]["reason"]}


def epoch_flops(model_name: str, n_images: int = 60000, **model_args) -> float:
    """FLOPs of one training epoch (forward + backward) of a model on 1x28x28 images, counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode


    model = create_model(model_name, (1, 28, 28), 10, **model_args)
    x = torch.randn(64, 1, 28, 28)
    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    return counter.get_total_flops() / 64 * n_images


def peak_fp32_gflops() -> dict:
    """An estimate of the CPU's fp32 peak: threads x clock x FLOP per cycle (2 FMA units x SIMD lanes
    x 2), lanes from the instruction set (AVX-512: 16, AVX2: 8, else 4). The floor any run measures
    against; real clocks and FMA units vary, so it is an estimate, and says how it was made."""

    info = machine.describe()
    features = info["cpu_features"]
    lanes = 16 if "avx512f" in features else 8 if "avx2" in features else 4
    mhz = info.get("cpu_mhz")
    threads = torch.get_num_threads()
    if mhz is None:
        return {"gflops": None, "how": "clock unknown"}
    gflops = threads * mhz / 1000 * 2 * lanes * 2
    return {"gflops": gflops, "how": f"{threads} threads x {mhz / 1000:.2f} GHz x 2 FMA units x {lanes} fp32 lanes x 2"}


@suite
def bench_speed(quick: bool = False) -> list[dict]:
    """Time to 99% test accuracy: the fast recipe over seeds (wall time of each whole `train` call:
    data load, model creation, training, the test pass; after one discarded warm-up run), against
    references run in the same process: a plain PyTorch script, `pytorch-example`'s first epoch and
    `seed-cnn` through the same engine, and the Keras tutorial itself when TensorFlow is installed.
    Every row says the precision the run chose and why; the recipes are fixed in advance, and the
    test set is evaluated once per run, at its end, and decides nothing."""

    recipe = fast_recipe()
    seeds = [0, 1] if quick else [0, 1, 2, 3, 4]
    _train_timed(recipe, seed=1000)  # warm-up: caches, kernels, lazy imports; not counted
    runs = [_train_timed(recipe, seed=s) for s in seeds]
    accs = [r["test_acc"] for r in runs]
    walls = [r["wall_s"] for r in runs]
    rows = [{"name": f"{recipe} (seeds {seeds[0]}-{seeds[-1]})", "test_acc_mean": st.fmean(accs),
             "test_acc_min": min(accs), "test_acc_max": max(accs), "wall_s_mean": st.fmean(walls),
             "wall_s_min": min(walls), "wall_s_max": max(walls), "epochs": runs[0]["epochs"],
             "precision": runs[0]["precision"], "reached_99": st.fmean(accs) >= 0.99 and min(accs) >= 0.989,
             "seeds": seeds, "per_seed": [{"seed": s, **r} for s, r in zip(seeds, runs)]}]
    plain = plain_script(seed=0)
    rows.append({"name": "plain PyTorch script (conv24-pool-conv32-pool-fc256, Adam, batch 64, fp32, 1 epoch, "
                 "seed 0)", "test_acc_mean": plain["test_acc"], "wall_s_mean": plain["wall_s"],
                 "epochs": plain["epochs"], "precision": "fp32"})
    refs = [("pytorch-example", {"epochs": 1}, "first epoch of the pytorch/examples recipe"),
            ("seed-cnn", {"epochs": 1} if quick else {}, "the Keras tutorial CNN recipe")]
    for ref, overrides, about in refs:
        r = _train_timed(ref, seed=0, **overrides)
        rows.append({"name": f"{ref} ({about}, {r['epochs']} epoch(s), seed 0)", "test_acc_mean": r["test_acc"],
                     "wall_s_mean": r["wall_s"], "epochs": r["epochs"], "precision": r["precision"]})
    keras = keras_tutorial(seed=0, epochs=1 if quick else 10)
    if keras is not None:
        rows.append({"name": f"Keras tutorial itself (TensorFlow, Keras {keras['keras']}, {keras['epochs']} "
                     "epoch(s), seed 0)", "test_acc_mean": keras["test_acc"], "wall_s_mean": keras["wall_s"],
                     "epochs": keras["epochs"], "precision": "fp32",
                     "keras_over_seed_cnn": keras["wall_s"] / rows[-1]["wall_s_mean"]})
    base = rows[0]["wall_s_mean"]
    for row in rows:
        row["time_ratio_to_fast"] = row["wall_s_mean"] / base

    cfg = resolve(recipe)
    flops = epoch_flops(cfg.model, **cfg.model_args) * cfg.epochs * (1 if cfg.validation == 0 else 55 / 60)
    peak = peak_fp32_gflops()
    rows[0]["train_gflop"] = flops / 1e9
    rows[0]["achieved_gflop_s"] = flops / 1e9 / st.fmean(r["train_s"] for r in runs)
    rows[0]["peak_fp32_gflop_s"], rows[0]["peak_how"] = peak["gflops"], peak["how"]
    if peak["gflops"]:
        rows[0]["fraction_of_peak"] = rows[0]["achieved_gflop_s"] / peak["gflops"]
    return rows
