"""The training engine: one loop for every model, recipe and dataset, read top to bottom.

    mnistlab train --recipe seed-cnn
    mnistlab train --model m5 --dataset fashion-mnist --epochs 30 --set augment=an2020
    mnistlab train --resume runs/seed-cnn-mnist-s0
    torchrun --nproc_per_node 2 -m mnistlab train --recipe seed-mlp      # data-parallel

The whole dataset sits on the device as uint8. Each epoch draws a permutation from a generator
seeded by (seed, epoch); each step gathers its batch by index, scales it to [0,1], augments it in
one batched grid sample, normalises it, and takes an optimizer step. Seeding per epoch makes a
resumed run draw exactly what an uninterrupted one would.

A run directory holds: config.json (resolved), log.jsonl (a header with versions and hardware, then
one line per epoch), last.safetensors (full state, for resume), best.safetensors (the weights with
the best validation accuracy, for evaluation), summary.json (the final numbers; test evaluated once).

Data-parallel: under torchrun each process takes every WORLD_SIZE-th example of the epoch's
permutation; `batch_size` is the global batch (each process runs batch_size / WORLD_SIZE), and the
learning rate applies to that global batch unchanged, so one process and N processes follow the
same optimisation up to floating-point summation order. Only rank 0 writes files.
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from .. import __version__
from ..data import load
from ..data.normalization import Normalization, to_unit
from ..errors import MnistlabError
from ..models import checkpoint, count_parameters, create_model
from ..models.inference import accuracy_and_loss, batched_logits
from . import config as config_mod
from .augment import augment
from .config import TrainConfig

# ----------------------------------------------------------------------------------------------
# Environment: processes, device, seeds


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_kind: str) -> Dist:
    """Join the torchrun process group if launched by torchrun (gloo on CPU, NCCL on GPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    d = Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return d


def pick_device(name: str, d: Dist) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise MnistlabError(f"device={name!r} but this torch has no CUDA device",
                                hint="use --device cpu (or auto)")
        if d.world > 1:
            name = f"cuda:{d.local_rank}"
        elif name == "cuda":
            name = f"cuda:{torch.cuda.current_device()}"
        torch.cuda.set_device(torch.device(name))
    elif name != "cpu":
        raise MnistlabError(f"device={name!r}: expected auto, cpu, cuda or cuda:N")
    return torch.device(name)


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """A distinct, reproducible seed per (run seed, epoch, stream)."""
    return (seed * 1_000_003 + epoch * 7919 + stream * 104_729) % (2**63 - 1)


@functools.lru_cache(maxsize=1)
def environment() -> dict:
    """Versions and hardware, for the log header and the summary (read once per process)."""
    env = {"mnistlab": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
           "platform": platform.platform(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    try:
        here = Path(__file__).resolve().parent
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if commit.returncode == 0:
            env["commit"] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return env


# ----------------------------------------------------------------------------------------------
# Optimizer and schedule


def make_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay, fused=True if cfg.cuda_graphs else None)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.momentum, 0.999), weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.momentum, 0.999), weight_decay=cfg.weight_decay)
    return torch.optim.Adadelta(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_schedule(cfg: TrainConfig, opt, steps_per_epoch: int):
    """(scheduler or None, whether it steps per batch)."""
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_size, gamma=cfg.gamma), False
    if cfg.schedule == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(opt, gamma=cfg.gamma), False
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total), True
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg.lr, total_steps=total, pct_start=cfg.warmup,
            # a captured step bakes momentum in, so the CUDA-graph path keeps it constant
            cycle_momentum=cfg.optimizer in ("sgd", "adam", "adamw") and not cfg.cuda_graphs), True
    return None, False


# ----------------------------------------------------------------------------------------------
# One training step as a CUDA graph


class CudaGraphStep:
    """Forward, loss, backward and a fused SGD step of one full batch, captured once as a CUDA graph
    and replayed per step: one launch instead of a hundred, for small models whose GPU time is
    dwarfed by Python and kernel-launch overhead.

    The batch is gathered inside the graph from a static index buffer; the learning rate is a
    device tensor the scheduler fills in place (momentum, baked into the graph, stays constant: a
    one-cycle schedule does not cycle it on this path). Capture needs a few eager warm-up steps; the
    model and optimizer state are restored afterwards (momentum buffers zeroed, which is what a fresh
    SGD starts from), so the warm-up leaves no trace in the run.
    """

    def __init__(self, model, opt, train_x, train_y, norm, cfg: TrainConfig, batch: int, device):
        self.idx = torch.zeros(batch, dtype=torch.long, device=device)
        for group in opt.param_groups:
            group["lr"] = torch.tensor(float(group["lr"]), device=device)
        self.model, self.opt = model, opt

        def step():
            xb = norm.apply(to_unit(train_x[self.idx]))
            if cfg.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16",
                                cache_enabled=False):
                logits = model(xb)
            loss = F.cross_entropy(logits.float(), train_y[self.idx], label_smoothing=cfg.label_smoothing)
            loss.backward()
            opt.step()
            return loss.detach(), logits.detach()

        saved = {k: v.clone() for k, v in model.state_dict().items()}
        self.idx.copy_(torch.arange(batch, device=device) % train_x.shape[0])
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                opt.zero_grad(set_to_none=True)
                step()
        torch.cuda.current_stream().wait_stream(side)
        with torch.no_grad():  # undo the warm-up: the run starts from the state it was given
            for k, v in model.state_dict().items():
                v.copy_(saved[k])
            for state in opt.state.values():
                for v in state.values():
                    if torch.is_tensor(v) and v.is_floating_point():
                        v.zero_()
        self.graph = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(self.graph):
            self.loss, self.logits = step()

    def __call__(self, idx: torch.Tensor):
        self.idx.copy_(idx)
        self.graph.replay()
        return self.loss, self.logits


# ----------------------------------------------------------------------------------------------
# Run directories


def run_name(cfg: TrainConfig) -> str:
    return cfg.name or f"{cfg.recipe or cfg.model}-{cfg.dataset}-s{cfg.seed}"


def new_run_dir(cfg: TrainConfig) -> Path:
    """A fresh run directory; never an existing one (a default name gets -2, -3, ... instead)."""
    base = Path(cfg.out) / run_name(cfg)
    if cfg.name:
        if base.exists():
            raise MnistlabError(f"run directory {base} already exists",
                                hint=f"resume it with `mnistlab train --resume {base}`, or choose another --name")
        return base
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def read_run_config(run_dir: Path) -> TrainConfig:
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise MnistlabError(f"{run_dir} is not a run directory (no config.json)",
                            hint="pass the directory `mnistlab train` printed, e.g. runs/seed-cnn-mnist-s0")
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise MnistlabError(f"{path}: not valid JSON ({exc})") from None
    return config_mod.resolve(None, values)


# ----------------------------------------------------------------------------------------------
# The loop


def train(cfg: TrainConfig, *, resume: str | os.PathLike | None = None, quiet: bool = False) -> dict:
    """Train one model as `cfg` says (or continue the run in `resume`); return its summary."""
    t_start = time.perf_counter()
    config_mod.validate(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device_kind = "cuda" if (cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())) \
        else "cpu"
    d = setup_distributed(device_kind)
    device = pick_device(cfg.device, d)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest kernels once
    say = print if (d.main and not quiet) else (lambda *a, **k: None)
    if cfg.batch_size % d.world:
        raise MnistlabError(f"batch_size={cfg.batch_size} is not divisible by the {d.world} processes",
                            hint="batch_size is the global batch; choose a multiple of the process count")

    # --- data: whole splits on the device, as uint8 ---
    ds = load(cfg.dataset, data_dir=cfg.data_dir or None)
    train_split, val_split = ds.train, None
    if cfg.validation:
        train_split, val_split = ds.train.split(validation=cfg.validation, seed=0, stratified=True)
    if cfg.train_subset:
        train_split = train_split.subset(torch.arange(min(cfg.train_subset, len(train_split))), name="train-subset")
    mean, std = ds.stats
    norm = Normalization(cfg.normalize, mean, std)
    train_x = train_split.images.to(device)
    train_y = train_split.labels.to(device)
    in_shape = (ds.spec.channels, *ds.image_shape[-2:])

    # --- model, optimizer, schedule, EMA: all seeded ---
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, in_shape, ds.num_classes, **cfg.model_args).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    n_params = count_parameters(model)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True) if cfg.ema else None
    opt = make_optimizer(cfg, model.parameters())
    per_rank_batch = cfg.batch_size // d.world
    n_rank = len(train_split) // d.world  # every process takes the same number of examples
    steps_per_epoch = math.ceil(n_rank / per_rank_batch)
    sched, sched_per_step = make_schedule(cfg, opt, steps_per_epoch)
    forward_model = torch.compile(model) if cfg.compile else model
    if d.world > 1:
        forward_model = torch.nn.parallel.DistributedDataParallel(
            forward_model, device_ids=[device.index] if device.type == "cuda" else None)
    aug = config_mod.augmentation(cfg)

    # --- run directory, or the state of the run being resumed ---
    start_epoch, history, best = 1, [], {"val_acc": -1.0, "epoch": 0}
    if resume is not None:
        run_dir = Path(resume)
        start_epoch, history, best = _restore(run_dir / "last.safetensors", model, ema, opt, sched, cfg, device)
        if d.main:
            _truncate_log(run_dir / "log.jsonl", start_epoch - 1)
        say(f"resuming {run_dir} after epoch {start_epoch - 1}")
    else:
        run_dir = new_run_dir(cfg) if d.main else Path(cfg.out) / run_name(cfg)
        if d.main:
            run_dir.mkdir(parents=True)
            checkpoint.atomic_write_text(run_dir / "config.json", json.dumps(cfg.as_dict(), indent=2))
            header = {"event": "start", "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": sys.argv,
                      "environment": environment(), "world_size": d.world, "device": str(device),
                      "params": n_params, "dataset_hash": ds.content_hash}
            with open(run_dir / "log.jsonl", "w") as f:
                f.write(json.dumps(header) + "\n")
    if d.world > 1:  # every rank learns the directory rank 0 chose
        box = [str(run_dir)]
        dist.broadcast_object_list(box, src=0)
        run_dir = Path(box[0])
    say(f"run {run_dir}: {cfg.model} ({n_params:,} parameters) on {cfg.dataset} "
        f"({len(train_split)} train, {len(val_split) if val_split else 0} val), {device}, {d.world} process(es)")

    meta_common = {
        "config": cfg.as_dict(), "model": cfg.model, "model_args": cfg.model_args, "in_shape": list(in_shape),
        "num_classes": ds.num_classes, "classes": list(ds.classes), "dataset": ds.name,
        "dataset_hash": ds.content_hash, "normalization": norm.as_dict(), "params": n_params,
    }
    log_path = run_dir / "log.jsonl"
    tb = _tensorboard(run_dir) if (cfg.tensorboard and d.main) else None
    eval_model = ema.module if ema is not None else model
    graph_step = None
    if cfg.cuda_graphs:
        if device.type != "cuda" or d.world > 1:
            raise MnistlabError("cuda_graphs=true needs one process on a CUDA device",
                                hint="turn cuda_graphs off for CPU or torchrun training")
        graph_step = CudaGraphStep(model, opt, train_x, train_y, norm, cfg, per_rank_batch, device)
    t_train = time.perf_counter()
    epochs_since_best = sum(1 for h in history if h["epoch"] > best["epoch"])
    stopped_early = False

    for epoch in range(start_epoch, cfg.epochs + 1):
        t_epoch = time.perf_counter()
        model.train()
        # Per-epoch seeds: data order, augmentation draws and dropout masks.
        order = torch.randperm(len(train_split), generator=torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch, 0)))
        order = order[: n_rank * d.world][d.rank::d.world].to(device)
        aug_gen = torch.Generator(device=device).manual_seed(epoch_seed(cfg.seed, epoch, 1))
        torch.manual_seed(epoch_seed(cfg.seed, epoch, 2))
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch}/{cfg.epochs}", unit="step", leave=False,
                   disable=not (cfg.progress and d.main and not quiet), file=sys.stderr)
        for step in range(steps_per_epoch):
            idx = order[step * per_rank_batch:(step + 1) * per_rank_batch]
            yb = train_y[idx]
            if graph_step is not None and len(idx) == per_rank_batch:
                loss, logits = graph_step(idx)
            else:
                xb = norm.apply(augment(to_unit(train_x[idx]), aug, aug_gen))
                if cfg.channels_last:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
                    logits = forward_model(xb)
                loss = F.cross_entropy(logits.float(), yb, label_smoothing=cfg.label_smoothing)
                if graph_step is None:
                    opt.zero_grad(set_to_none=True)
                else:  # the graph owns the gradient tensors: zero them in place, keep their addresses
                    opt.zero_grad(set_to_none=False)
                loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
            if sched is not None and sched_per_step:
                sched.step()
            if ema is not None:
                ema.update_parameters(model)
            loss_sum += loss.detach() * len(idx)
            correct += (logits.argmax(1) == yb).sum()
            if bar.disable is False and (step % 20 == 0 or step == steps_per_epoch - 1):
                seen = (step + 1) * per_rank_batch
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", acc=f"{correct.item() / seen:.2%}",
                                img_s=f"{seen * d.world / (time.perf_counter() - t_epoch):.0f}", refresh=False)
            bar.update(1)
        bar.close()
        if sched is not None and not sched_per_step:
            sched.step()
        if d.world > 1:
            dist.all_reduce(loss_sum)
            dist.all_reduce(correct)
        seen = n_rank * d.world
        row = {"epoch": epoch, "train_loss": loss_sum.item() / seen, "train_acc": correct.item() / seen,
               "lr": float(opt.param_groups[0]["lr"]), "epoch_s": time.perf_counter() - t_epoch}
        row["images_per_s"] = seen / row["epoch_s"]
        if val_split is not None:
            logits = batched_logits(eval_model, val_split.images, norm, batch_size=cfg.eval_batch_size,
                                    device=device, precision=cfg.precision, channels_last=cfg.channels_last)
            row["val_acc"], row["val_loss"] = accuracy_and_loss(logits, val_split.labels)
        history.append(row)
        improved = val_split is not None and row["val_acc"] > best["val_acc"]
        if improved:
            best = {"val_acc": row["val_acc"], "epoch": epoch}
            epochs_since_best = 0
        else:
            epochs_since_best += 1
        stop = bool(cfg.early_stopping) and epochs_since_best >= cfg.early_stopping
        if d.main:
            with open(log_path, "a") as f:
                f.write(json.dumps(row) + "\n")
            if tb is not None:
                for k, v in row.items():
                    if k != "epoch":
                        tb.add_scalar(k, v, epoch)
            val_text = f"  val loss {row['val_loss']:.4f} acc {row['val_acc']:.2%}" if val_split is not None else ""
            say(f"epoch {epoch}/{cfg.epochs}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.2%}"
                f"{val_text}  {row['images_per_s']:,.0f} img/s  {row['epoch_s']:.1f}s")
            if improved:
                _save_weights(run_dir / "best.safetensors", eval_model, {**meta_common, "epoch": epoch, **best})
            if epoch % cfg.checkpoint_every == 0 or epoch == cfg.epochs or stop:
                _save_state(run_dir / "last.safetensors", model, ema, opt, sched, meta_common, epoch, history, best)
        if d.world > 1:
            dist.barrier()
        if stop:
            stopped_early = True
            say(f"early stopping: no better validation accuracy for {cfg.early_stopping} epochs")
            break
    train_s = time.perf_counter() - t_train

    # --- the test set, touched once: the best-on-validation weights, or the last ---
    if val_split is not None and best["epoch"]:  # every rank: rank 0 wrote it before the last barrier
        tensors, _ = checkpoint.load(run_dir / "best.safetensors", device=device)
        eval_model.load_state_dict(checkpoint.with_prefix(tensors, "model"))
    test_logits = batched_logits(eval_model, ds.test.images, norm, batch_size=cfg.eval_batch_size, device=device,
                                 precision=cfg.precision, channels_last=cfg.channels_last)
    test_acc, test_loss = accuracy_and_loss(test_logits, ds.test.labels)
    summary = {
        "run_dir": str(run_dir), "model": cfg.model, "params": n_params, "dataset": cfg.dataset,
        "dataset_hash": ds.content_hash, "seed": cfg.seed, "recipe": cfg.recipe, "epochs_run": len(history),
        "stopped_early": stopped_early, "best_epoch": best["epoch"] or None,
        "val_acc": best["val_acc"] if best["epoch"] else None,
        "final_val_acc": history[-1].get("val_acc") if history else None,
        "test_acc": test_acc, "test_loss": test_loss, "test_errors": int(round((1 - test_acc) * len(ds.test))),
        "train_s": train_s, "wall_s": time.perf_counter() - t_start, "world_size": d.world,
        "device": str(device), "environment": environment(),
    }
    if d.main:
        if not (run_dir / "best.safetensors").exists():  # no validation split: the last weights are the result
            _save_weights(run_dir / "best.safetensors", eval_model, {**meta_common, "epoch": len(history)})
        checkpoint.atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
        say(f"test accuracy {test_acc:.2%} ({summary['test_errors']} errors in {len(ds.test)}), "
            f"{'best val ' + format(best['val_acc'], '.2%') + ' at epoch ' + str(best['epoch']) if best['epoch'] else 'no validation split'}, "
            f"{summary['wall_s']:.1f}s wall; {run_dir}")
    if tb is not None:
        tb.close()
    return summary


def _truncate_log(path: Path, last_epoch: int) -> None:
    """Drop epoch lines written after the checkpoint being resumed (a kill can fall between the two)."""
    lines = path.read_text().splitlines() if path.exists() else []
    kept = [ln for ln in lines if json.loads(ln).get("epoch", 0) <= last_epoch]
    kept.append(json.dumps({"event": "resume", "after_epoch": last_epoch, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                            "argv": sys.argv}))
    checkpoint.atomic_write_text(path, "\n".join(kept) + "\n")


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise MnistlabError("tensorboard=true needs the tensorboard package",
                            hint="pip install tensorboard, or leave tensorboard off") from None
    return SummaryWriter(str(run_dir / "tensorboard"))


def _save_weights(path: Path, model: torch.nn.Module, meta: dict) -> None:
    checkpoint.save(path, checkpoint.prefixed(model.state_dict(), "model"), {"kind": "weights", **meta})


def _save_state(path: Path, model, ema, opt, sched, meta_common: dict, epoch: int, history: list, best: dict) -> None:
    tensors = checkpoint.prefixed(model.state_dict(), "model")
    if ema is not None:
        tensors.update(checkpoint.prefixed(ema.state_dict(), "ema"))
    opt_tensors, opt_rest = checkpoint.optimizer_to_parts(opt.state_dict())
    tensors.update(opt_tensors)
    tensors["rng/torch"] = torch.get_rng_state()
    meta = {**meta_common, "kind": "state", "epoch": epoch, "history": history, "best": best,
            "optimizer": opt_rest, "scheduler": _jsonable(sched.state_dict()) if sched is not None else None}
    checkpoint.save(path, tensors, meta)


def _jsonable(value):
    """Tensors (a learning rate kept on the device for the CUDA-graph path) as plain numbers."""
    if torch.is_tensor(value):
        return value.item()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _restore(path: Path, model, ema, opt, sched, cfg: TrainConfig, device) -> tuple[int, list, dict]:
    tensors, meta = checkpoint.load(path, device=device)
    if meta.get("kind") != "state":
        raise MnistlabError(f"{path}: a weights-only checkpoint; resuming needs last.safetensors")
    changed = config_mod.differences(meta["config"], cfg.as_dict())
    if changed:
        detail = ", ".join(f"{k} (run: {meta['config'].get(k)!r}, now: {cfg.as_dict().get(k)!r})" for k in changed)
        raise MnistlabError(f"cannot resume {path.parent} with a different config: {detail}",
                            hint="resume with the run's own config (just --resume RUN_DIR), or start a new run")
    model.load_state_dict(checkpoint.with_prefix(tensors, "model"))
    if ema is not None:
        ema.load_state_dict(checkpoint.with_prefix(tensors, "ema"))
    opt.load_state_dict(checkpoint.optimizer_from_parts(tensors, meta["optimizer"]))
    if sched is not None and meta["scheduler"] is not None:
        sched.load_state_dict(meta["scheduler"])
    torch.set_rng_state(tensors["rng/torch"].cpu())
    return meta["epoch"] + 1, meta["history"], meta["best"]


def resume(run_dir: str | os.PathLike, overrides: dict | None = None, quiet: bool = False) -> dict:
    """Continue an interrupted run from its last checkpoint, with its own config."""
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    if overrides:
        for key, value in overrides.items():
            setattr(cfg, key, config_mod.coerce(key, value, source="override"))
    if not (run_dir / "last.safetensors").is_file():
        raise MnistlabError(f"{run_dir} has no last.safetensors to resume from",
                            hint="it was interrupted before its first checkpoint: start it again")
    summary_path = run_dir / "summary.json"
    if summary_path.exists():
        raise MnistlabError(f"{run_dir} already finished (summary.json exists); nothing to resume")
    return train(cfg, resume=run_dir, quiet=quiet)


def parse_seeds(text: str) -> list[int]:
    """'0-4' -> [0,1,2,3,4]; '1,3,7' -> [1,3,7]."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            if "-" in part.strip()[1:]:
                a, b = part.split("-", 1)
                seeds += list(range(int(a), int(b) + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise MnistlabError(f"--seeds {text!r}: expected a range like 0-4 or a list like 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise MnistlabError(f"--seeds {text!r}: expected distinct seeds")
    return seeds


def train_seeds(cfg: TrainConfig, seeds: list[int], quiet: bool = False) -> dict:
    """Train one run per seed under one group directory, and summarise them (mean, std, min, max)."""
    import dataclasses
    import statistics

    group = new_run_dir(dataclasses.replace(cfg, name=cfg.name or f"{cfg.recipe or cfg.model}-{cfg.dataset}-seeds"))
    group.mkdir(parents=True)
    runs = []
    for seed in seeds:
        runs.append(train(dataclasses.replace(cfg, seed=seed, out=str(group), name=f"seed-{seed}"), quiet=quiet))

    def stats(key):
        vals = [r[key] for r in runs if r.get(key) is not None]
        if not vals:
            return None
        return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                "min": min(vals), "max": max(vals), "n": len(vals)}

    summary = {"group_dir": str(group), "seeds": seeds, "model": cfg.model, "dataset": cfg.dataset,
               "recipe": cfg.recipe, "test_acc": stats("test_acc"), "val_acc": stats("val_acc"),
               "wall_s": stats("wall_s"), "runs": [r["run_dir"] for r in runs]}
    checkpoint.atomic_write_text(group / "summary.json", json.dumps(summary, indent=2))
    if not quiet:
        t = summary["test_acc"]
        print(f"{len(seeds)} seeds {seeds}: test accuracy mean {t['mean']:.2%} +- {t['std']:.2%} "
              f"(min {t['min']:.2%}, max {t['max']:.2%}); {group}")
    return summary


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """(model in eval mode, metadata) from a checkpoint file or a run directory (its best weights)."""
    from ..analysis.ensemble import resolve_checkpoint, single_model

    file = resolve_checkpoint(path)
    tensors, meta = checkpoint.load(file, device=device)
    if meta.get("kind") == "ensemble":
        raise MnistlabError(f"{file} is an ensemble", hint="use mnistlab.ensemble.load_predictor for ensembles")
    return single_model(tensors, meta, str(file)).to(device).eval(), meta

