"""Benchmarks: `mnistlab bench [SUITE...]` runs suites in one process, prints a table, writes JSON.

Each suite compares mnistlab's path against a reference measured in the same process and reports
the ratio; absolute times are for the machine named in the JSON (they only transfer on a GPU).
Warm-up runs are discarded; each figure is the median of repeated runs, with min and max.

    mnistlab bench data          # load time of the bundled MNIST: cold, warm, and the Keras-style reference
"""

from __future__ import annotations

import gzip
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from . import __version__, atomic

SUITES: dict[str, Callable[..., list[dict]]] = {}


def suite(func):
    """Register a benchmark suite under its function name (less the `bench_` prefix)."""
    SUITES[func.__name__.removeprefix("bench_")] = func
    return func


def machine_info() -> dict:
    info = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "mnistlab": __version__,
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


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


@suite
def bench_data(quick: bool = False) -> list[dict]:
    """Loading the bundled MNIST into tensors: cold (gunzip + verify), warm (verified decoded cache),
    against the reference every tutorial writes (gzip.open + np.frombuffer, no verification)."""
    from . import data, paths

    repeat = 3 if quick else 7
    spec_dir = paths.BUNDLED_DIR / "mnist"

    def reference():  # keras.datasets.mnist.load_data(), in essence
        out = []
        for stem, offset in (("train-images-idx3-ubyte", 16), ("train-labels-idx1-ubyte", 8),
                             ("t10k-images-idx3-ubyte", 16), ("t10k-labels-idx1-ubyte", 8)):
            with gzip.open(spec_dir / f"{stem}.gz", "rb") as f:
                out.append(np.frombuffer(f.read(), np.uint8, offset=offset))
        return out

    rows = []
    ref = timeit(reference, repeat=repeat)
    rows.append({"name": "reference: gzip + np.frombuffer (no checks)", **ref})
    saved = os.environ.get("MNISTLAB_CACHE_DIR")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MNISTLAB_CACHE_DIR"] = tmp
        try:
            def cold():  # an empty decoded cache every time: gunzip + SHA-256 + decode
                for p in Path(tmp).glob("decoded/*"):
                    p.unlink()
                return data.load("mnist", download=False)

            rows.append({"name": "mnistlab.load cold (gunzip, verify)", **timeit(cold, repeat=repeat)})
            rows.append({"name": "mnistlab.load warm (verified cache)",
                         **timeit(lambda: data.load("mnist", download=False), repeat=repeat)})
        finally:
            if saved is None:
                os.environ.pop("MNISTLAB_CACHE_DIR", None)
            else:
                os.environ["MNISTLAB_CACHE_DIR"] = saved
    for row in rows:
        row["ratio_to_reference"] = row["median_s"] / ref["median_s"]
    return rows


def bench(suites: list[str] | None = None, *, out_dir: str | os.PathLike = "bench-results", quick: bool = False) -> dict:
    """Run the named suites (all by default), print a table per suite and write `<out_dir>/<suite>.json`."""
    from .errors import MnistlabError

    names = suites or list(SUITES)
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        raise MnistlabError(f"unknown benchmark suite(s) {', '.join(unknown)}: expected {', '.join(SUITES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    print(f"machine: {machine['cpu']} ({machine['cpu_count']} cores, {machine['torch_threads']} torch threads), "
          f"torch {machine['torch']}, cuda: {machine['cuda']}")
    results = {}
    for name in names:
        rows = SUITES[name](quick=quick)
        results[name] = rows
        print(f"\n== {name} ==")
        print_rows(rows)
        payload = {"suite": name, "machine": machine, "quick": quick, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                   "rows": rows}
        path = out / f"{name}.json"
        atomic.write_text(path, json.dumps(payload, indent=2))
        print(f"wrote {path}")
    return results


def print_rows(rows: list[dict]) -> None:
    keys = [k for k in rows[0] if k != "name"]
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
