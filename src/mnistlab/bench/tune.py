"""The tune suite: how much faster several worker processes finish the same search.

The same study (the `fast` recipe over the packaged `fast` space, one epoch on the 55,000 training
images, as the real search runs it; 8,000 with --quick; random sampler, no pruning: every trial costs
about the same) run three ways in fresh studies: one worker with
one thread per trial (the reference), one worker with all cores, and one worker per core with one
thread each sharing one SQLite study. The speedup is the row's trials per minute over the reference's,
counted from the first trial's start to the end of the last of the asked-for trials (the search itself); the
whole command's seconds, which add the workers' start, the one test evaluation and the study report,
are shown beside it.
"""

from __future__ import annotations

import os
import tempfile
import time

from ..studies.tuning.search import tune
from .registry import suite


@suite
def bench_tune(quick: bool = False) -> list[dict]:
    import optuna


    cores = os.cpu_count() or 1
    trials = 4 if quick else 8
    layouts = [("1 worker x 1 thread (reference)", 1, 1), (f"1 worker x {cores} threads", 1, cores),
               (f"{cores} workers x 1 thread, one SQLite study", cores, 1)]
    rows, ref_rate = [], None
    with tempfile.TemporaryDirectory(prefix="mnistlab-bench-tune-") as tmp:
        for name, workers, threads in layouts:
            t0 = time.perf_counter()
            overrides = {"threads": str(threads)} | ({"train_subset": "8000"} if quick else {})
            s = tune("fast", "fast", trials=trials, workers=workers, sampler="random", pruner="none", seed=0,
                     out=tmp, study=f"w{workers}-t{threads}", quiet=True, overrides=overrides)
            wall = time.perf_counter() - t0
            done = [t for t in optuna.load_study(study_name=s["study"], storage=s["storage"]).trials
                    if t.datetime_complete is not None]
            # time to the `trials`-th finished trial: a worker that starts one more while the last of
            # the asked-for trials runs would otherwise add a tail of one worker computing alone
            ends = sorted(t.datetime_complete for t in done)[:trials]
            span = (ends[-1] - min(t.datetime_start for t in done)).total_seconds()
            rate = len(ends) / span
            ref_rate = ref_rate or rate
            rows.append({"name": name, "trials": len(ends), "search_s": span, "command_s": wall,
                         "trials_per_min": 60 * rate, "speedup_vs_reference": rate / ref_rate,
                         "best_val_acc": s["chosen"]["val_acc"]})
    return rows
