"""The GPU self-check: the CUDA-graph training path against the eager one, before any long GPU study.

    mnistlab bench gpu            # on a CUDA machine: under 5 minutes on an H100/H200-class GPU
    mnistlab bench gpu --quick    # 2 seeds and a shorter M5 check

Two checks, each a row of the table (and `passed` in the JSON):
1. `fast-gpu` over seeds 0-2, eagerly and with every step one CUDA graph (after one discarded warm-up
   run of each): the two agree on test accuracy within noise (means within AGREE_POINTS percentage
   points) and the graph is faster (lower mean training seconds).
2. M5 for 2 epochs with the EMA of the weights and gradient clipping through the graph path
   (capturable Adam, the EMA and the clip inside the captured step), in fresh processes: one run
   uninterrupted, one killed with SIGKILL after its first epoch's checkpoint and resumed. The two
   must end with bit-identical weights, EMA and optimizer state (both with `deterministic=true`:
   cuDNN's autotuner may otherwise pick other kernels in another process).

Without CUDA the suite says so in one row and runs nothing. The harness itself is tested on the CPU
(tests/test_bench.py) with the eager path standing in for the graph.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics as st
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ..models.checkpoint import load as load_checkpoint
from ..rundir import RunDir
from .registry import suite
from .speed import _train_timed

AGREE_POINTS = 0.2  # percentage points of test accuracy: well above the seed-to-seed std of fast-gpu


def graph_against_eager(recipe: str, seeds: list[int], *, device: str, graphs: bool = True, **overrides) -> dict:
    """`recipe` over `seeds`, eager and (with `graphs`) as CUDA graphs, each after a discarded warm-up."""
    arms = {"eager": {"cuda_graphs": False}, "graph": {"cuda_graphs": graphs}}
    got = {}
    for arm, setting in arms.items():
        _train_timed(recipe, seed=1000, device=device, **setting, **overrides)  # capture, cuDNN search, caches
        got[arm] = [_train_timed(recipe, seed=s, device=device, **setting, **overrides) for s in seeds]
    acc = {arm: st.fmean(r["test_acc"] for r in runs) for arm, runs in got.items()}
    train_s = {arm: st.fmean(r["train_s"] for r in runs) for arm, runs in got.items()}
    agree = abs(acc["graph"] - acc["eager"]) * 100 <= AGREE_POINTS
    faster = train_s["graph"] < train_s["eager"]
    return {"name": f"{recipe}: CUDA graph vs eager (seeds {seeds[0]}-{seeds[-1]})",
            "eager_test_acc": acc["eager"], "graph_test_acc": acc["graph"],
            "eager_train_s": train_s["eager"], "graph_train_s": train_s["graph"],
            "speedup": train_s["eager"] / train_s["graph"], "agree": agree, "graph_faster": faster,
            "passed": agree and faster, "precision": got["graph"][0]["precision"],
            "per_seed": {arm: [{"seed": s, **r} for s, r in zip(seeds, runs)] for arm, runs in got.items()}}


def _train_command(out: Path, name: str, settings: dict) -> list[str]:
    """`mnistlab train` of `settings`: a "recipe" key is the recipe, every other key a --set."""
    recipe = ["--recipe", settings["recipe"]] if settings.get("recipe") else []
    sets = [f"--set={k}={v}" for k, v in settings.items() if k != "recipe"]
    return [sys.executable, "-m", "mnistlab", "train", *recipe, "--out", str(out), "--name", name, "--no-progress",
            *sets]


def kill_and_resume(settings: dict, *, timeout: float = 600, out: str | os.PathLike | None = None) -> dict:
    """Train `settings` (TrainConfig keys, at least 2 epochs) whole in one process, and in another
    killed after its first checkpoint and resumed in a third; compare their final state bit for bit.
    The two runs ("whole", "killed") are kept under `out` when given, else in a removed temporary folder."""

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with contextlib.nullcontext(out) if out is not None else tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        t0 = time.perf_counter()
        whole = subprocess.run(_train_command(out, "whole", settings), capture_output=True, text=True,
                               timeout=timeout, env=env)
        whole_s = time.perf_counter() - t0
        if whole.returncode != 0:
            return {"name": "kill and resume", "passed": False, "error": whole.stderr[-2000:]}
        victim = subprocess.Popen(_train_command(out, "killed", settings), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, env=env)
        marker = out / "killed" / (RunDir.LAST.removesuffix(".safetensors") + ".json")
        deadline = time.monotonic() + timeout
        while not marker.exists() and victim.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        if victim.returncode != -signal.SIGKILL or not marker.exists():
            return {"name": "kill and resume", "passed": False,
                    "error": "the run finished (or failed) before it could be killed after its first checkpoint"}
        killed_after = json.loads(marker.read_text())["epoch"]
        resumed = subprocess.run([sys.executable, "-m", "mnistlab", "train", "--resume", str(out / "killed"),
                                  "--no-progress"], capture_output=True, text=True, timeout=timeout, env=env)
        if resumed.returncode != 0:
            return {"name": "kill and resume", "passed": False, "error": resumed.stderr[-2000:]}
        a, _ = load_checkpoint(out / "whole" / RunDir.LAST)
        b, _ = load_checkpoint(out / "killed" / RunDir.LAST)
        keys = sorted(k for k in a if not k.startswith("rng/"))
        same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in keys)
        diff = max(((a[k].double() - b[k].double()).abs().max().item() for k in keys
                    if k in b and a[k].shape == b[k].shape and a[k].is_floating_point()), default=0.0)
        sa = json.loads((out / "whole" / RunDir.SUMMARY).read_text())
        sb = json.loads((out / "killed" / RunDir.SUMMARY).read_text())
    return {"name": f"{sa['model']} {settings.get('epochs')} epochs, killed after epoch "
                    f"{killed_after} and resumed, vs uninterrupted",
            "bit_identical": same, "max_abs_diff": diff, "whole_test_acc": sa["test_acc"],
            "resumed_test_acc": sb["test_acc"], "whole_wall_s": whole_s, "passed": same,
            "precision": sa["precision"]["chosen"]}


@suite
def bench_gpu(quick: bool = False) -> list[dict]:
    """The CUDA-graph path against the eager one (fast-gpu over seeds), and an M5 run with EMA and
    clipping through the graph killed and resumed against an uninterrupted one; needs a CUDA GPU."""
    if not torch.cuda.is_available():
        return [{"name": "GPU self-check", "passed": None, "skipped": "no CUDA device: nothing was run"}]
    seeds = [0, 1] if quick else [0, 1, 2]
    rows = [graph_against_eager("fast-gpu", seeds, device="cuda")]
    m5 = {"recipe": "an2020-m5", "epochs": 2, "ema": 0.999, "grad_clip": 1.0, "cuda_graphs": True,
          "channels_last": True, "deterministic": True, "device": "cuda", "validation": 0,
          "train_subset": 12000 if quick else 0}
    rows.append(kill_and_resume(m5))
    rows.append({"name": "GPU self-check", "passed": all(r["passed"] for r in rows),
                 "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
                 "cuda": torch.version.cuda})
    return rows
