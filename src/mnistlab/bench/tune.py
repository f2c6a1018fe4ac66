"""The tune suite: how much faster several worker processes finish the same search.

The same study (the `fast` recipe over the packaged `fast` space, on 8,000 training images, random
sampler, no pruning: every trial costs the same) run three ways in fresh studies: one worker with
one thread per trial (the reference), one worker with all cores, and one worker per core with one
thread each sharing one SQLite study. The speedup is the row's trials per minute over the reference's.
"""

from __future__ import annotations

import os
import tempfile
import time

from . import suite


@suite
def bench_tune(quick: bool = False) -> list[dict]:
    from ..tuning.study import tune

    cores = os.cpu_count() or 1
    trials = 4 if quick else 8
    layouts = [("1 worker x 1 thread (reference)", 1, 1), (f"1 worker x {cores} threads", 1, cores),
               (f"{cores} workers x 1 thread, one SQLite study", cores, 1)]
    rows, ref_rate = [], None
    with tempfile.TemporaryDirectory(prefix="mnistlab-bench-tune-") as tmp:
        for name, workers, threads in layouts:
            t0 = time.perf_counter()
            s = tune("fast", "fast", trials=trials, workers=workers, sampler="random", pruner="none", seed=0,
                     out=tmp, study=f"w{workers}-t{threads}", quiet=True,
                     overrides={"train_subset": "8000", "threads": str(threads)})
            wall = time.perf_counter() - t0
            finished = s["trials"]["complete"] + s["trials"]["pruned"]  # a second worker may finish one more
            rate = finished / wall
            ref_rate = ref_rate or rate
            rows.append({"name": name, "trials": finished, "seconds": wall, "trials_per_min": 60 * rate,
                         "speedup_vs_reference": rate / ref_rate,
                         "best_val_acc": s["chosen"]["val_acc"]})
    return rows
