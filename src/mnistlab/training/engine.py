"""The training engine: one loop for every model, recipe and dataset, read top to bottom.

    mnistlab train --recipe seed-cnn
    mnistlab train --model m5 --dataset fashion-mnist --epochs 30 --set augment=an2020
    mnistlab train --resume runs/seed-cnn-mnist-s0
    torchrun --nproc_per_node 2 -m mnistlab train --recipe seed-mlp      # data-parallel

The whole dataset sits on the device as uint8. Each epoch draws a permutation from a generator
seeded by (seed, epoch); each step gathers its batch by index, scales it to [0,1], augments it in
one batched grid sample, normalises it, and takes an optimizer step (`steps.py`). Seeding per
epoch makes a resumed run draw exactly what an uninterrupted one would. A loss that stops being
finite ends the run with an error naming the epoch and step.

A run directory (`mnistlab.rundir`) holds the resolved config, a log (versions and hardware, then
one line per epoch), the last state (for --resume), the best-on-validation weights, and a summary
in which the test set is evaluated once, at the end.

Data-parallel: under torchrun each process takes every WORLD_SIZE-th example of the epoch's
permutation; `batch_size` is the global batch (each process runs batch_size / WORLD_SIZE), and the
learning rate applies to that global batch unchanged, so one process and N processes follow the
same optimisation up to floating-point summation order. Only rank 0 writes files.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from .. import atomic, rundir, user_code
from ..attacks import attack
from ..data import Dataset, preparation
from ..data.normalization import Normalization
from ..errors import MnistlabError
from ..models import checkpoint, count_parameters, create_model_from, keras_bridge
from ..models.classical import is_classical
from ..models.heads import head_modules
from ..models.inference import (
    EVALUATION,
    accuracy_and_errors,
    batched_logits,
    cross_entropy_of,
)
from ..models.predictor import Predictor, reference_probs
from ..pictures import figure
from ..progress import progress_bar
from ..rundir import RunDir
from ..stats import over_seeds
from . import config, setup, transfer
from .classical import train_classical
from .ema import EMA
from .losses import CROSS_ENTROPY, loss_function
from .optim import make_optimizer, make_schedule
from .setup import Data, Env, epoch_seed, load_data, model_meta, save_weights, set_up
from .steps import CudaGraphStep, EagerStep


class TrainingDiverged(MnistlabError):
    """The loss stopped being finite: the settings (a learning rate too high, often) do not train."""


NONFINITE_CHECK_EVERY = 50  # steps between checks that the loss is still finite (one device sync each)


# ----------------------------------------------------------------------------------------------
# The parts of a run


@dataclass
class Parts:
    """What training updates: the model (and its EMA), optimizer, schedule, and the step shape."""

    model: torch.nn.Module
    forward_model: torch.nn.Module  # compiled and/or wrapped by DDP
    ema: EMA | None
    opt: torch.optim.Optimizer
    sched: object
    sched_per_step: bool
    per_rank_batch: int
    n_rank: int  # examples each process takes per epoch
    steps_per_epoch: int
    transfer: dict | None = None  # init_from / freeze: what was loaded, re-initialised, frozen

    @property
    def eval_model(self) -> torch.nn.Module:
        return self.ema.module if self.ema is not None else self.model


@dataclass
class Progress:
    """How far the run has come: the epoch rows so far and the best validation epoch."""

    start_epoch: int = 1
    history: list = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"val_acc": -1.0, "epoch": 0})
    tensorboard: object = None  # a SummaryWriter, when cfg.tensorboard (rank 0 only)

    def record(self, row: dict, early_stopping: int) -> tuple[bool, bool]:
        """Add an epoch's row; (it improved on the best validation accuracy, the run should stop)."""
        self.history.append(row)
        improved = row.get("val_acc") is not None and row["val_acc"] > self.best["val_acc"]
        if improved:
            self.best = {"val_acc": row["val_acc"], "epoch": row["epoch"]}
        since_best = sum(1 for h in self.history if h["epoch"] > self.best["epoch"])
        return improved, bool(early_stopping) and since_best >= early_stopping


# ----------------------------------------------------------------------------------------------
# The story


def train(cfg: config.TrainConfig, *, resume: str | os.PathLike | None = None, quiet: bool = False,
          on_epoch=None) -> dict:
    """Train one model as `cfg` says (or continue the run in `resume`); return its summary.

    `on_epoch(row)`, if given, sees each epoch's log row (with its validation accuracy) and may end the
    run by returning a reason (a tuner's pruner does); the run then finishes like an early stop."""
    if is_classical(cfg.model):
        if resume is not None:
            raise MnistlabError(f"{resume}: a {cfg.model} run is fitted in one step; there is nothing to resume",
                                hint="train it again")
        return train_classical(cfg, quiet)
    t_start = time.perf_counter()
    config.validate(cfg)
    # the code the run records is read once and pinned: a resumed run keeps its own, a new one what it began
    # with (an edit to the file mid-run changes neither what runs nor what every checkpoint records)
    recorded = resumed_code(resume, cfg) if resume is not None else setup.code_records(cfg)
    copies = {role: RunDir(resume).code_file(role, r["path"]) for role, r in recorded.items()} if resume else None
    opened: list[RunDir] = []  # the run directory, once there is one
    try:
        with user_code.pinned(recorded, str(RunDir(resume).last) if resume else cfg.model, copies):
            return _train(cfg, resume, quiet, on_epoch, t_start, opened)
    except Exception as exc:
        if isinstance(exc, MnistlabError):  # mnistlab's own verdict (a diverged run): the run stays, to read
            raise
        left = _abandon(opened[0] if opened else None, resume)
        own = {role: r["ref"] for role, r in recorded.items()}
        error = user_code.raised_in_own_code(exc, own, "training")
        if error is not None:
            raise MnistlabError(error.message, hint=left or "fix it and run the same command again") from None
        raise


def _abandon(run: RunDir | None, resume) -> str | None:
    """After a failure: a new run that never finished an epoch leaves nothing behind (its rerun would
    be refused as an existing run); one that did stays, to resume. What to do next, in words."""
    if run is None or not run.path.is_dir():
        return None
    if resume is None and not run.last.is_file():
        shutil.rmtree(run.path, ignore_errors=True)
        return None
    return f"fix it, then resume the run: mnistlab train --resume {run.path}"


def _train(cfg, resume, quiet: bool, on_epoch, t_start: float, opened: list) -> dict:
    env = set_up(cfg, quiet)
    data = load_data(cfg, env)
    parts = build(cfg, data, env, initialise=resume is None)
    run, progress = open_run(cfg, env, data, parts, resume)
    opened.append(run)
    step = make_step(cfg, data, parts, env)
    t_train = time.perf_counter()
    stopped_early = False
    if on_epoch is not None:  # a resumed run's earlier epochs, for a caller that tracks them all
        for row in progress.history:
            on_epoch(row)
    for epoch in range(progress.start_epoch, cfg.epochs + 1):
        row = train_epoch(cfg, epoch, step, data, parts, env, run)
        if data.val is not None:  # measured as `evaluate --split val` measures it (models/inference.py)
            probs = reference_probs(parts.eval_model, data.val.images, data.norm, batch_size=cfg.eval_batch_size)
            row["val_acc"], _ = accuracy_and_errors(probs, data.val.labels)
            row["val_loss"] = cross_entropy_of(probs, data.val.labels)
            if progress.tensorboard is not None:
                tensorboard_confusion(progress.tensorboard, probs, data.val.labels, data.dataset.classes, epoch)
        improved, stop = progress.record(row, cfg.early_stopping)
        reason = f"no better validation accuracy for {cfg.early_stopping} epochs" if stop else None
        if on_epoch is not None and not stop:
            reason = on_epoch(row)
            stop = bool(reason)
        if env.main:
            save_epoch(cfg, run, row, data, parts, progress, improved, stop)
            env.say(describe_epoch(row, cfg.epochs))
        if env.world > 1:
            dist.barrier()
        if stop:
            stopped_early = reason
            env.say(f"stopping early: {reason}")
            break
    return finish(cfg, env, data, parts, run, progress, stopped_early, t_start, time.perf_counter() - t_train)


# ----------------------------------------------------------------------------------------------
# The steps of the story


def build(cfg, data: Data, env: Env, *, initialise: bool = True) -> Parts:
    """Model (from init_from's weights, with what freeze names frozen), EMA, optimizer and schedule,
    seeded; DDP around the model under torchrun. A resumed run skips the initial weights: its own
    checkpoint replaces them."""
    torch.manual_seed(cfg.seed)
    model = create_model_from(cfg.model, data.in_shape, data.dataset.num_classes, cfg.model_args).to(env.device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    heads = head_modules(cfg.model, data.in_shape, cfg.model_args)
    report = None
    if cfg.init_from and initialise:
        report = transfer.initialise(model, cfg, data.dataset.classes, heads)
    frozen = transfer.freeze(model, cfg.freeze, heads)
    if cfg.init_from or frozen:
        report = {**(report or {"source": cfg.init_from or None}), "frozen": len(frozen),
                  "frozen_norms": transfer.frozen_norms(model),
                  "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    ema = EMA(model, cfg.ema) if cfg.ema else None
    opt = make_optimizer(cfg, transfer.param_groups(model, cfg, heads))
    per_rank_batch = cfg.batch_size // env.world
    n_rank = len(data.train_y) // env.world  # every process takes the same number of examples
    steps_per_epoch = math.ceil(n_rank / per_rank_batch)
    sched, per_step = make_schedule(cfg, opt, steps_per_epoch)
    forward_model = torch.compile(model) if cfg.compile else model
    if env.world > 1:
        forward_model = torch.nn.parallel.DistributedDataParallel(
            forward_model, device_ids=[env.device.index] if env.device.type == "cuda" else None)
    return Parts(model, forward_model, ema, opt, sched, per_step, per_rank_batch, n_rank, steps_per_epoch, report)


def open_run(cfg, env: Env, data: Data, parts: Parts, resume) -> tuple[RunDir, Progress]:
    """A new run directory with its config and log header, or the run being resumed and its state."""
    if resume is not None:
        run = RunDir(resume)
        progress = restore(run, cfg, parts, env.device)
        if env.main:
            run.truncate_log(progress.start_epoch - 1, sys.argv)
        env.say(f"resuming {run} after epoch {progress.start_epoch - 1}")
    else:
        progress = Progress()
        run = setup.open_run(cfg, env, data, {"params": count_parameters(parts.model), "transfer": parts.transfer,
                                              "allocator": env.allocator})  # rank 0's directory: broadcast below
    if env.world > 1:  # every rank learns the directory rank 0 chose
        box = [str(run.path)]
        dist.broadcast_object_list(box, src=0)
        run = RunDir(box[0])
    if cfg.tensorboard and env.main:
        progress.tensorboard = tensorboard_writer(run)
    n_val = len(data.val) if data.val is not None else 0
    env.say(f"run {run}: {cfg.model} ({count_parameters(parts.model):,} parameters) on {cfg.dataset} "
            f"({len(data.train_y)} train, {n_val} val), {env.device}, {env.world} process(es); {env.precision.reason}")
    if parts.transfer and resume is None:
        env.say(describe_transfer(parts.transfer))
    if keras_bridge.describe(parts.model):
        env.say(keras_bridge.describe(parts.model))
    return run, progress


def make_step(cfg, data: Data, parts: Parts, env: Env):
    """The step the loop calls: eager, or a CUDA graph (with an eager twin for a last partial batch)."""
    aug = config.augmentation(cfg)
    cfg = dataclasses.replace(cfg, precision=env.precision.chosen)  # the steps autocast only to bf16
    loss_fn = None if cfg.loss == CROSS_ENTROPY else loss_function(cfg, data.dataset.num_classes)
    eager = EagerStep(parts.model, parts.forward_model, parts.opt, data.train_x, data.train_y, data.norm, aug, cfg,
                      env.device, keep_grads=cfg.cuda_graphs, ema=parts.ema, loss_fn=loss_fn)
    if not cfg.cuda_graphs:
        return eager
    graph = CudaGraphStep(parts.model, parts.opt, data.train_x, data.train_y, data.norm, aug, cfg,
                          parts.per_rank_batch, env.device, ema=parts.ema, loss_fn=loss_fn)
    return lambda idx, gen: graph(idx, gen) if len(idx) == parts.per_rank_batch else eager(idx, gen)


def shard(order: torch.Tensor, n_rank: int, rank: int, world: int) -> torch.Tensor:
    """Process `rank`'s examples of the epoch's `order`: every world-th one, `n_rank` in all. The shards are
    disjoint and cover the first n_rank * world, and step i of every process together takes the examples
    step i of one process with the whole batch takes: the same optimisation, split."""
    return order[: n_rank * world][rank::world]


def train_epoch(cfg, epoch: int, step, data: Data, parts: Parts, env: Env, run: RunDir) -> dict:
    """One pass over the training examples; the epoch's log row (loss, accuracy, speed)."""
    t0 = time.perf_counter()
    parts.model.train()
    transfer.hold_frozen(parts.model)
    # Per-epoch seeds: data order, augmentation draws and dropout masks.
    order = torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch, 0)))
    order = shard(order, parts.n_rank, env.rank, env.world).to(env.device)
    aug_gen = torch.Generator(device=env.device).manual_seed(epoch_seed(cfg.seed, epoch, 1))
    torch.manual_seed(epoch_seed(cfg.seed, epoch, 2))
    loss_sum = torch.zeros((), device=env.device)
    correct = torch.zeros((), device=env.device, dtype=torch.long)
    first_bad = torch.full((), -1, device=env.device, dtype=torch.long)  # first step with a non-finite loss
    batch = parts.per_rank_batch
    attack_s0 = getattr(step, "attack_s", 0.0)
    with progress_bar(parts.steps_per_epoch, f"epoch {epoch}/{cfg.epochs}", unit="step",
                      enabled=cfg.progress and env.main and not env.quiet) as bar:
        for i in range(parts.steps_per_epoch):
            idx = order[i * batch:(i + 1) * batch]
            loss, logits = step(idx, aug_gen)
            if parts.sched is not None and parts.sched_per_step:
                parts.sched.step()
            loss = loss.detach()
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), i, first_bad)
            loss_sum += loss * len(idx)
            correct += (logits.argmax(1) == data.train_y[idx]).sum()
            if (i + 1) % NONFINITE_CHECK_EVERY == 0 or i == parts.steps_per_epoch - 1:
                stop_if_diverged(first_bad, epoch, parts.steps_per_epoch, float(loss), run, env)
            if not bar.disable and (i % 20 == 0 or i == parts.steps_per_epoch - 1):
                seen = (i + 1) * batch
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", acc=f"{correct.item() / seen:.2%}",
                                img_s=f"{seen * env.world / (time.perf_counter() - t0):.0f}", refresh=False)
            bar.update(1)
    if parts.sched is not None and not parts.sched_per_step:
        parts.sched.step()
    if env.world > 1:
        dist.all_reduce(loss_sum)
        dist.all_reduce(correct)
    seen = parts.n_rank * env.world
    row = {"epoch": epoch, "train_loss": loss_sum.item() / seen, "train_acc": correct.item() / seen,
           "lr": float(parts.opt.param_groups[0]["lr"]), "epoch_s": time.perf_counter() - t0}
    row["images_per_s"] = seen / row["epoch_s"]
    if cfg.adversarial != "none":  # what finding the adversarial batches cost, of epoch_s
        row["attack_s"] = getattr(step, "attack_s", 0.0) - attack_s0
    return row


def stop_if_diverged(first_bad: torch.Tensor, epoch: int, steps: int, last_loss: float, run: RunDir, env: Env):
    """End the run with an error if any step so far had a non-finite loss (one device sync)."""
    bad = int(first_bad)
    if bad < 0:
        return
    if env.main and run is not None:
        run.append_log({"event": "diverged", "epoch": epoch, "step": bad + 1, "loss": str(last_loss)})
    raise TrainingDiverged(
        f"training diverged: the loss stopped being finite at epoch {epoch}, step {bad + 1} of {steps}; "
        f"the run ({run}) keeps its last good checkpoint",
        hint="lower the learning rate, set grad_clip, or check the data (every image alike? labels in range?)")


def describe_transfer(t: dict) -> str:
    if t.get("loaded") is None:
        return f"froze {t['frozen']} parameter tensor(s); {t['trainable_params']:,} parameters train"
    return (f"initialised from {t['source']} ({t['source_model']} on {t['source_dataset']}): {t['loaded']} tensors "
            f"loaded, head {t['head']}" + (f" (re-initialised: {', '.join(t['reinitialised'])})"
                                           if t["reinitialised"] else "")
            + (f", {len(t['skipped'])} skipped ({', '.join(t['skipped'][:4])}{' ...' if len(t['skipped']) > 4 else ''})"
               if t["skipped"] else "")
            + f"; froze {t['frozen']} parameter tensor(s); {t['trainable_params']:,} parameters train")


def transfer_record(parts: Parts, run: RunDir) -> dict | None:
    """What the run loaded and froze; for a resumed run (which did not load the source again), what its
    log's start line recorded."""
    if parts.transfer is None or "loaded" in parts.transfer or not parts.transfer.get("source"):
        return parts.transfer
    start = next((r for r in run.read_log()[0] if r.get("event") == "start"), {})
    return start.get("transfer") or parts.transfer


def describe_epoch(row: dict, epochs: int) -> str:
    val = f"  val loss {row['val_loss']:.4f} acc {row['val_acc']:.2%}" if "val_acc" in row else ""
    return (f"epoch {row['epoch']}/{epochs}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.2%}"
            f"{val}  {row['images_per_s']:,.0f} img/s  {row['epoch_s']:.1f}s")


def save_epoch(cfg, run: RunDir, row: dict, data: Data, parts: Parts, progress: Progress, improved: bool,
               stop: bool) -> None:
    """The epoch's log line, the best weights when validation improved, the full state when due."""
    run.append_log(row)
    run.write_metrics(progress.history)
    if progress.tensorboard is not None:
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)):
                progress.tensorboard.add_scalar(TENSORBOARD_TAGS.get(key, key), value, row["epoch"])
        progress.tensorboard.flush()
    meta = model_meta(cfg, data, parts.model)
    if improved:
        save_weights(run.best, parts.eval_model, {**meta, "epoch": row["epoch"], **progress.best})
    if row["epoch"] % cfg.checkpoint_every == 0 or row["epoch"] == cfg.epochs or stop:
        tensors = checkpoint.prefixed(parts.model.state_dict(), "model")
        if parts.ema is not None:
            tensors.update(checkpoint.prefixed(parts.ema.state_dict(), "ema"))
        opt_tensors, opt_rest = checkpoint.optimizer_to_parts(parts.opt.state_dict())
        tensors.update(opt_tensors)
        tensors["rng/torch"] = torch.get_rng_state()
        checkpoint.save(run.last, tensors, {**meta, "kind": "state", "epoch": row["epoch"], "history": progress.history,
                                      "best": progress.best, "optimizer": opt_rest,
                                      "scheduler": _jsonable(parts.sched.state_dict()) if parts.sched else None})


def _jsonable(value):
    """Tensors (a learning rate kept on the device for the CUDA-graph path) as plain numbers."""
    if torch.is_tensor(value):
        return value.item()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def finish(cfg, env: Env, data: Data, parts: Parts, run: RunDir, progress: Progress, stopped_early: str | bool,
           t_start: float, train_s: float) -> dict:
    """The test set, touched once (the best-on-validation weights, or the last), and the summary."""
    best = progress.best
    if data.val is not None and best["epoch"]:  # every rank: rank 0 wrote it before the last barrier
        tensors, _ = checkpoint.load(run.best, device=env.device)
        parts.eval_model.load_state_dict(checkpoint.with_prefix(tensors, "model"))
    test_acc = test_loss = test_errors = None
    at_training_precision = None
    if data.test is not None:  # exactly what `evaluate RUN` computes from best.safetensors
        test_probs = reference_probs(parts.eval_model, data.test.images, data.norm, batch_size=cfg.eval_batch_size)
        test_acc, test_errors = accuracy_and_errors(test_probs, data.test.labels)
        test_loss = cross_entropy_of(test_probs, data.test.labels)
        if env.precision.chosen != EVALUATION["precision"]:  # the same weights at the training precision, said
            at_training_precision = training_precision_figures(cfg, env, data, parts, test_errors)
        if cfg.save_outputs and env.main:  # before the summary: a finished run always has them
            save_outputs(cfg, env, data, parts, run, test_probs)
    history = progress.history
    summary = {
        **setup.summary_base(cfg, env, data, run, count_parameters(parts.model)),
        "epochs_run": len(history), "stopped_early": bool(stopped_early),
        "stopped_because": stopped_early or None, "best_epoch": best["epoch"] or None,
        "val_acc": best["val_acc"] if best["epoch"] else None,
        "final_val_acc": history[-1].get("val_acc") if history else None, "transfer": transfer_record(parts, run),
        "test_acc": test_acc, "test_loss": test_loss, "test_errors": test_errors,
        "test_evaluated": data.test is not None, "test_at_training_precision": at_training_precision,
        "train_s": train_s, "wall_s": time.perf_counter() - t_start,
    }
    if cfg.adversarial != "none" and cfg.adv_eval and env.main and data.test is not None:
        summary["robust"] = robust_accuracy(cfg, data, parts)
        env.say(f"robust accuracy {summary['robust']['accuracy']:.2%} under {summary['robust']['attack']} "
                f"({summary['robust']['n']} test images)")
    if env.main:
        if not run.best.exists():  # no validation split: the last weights are the result
            save_weights(run.best, parts.eval_model, {**model_meta(cfg, data, parts.model), "epoch": len(history)})
        run.write_json(RunDir.SUMMARY, summary)
        val = f"best val {best['val_acc']:.2%} at epoch {best['epoch']}" if best["epoch"] else "no validation split"
        test = (f"test accuracy {test_acc:.2%} ({test_errors} errors in {len(data.test)}, fp32 inference"
                + (f"; {at_training_precision['precision']} inference: {at_training_precision['errors']} errors"
                   if at_training_precision else "") + ")"
                if data.test is not None else "test set not evaluated (evaluate_test=false)")
        env.say(f"{test}, {val}, {summary['wall_s']:.1f}s wall; {run}")
    if progress.tensorboard is not None:
        progress.tensorboard.close()
    return summary


def training_precision_figures(cfg, env: Env, data: Data, parts: Parts, fp32_errors: int) -> dict:
    """The kept weights' test figures under the precision the run trained in (bf16 autocast), beside
    the fp32 figure every verb reports: how much the inference precision alone moves the count."""
    logits = batched_logits(parts.eval_model, data.test.images, data.norm, batch_size=cfg.eval_batch_size,
                            device=env.device, precision=env.precision.chosen, channels_last=cfg.channels_last)
    acc, errors = accuracy_and_errors(logits, data.test.labels)
    return {"precision": env.precision.chosen, "accuracy": acc, "errors": errors, "errors_minus_fp32": errors - fp32_errors,
            "note": f"the reported test accuracy is fp32 inference of the kept weights; {env.precision.chosen} "
                    f"inference of the same weights makes {errors} errors ({errors - fp32_errors:+d})"}


def save_outputs(cfg, env: Env, data: Data, parts: Parts, run: RunDir, test_probs: torch.Tensor) -> None:
    """The kept weights' probabilities on the validation split (if any) and the test set, with the
    labels, measured as every run figure is (models/inference.py): what `mnistlab sota` ensembles."""
    from safetensors.torch import save_file

    tensors = {"test_probs": test_probs.float().cpu(), "test_labels": data.test.labels.cpu()}
    if data.val is not None:
        val_probs = reference_probs(parts.eval_model, data.val.images, data.norm, batch_size=cfg.eval_batch_size)
        tensors.update(val_probs=val_probs.float().cpu(), val_labels=data.val.labels.cpu())
    with atomic.replacing(run.outputs) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))


def robust_accuracy(cfg, data: Data, parts: Parts) -> dict:
    """An adversarially trained model's accuracy under PGD-40 at its training radius, on the first
    `adv_eval` test images (the test set's one use, with the final weights, after the clean pass), with
    the checks against gradient masking. The strongest evaluation, `mnistlab attack RUN --method
    autoattack`, takes minutes more than a run should spend by default on a CPU."""
    meta = {"name": cfg.name or cfg.recipe or cfg.model, "classes": list(data.dataset.classes),
            "in_shape": list(data.in_shape), "num_classes": data.dataset.num_classes, "dataset": cfg.dataset}
    predictor = Predictor([parts.eval_model], [data.norm], "single", meta)
    n = min(cfg.adv_eval, len(data.test))
    r = attack(predictor, data.test.images[:n].cpu(), data.test.labels[:n].cpu(), method="pgd", eps=[cfg.adv_eps],
               steps=40, seed=0, check_n=min(n, 200))
    return {"attack": f"PGD-40 L-inf eps {cfg.adv_eps:g} (step 2.5 eps/40, random start, seed 0)", "split": "test",
            "eps": cfg.adv_eps, "n": n, "accuracy": r.accuracy[0], "clean_accuracy": r.clean_accuracy,
            "masking_checks": r.checks}


def fit(cfg, dataset: Dataset, images: torch.Tensor, labels: torch.Tensor, *,
        quiet: bool = True, after_epoch=None) -> tuple[torch.nn.Module, Normalization]:
    """Train `cfg`'s model on the given examples with the engine's own steps (augmentation, precision,
    schedule, seeds), without a run directory, a validation split or a test pass: for procedures that
    train many models on parts of the data (cross-validation, cleaning experiments). Returns the model
    in eval mode and its normalisation (the dataset's training statistics, as every run uses).
    `after_epoch(epoch, model, norm)` is called after each epoch (the model in eval mode; training
    mode is put back after), for learning curves."""
    config.validate(cfg)
    if is_classical(cfg.model):
        raise MnistlabError(f"fit trains networks; {cfg.model} is a scikit-learn model",
                            hint="use a network (e.g. --model fast) for cross-validated audits and cleaning")
    if cfg.validation or cfg.train_subset:
        raise MnistlabError("fit trains on exactly the examples it is given: set validation=0 and train_subset=0")
    if len(images) == 0 or len(images) != len(labels):
        raise MnistlabError(f"fit: {len(images)} images and {len(labels)} labels: expected the same, non-zero number")
    env = set_up(cfg, quiet)
    if env.world > 1:
        raise MnistlabError("fit runs in one process", hint="run it outside torchrun")
    mean, std = dataset.stats
    data = Data(dataset, images.to(env.device), labels.to(env.device).long(), None, dataset.test,
                Normalization(cfg.normalize, mean, std, preparation.parse(cfg.prepare)), (dataset.spec.channels, *dataset.image_shape[-2:]), None)
    parts = build(cfg, data, env)
    step = make_step(cfg, data, parts, env)
    for epoch in range(1, cfg.epochs + 1):
        train_epoch(cfg, epoch, step, data, parts, env, None)
        if after_epoch is not None:
            model = parts.eval_model
            was_training = model.training
            after_epoch(epoch, model.eval(), data.norm)
            model.train(was_training)
    return parts.eval_model.eval(), data.norm


# an epoch row's keys as TensorBoard tags: grouped as Lightning and Keras' TensorBoard callback group them
TENSORBOARD_TAGS = {"train_loss": "loss/train", "val_loss": "loss/val", "train_acc": "accuracy/train",
                    "val_acc": "accuracy/val", "lr": "learning_rate", "epoch_s": "time/epoch_s",
                    "images_per_s": "time/images_per_s", "attack_s": "time/attack_s"}


def tensorboard_writer(run: RunDir):
    """A SummaryWriter into the run's tensorboard/ folder (`tensorboard --logdir runs` shows every run)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise MnistlabError("tensorboard=true needs the tensorboard package",
                            hint="pip install 'mnistlab[tensorboard]', or leave tensorboard off") from None
    return SummaryWriter(str(rundir.output_dir(run.tensorboard_dir, run.path)))


def tensorboard_confusion(writer, probs: torch.Tensor, labels: torch.Tensor, classes, epoch: int) -> None:
    """The validation confusion matrix of the epoch as an image (rows: the true class; counts written in)."""
    n = len(classes)
    counts = torch.bincount(labels.cpu() * n + probs.argmax(1).cpu(), minlength=n * n).reshape(n, n)
    plt, fig, ax = figure(4.5, 4)
    ax.imshow(counts.numpy(), cmap="Blues")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if counts[i, j] > counts.max() / 2 else "black")
    ax.set_xticks(range(n), classes if n <= 20 else None)
    ax.set_yticks(range(n), classes if n <= 20 else None)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"validation confusion matrix, epoch {epoch}")
    writer.add_figure("confusion_matrix/val", fig, epoch)  # closes the figure


# ----------------------------------------------------------------------------------------------
# Resuming, and several seeds


def resumed_code(resume, cfg) -> dict[str, dict]:
    """The user code a run being resumed recorded (each record loaded under the consent rules when it is
    pinned), by role; checked before anything is built: the config is the checkpoint's own, and every
    piece of user code it names is one the checkpoint carries a record of (a config.json edited to name
    other code, a library function say, would otherwise run it unasked)."""
    last = RunDir(resume).last
    meta, _ = checkpoint.read_header(last)
    check_resumable(meta, cfg, last, resume)
    records = meta.get("code", {})
    for role in setup.ROLES:
        ref = getattr(cfg, role)
        if user_code.is_reference(ref) and records.get(role, {}).get("ref") != ref:
            raise MnistlabError(f"{last}: its config names {role} {ref[:200]!r}, which the checkpoint carries no record "
                                "of, so it does not run", hint="the run was altered; use one as mnistlab wrote it")
    return records


def check_resumable(meta: dict, cfg, last, run) -> None:
    """A clear error unless `last` (of `run`) holds the full training state of this very config."""
    if meta["kind"] != "state":
        raise MnistlabError(f"{last}: a weights-only checkpoint; resuming needs the full training state")
    changed = config.differences(meta["config"], cfg.as_dict())
    if changed:
        detail = ", ".join(f"{k} (run: {meta['config'].get(k)!r}, now: {cfg.as_dict().get(k)!r})" for k in changed)
        raise MnistlabError(f"cannot resume {run} with a different config: {detail}",
                            hint="resume with the run's own config (just --resume RUN_DIR), or start a new run")


def restore(run: RunDir, cfg, parts: Parts, device) -> Progress:
    """The state in `run`'s last checkpoint, loaded into `parts`; clear errors for a damaged one."""
    tensors, meta = checkpoint.load(run.last, device=device)
    check_resumable(meta, cfg, run.last, run)
    found = {k: (str(v.dtype), tuple(v.shape)) for k, v in tensors.items()}
    expected = checkpoint.prefixed(parts.model.state_dict(), "model")
    if parts.ema is not None:
        expected.update(checkpoint.prefixed(parts.ema.state_dict(), "ema"))
    checkpoint.check_state(expected, {k: v for k, v in found.items() if k.startswith(("model/", "ema/"))}, str(run.last))
    if "rng/torch" not in tensors:
        raise MnistlabError(f"{run.last}: the random-number state (rng/torch) is missing",
                            hint="the checkpoint is damaged: start the run again")
    parts.model.load_state_dict(checkpoint.with_prefix(tensors, "model"))
    if parts.ema is not None:
        parts.ema.load_state_dict(checkpoint.with_prefix(tensors, "ema"))
    try:
        parts.opt.load_state_dict(checkpoint.optimizer_from_parts(tensors, meta["optimizer"]))
        if parts.sched is not None and meta["scheduler"] is not None:
            parts.sched.load_state_dict(meta["scheduler"])
        torch.set_rng_state(tensors["rng/torch"].cpu())
    except (ValueError, KeyError, TypeError, RuntimeError, IndexError) as exc:
        raise MnistlabError(f"{run.last}: cannot restore the optimizer, schedule or random state ({exc})",
                            hint="the checkpoint is damaged: start the run again") from None
    return Progress(meta["epoch"] + 1, meta["history"], meta["best"])


def resume(run_dir: str | os.PathLike, overrides: dict | None = None, quiet: bool = False, on_epoch=None) -> dict:
    """Continue an interrupted run from its last checkpoint, with its own config."""
    run = RunDir(run_dir)
    cfg = config.read_run_config(run)
    for key, value in (overrides or {}).items():
        setattr(cfg, key, config.coerce(key, value, source="override"))
    if is_classical(cfg.model):
        raise MnistlabError(f"{run}: a {cfg.model} run is fitted in one step; there is nothing to resume",
                            hint="train it again")
    if not run.last.is_file():
        raise MnistlabError(f"{run} has no {RunDir.LAST} to resume from",
                            hint="it was interrupted before its first checkpoint: start it again")
    if run.summary.exists():
        raise MnistlabError(f"{run} already finished ({RunDir.SUMMARY} exists); nothing to resume")
    return train(cfg, resume=run.path, quiet=quiet, on_epoch=on_epoch)


def train_seeds(cfg, seeds: list[int], quiet: bool = False) -> dict:
    """Train one run per seed under one group directory, and summarise them (mean, std, min, max)."""
    group = rundir.new(dataclasses.replace(cfg, name=rundir.name_for(cfg, group=True)))
    group.path.mkdir(parents=True)
    try:
        runs = [train(dataclasses.replace(cfg, seed=s, out=str(group), name=f"seed-{s}"), quiet=quiet) for s in seeds]
    except Exception:
        if not any(group.path.iterdir()):  # no seed's run kept: nothing for a rerun to trip over
            group.path.rmdir()
        raise

    def stats(key):
        return over_seeds(r.get(key) for r in runs)

    summary = {"group_dir": str(group), "seeds": seeds, "model": cfg.model, "dataset": cfg.dataset,
               "recipe": cfg.recipe, "test_acc": stats("test_acc"), "val_acc": stats("val_acc"),
               "wall_s": stats("wall_s"), "runs": [r["run_dir"] for r in runs]}
    group.write_json(RunDir.SUMMARY, summary)
    if not quiet:
        t = summary["test_acc"]
        print(f"{len(seeds)} seeds {seeds}: test accuracy mean {t['mean']:.2%} +- {t['std']:.2%} "
              f"(min {t['min']:.2%}, max {t['max']:.2%}); {group}")
    return summary
