"""The precision suite: fp32 against bf16 autocast for the CPU recipes, paired, on this machine.

    mnistlab bench precision            # fast, seed-cnn and cpu-10min; seeds 0-4; both precisions
    mnistlab bench precision --quick    # seeds 0-1

`precision = "auto"` picks bf16 where the CPU computes it natively (AVX-512 BF16, AMX) and fp32
elsewhere. Whether bf16 is then the faster choice for models this small is a measurement, not a
rule: this suite trains each recipe in both precisions for the same seeds, alternating which goes
first per seed (so a drift in the machine's speed falls on both alike), and reports the training
seconds of each, their ratio per seed, and the test accuracy each reached. On a CPU without native
bf16 the bf16 arm is emulated and several times slower: that is what it measures there.

The budgets: `fast` is trained as its recipe says (1 epoch); `seed-cnn` and `cpu-10min` for
EPOCHS_TIMED epochs each (their per-epoch cost is what the precision changes; their full-length
accuracy is `bench speed`'s and the README's), so their accuracy column is after those epochs.
"""

from __future__ import annotations

import statistics as st

from .. import machine
from ..precision import choose
from .registry import device, suite
from .speed import _train_timed

# recipe -> epochs trained per run here (None: the recipe's own)
EPOCHS_TIMED = {"fast": None, "seed-cnn": 2, "cpu-10min": 2}


def paired(recipe: str, seeds: list[int], epochs: int | None, train=_train_timed) -> dict:
    """Both precisions for each seed, alternating the order; the per-seed rows and their summary.
    `train(recipe, seed, **overrides)` runs one timed training (a seam for the suite's own tests)."""
    overrides = {"epochs": epochs} if epochs else {}
    per_seed = []
    for i, seed in enumerate(seeds):
        order = ("fp32", "bf16") if i % 2 == 0 else ("bf16", "fp32")
        got = {p: train(recipe, seed, precision=p, **overrides) for p in order}
        per_seed.append({"seed": seed, **{f"{p}_train_s": got[p]["train_s"] for p in order},
                         **{f"{p}_test_acc": got[p]["test_acc"] for p in order},
                         "bf16_over_fp32": got["bf16"]["train_s"] / got["fp32"]["train_s"],
                         "epochs": got["fp32"]["epochs"]})
    ratios = [r["bf16_over_fp32"] for r in per_seed]
    row = {"name": f"{recipe} ({per_seed[0]['epochs']} epoch(s), seeds {seeds[0]}-{seeds[-1]})"}
    for p in ("fp32", "bf16"):
        row[f"{p}_train_s"] = st.fmean(r[f"{p}_train_s"] for r in per_seed)
        row[f"{p}_test_acc"] = st.fmean(r[f"{p}_test_acc"] for r in per_seed)
    row.update(bf16_over_fp32_mean=st.fmean(ratios), bf16_over_fp32_min=min(ratios), bf16_over_fp32_max=max(ratios),
               faster="bf16" if max(ratios) < 1 else "fp32" if min(ratios) > 1 else "neither (within noise)",
               seeds=seeds, per_seed=per_seed)
    return row


@suite
def bench_precision(quick: bool = False) -> list[dict]:
    """fp32 vs bf16 autocast training time and accuracy for fast, seed-cnn and cpu-10min, paired per seed;
    each row says what `auto` chooses on this CPU and which precision measured faster."""
    seeds = [0, 1] if quick else [0, 1, 2, 3, 4]
    auto = choose("auto", device())
    _train_timed("fast", seed=1000, precision="bf16")  # warm-up of both paths' kernels; not counted
    _train_timed("fast", seed=1000, precision="fp32")
    features = ", ".join(machine.describe()["cpu_features"])
    rows = []
    for recipe, epochs in EPOCHS_TIMED.items():
        row = paired(recipe, seeds, epochs)
        row.update(auto_chooses=auto.chosen, cpu_features=features)
        rows.append(row)
    return rows
