"""What every kind of run shares before and after its own training: the environment (threads, the
torchrun process group, the device, the precision), the data on the device with its validation
holdout and normalisation, the run directory opened with its config and log header, the checkpoint
metadata, and the summary fields every run's summary.json has. Training (train.py), classical fits
(classical.py) and pretraining (pretrain.py) all start here.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .. import allocator, consent, machine, rundir, user_code
from ..data import Dataset, Holdout, Split, load, preparation
from ..data.normalization import Normalization
from ..data.synthetic import parse as parse_synthetic
from ..data.synthetic import synthetic
from ..errors import MnistlabError
from ..models import checkpoint, count_parameters
from ..models.inference import evaluation_record
from ..precision import Precision
from ..precision import choose as choose_precision
from ..rundir import RunDir
from . import transfer


@dataclass
class Env:
    """Where the run executes: the process group, the device, and how it reports."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    quiet: bool = False
    precision: Precision | None = None  # what cfg.precision resolved to on this device, and why
    allocator: str = ""  # how malloc was tuned for training, in words

    @property
    def main(self) -> bool:
        return self.rank == 0

    def say(self, text: str) -> None:
        if self.main and not self.quiet:
            print(text, flush=True)


@dataclass
class Data:
    """The run's data on the device: training images and labels, validation and test splits."""

    dataset: Dataset
    train_x: torch.Tensor  # uint8 (N,H,W) or (N,C,H,W)
    train_y: torch.Tensor  # int64 (N,)
    val: Split | None
    test: Split | None  # None when cfg.evaluate_test is false: the run never holds the test set
    norm: Normalization
    in_shape: tuple[int, int, int]
    holdout: Holdout | None
    labelled: dict | None = None  # labels_per_class: which examples were drawn (transfer.subset_record)
    synthetic: dict | None = None  # synthetic digits added to training: {kind: count} (data/synthetic.py)


def set_up(cfg, quiet: bool) -> Env:
    """Threads, the torchrun process group (gloo on CPU, NCCL on GPUs), and the device."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    want_cuda = cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())
    env = Env(quiet=quiet)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        env.rank, env.world, env.local_rank = int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0"))
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if want_cuda else "gloo")
    env.device = pick_device(cfg.device, env)
    env.precision = choose_precision(cfg.precision, env.device,
                                     own=tuple(r for r in ROLES if user_code.is_reference(getattr(cfg, r))))
    env.allocator = allocator.keep_freed_memory()  # on the CPU every step reallocates its activations
    if env.device.type == "cuda":  # fixed shapes: pick the fastest kernels once, unless asked for bit-identity
        torch.backends.cudnn.benchmark = not cfg.deterministic
        torch.backends.cudnn.deterministic = cfg.deterministic
    if cfg.batch_size % env.world:
        raise MnistlabError(f"batch_size={cfg.batch_size} is not divisible by the {env.world} processes",
                            hint="batch_size is the global batch; choose a multiple of the process count")
    if cfg.cuda_graphs and (env.device.type != "cuda" or env.world > 1):
        raise MnistlabError("cuda_graphs=true needs one process on a CUDA device",
                            hint="turn cuda_graphs off for CPU or torchrun training")
    return env


def pick_device(name: str, env: Env) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise MnistlabError(f"device={name!r} but this torch has no CUDA device", hint="use --device cpu (or auto)")
        if env.world > 1:
            name = f"cuda:{env.local_rank}"
        elif name == "cuda":
            name = f"cuda:{torch.cuda.current_device()}"
        torch.cuda.set_device(torch.device(name))
    elif name != "cpu":
        raise MnistlabError(f"device={name!r}: expected auto, cpu, cuda or cuda:N")
    return torch.device(name)


def load_data(cfg, env: Env) -> Data:
    """The dataset, the validation holdout (stratified, seed 0: the same for every run of a size), the
    normalisation constants, and the training examples on the device."""
    ds = load(cfg.dataset, data_dir=cfg.data_dir or None)
    train_split, val = ds.train, None
    if cfg.validation:
        train_split, val = ds.train.split(validation=cfg.validation, seed=0, stratified=True)
    if cfg.train_subset:
        train_split = train_split.subset(torch.arange(min(cfg.train_subset, len(train_split))), name="train-subset")
    labelled = None
    if cfg.labels_per_class:
        idx = transfer.labelled_subset(train_split.labels, cfg.labels_per_class, cfg.seed, ds.num_classes,
                                       f"{ds.name}'s training split" + (" less the validation holdout" if val else ""))
        train_split = train_split.subset(idx, name=f"{cfg.labels_per_class}-per-class")
        labelled = transfer.subset_record(idx, cfg.labels_per_class, cfg.seed)
    mean, std = ds.stats
    try:
        norm = Normalization(cfg.normalize, mean, std, preparation.parse(cfg.prepare))
    except MnistlabError as exc:
        raise MnistlabError(f"{ds.name}: {exc.message}", hint=exc.hint) from None
    test = ds.test if cfg.evaluate_test else None
    train_x, train_y = train_split.images, train_split.labels
    if parse_synthetic(cfg.synthetic):  # digits of other styles beside the training images, never in validation
        if tuple(train_x.shape[1:]) != (28, 28) or ds.num_classes != 10:
            raise MnistlabError(f"synthetic={cfg.synthetic!r}: synthetic digits go with a dataset of 28x28 digits, "
                                f"not {ds.name}", hint="set synthetic = \"none\" for this dataset")
        extra_x, extra_y = synthetic(cfg.synthetic)
        train_x = torch.cat([train_x, torch.from_numpy(extra_x)])
        train_y = torch.cat([train_y, torch.from_numpy(extra_y)])
    return Data(ds, train_x.to(env.device), train_y.to(env.device), val, test, norm,
                (ds.spec.channels, *ds.image_shape[-2:]), val.holdout if val is not None else None, labelled,
                parse_synthetic(cfg.synthetic) or None)


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """A distinct, reproducible seed per (run seed, epoch, stream)."""
    return (seed * 1_000_003 + epoch * 7919 + stream * 104_729) % (2**63 - 1)


ROLES = ("model", "optimizer", "loss")  # the settings that may name user code


def code_records(cfg) -> dict[str, dict]:
    """What the run records of the user code its settings name (source, file, SHA-256), by role."""
    return {role: user_code.code_of(getattr(cfg, role), role).record() for role in ROLES
            if user_code.is_reference(getattr(cfg, role))}


def code_summary(records: dict[str, dict]) -> dict[str, dict]:
    """The records without their sources: what summary.json and the log say."""
    return {role: {k: v for k, v in r.items() if k != "source"} for role, r in records.items()}


def open_run(cfg, env: Env, data: Data, header: dict) -> RunDir:
    """A new run directory (rank 0 creates it: config.json and the log's header line) with the header
    fields every run records (time, argv, environment, device, data, precision) and `header`'s own."""
    # rank 0 decides (and creates it); the others must not look for a free name: it is taken by then
    run = rundir.new(cfg) if env.main else RunDir(os.path.join(cfg.out, rundir.name_for(cfg)))
    if env.main:
        run.path.mkdir(parents=True)
        run.write_json(RunDir.CONFIG, cfg.as_dict())
        records = code_records(cfg)
        for record in records.values():  # the user named this code to train it: it may run here again
            consent.sign(record, "recorded")
        run.write_code(records)
        run.start_log({"code": code_summary(records),"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": sys.argv,
                       "environment": machine.describe(), "world_size": env.world, "device": str(env.device),
                       "dataset_hash": data.dataset.content_hash,
                       "holdout": data.holdout.as_dict() if data.holdout else None, "labelled": data.labelled,
                       "train_images": int(len(data.train_y)), "synthetic": data.synthetic,
                       "precision": env.precision.as_dict() if env.precision else None, **header})
    return run


def summary_base(cfg, env: Env, data: Data, run: RunDir, params: int) -> dict:
    """The fields every run's summary.json starts with (the run's own figures come after)."""
    return {"run_dir": str(run), "model": cfg.model, "params": params, "dataset": cfg.dataset,
            "dataset_hash": data.dataset.content_hash, "seed": cfg.seed, "recipe": cfg.recipe,
            "holdout": data.holdout.as_dict() if data.holdout else None, "labelled": data.labelled,
            **({"synthetic": data.synthetic, "train_images": int(len(data.train_y))} if data.synthetic else {}),
            "world_size": env.world, "device": str(env.device),
            "precision": env.precision.as_dict() if env.precision else None,
            "evaluation": evaluation_record(cfg.eval_batch_size, env.device), "environment": machine.describe(),
            **({"code": code_summary(records)} if (records := code_records(cfg)) else {})}


def model_meta(cfg, data: Data, model: torch.nn.Module) -> dict:
    """What every checkpoint of the run says about its model and data (see checkpoint.validate_model)."""
    return {"config": cfg.as_dict(), "model": cfg.model, "model_args": cfg.model_args, "in_shape": list(data.in_shape),
            "num_classes": data.dataset.num_classes, "classes": list(data.dataset.classes),
            "dataset": data.dataset.name, "dataset_hash": data.dataset.content_hash,
            "normalization": data.norm.as_dict(), "params": count_parameters(model),
            "holdout": data.holdout.as_dict() if data.holdout else None,
            **({"code": records} if (records := code_records(cfg)) else {})}


def save_weights(path, model: torch.nn.Module, meta: dict) -> None:
    checkpoint.save(path, checkpoint.prefixed(model.state_dict(), "model"), {"kind": "weights", **meta})
