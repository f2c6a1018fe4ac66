"""The benchmark registry: `@suite` registers a suite under its name, `bench()` runs suites in one
process, prints a table per suite and writes its JSON with the machine it ran on."""

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
from ..errors import MnistlabError
from ..tables import dict_rows, print_table

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


def bench(suites: list[str] | None = None, *, out: str | os.PathLike = "bench-results", quick: bool = False) -> dict:
    """Benchmarks: print a table and write JSON.

    Run benchmark suites in one process; print a table per suite (the machine's CPU features first) and
    write OUT/SUITE.json.

    Args:
        suites: suites to run (default: all); see `mnistlab.bench.SUITES`
        out: directory for the JSON results
        quick: fewer repetitions, for a smoke run

    Examples:
        mnistlab bench data zoo infer
        mnistlab bench speed --out bench-results
    """
    names = suites or list(SUITES)
    out_dir = out
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
    print_table(*dict_rows(rows))
