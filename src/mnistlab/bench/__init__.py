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
    mnistlab bench ood           # the not-a-digit score: AUROC and flag rates, digits vs letters, scribbles, shapes, other datasets
    mnistlab bench shift         # the zoo beyond MNIST test: corruptions, turned and restroked digits, other styles
    mnistlab bench gpu           # the CUDA-graph path against eager, and a killed-and-resumed graph run (needs a GPU)
    mnistlab bench sota          # An et al.'s M3/M5/M7 study (`mnistlab sota`): full on a GPU, smoke-scale on a CPU
    mnistlab bench variants      # a standard CNN on noisy, imbalanced and few-label MNIST, plain and with each remedy
    mnistlab bench startup       # seconds to the first answer of a new process: import, --help, predict

One module per suite; each registers itself with `@suite`.
"""

from __future__ import annotations

# each suite module registers itself with @suite when imported
from . import (  # noqa: F401
    attack,
    baselines,
    data,
    gpu,
    infer,
    maps,
    ood,
    precision,
    serve,
    shift,
    sota,
    speed,
    startup,
    tune,
    variants,
    zoo,
)
from .registry import SUITES, bench, suite

__all__ = ["SUITES", "bench", "suite"]
