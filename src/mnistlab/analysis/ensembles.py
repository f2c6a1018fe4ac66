"""Ensembles: several trained models combined by averaged probabilities or majority vote.

    mnistlab ensemble runs/a runs/b runs/c --method mean --out three.safetensors
    mnistlab ensemble runs/m5-mnist-seeds --select --out best-of.safetensors   # a group's runs, chosen on val

An ensemble is saved as one safetensors file holding every member's weights and metadata, so
`evaluate`, `predict` and `serve` take it wherever they take a single model (`load_predictor`).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import MnistlabError
from ..models import checkpoint
from ..models.classical import ClassicalModel, gives_probabilities
from ..models.predictor import ENSEMBLE, Predictor, combine, load_predictor
from ..models.source import locate_each
from .evaluation import evaluate
from .splits import target_split


def check_compatible(metas: list[dict], sources: list[str]) -> None:
    """Members must agree on classes and input shape (and should on the dataset)."""
    first = metas[0]
    for meta, src in zip(metas[1:], sources[1:]):
        if meta["num_classes"] != first["num_classes"] or list(meta["classes"]) != list(first["classes"]):
            raise MnistlabError(f"{src} predicts {meta['num_classes']} classes ({meta['dataset']}), but "
                                f"{sources[0]} predicts {first['num_classes']} ({first['dataset']})",
                                hint="an ensemble's members must share one set of classes")
        if list(meta["in_shape"]) != list(first["in_shape"]):
            raise MnistlabError(f"{src} takes input {meta['in_shape']}, {sources[0]} takes {first['in_shape']}")
        if meta["dataset"] != first["dataset"]:
            raise MnistlabError(f"{src} was trained on {meta['dataset']}, {sources[0]} on {first['dataset']}")


def build(paths: list[str | os.PathLike], method: str = "mean") -> Predictor:
    """An ensemble Predictor of the single models at `paths` (run directories or checkpoints)."""
    if method not in ("mean", "vote"):
        raise MnistlabError(f"--method {method!r}: expected mean or vote")
    paths = [m.checkpoint for m in locate_each(paths)]  # a group of seed runs: each of its runs
    singles = [load_predictor(p) for p in paths]
    for p, s in zip(paths, singles):
        if s.method != "single":
            raise MnistlabError(f"{p} is itself an ensemble; list its members instead")
    metas = [s.meta for s in singles]
    check_compatible(metas, [str(p) for p in paths])
    models = [s.models[0] for s in singles]
    norms = [s.norms[0] for s in singles]
    if method == "mean":

        for p, m in zip(paths, models):
            if isinstance(m, ClassicalModel) and not gives_probabilities(m):
                raise MnistlabError(f"{p}: a {m.name} without probabilities (its scores are decision values), so "
                                    "it cannot join a mean of probabilities",
                                    hint="train it with model_args probability=true, or use --method vote")
    member_meta = [checkpoint.read_header(p)[0] for p in paths]
    meta = {**metas[0], "name": f"ensemble of {len(models)}", "model": ENSEMBLE}
    return Predictor(models, norms, method, meta, member_meta)


def select_greedy(paths: list[str | os.PathLike], val_images: torch.Tensor, val_labels: torch.Tensor,
                  method: str = "mean") -> tuple[list[int], list[float]]:
    """Caruana-style forward selection on the validation split: start from the best member, add the
    member that most improves validation accuracy, stop when none does. Returns (indices, accuracies).

    Every member must have held out the same validation examples (their holdout records agree):
    a member that trained on another's validation images would win the selection unfairly."""
    full = build(paths, method)
    holdouts = [m.get("holdout") for m in full.member_meta]
    if not holdouts[0] or any(h != holdouts[0] for h in holdouts):
        odd = next((str(p) for p, h in zip(paths, holdouts) if not h or h != holdouts[0]), str(paths[0]))
        raise MnistlabError(f"{odd} did not hold out the same validation examples as {paths[0]}: selecting on "
                            "validation would score it on images it trained on",
                            hint="select among runs trained with the same validation size and dataset, or "
                            "build the ensemble without --select")
    probs = full.member_probs(val_images)  # (M, N, C)
    return greedy(probs, val_labels, method)


def greedy(probs: torch.Tensor, labels: torch.Tensor, method: str = "mean") -> tuple[list[int], list[float]]:
    """Forward selection over members' (M, N, C) probabilities on a selection split: start from the best
    member, add the one that most improves accuracy (the lower index on a tie), stop when none does.
    Returns (indices in the order chosen, accuracy after each). Pass validation outputs only."""
    labels = labels.to(probs.device)

    def acc(idx: list[int]) -> float:
        return (combine(probs[idx], method).argmax(1) == labels).float().mean().item()

    chosen = [max(range(len(probs)), key=lambda i: acc([i]))]
    trace = [acc(chosen)]
    while True:
        best_i, best_acc = None, trace[-1]
        for i in range(len(probs)):
            if i not in chosen:
                a = acc(chosen + [i])
                if a > best_acc:
                    best_i, best_acc = i, a
        if best_i is None:
            return chosen, trace
        chosen.append(best_i)
        trace.append(best_acc)


def save(predictor: Predictor, out: str | os.PathLike) -> Path:
    """Write an ensemble as one safetensors file (atomically)."""
    out = Path(out)
    if out.suffix != ".safetensors":
        raise MnistlabError(f"--out {out}: expected a file name ending in .safetensors")
    if not out.parent.exists():
        raise MnistlabError(f"--out {out}: directory {out.parent} does not exist")
    tensors = {}
    members = []
    for i, (model, meta) in enumerate(zip(predictor.models, predictor.member_meta)):
        tensors.update(checkpoint.prefixed(checkpoint.model_tensors(model), f"member{i}/model"))
        members.append({k: meta[k] for k in ("model", "model_args", "in_shape", "num_classes", "classes", "dataset",
                                             "dataset_hash", "normalization", "params", "config", "holdout", "code")
                        if k in meta})  # code: the record of a member's own model, signed as its run's was
    meta = {"kind": ENSEMBLE, "method": predictor.method, "members": members, "name": out.stem}
    return checkpoint.save(out, tensors, meta)




def ensemble(models: list[str | os.PathLike], *, method: str = "mean", select: bool = False, out: str | os.PathLike,
             split: str = "test", data_dir=None, quiet: bool = True) -> dict:
    """`mnistlab ensemble`: members (chosen greedily on the validation split when `select`), combined by
    `method`, saved as one file `out`, then evaluated on `split` beside each member.
    {"saved", "members", "selection": [(path, val accuracy)], "evaluation"}."""
    paths = [str(m.run.path if m.run else m.checkpoint) for m in locate_each(models)]  # groups: each run
    say = (lambda text: None) if quiet else (lambda text: print(text, flush=True))
    say(f"{len(paths)} members ({method})" + (", chosen greedily on the validation split" if select else ""))
    selection = []
    if select:
        _, val = target_split(load_predictor(paths[0]), "val", None, data_dir)
        chosen, trace = select_greedy(paths, val.images, val.labels, method)
        selection = [(paths[i], acc) for i, acc in zip(chosen, trace)]
        paths = [paths[i] for i in chosen]
    saved = save(build(paths, method), out)
    say(f"saved {saved}; evaluating it and each member on the {split} split...")
    result = evaluate(saved, split=split, pictures=False, data_dir=data_dir)
    return {"saved": str(saved), "method": method, "members": paths, "selection": selection, "evaluation": result,
            "member_accuracy": result["member_accuracy"]}
