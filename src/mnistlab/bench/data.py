"""The data suite: loading the bundled MNIST, cold and warm, against the reference every tutorial writes."""

from __future__ import annotations

import gzip
import os
import tempfile
from pathlib import Path

import numpy as np

from .. import data
from ..data import paths
from .registry import suite, timeit


@suite
def bench_data(quick: bool = False) -> list[dict]:
    """Loading the bundled MNIST into tensors: cold (gunzip + verify), warm (verified decoded cache),
    against the reference every tutorial writes (gzip.open + np.frombuffer, no verification)."""

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
