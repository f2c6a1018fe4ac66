"""One training step, two ways: eager, or replayed as a CUDA graph. Both run `forward_loss`.

A step takes the indices of a batch into the training images (uint8, on the device), draws the
batch's augmentation from the epoch's generator, and returns (loss, logits) after updating the
weights. The CUDA-graph step captures augmentation, forward, backward, gradient clipping, the fused
optimizer update (SGD, or Adam/AdamW with `capturable`) and the EMA of the weights once and
replays them; the random numbers of each batch are drawn outside the graph (the same draws,
in the same order, as the eager step) into buffers the captured step reads (`StaticStep`).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from ..data.normalization import Normalization, to_unit
from . import augment
from .adversarial import perturb


def forward_loss(model, images_u8: torch.Tensor, labels: torch.Tensor, *, norm: Normalization, aug: augment.Augment,
                 params: augment.Draw | None, cfg, device: torch.device,
                 adversary=None, loss_fn=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, logits) of a batch: uint8 -> [0,1] -> augmented -> (made adversarial by `adversary`, a
    function of the [0,1] batch) -> normalised -> model. The loss: mean cross-entropy, or `loss_fn`
    of the float32 logits and the labels (one's own, training/losses.py)."""
    x = augment.apply(to_unit(images_u8), aug, params)
    if adversary is not None:
        x = adversary(x)
    x = norm.apply(x)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    # cache_enabled=False: autocast's weight cache must not outlive a captured graph
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16",
                        cache_enabled=not cfg.cuda_graphs):
        logits = model(x)
    if loss_fn is not None:
        return loss_fn(logits.float(), labels), logits
    return F.cross_entropy(logits.float(), labels, label_smoothing=cfg.label_smoothing), logits


def update(model, opt, loss: torch.Tensor, cfg, ema=None) -> None:
    """The tail of every step: backward, gradient clipping (foreach norms on the device: no sync, so a
    graph can hold it), the optimizer's step, the EMA of the weights."""
    loss.backward()
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    if ema is not None:
        ema.update_parameters(model)


class EagerStep:
    """Forward, backward and an optimizer step, as PyTorch runs them op by op."""

    def __init__(self, model, forward_model, opt, train_x, train_y, norm, aug, cfg, device, *,
                 keep_grads: bool = False, ema=None, loss_fn=None):
        self.model, self.forward_model, self.opt, self.ema, self.loss_fn = model, forward_model, opt, ema, loss_fn
        self.train_x, self.train_y, self.norm, self.aug, self.cfg, self.device = (train_x, train_y, norm, aug, cfg,
                                                                                   device)
        self.keep_grads = keep_grads  # a CUDA graph owns the gradient tensors: zero them in place
        self.attack_s = 0.0  # seconds spent finding adversarial batches (adversarial training)

    def __call__(self, idx: torch.Tensor, generator: torch.Generator):
        params = augment.draw(self.aug, len(idx), tuple(self.train_x.shape[-2:]), generator, self.device)
        labels = self.train_y[idx]
        adversary = None
        if self.cfg.adversarial != "none":
            def adversary(x01):
                t0 = time.perf_counter()
                out = perturb(self.forward_model, x01, labels, self.norm, self.cfg, generator)
                self.attack_s += time.perf_counter() - t0  # the attack's cost, in the run log
                return out
        loss, logits = forward_loss(self.forward_model, self.train_x[idx], labels, norm=self.norm,
                                    aug=self.aug, params=params, cfg=self.cfg, device=self.device, adversary=adversary,
                                    loss_fn=self.loss_fn)
        self.opt.zero_grad(set_to_none=not self.keep_grads)
        update(self.model, self.opt, loss, self.cfg, self.ema)
        return loss, logits


class StaticStep:
    """The step over static buffers (the batch's indices and augmentation draws): what a CUDA graph
    captures. `run` reads only the buffers, so it can be captured once and replayed; called directly
    it runs eagerly, which is how the tests check it on a CPU."""

    def __init__(self, model, opt, train_x, train_y, norm, aug, cfg, batch: int, device, *, ema=None, loss_fn=None):
        self.model, self.opt, self.train_x, self.train_y, self.ema = model, opt, train_x, train_y, ema
        self.loss_fn = loss_fn
        self.norm, self.aug, self.cfg, self.batch, self.device = norm, aug, cfg, batch, device
        self.size = tuple(train_x.shape[-2:])
        self.idx = torch.arange(batch, device=device) % train_x.shape[0]
        self.params = augment.draw(aug, batch, self.size, torch.Generator(device=device).manual_seed(0), device)

    def fill(self, idx: torch.Tensor, generator: torch.Generator) -> None:
        """Copy a batch's indices, and its draws (the eager step's, in the same order), into the buffers."""
        self.idx.copy_(idx)
        fresh = augment.draw(self.aug, self.batch, self.size, generator, self.device)
        if fresh is not None:
            for static, value in zip(self.params.tensors(), fresh.tensors()):
                static.copy_(value)

    def run(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.opt.zero_grad(set_to_none=True)
        loss, logits = forward_loss(self.model, self.train_x[self.idx], self.train_y[self.idx], norm=self.norm,
                                    aug=self.aug, params=self.params, cfg=self.cfg, device=self.device,
                                    loss_fn=self.loss_fn)
        update(self.model, self.opt, loss, self.cfg, self.ema)
        return loss.detach(), logits.detach()

    def __call__(self, idx: torch.Tensor, generator: torch.Generator):
        self.fill(idx, generator)
        return self.run()

    def rehearse(self, steps: int) -> None:
        """Run `steps` steps (what capture needs first), then put the model, EMA and optimizer back as
        they were; optimizer state the steps created is zeroed, which is where SGD momentum and Adam's
        moments and step count start. The run goes on from the state it was given."""
        modules = [self.model] + ([self.ema] if self.ema is not None else [])
        saved = [{k: v.clone() for k, v in m.state_dict().items()} for m in modules]
        saved_opt = {id(v): v.clone() for state in self.opt.state.values() for v in state.values()
                     if torch.is_tensor(v)}
        for _ in range(steps):
            self.run()
        with torch.no_grad():
            for m, values in zip(modules, saved):
                for k, v in m.state_dict().items():
                    v.copy_(values[k])
            for state in self.opt.state.values():
                for v in state.values():
                    if torch.is_tensor(v) and id(v) in saved_opt:
                        v.copy_(saved_opt[id(v)])
                    elif torch.is_tensor(v):
                        v.zero_()


class CudaGraphStep(StaticStep):
    """The static step captured once as a CUDA graph and replayed: one launch instead of a hundred,
    for small models whose GPU time is dwarfed by Python and kernel-launch overhead.

    The learning rate becomes a device tensor the scheduler fills in place (momentum, baked into the
    graph, stays constant: a one-cycle schedule does not cycle it on this path). Capture needs a few
    eager warm-up steps; the model, EMA and optimizer state are put back afterwards (state the
    optimizer had not created yet is zeroed: SGD momentum and Adam's moments and step count start
    from zero), so the warm-up leaves no trace in the run, a resumed one included. A last, partial
    batch runs eagerly.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for group in self.opt.param_groups:
            group["lr"] = torch.tensor(float(group["lr"]), device=self.device)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self.rehearse(3)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.loss, self.logits = self.run()

    def __call__(self, idx: torch.Tensor, generator: torch.Generator):
        self.fill(idx, generator)
        self.graph.replay()
        return self.loss, self.logits
