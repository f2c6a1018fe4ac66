"""Training on what the label audit keeps: the audit's remedy for noisy labels, as a setting of a run.

    mnistlab train --recipe variants --label-noise sym:0.5 --clean-labels cleanlab
    mnistlab train --recipe variants --label-noise sym:0.5 --clean-labels cleanlab --clean-recipe audit

Before the run trains, its training examples are scored out of fold (`clean_folds` stratified folds
on the given labels; each fold scored by a model trained on the other folds, with the run's own
settings or `clean_recipe`'s, for `clean_epochs` epochs, and the audit's settings: no validation
split, no label smoothing), and cleanlab's confident learning
flags the labels the models contradict (`label_issues`, the audit's own: analysis/data_audit.py
ranks and flags with it). The run then trains on the rest. What was removed is recorded (positions
in RUN/variant.json, counts and hash in the summary and every checkpoint); on a variant with planted
flips, the precision and recall of the removal too. A resumed run reads the removal back instead of
training the fold models again.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ..data.variants import flip_scores, positions_hash
from ..errors import MnistlabError
from ..models.predictor import reference_probs
from . import config

# Confident learning counts an image as "confidently class j" when p_j reaches j's threshold, the mean
# p_j over the images labelled j. Fold models as strong as the audit's put every threshold above 0.98,
# which no image they disagree with reaches, so on a clean-looking split it estimates zero noise and
# flags nothing. Capping the thresholds here counts a disagreement the model is 90% sure of. Chosen on
# 50 labels flipped in MNIST test (seed 30), out-of-fold scores of the audit recipe: uncapped 47 of
# them flagged (+2 others), cap 0.9 49 (+13), cap 0.5 50 (+51); on the split as given 0, 13, 51.
CONFIDENT_CAP = 0.9
# Every model the audit trains sees exactly the images it is given, and no label smoothing: smoothing
# caps each probability near 1 - smoothing, below the per-class thresholds confident learning counts
# against, and MNIST's `fast` recipe then flags 5 of 70,000 images instead of ~100.
AUDIT_SETTINGS = {"validation": 0, "train_subset": 0, "label_smoothing": 0.0, "progress": False}


def fold_assignment(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Stratified folds: fold number per image (scikit-learn's StratifiedKFold, shuffled, seeded)."""
    # 1.5 s of imports: only where folds are cut
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(labels)
    if folds < 2 or folds > counts[counts > 0].min():
        raise MnistlabError(f"--folds {folds}: expected 2 to {counts[counts > 0].min()} (the smallest class's size)")
    out = np.empty(len(labels), dtype=np.int64)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (_, scored) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        out[scored] = k
    return out


def label_issues(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Positions whose given label confident learning flags (cleanlab's find_label_issues with the
    per-class thresholds capped at CONFIDENT_CAP), worst first by self-confidence."""
    try:
        from cleanlab.count import compute_confident_joint, get_confident_thresholds
        from cleanlab.filter import find_label_issues
    except ImportError:
        raise MnistlabError("the label audit and clean_labels=cleanlab need cleanlab",
                            hint="pip install 'mnistlab[audit]'") from None
    thresholds = np.minimum(get_confident_thresholds(labels, probs), CONFIDENT_CAP)
    joint = compute_confident_joint(labels, probs, thresholds=thresholds)
    return np.asarray(find_label_issues(labels, probs, confident_joint=joint,
                                        return_indices_ranked_by="self_confidence"), dtype=np.int64)


# What an out-of-fold model of the run's own settings leaves out: the run's data (it is given its
# examples), its remedy, and anything that needs a validation split.
NOT_FOR_FOLDS = {"imbalance": "", "label_noise": "", "labels_per_class": 0, "variant_seed": None,
                 "variant_validation": "balanced", "clean_labels": "none", "early_stopping": 0, "evaluate_test": False,
                 "save_outputs": False, "tensorboard": False, "name": ""}


def fold_config(cfg) -> config.TrainConfig:
    """The config of an out-of-fold model: `clean_recipe` (or the run's own settings) with the audit's
    settings, for `clean_epochs` epochs, on the run's device, precision and threads."""
    engine = {k: getattr(cfg, k) for k in ("device", "precision", "threads")}
    if cfg.clean_recipe:
        fold = config.resolve(cfg.clean_recipe, {**AUDIT_SETTINGS, "seed": cfg.seed, **engine})
    else:
        fold = config.resolve(None, {**cfg.as_dict(), **NOT_FOR_FOLDS, **AUDIT_SETTINGS})
    if cfg.clean_epochs:
        fold.epochs = cfg.clean_epochs
    return fold


def out_of_fold_probs(cfg, dataset, images: torch.Tensor, labels: torch.Tensor, *, fit, say) -> np.ndarray:
    """Probabilities (N, C) of every training example from a model that never trained on it."""
    y = labels.cpu().numpy()
    fold = fold_assignment(y, cfg.clean_folds, cfg.seed)
    fold_cfg = fold_config(cfg)
    probs = np.zeros((len(y), dataset.num_classes), dtype=np.float32)
    for k in range(cfg.clean_folds):
        trained, scored = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        t0 = time.perf_counter()
        trained_t, scored_t = (torch.from_numpy(i).to(images.device) for i in (trained, scored))
        model, norm = fit(fold_cfg, dataset, images[trained_t], labels[trained_t])
        probs[scored] = reference_probs(model, images[scored_t], norm, batch_size=cfg.eval_batch_size).float().cpu()
        say(f"  label audit fold {k + 1}/{cfg.clean_folds}: {fold_cfg.model} ({fold_cfg.epochs} epochs) trained on "
            f"{len(trained):,}, scored "
            f"{len(scored):,} ({(probs[scored].argmax(1) == y[scored]).mean():.2%} agree), "
            f"{time.perf_counter() - t0:.0f}s")
    return probs


def clean(cfg, data, *, fit, say, removed: list[int] | None = None):
    """`data` without the training examples the label audit flags, and the record of what went. With
    `removed` (positions in the dataset's training split, as RUN/variant.json lists them), those are
    removed without scoring anything again."""
    t0 = time.perf_counter()
    positions = data.positions
    if removed is None:
        source = f"recipe {cfg.clean_recipe}" if cfg.clean_recipe else "the run's own settings"
        say(f"label cleaning: {cfg.clean_folds}-fold out-of-fold scores of {len(data.train_y):,} training examples "
            f"({source}, {cfg.clean_epochs or 'its'} epochs), then cleanlab's confident learning")
        probs = out_of_fold_probs(cfg, data.dataset, data.train_x, data.train_y, fit=fit, say=say)
        flagged = label_issues(data.train_y.cpu().numpy(), probs)
    else:
        where = {int(p): i for i, p in enumerate(positions.tolist())}
        missing = [p for p in removed if p not in where]
        if missing:
            raise MnistlabError(f"the label cleaning recorded position {missing[0]}, which is not a training example "
                                "of this run", hint="the run's variant.json was altered: start the run again")
        flagged = np.asarray([where[p] for p in removed], dtype=np.int64)
    keep = np.ones(len(data.train_y), dtype=bool)
    keep[flagged] = False
    absolute = positions[torch.from_numpy(flagged)]
    record = {"method": "cleanlab", "recipe": cfg.clean_recipe or None, "epochs": cfg.clean_epochs,
              "folds": cfg.clean_folds,
              "examples": len(keep), "removed": int((~keep).sum()), "kept": int(keep.sum()),
              "removed_sha256": positions_hash(torch.sort(absolute).values), "seconds": time.perf_counter() - t0,
              "removed_positions": sorted(absolute.tolist())}
    if data.variant is not None and data.variant.spec.label_noise:  # planted flips: how well they were found
        record["planted_flips"] = flip_scores(flagged, data.variant.flipped.numpy(), len(keep))
    idx = torch.from_numpy(np.flatnonzero(keep)).to(data.train_x.device)
    data.train_x, data.train_y, data.cleaning = data.train_x[idx], data.train_y[idx], record
    data.positions = positions[torch.from_numpy(np.flatnonzero(keep))]
    return data
