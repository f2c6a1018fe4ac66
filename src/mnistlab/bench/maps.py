"""The maps suite: how long `mnistlab map` takes for the whole MNIST test set (10,000 images), for
both methods (UMAP, t-SNE) and both feature kinds (raw pixels; the packaged default model's learned
features), each as a user runs it: a fresh `mnistlab map` process, so the figure includes the
import and numba's compilation that every new process pays. `embed_s` is the embedding alone (PCA
to 50 dimensions, neighbours, layout), `command_s` the whole command (loading, features, files).
The reference is UMAP of the pixels; `separation_5nn` is the leave-one-out 5-NN accuracy on the map.

    mnistlab bench maps            # about 4 minutes on 2 CPU cores
    mnistlab bench maps --quick    # 2,000 images
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..models.default import DEFAULT_MODEL
from .registry import suite


@suite
def bench_maps(quick: bool = False) -> list[dict]:
    n = 2000 if quick else 10000
    rows, ref = [], None
    with tempfile.TemporaryDirectory(prefix="mnistlab-bench-maps-") as tmp:
        for method in ("umap", "tsne"):
            for features in ("pixels", "penultimate"):
                out = Path(tmp) / f"{method}-{features}"
                # with the model either way: its predictions mark the mistakes on the pixel map too
                command = [sys.executable, "-m", "mnistlab", "map", str(DEFAULT_MODEL), "--features", features,
                           "--method", method, "--n", str(n), "--out", str(out), "--quiet"]
                t0 = time.perf_counter()
                subprocess.run(command, check=True, capture_output=True, text=True)
                command_s = time.perf_counter() - t0
                m = json.loads((out / "map.json").read_text())
                ref = ref or m["embed_s"]
                rows.append({"name": f"{method} of {features}", "n": m["n"], "dimensions": m["dimensions"],
                             "pca_first": m["settings"]["pca_first"], "threads": m["threads"], "seed": m["seed"],
                             "embed_s": m["embed_s"], "command_s": command_s, "embed_vs_umap_pixels": m["embed_s"] / ref,
                             "separation_5nn": m["separation_5nn"]})
    return rows
