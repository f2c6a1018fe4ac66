"""The zoo suite: training throughput and memory of every registered model."""

from __future__ import annotations

import time

import torch

from ..models import count_parameters, create_model, list_models
from .registry import device, suite, sync
from .speed import epoch_flops


@suite
def bench_zoo(quick: bool = False) -> list[dict]:
    """Training throughput (images/s, batch 128, forward+backward+Adam step, fp32 NCHW for every model
    alike, whatever precision their recipes choose) and memory of every model."""

    dev = torch.device(device())
    steps = 3 if quick else 10
    rows = []
    for name in list_models():
        model = create_model(name, (1, 28, 28), 10).to(dev)
        opt = torch.optim.Adam(model.parameters())
        x = torch.randn(128, 1, 28, 28, device=dev)
        y = torch.randint(0, 10, (128,), device=dev)

        def step():
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        step()
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        dt = (time.perf_counter() - t0) / steps
        rows.append({"name": name, "params": count_parameters(model), "precision": "fp32", "images_per_s": 128 / dt,
                     "ms_per_step": dt * 1000, "epoch_gflop": epoch_flops(name) / 1e9,
                     "peak_mem_mb": torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else None})
    return rows
