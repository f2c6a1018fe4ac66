"""The evaluation figures: confusion matrix, per-class bars, reliability diagram, mistakes, training
curves (drawn and saved through mnistlab.pictures)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..pictures import figure as _figure
from ..pictures import image_grid, pyplot, save_figure, save_png


def confusion_heatmap(cm: Sequence[Sequence[int]], classes: Sequence[str], out, title: str = "") -> Path:
    """Counts on a log-scaled colour map, so the few errors stand out beside the large diagonal."""
    from matplotlib.colors import LogNorm

    cm = np.asarray(cm)
    k = len(classes)
    size = max(6.0, 0.55 * k + 2)
    plt, fig, ax = _figure(size, size * 0.9)
    im = ax.imshow(cm + 0.5, cmap="Blues", norm=LogNorm(vmin=0.5, vmax=max(cm.max(), 1) + 0.5))
    ax.set_xticks(range(k), classes, rotation=45 if max(len(c) for c in classes) > 2 else 0, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if i == j else ("#b00020" if cm[i, j] else "black"))
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="count (log scale)")
    return save_figure(fig, out)


def per_class_bars(per_class: list[dict], out, title: str = "") -> Path:
    k = len(per_class)
    plt, fig, ax = _figure(max(7.0, 0.5 * k + 2), 4.2)
    x = np.arange(k)
    recall = [c["recall"] for c in per_class]
    precision = [c["precision"] for c in per_class]
    ax.bar(x - 0.2, recall, 0.4, label="recall (per-class accuracy)", color="#3366cc")
    ax.bar(x + 0.2, precision, 0.4, label="precision", color="#ff9933")
    low = min(min(recall), min(precision))
    ax.set_ylim(max(0.0, low - (1 - low) * 0.5 - 0.005), 1.0)
    ax.set_xticks(x, [c["class"] for c in per_class], rotation=45 if k > 12 else 0)
    ax.set_ylabel("fraction")
    ax.set_title(title)
    ax.legend(loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, out)


def recall_against_count(per_class: list[dict], counts: Sequence[int], out, title: str = "") -> Path:
    """Each class's recall (per-class accuracy) against how many training examples it had, log scale:
    where an imbalanced run's errors go."""
    plt, fig, ax = _figure(6.5, 4.2)
    recall = [c["recall"] for c in per_class]
    x = [max(1, int(n)) for n in counts]
    ax.scatter(x, recall, color="#3366cc", zorder=3)
    for c, xi, yi in zip(per_class, x, recall):
        ax.annotate(str(c["class"])[:12], (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    low = min(recall)
    ax.set_ylim(max(0.0, low - (1 - low) * 0.3 - 0.01), 1.005)
    ax.set_xlabel("training examples of the class (given labels, log scale)")
    ax.set_ylabel("recall on the split")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return save_figure(fig, out)


def reliability_diagram(bins: list[dict], ece: float, out) -> Path:
    plt, fig, ax = _figure(5.5, 5.0)
    filled = [b for b in bins if b["count"]]
    centres = [(b["lo"] + b["hi"]) / 2 for b in filled]
    ax.bar(centres, [b["accuracy"] for b in filled], width=1 / len(bins), edgecolor="black", color="#3366cc",
           alpha=0.8, label="accuracy in bin")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(f"reliability diagram (ECE {ece:.4f})")
    ax.legend(loc="upper left")
    return save_figure(fig, out)


def mistakes_gallery(images, labels, probs, classes: Sequence[str], out, limit: int = 64) -> Path | None:
    """The misclassified images, most confident mistakes first: 'true -> predicted (confidence)'."""
    import torch

    conf, pred = probs.max(1)
    wrong = torch.nonzero(pred.cpu() != labels.cpu()).flatten()
    if len(wrong) == 0:
        return None
    wrong = wrong[torch.argsort(conf.cpu()[wrong], descending=True)][:limit]
    captions = [f"{classes[int(labels[i])]}>{classes[int(pred[i])]} {conf[i]:.0%}" for i in wrong]
    grid = image_grid(images[wrong].cpu().numpy(), captions, scale=3, cols=8)
    return save_png(grid, out)


def training_curves(log: list[dict], out) -> Path:
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    epochs = [r["epoch"] for r in log]
    a1.plot(epochs, [r["train_loss"] for r in log], "o-", label="train")
    if all(r.get("val_loss") is not None for r in log):
        a1.plot(epochs, [r["val_loss"] for r in log], "o-", label="validation")
    a1.set_xlabel("epoch")
    a1.set_ylabel("cross-entropy")
    a1.set_title("loss")
    a1.legend()
    a1.grid(alpha=0.3)
    a2.plot(epochs, [100 * (r.get("train_acc") or 0) for r in log], "o-", label="train")
    if all(r.get("val_acc") is not None for r in log):
        a2.plot(epochs, [100 * r["val_acc"] for r in log], "o-", label="validation")
    a2.set_xlabel("epoch")
    a2.set_ylabel("accuracy (%)")
    a2.set_title("accuracy")
    a2.legend()
    a2.grid(alpha=0.3)
    return save_figure(fig, out)
