"""The infer suite: predictions per second of the default model, PyTorch against ONNX Runtime."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from .. import data
from ..models.default import DEFAULT_MODEL
from ..models.inference import BATCH_SIZE, UNRECORDED_BATCH_SIZE
from ..models.predictor import load_predictor
from ..serving.onnx_export import export
from .registry import suite, timeit


@suite
def bench_infer(quick: bool = False) -> list[dict]:
    """Predictions per second of the default model on real MNIST test images, batch 1 and batch 1024,
    in PyTorch (the reference) and ONNX Runtime, on this machine's CPU cores; and the whole test set
    as `evaluate` runs it, in batches of 256 (the default) against 2,000 (the default before)."""

    images = data.load("mnist").test.images
    predictor = load_predictor(DEFAULT_MODEL)
    reps = {1: 200 if quick else 2000, 1024: 5 if quick else 30}
    rows = []
    with torch.inference_mode():
        for batch, n in reps.items():
            x = images[:batch]
            t = timeit(lambda: predictor.probs(x), repeat=n, warmup=5)
            rows.append({"name": f"pytorch batch {batch}", "predictions_per_s": batch / t["median_s"],
                         "latency_ms_median": t["median_s"] * 1000, "runs": n})
        for batch in (UNRECORDED_BATCH_SIZE, BATCH_SIZE):
            t = timeit(lambda: predictor.probs(images, batch_size=batch), repeat=1 if quick else 5, warmup=1)
            rows.append({"name": f"pytorch test set, batches of {batch}", "predictions_per_s": len(images) / t["median_s"],
                         "latency_ms_median": t["median_s"] * 1000, "runs": 1 if quick else 5})
        rows[-1]["ratio_to_pytorch"] = rows[-1]["predictions_per_s"] / rows[-2]["predictions_per_s"]
        rows[-2]["ratio_to_pytorch"] = 1.0
    try:
        import onnxruntime as ort

    except ImportError:
        return rows
    with tempfile.TemporaryDirectory() as tmp:
        path = export(DEFAULT_MODEL, out=Path(tmp) / "default.onnx")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for batch, n in reps.items():
            x = data.to_unit(images[:batch]).numpy()  # the ONNX graph takes [0,1] images
            t = timeit(lambda: session.run(None, {"images": x}), repeat=n, warmup=5)
            rows.append({"name": f"onnxruntime batch {batch}", "predictions_per_s": batch / t["median_s"],
                         "latency_ms_median": t["median_s"] * 1000, "runs": n})
    for row in rows:
        if "ratio_to_pytorch" in row:
            continue
        ref = next(r for r in rows if r["name"] == f"pytorch batch {row['name'].split()[-1]}")
        row["ratio_to_pytorch"] = row["predictions_per_s"] / ref["predictions_per_s"]
    return rows
