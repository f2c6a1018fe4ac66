"""The sota suite: `mnistlab sota`'s whole study (An et al.'s M3/M5/M7, both protocols, two-level
ensembles, eager vs CUDA-graph throughput) in `<out>/sota-study`, resumable like the command.

On a CPU even one M3 epoch takes minutes, so there the suite runs the study at smoke scale (one
epoch on 1,200 images, seeds 0-1): it checks the pipeline end to end, not the accuracy. `--quick`
does the same on a GPU. The full study needs a GPU: `mnistlab bench sota` there, or
`mnistlab sota --out DIR` with any settings."""

from __future__ import annotations

from pathlib import Path

import torch

from ..studies.sota_study import Plan, run_study
from .registry import suite


@suite
def bench_sota(quick: bool = False, out_dir: str = "bench-results") -> list[dict]:
    full = torch.cuda.is_available() and not quick
    plan = Plan() if full else Plan(seeds=[0, 1], overrides={"epochs": "1", "train_subset": "1200"})
    name = "sota-study" if full else "sota-study-smoke"
    results = run_study(Path(out_dir) / name, plan, quiet=False, throughput_steps=50 if full else 3)
    rows = [{**r, "scale": "full" if full else "smoke (1 epoch, 1,200 images: not an accuracy figure)"}
            for r in results["rows"]]
    rows += [{"name": f"{t['model']} training, {t['path']}", "images_per_s": t["images_per_s"],
              "precision": t["precision"], "device": t["device"], **({"speedup": t["speedup"]} if "speedup" in t else {})}
             for t in results["throughput"]]
    return rows
