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
from ..data.variants import VALIDATION_STREAM, Variant, VariantSpec, subset_record
from ..errors import MnistlabError
from ..models import checkpoint, count_parameters
from ..models.inference import evaluation_record
from ..precision import Precision
from ..precision import choose as choose_precision
from ..rundir import RunDir
from .config import variant_spec


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
    labelled: dict | None = None  # labels_per_class: which examples were drawn (variants.subset_record)
    variant: Variant | None = None  # the training examples' variant (imbalance, label noise, labels per class)
    variant_record: dict | None = None  # what the run records of it (with its validation examples)
    cleaning: dict | None = None  # clean_labels: what the label audit removed (training/cleaning.py)
    positions: torch.Tensor | None = None  # of the training examples, in the dataset's training split
    synthetic: dict | None = None  # synthetic digits added to training: {kind: count} (data/synthetic.py)


@dataclass
class Examples:
    """The examples a run draws from its dataset: training and validation splits, and their records."""

    train: Split
    val: Split | None
    holdout: Holdout | None
    labelled: dict | None
    variant_record: dict | None
    positions: torch.Tensor  # of the training examples, in the dataset's training split


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
    if cfg.clean_labels != "none" and env.world > 1:
        raise MnistlabError("clean_labels=cleanlab trains its out-of-fold models in one process",
                            hint="run it without torchrun (or clean the labels in one process first)")
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


def draw_examples(cfg, ds: Dataset) -> Examples:
    """The run's training and validation examples, in this order: the validation holdout (stratified,
    seed 0: the same for every run of a size), the first train_subset of the rest, then the variant
    (imbalance, labels per class, label noise: data/variants.py) drawn from what remains. Validation
    stays as held out (balanced: true labels), or takes the variant's imbalance and noise (as-train)."""
    train_split, val, holdout = ds.train, None, None
    positions = torch.arange(len(ds.train))  # of the training examples, in the dataset's training split
    if cfg.validation:
        train_split, val = ds.train.split(validation=cfg.validation, seed=0, stratified=True)
        holdout = val.holdout
        kept = torch.ones(len(ds.train), dtype=torch.bool)
        kept[ds.train.validation_indices(cfg.validation, seed=0, stratified=True)] = False
        positions = torch.nonzero(kept).flatten()
    if cfg.train_subset:
        n = min(cfg.train_subset, len(train_split))
        train_split, positions = train_split.subset(torch.arange(n), name="train-subset"), positions[:n]
    spec = variant_spec(cfg)
    labelled = record = None
    if spec.active:
        where = f"{ds.name}'s training split" + (" less the validation holdout" if val is not None else "") + \
            (f" (its first {cfg.train_subset})" if cfg.train_subset else "")
        train_split = train_split.drawn(spec, where=where, positions=positions)
        record = {**train_split.variant.record(), "validation": validation_record(val)}
        if spec.labels_per_class:
            labelled = subset_record(train_split.variant.indices, spec.labels_per_class, spec.seed)
        if val is not None and cfg.variant_validation == "as-train":
            val = as_train(val, spec, holdout)
            record["validation"] = validation_record(val)
    if train_split.variant is not None:
        positions = train_split.variant.absolute
    return Examples(train_split, val, holdout, labelled, record, positions)


def as_train(val: Split, spec: VariantSpec, holdout: Holdout) -> Split:
    """Validation examples with the training variant's imbalance and label noise (its own draws)."""
    drawn = val.drawn(VariantSpec(spec.imbalance, spec.label_noise, 0, spec.seed), stream_offset=VALIDATION_STREAM,
                      where="the validation holdout")
    drawn.holdout = holdout
    return drawn


def validation_record(val: Split | None) -> dict | None:
    """How a variant's validation examples were made: balanced (as held out) or as-train (and their hashes)."""
    if val is None:
        return None
    if val.variant is None:
        return {"mode": "balanced", "count": len(val)}
    v = val.variant
    return {"mode": "as-train", "count": len(val), "sha256": v.sha256, "labels_sha256": v.record()["labels_sha256"],
            "flipped": len(v.flipped)}


def load_data(cfg, env: Env) -> Data:
    """The dataset, the run's examples (`draw_examples`), the normalisation constants, and the training
    examples on the device."""
    ds = load(cfg.dataset, data_dir=cfg.data_dir or None)
    examples = draw_examples(cfg, ds)
    train_split, val = examples.train, examples.val
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
        if examples.variant_record is not None or cfg.clean_labels != "none":  # the protocol is the variant's
            raise MnistlabError(f"synthetic={cfg.synthetic!r} with a dataset variant or clean_labels: the variant's "
                                "examples, their flips and what the audit removes are MNIST's own",
                                hint="set synthetic = \"none\" for a messy-data run, or drop the variant")
        extra_x, extra_y = synthetic(cfg.synthetic)
        train_x = torch.cat([train_x, torch.from_numpy(extra_x)])
        train_y = torch.cat([train_y, torch.from_numpy(extra_y)])
    return Data(ds, train_x.to(env.device), train_y.to(env.device), val, test, norm,
                (ds.spec.channels, *ds.image_shape[-2:]), examples.holdout, examples.labelled, train_split.variant,
                examples.variant_record, positions=examples.positions, synthetic=parse_synthetic(cfg.synthetic) or None)


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
                       "variant": data.variant_record, "cleaning": cleaning_summary(data.cleaning),
                       "train_images": int(len(data.train_y)), "synthetic": data.synthetic,
                       "precision": env.precision.as_dict() if env.precision else None, **header})
        if data.variant is not None or data.cleaning is not None:
            run.write_json(RunDir.VARIANT, variant_file(data), indent=None)  # long lists: one line
    return run


def variant_file(data: Data) -> dict:
    """RUN/variant.json: the training examples as positions in the dataset's training split, their given
    labels, the positions whose label was flipped, and what the label cleaning removed: what a method
    is scored against, and what --resume reads back."""
    out = {"variant": data.variant_record, "cleaning": cleaning_summary(data.cleaning)}
    if data.variant is not None:
        v = data.variant
        out.update(positions=v.absolute.tolist(), labels=v.labels.tolist(), flipped=v.absolute[v.flipped].tolist())
    if data.cleaning is not None:
        out["removed"] = data.cleaning["removed_positions"]
    return out


def summary_base(cfg, env: Env, data: Data, run: RunDir, params: int) -> dict:
    """The fields every run's summary.json starts with (the run's own figures come after)."""
    return {"run_dir": str(run), "model": cfg.model, "params": params, "dataset": cfg.dataset,
            "dataset_hash": data.dataset.content_hash, "seed": cfg.seed, "recipe": cfg.recipe,
            "holdout": data.holdout.as_dict() if data.holdout else None, "labelled": data.labelled,
            "variant": data.variant_record, "cleaning": cleaning_summary(data.cleaning),
            "train_class_counts": torch.bincount(data.train_y.cpu(), minlength=data.dataset.num_classes).tolist(),
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
            "holdout": data.holdout.as_dict() if data.holdout else None, "variant": data.variant_record,
            "cleaning": cleaning_summary(data.cleaning),
            **({"code": records} if (records := code_records(cfg)) else {})}


def cleaning_summary(cleaning: dict | None) -> dict | None:
    """The label cleaning's record without its list of positions (that is in RUN/variant.json)."""
    return None if cleaning is None else {k: v for k, v in cleaning.items() if k != "removed_positions"}


def save_weights(path, model: torch.nn.Module, meta: dict) -> None:
    checkpoint.save(path, checkpoint.prefixed(model.state_dict(), "model"), {"kind": "weights", **meta})
