"""An exponential moving average of the weights, updated without a device sync, so a CUDA graph can
capture it with the training step.

`torch.optim.swa_utils.AveragedModel` asks `n_averaged == 0` in Python at every update: one GPU
sync per step, and an op a graph cannot capture. `EMA` keeps AveragedModel's state (its `module`
and `n_averaged`, so checkpoints and `state_dict` are unchanged) and does the same arithmetic on
the device: the first update copies the weights, each later one moves the average `1 - decay` of
the way towards them. Buffers (BatchNorm statistics) are averaged too; integer buffers (counters)
are copied.
"""

from __future__ import annotations

import torch
from torch.optim.swa_utils import AveragedModel


class EMA(AveragedModel):
    def __init__(self, model: torch.nn.Module, decay: float):
        # n_averaged must live on the model's device: a graph reads a CPU tensor once, at capture
        device = next(iter([*model.parameters(), *model.buffers()]), torch.empty(0)).device
        super().__init__(model, device=device, use_buffers=True)
        self.decay = float(decay)

    @torch.no_grad()
    def update_parameters(self, model: torch.nn.Module) -> None:
        averaged = [*self.module.parameters(), *self.module.buffers()]
        current = [*model.parameters(), *model.buffers()]
        # 1 at the first update (a copy), 1 - decay after it; a device tensor, so nothing waits for the GPU
        weight = torch.where(self.n_averaged == 0, 1.0, 1.0 - self.decay).to(torch.float32)
        floats = [(a, c.detach()) for a, c in zip(averaged, current) if a.is_floating_point()]
        if floats:  # a += weight * (c - a); not _foreach_lerp_, whose weight is a host Scalar (an .item())
            step = torch._foreach_sub([c.to(a.dtype) for a, c in floats], [a for a, _ in floats])
            torch._foreach_mul_(step, weight)
            torch._foreach_add_([a for a, _ in floats], step)
        for a, c in zip(averaged, current):
            if not a.is_floating_point():
                a.copy_(c)
        self.n_averaged += 1
