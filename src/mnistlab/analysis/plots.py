"""Pictures: labelled image grids (and, later, the evaluation figures), written atomically as PNG."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .. import atomic
from ..errors import MnistlabError


def save_png(image: Image.Image, out: str | os.PathLike) -> Path:
    """Write `image` to `out` via a temporary file and a rename, so no half-written PNG is left."""
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise MnistlabError(f"--out {out}: expected a file name ending in .png")
    if out.parent and not out.parent.exists():
        raise MnistlabError(f"--out {out}: directory {out.parent} does not exist")
    with atomic.replacing(out) as tmp:
        image.save(tmp, format="PNG")
    return out


def image_grid(images: np.ndarray, captions: Sequence[str], *, scale: int = 3, cols: int | None = None) -> Image.Image:
    """A grid of uint8 images ((N,H,W) gray or (N,C,H,W) colour), each upscaled with a caption below."""
    n = len(images)
    if n == 0:
        raise MnistlabError("no images to draw")
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    colour = images.ndim == 4
    h, w = images.shape[-2:]
    cell_w, cell_h = w * scale, h * scale
    font_size = max(10, 4 * scale)
    font = ImageFont.load_default(size=font_size)
    caption_h = font_size + 6
    pad = 4
    canvas = Image.new("RGB", (cols * (cell_w + pad) + pad, rows * (cell_h + caption_h + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for i in range(n):
        r, c = divmod(i, cols)
        x0 = pad + c * (cell_w + pad)
        y0 = pad + r * (cell_h + caption_h + pad)
        arr = images[i].transpose(1, 2, 0) if colour else images[i]
        tile = Image.fromarray(np.ascontiguousarray(arr), "RGB" if colour else "L").resize((cell_w, cell_h), Image.NEAREST)
        canvas.paste(tile.convert("RGB"), (x0, y0))
        text = str(captions[i])
        tw = draw.textlength(text, font=font)
        draw.text((x0 + (cell_w - tw) / 2, y0 + cell_h + 2), text, fill="black", font=font)
    return canvas


# ----------------------------------------------------------------------------------------------
# Evaluation figures (matplotlib, headless)


def pyplot():
    """matplotlib.pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _figure(width: float, height: float):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(width, height), dpi=110)
    return plt, fig, ax


def _save_figure(plt, fig, out: Path) -> Path:
    import io

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    buf.seek(0)
    return save_png(Image.open(buf), out)


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
    return _save_figure(plt, fig, out)


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
    return _save_figure(plt, fig, out)


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
    return _save_figure(plt, fig, out)


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
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    epochs = [r["epoch"] for r in log]
    a1.plot(epochs, [r["train_loss"] for r in log], "o-", label="train")
    if "val_loss" in log[0]:
        a1.plot(epochs, [r["val_loss"] for r in log], "o-", label="validation")
    a1.set_xlabel("epoch")
    a1.set_ylabel("cross-entropy")
    a1.set_title("loss")
    a1.legend()
    a1.grid(alpha=0.3)
    a2.plot(epochs, [100 * r["train_acc"] for r in log], "o-", label="train")
    if "val_acc" in log[0]:
        a2.plot(epochs, [100 * r["val_acc"] for r in log], "o-", label="validation")
    a2.set_xlabel("epoch")
    a2.set_ylabel("accuracy (%)")
    a2.set_title("accuracy")
    a2.legend()
    a2.grid(alpha=0.3)
    return _save_figure(plt, fig, out)
