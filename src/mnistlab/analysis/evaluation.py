"""Evaluation: every number a user asks for about a trained model, and the pictures that explain them.

    mnistlab evaluate runs/seed-cnn-mnist-s0                  # test split; writes runs/.../eval/test.json + PNGs
    mnistlab evaluate runs/seed-cnn-mnist-s0 --split val --tta
    mnistlab evaluate three.safetensors                        # an ensemble file, like a single model

Metrics (precision/recall/F1, confusion matrix, top-k, log loss, calibration) are counted with
numpy on the probabilities the model produces in large batches, by scikit-learn's formulas (the
tests hold them against scikit-learn's own functions).
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch

from .. import atomic
from ..models import ood
from ..models.inference import (
    BATCH_SIZE,
    EVALUATION,
    UNRECORDED_BATCH_SIZE,
    per_class_scores,
    torch_threads,
)
from ..models.predictor import Predictor, combine, load_predictor
from ..models.source import locate
from ..rundir import RunDir
from . import plots
from .robust import robust_figures
from .splits import target_split

ECE_BINS = 15
MISTAKES_LISTED = 12  # the most confident mistakes a result names (the gallery draws more)


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> tuple[float, list]:
    """ECE over equal-width confidence bins, and the per-bin (lo, hi, count, confidence, accuracy) table."""
    conf, pred = probs.max(1)
    correct = (pred == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    ece, table = 0.0, []
    n = len(labels)
    for lo, hi in zip(edges[:-1], edges[1:]):
        mask = (conf > lo) & (conf <= hi) if lo > 0 else (conf >= lo) & (conf <= hi)
        count = int(mask.sum())
        if count:
            c, a = conf[mask].mean().item(), correct[mask].mean().item()
            ece += count / n * abs(c - a)
            table.append({"lo": float(lo), "hi": float(hi), "count": count, "confidence": c, "accuracy": a})
        else:
            table.append({"lo": float(lo), "hi": float(hi), "count": 0, "confidence": None, "accuracy": None})
    return ece, table


def shifted(images: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """uint8 images shifted by whole pixels, with black (0) filling the uncovered border."""
    out = torch.zeros_like(images)
    h, w = images.shape[-2:]
    out[..., max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)] = \
        images[..., max(0, -dy):h + min(0, -dy), max(0, -dx):w + min(0, -dx)]
    return out


TTA_SHIFTS = [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)]  # the original and four one-pixel shifts


def member_probs(predictor: Predictor, images: torch.Tensor, tta: bool = False, batch_size: int = BATCH_SIZE):
    """(members, N, classes) probabilities, averaged over the TTA views when `tta`."""
    views = TTA_SHIFTS if tta else [(0, 0)]
    return torch.stack([predictor.member_probs(shifted(images, dx, dy) if (dx, dy) != (0, 0) else images,
                                               batch_size) for dx, dy in views]).mean(0)


def top_k_accuracy(labels: np.ndarray, probs: np.ndarray, k: int) -> float:
    """Share of images whose label is among the k highest scores (ties: the higher class index first)."""
    ranked = np.argsort(probs, axis=1, kind="mergesort")[:, ::-1][:, :k]
    return float((ranked == labels[:, None]).any(1).mean())


def compute_metrics(probs: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> dict:
    """All metrics of `probs` (N,C) against int labels (N,), as a JSON-able dict. Counted with numpy
    (tests/test_evaluate.py checks them against scikit-learn's): importing scikit-learn cost each
    command 3 s of start-up on a 2-core AVX2 machine."""
    probs = probs.float().cpu()
    labels = labels.cpu()
    y, p = labels.numpy().astype(np.int64), probs.numpy()
    pred = p.argmax(1)
    k = len(classes)
    idx = list(range(k))
    scores = per_class_scores(y, pred, k)
    cm = scores["confusion"]
    off = [(int(cm[i, j]), i, j) for i in range(k) for j in range(k) if i != j and cm[i, j]]
    off.sort(key=lambda t: (-t[0], t[1], t[2]))
    p_clipped = np.clip(p, 1e-12, 1)
    p_clipped = p_clipped / p_clipped.sum(1, keepdims=True)
    eps = np.finfo(p_clipped.dtype).eps  # log loss clips as scikit-learn's does
    label_probs = np.clip(p_clipped[np.arange(len(y)), y], eps, 1 - eps)
    ece, bins = expected_calibration_error(probs, labels)
    topk = {f"top{t}": top_k_accuracy(y, p, t) for t in (1, 2, 3, 5) if t < k} if k > 2 \
        else {"top1": float((pred == y).mean())}
    correct = pred == y
    wrong = np.flatnonzero(~correct)
    worst = wrong[np.argsort(-p[wrong, pred[wrong]], kind="stable")][:MISTAKES_LISTED]  # the most confident first
    return {
        "n": int(len(y)),
        "accuracy": float(correct.mean()),
        "errors": int((~correct).sum()),
        # the mean recall over the classes present (scikit-learn's balanced_accuracy_score), and macro-F1
        "balanced_accuracy": float(scores["recall"][scores["support"] > 0].mean()) if len(y) else 0.0,
        "macro_f1": scores["averages"]["macro"]["f1"],
        **topk,
        "cross_entropy": float(-np.log(label_probs.astype(np.float64)).mean()),
        "per_class": [{"label": i, "class": classes[i], "precision": float(scores["precision"][i]),
                       "recall": float(scores["recall"][i]), "f1": float(scores["f1"][i]),
                       "support": int(scores["support"][i])} for i in idx],
        "macro_avg": scores["averages"]["macro"],
        "weighted_avg": scores["averages"]["weighted"],
        "confusion_matrix": cm.tolist(),
        "most_confused": [{"true": classes[i], "predicted": classes[j], "count": c} for c, i, j in off[:10]],
        "mistakes": [{"index": int(i), "true": classes[y[i]], "predicted": classes[pred[i]],
                      "probability": float(p[i, pred[i]])} for i in worst],
        "ece": ece,
        "reliability": bins,
    }


def evaluate(source: str | os.PathLike, *, split: str = "test", dataset: str | None = None, tta: bool = False,
             out: str | os.PathLike | None = None, pictures: bool = True, data_dir=None,
             batch_size: int | None = None, not_digit: bool = False) -> dict:
    """Evaluate a run directory, checkpoint or ensemble; write `<out>/<split>.json` and pictures.

    A run's model is measured as the run measured it (`models.inference`: fp32, its evaluation batch
    size and thread count, recorded in its summary), so the test figure is the one `train` reported;
    `result["run_reported"]` says whether the error counts agree."""
    located = locate(source)
    predictor = load_predictor(located.checkpoint)
    ds, part = target_split(predictor, split, dataset, data_dir)
    run = located.run
    summary = (run.read_summary() or {}) if run is not None else {}
    recorded = summary.get("evaluation") if isinstance(summary.get("evaluation"), dict) else {}
    batch_size = batch_size or _positive_int(recorded.get("batch_size")) or UNRECORDED_BATCH_SIZE
    threads = _positive_int(recorded.get("threads"))
    with torch_threads(threads):  # a matrix product's sums depend on how many threads share them
        members = member_probs(predictor, part.images, tta=tta, batch_size=batch_size)  # each member runs once
    probs = combine(members, predictor.method)
    result = {"source": str(source), "model": predictor.meta.get("model"), "method": predictor.method,
              "members": len(predictor.models), "dataset": ds.name, "dataset_hash": ds.content_hash,
              "split": split, "tta": tta, **compute_metrics(probs, part.labels, list(ds.classes)),
              "evaluation": {**EVALUATION, "batch_size": batch_size, "threads": threads or torch.get_num_threads(),
                             "device": "cpu"}}
    variant = predictor.meta.get("variant") if predictor.method == "single" else None
    if variant:  # the run's training examples were a variant: say which, with its class counts
        result["variant"] = {k: variant.get(k) for k in ("imbalance", "label_noise", "labels_per_class", "seed",
                                                         "count", "class_counts", "flipped", "sha256")}
    counts = summary.get("train_class_counts") or (variant or {}).get("class_counts")
    reported = summary.get("test_errors") if split == "test" else None
    if isinstance(reported, int) and not tta and ds.content_hash == summary.get("dataset_hash"):
        result["run_reported"] = {"errors": reported, "same": reported == result["errors"],
                                  "run_evaluation": recorded or None}
    flagged = not_digit_rate(predictor, part.images, fit_missing=not_digit)
    if flagged is not None:  # the not-a-digit model's share of this split flagged (1% of validation by design)
        result["not_digit"] = flagged
    robust = robust_figures(run) if split == "test" and run is not None else []
    if robust:  # what the run's attacks found, next to the clean figure
        result["robust"] = robust
    if predictor.method != "single":  # each member next to the ensemble
        result["member_accuracy"] = [float((mp.argmax(1).cpu() == part.labels.cpu()).double().mean())
                                     for mp in members]
    out_dir = located.output_dir(out, RunDir.EVAL)
    name = f"{split}{'-tta' if tta else ''}"
    if pictures:
        pics = {
            "confusion": plots.confusion_heatmap(result["confusion_matrix"], list(ds.classes),
                                                 out_dir / f"{name}-confusion.png",
                                                 title=f"{ds.name} {split}: confusion matrix"),
            "per_class": plots.per_class_bars(result["per_class"], out_dir / f"{name}-per-class.png",
                                              title=f"{ds.name} {split}: per-class recall and precision"),
            "reliability": plots.reliability_diagram(result["reliability"], result["ece"],
                                                     out_dir / f"{name}-reliability.png"),
            "mistakes": plots.mistakes_gallery(part.images, part.labels, probs, list(ds.classes),
                                               out_dir / f"{name}-mistakes.png"),
        }
        if variant and counts and len(counts) == len(ds.classes):  # where an imbalanced run's errors go
            pics["recall_vs_count"] = plots.recall_against_count(
                result["per_class"], counts, out_dir / f"{name}-recall-vs-count.png",
                title=f"{ds.name} {split}: recall against training examples per class")
        log = (run.epochs() or None) if run is not None else None
        if log:
            pics["curves"] = plots.training_curves(log, out_dir / "curves.png")
        result["pictures"] = {k: str(v) for k, v in pics.items() if v is not None}
    atomic.write_text(out_dir / f"{name}.json", json.dumps(result, indent=2))
    result["json"] = str(out_dir / f"{name}.json")
    return result


NOT_DIGIT_SAMPLE = 2000  # images of the split scored: the kNN over 10,000 references costs ~1 ms each


def not_digit_rate(predictor: Predictor, images: torch.Tensor, *, fit_missing: bool) -> dict | None:
    """The share of (the first 2,000 of) a split's images the model's not-a-digit score flags, or None
    where it has none stored (and `fit_missing` is off) or cannot have one (an ensemble, classical)."""
    if not ood.not_digit_model(predictor, fit_missing=fit_missing):
        return None
    scores = ood.scores_of(predictor, images[:NOT_DIGIT_SAMPLE])
    return {"images": int(len(scores)), "flagged": float((scores >= 0.5).double().mean())}


def _positive_int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 4096 else None
