"""Transfer learning inside the engine: start from another run's weights, keep or replace the classifier
head, freeze what should not move, and give the feature extractor its own learning rate.

    mnistlab train --recipe fast --init-from runs/fast-fashion-mnist-s0 --freeze features      # linear probe
    mnistlab train --recipe fast --init-from runs/fast-fashion-mnist-s0 --lr-backbone 0.02     # fine-tune
    mnistlab train --recipe fast --labels-per-class 10                                         # 100 labels

Weights are matched by name. Every tensor of the new model's feature extractor must be found in the
checkpoint with the same shape (a checkpoint of another architecture is an error that names the
mismatched tensors); the head (`models/heads.py`) is loaded only when kept. A frozen parameter leaves
the optimizer (no update, no weight decay, no momentum), and a BatchNorm layer whose parameters are all
frozen stays in eval mode, so its running statistics are those of the source: frozen means
bit-identical after training.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.dataset import Holdout
from ..errors import MnistlabError
from ..models import checkpoint
from ..models.heads import is_head_key
from ..models.source import locate


def initialise(model: nn.Module, cfg, classes, heads) -> dict:
    """Load `cfg.init_from`'s weights into `model` by name; what was loaded, re-initialised and skipped."""

    located = locate(cfg.init_from)
    path = located.checkpoint
    tensors, meta = checkpoint.load(path)
    if meta.get("kind") not in ("weights", "state"):
        raise MnistlabError(f"init_from={cfg.init_from!r}: {path} is a {meta.get('kind')} checkpoint; expected one "
                            "model's weights", hint="start from one run directory (or its best.safetensors)")
    prefix = checkpoint.model_prefix(meta, tensors)
    source = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    # a pretrained (label-free) source's head never learned anything: auto gives a new one
    same_classes = list(meta.get("classes") or []) == list(classes) and not meta.get("pretraining")
    head = cfg.head if cfg.head != "auto" else ("keep" if same_classes else "new")
    target = model.state_dict()
    loaded, reinitialised, mismatched = [], [], []
    for key, value in target.items():
        if head == "new" and is_head_key(key, heads):
            reinitialised.append(key)
        elif key not in source:
            mismatched.append(f"{key} {tuple(value.shape)} is not in the checkpoint")
        elif tuple(source[key].shape) != tuple(value.shape):
            mismatched.append(f"{key} is {tuple(source[key].shape)} in the checkpoint, {tuple(value.shape)} here")
        else:
            loaded.append(key)
    if mismatched:
        hint = ("the classes differ: use head=new for a fresh classifier head" if head == "keep" and
                all(is_head_key(m.split(" ")[0], heads) for m in mismatched) else
                f"start from a checkpoint of the same model and options (the checkpoint's: {meta.get('model')} "
                f"{meta.get('model_args') or {}})")
        raise MnistlabError(f"init_from={cfg.init_from!r}: {path} ({meta.get('model')} on {meta.get('dataset')}) does "
                            f"not fit {cfg.model} {cfg.model_args or {}}: {len(mismatched)} tensor(s) mismatched: "
                            + "; ".join(mismatched[:6]) + (" ..." if len(mismatched) > 6 else ""), hint=hint)
    with torch.no_grad():
        for key in loaded:
            target[key].copy_(source[key])
    skipped = sorted(k for k in source if k not in loaded)
    run = located.run
    return {"source": str(path), "source_run": str(run) if run else None, "source_model": meta.get("model"),
            "source_dataset": meta.get("dataset"), "source_dataset_hash": meta.get("dataset_hash"),
            "head": head, "loaded": len(loaded), "reinitialised": sorted({k.rsplit(".", 1)[0] for k in reinitialised}),
            "skipped": skipped}


def freeze(model: nn.Module, spec: str, heads) -> list[str]:
    """Freeze the parameters `spec` names ('none', 'features', or module prefixes); their names."""
    spec = (spec or "").strip()
    if spec in ("", "none"):
        return []
    names = [n for n, _ in model.named_parameters()]
    if spec == "features":
        frozen = [n for n in names if not is_head_key(n, heads)]
    else:
        prefixes = [p.strip() for p in spec.split(",") if p.strip()]
        for p in prefixes:
            if not any(n == p or n.startswith(p + ".") for n in names):
                modules = sorted({n.split(".")[0] for n in names})
                raise MnistlabError(f"freeze={spec!r}: {p!r} names no parameters of {model.mnistlab_name}",
                                    hint=f"use none, features, or prefixes of its modules ({', '.join(modules)}; "
                                    "`mnistlab models` shows each model)")
        frozen = [n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes)]
    if len(frozen) == len(names):
        raise MnistlabError(f"freeze={spec!r} freezes every parameter of {model.mnistlab_name}: nothing would train")
    params = dict(model.named_parameters())
    for n in frozen:
        params[n].requires_grad_(False)
    return frozen


def frozen_norms(model: nn.Module) -> list[str]:
    """BatchNorm layers whose parameters are all frozen: they keep the source's running statistics."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and (params := list(m.parameters(recurse=False))) and not any(p.requires_grad for p in params)]


def hold_frozen(model: nn.Module) -> None:
    """After `model.train()`: frozen BatchNorm layers back in eval mode (fixed statistics, no update)."""
    modules = dict(model.named_modules())
    for name in frozen_norms(model):
        modules[name].eval()


def param_groups(model: nn.Module, cfg, heads) -> list:
    """The optimizer's parameters: the trainable ones, in two groups when the backbone has its own rate."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if cfg.lr_backbone is None:
        return [p for _, p in trainable]
    backbone = [p for n, p in trainable if not is_head_key(n, heads)]
    head = [p for n, p in trainable if is_head_key(n, heads)]
    return ([{"params": backbone, "lr": cfg.lr_backbone}] if backbone else []) + ([{"params": head}] if head else [])


def labelled_subset(labels: torch.Tensor, per_class: int, seed: int, num_classes: int, where: str) -> torch.Tensor:
    """Sorted positions of `per_class` examples of every class, drawn with `seed` (stratified by design)."""
    gen = torch.Generator().manual_seed(seed)
    labels = labels.cpu()
    parts = []
    for c in range(num_classes):
        members = torch.nonzero(labels == c).flatten()
        if len(members) < per_class:
            raise MnistlabError(f"labels_per_class={per_class}: class {c} has only {len(members)} examples in {where}",
                                hint=f"choose at most {len(members)}")
        parts.append(members[torch.randperm(len(members), generator=gen)[:per_class]])
    return torch.sort(torch.cat(parts)).values


def subset_record(indices: torch.Tensor, per_class: int, seed: int) -> dict:
    """What a run records about its labelled examples: enough to check that two runs drew the same."""
    return {"per_class": per_class, "count": len(indices), "seed": seed, "sha256": Holdout.hash_of(indices)}
