"""Pretraining without labels: a model's feature extractor learned from the training images alone.

    mnistlab pretrain --recipe fast --dataset mnist --epochs 5          # writes runs/pretrain-fast-mnist-s0/
    mnistlab transfer-curve --source runs/pretrain-fast-mnist-s0 --dataset mnist

Contrastive (SimCLR, Chen et al. 2020, kept small): each image is augmented twice (rotation, shift,
zoom, elastic distortion: the engine's own batched augmentation); the features of both views go
through a small projection MLP, and the NT-Xent loss pulls the two views of an image together and
pushes the other 2N-2 images of the batch away. Labels are never read. The validation holdout is left
out as in every run, so a probe's validation numbers stay honest.

The result is an ordinary run directory whose best.safetensors holds the model (its classifier head
untrained) for `--init-from`; the projection MLP, which only the loss needs, is dropped (SimCLR's
finding: the features before it probe better than those after).
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from ..data.normalization import to_unit
from ..errors import MnistlabError
from ..models import count_parameters, create_model_from
from ..models.heads import head_modules, penultimate
from ..progress import progress_bar
from ..rundir import RunDir
from . import augment, config
from .setup import (
    epoch_seed,
    load_data,
    model_meta,
    open_run,
    save_weights,
    set_up,
    summary_base,
)

METHODS = ("contrastive",)
VIEWS = augment.Augment(rotate=15.0, translate=0.15, zoom=0.2, elastic_alpha=20.0, elastic_sigma=4.0)


class Projector(nn.Module):
    def __init__(self, dim: int, hidden: int = 256, out: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, out))

    def forward(self, h):
        return self.net(h)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss: for each of the 2N views, cross-entropy of finding its partner among the other 2N-1."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    n = len(z1)
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, partner)


def pretrain(cfg, method: str = "contrastive", temperature: float = 0.2, quiet: bool = False) -> dict:
    """Pretrain `cfg.model`'s features on `cfg.dataset`'s training images (no labels); the run's summary."""
    if method not in METHODS:
        raise MnistlabError(f"method={method!r}: expected one of {', '.join(METHODS)}")
    if not 0 < temperature <= 10:
        raise MnistlabError(f"temperature={temperature!r}: expected a number in (0, 10]")
    config.validate(cfg)
    if cfg.init_from or cfg.labels_per_class or cfg.freeze.strip() not in ("", "none"):
        raise MnistlabError("pretrain starts from random weights and reads no labels: unset init_from, "
                            "labels_per_class and freeze")
    if cfg.batch_size < 2:
        raise MnistlabError(f"batch_size={cfg.batch_size}: contrastive pretraining needs at least 2 images a batch")
    t_start = time.perf_counter()
    env = set_up(cfg, quiet)
    data = load_data(cfg, env)
    torch.manual_seed(cfg.seed)
    model = create_model_from(cfg.model, data.in_shape, data.dataset.num_classes, cfg.model_args).to(env.device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    device = env.device
    heads = head_modules(cfg.model, data.in_shape, cfg.model_args)

    def features(x):
        return penultimate(model, x, heads)

    torch.manual_seed(cfg.seed)
    with torch.no_grad():
        dim = features(torch.zeros(2, *data.in_shape, device=device)).shape[1]
    projector = Projector(dim).to(device)
    params = [p for n, p in model.named_parameters() if not any(n.startswith(h + ".") for h in heads)]
    opt = torch.optim.Adam(params + list(projector.parameters()), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = len(data.train_x) // cfg.batch_size  # whole batches: the loss's negatives need them
    if steps_per_epoch < 1:
        raise MnistlabError(f"batch_size={cfg.batch_size} is larger than the {len(data.train_x)} training images")
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch,
                                                pct_start=cfg.warmup)
    run = open_run(cfg, env, data, {"pretraining": method, "temperature": temperature, "views": VIEWS.as_dict(),
                                    "params": count_parameters(model)})
    env.say(f"pretrain {run}: {cfg.model} features ({dim}-d) on {len(data.train_x)} unlabelled {cfg.dataset} images, "
            f"{method}, batch {cfg.batch_size}, {cfg.epochs} epoch(s)")
    history = []
    t_train = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        projector.train()
        gen = torch.Generator(device=device).manual_seed(epoch_seed(cfg.seed, epoch, 1))  # the views' draws
        order = torch.randperm(len(data.train_x), generator=torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch, 0)))
        total = torch.zeros((), device=device)
        with progress_bar(steps_per_epoch, f"epoch {epoch}/{cfg.epochs}", unit="step",
                          enabled=cfg.progress and not quiet) as bar:
            for i in range(steps_per_epoch):
                idx = order[i * cfg.batch_size:(i + 1) * cfg.batch_size].to(device)
                x = to_unit(data.train_x[idx])
                if x.ndim == 3:
                    x = x.unsqueeze(1)
                views = [data.norm.apply(augment.augment(x, VIEWS, gen)) for _ in range(2)]
                if cfg.channels_last:
                    views = [v.contiguous(memory_format=torch.channels_last) for v in views]
                h = features(torch.cat(views))  # one forward for both views: BatchNorm sees them together
                z1, z2 = projector(h).chunk(2)
                loss = nt_xent(z1, z2, temperature)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.detach()
                bar.update(1)
        row = {"epoch": epoch, "contrastive_loss": (total / steps_per_epoch).item(), "epoch_s": time.perf_counter() - t0}
        if not math.isfinite(row["contrastive_loss"]):
            raise MnistlabError(f"pretraining diverged at epoch {epoch} (loss {row['contrastive_loss']})",
                                hint="lower the learning rate")
        history.append(row)
        run.append_log(row)
        env.say(f"epoch {epoch}/{cfg.epochs}  contrastive loss {row['contrastive_loss']:.4f}  {row['epoch_s']:.1f}s")
    model.eval()
    meta = {**model_meta(cfg, data, model), "epoch": cfg.epochs, "pretraining": method}
    save_weights(run.best, model, meta)
    summary = {**summary_base(cfg, env, data, run, count_parameters(model)),
               "pretraining": {"method": method, "temperature": temperature, "views": VIEWS.as_dict(),
                               "final_loss": history[-1]["contrastive_loss"], "feature_dim": dim},
               "epochs_run": len(history), "val_acc": None, "test_acc": None, "test_evaluated": False,
               "train_s": time.perf_counter() - t_train, "wall_s": time.perf_counter() - t_start}
    run.write_json(RunDir.SUMMARY, summary)
    env.say(f"features saved in {run.best} (classifier head untrained: probe or fine-tune it with --init-from {run})")
    return summary
