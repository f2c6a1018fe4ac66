"""Benchmarks: `mnistlab bench [SUITE...]` runs suites in one process, prints a table, writes JSON.

Each suite compares mnistlab's path against a reference measured in the same process and reports
the ratio; absolute times are for the machine named in the JSON and the table's header (CPU model
and instruction-set features, GPU, versions). Warm-up runs are discarded; each figure is the median
of repeated runs, with min and max.

    mnistlab bench data          # load time of the bundled MNIST: cold, warm, and the Keras-style reference
    mnistlab bench speed         # time to 99% test accuracy: the `fast` recipe over 5 seeds vs the references
    mnistlab bench precision     # fp32 vs bf16 training time and accuracy of the CPU recipes, paired per seed
    mnistlab bench zoo           # training throughput and memory of every model in the zoo
    mnistlab bench infer         # inference throughput, batch 1 and 1024, PyTorch and ONNX Runtime
    mnistlab bench serve         # /api/predict latency at fixed arrival rates (open loop), up to saturation
    mnistlab bench attack        # adversarial images per second: PGD-40 on the 10,000 test images, FGSM, autoattack
    mnistlab bench tune          # trials per minute of one search: 1 worker vs one worker per core (shared SQLite)
    mnistlab bench baselines     # kNN, SVM, random forest, logistic regression beside the networks: accuracy, time, size
    mnistlab bench maps          # seconds of a UMAP / t-SNE map of the 10,000 test images, pixels and learned features
    mnistlab bench gpu           # the CUDA-graph path against eager, and a killed-and-resumed graph run (needs a GPU)
    mnistlab bench sota          # An et al.'s M3/M5/M7 study (`mnistlab sota`): full on a GPU, smoke-scale on a CPU

One module per suite; each registers itself with `@suite`.
"""

from __future__ import annotations

import inspect
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .. import atomic, machine

SUITES: dict[str, Callable[..., list[dict]]] = {}


def suite(func):
    """Register a benchmark suite under its function name (less the `bench_` prefix)."""
    SUITES[func.__name__.removeprefix("bench_")] = func
    return func


def timeit(fn: Callable[[], object], *, repeat: int, warmup: int = 1) -> dict:
    """Median/min/max wall seconds of `fn` over `repeat` runs after `warmup` discarded ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs": repeat}


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bench(suites: list[str] | None = None, *, out_dir: str | os.PathLike = "bench-results", quick: bool = False) -> dict:
    """Run the named suites (all by default), print a table per suite and write `<out_dir>/<suite>.json`."""
    from ..errors import MnistlabError

    names = suites or list(SUITES)
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        raise MnistlabError(f"unknown benchmark suite(s) {', '.join(unknown)}: expected {', '.join(SUITES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    described = machine.describe()
    print(f"machine: {machine.one_line(described)}")
    results = {}
    for name in names:
        func = SUITES[name]
        takes_out = "out_dir" in inspect.signature(func).parameters  # a suite that keeps files (a study) gets --out
        rows = func(quick=quick, out_dir=str(out)) if takes_out else func(quick=quick)
        results[name] = rows
        print(f"\n== {name} ==")
        print_rows(rows)
        payload = {"suite": name, "machine": described, "quick": quick, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                   "rows": rows}
        path = out / f"{name}.json"
        atomic.write_text(path, json.dumps(payload, indent=2))
        print(f"wrote {path}")
    return results


def print_rows(rows: list[dict]) -> None:
    """A table of the scalar columns (lists and details stay in the JSON)."""
    keys = []
    for r in rows:
        keys += [k for k, v in r.items() if k != "name" and k not in keys and not isinstance(v, (list, dict))]
    header = ["name", *keys]

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    table = [[fmt(r.get(k, "")) for k in header] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(header, *table)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for row in table:
        print("  ".join(x.ljust(w) for x, w in zip(row, widths)))


from . import attack, baselines, data, gpu, infer, maps, precision, serve, sota, speed, tune, zoo  # noqa: E402,F401  (each registers its suite)
