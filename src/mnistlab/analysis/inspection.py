"""What a network learned, as pictures: first-layer filters, feature maps, the images that most excite a
unit, and saliency.

    mnistlab inspect runs/seed-cnn-mnist-s0                    # writes runs/seed-cnn-mnist-s0/inspect/
    mnistlab inspect RUN --images 0,7,42 --units 6 --split test

- filters.png: the first layer's weights. For a convolution, its kernels (each scaled to its own
  range; red positive, blue negative): edge and stroke detectors in a trained net. For a first linear
  layer (logreg, mlp), each unit's 784 weights shown as a 28x28 template.
- featuremaps-IDX.png: for each chosen image, the output of every convolution (up to 16 channels a layer).
- top-units.png: for the penultimate features (what the classifier reads), the units of highest
  variance over the split, each with the images that excite it most.
- saliency.png: the gradient of the predicted class's logit with respect to the input pixels.

inspect.json lists the pictures; `mnistlab report RUN` shows them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import atomic
from ..data import load
from ..data.normalization import Normalization, to_unit
from ..errors import MnistlabError
from ..models.classical import ClassicalModel
from ..models.features import features
from ..models.keras_bridge import KerasLayer
from ..models.predictor import load_model
from ..models.source import locate
from ..pictures import coloured, mosaic_figure, save_figure
from ..rundir import RunDir

MAX_IMAGES = 16
MAX_UNITS = 32


def inspect_model(path: str, *, dataset: str | None = None, split: str = "test", images=(0, 1, 2, 3),
                  units: int = 8, top: int = 8, out: str | None = None, data_dir: str | None = None) -> dict:
    images = [int(i) for i in images]
    if not images or len(images) > MAX_IMAGES:
        raise MnistlabError(f"--images: expected 1 to {MAX_IMAGES} image positions, got {len(images)}")
    if not 1 <= units <= MAX_UNITS or not 1 <= top <= 32:
        raise MnistlabError(f"--units {units} / --top {top}: expected 1 to {MAX_UNITS} units and 1 to 32 images each")
    if split not in ("train", "test"):
        raise MnistlabError(f"--split {split!r}: expected train or test")
    located = locate(path)
    model, meta = load_model(located.checkpoint)

    if isinstance(model, ClassicalModel):
        raise MnistlabError(f"{path} is a scikit-learn {model.name} model: it has no filters, feature maps or "
                            "gradients to draw", hint="inspect a network; `mnistlab map RUN --features pixels` "
                            "shows a classical model's mistakes")
    out_dir = located.output_dir(out, RunDir.INSPECT)
    ds = load(dataset or meta["dataset"], data_dir=data_dir)
    data = ds.split(split)
    bad = [i for i in images if not 0 <= i < len(data)]
    if bad:
        raise MnistlabError(f"--images {bad[0]}: {ds.name}'s {split} split has images 0 to {len(data) - 1}")
    norm = Normalization.from_dict(meta["normalization"])
    x_all = norm.apply(to_unit(data.images).reshape(len(data), *meta["in_shape"]))
    pictures = {"filters": str(draw_filters(model, meta["in_shape"], out_dir / "filters.png"))}
    convs = [(n, m) for n, m in model.named_modules() if _kind(m) == "Conv2d"]
    for i in images:
        if convs:
            pictures[f"featuremaps-{i}"] = str(draw_feature_maps(model, convs, x_all[i:i + 1], data.images[i],
                                                                 out_dir / f"featuremaps-{i}.png"))
    feats = features(model, data.images.reshape(len(data), *meta["in_shape"]), norm)
    chosen = torch.argsort(feats.var(0), descending=True)[:units]
    tops = torch.argsort(feats[:, chosen], dim=0, descending=True)[:top].T  # (units, top)
    pictures["top-units"] = str(draw_top_units(data.images, chosen, tops, feats, out_dir / "top-units.png"))
    pictures["saliency"] = str(draw_saliency(model, x_all[images], data.images[images], data.labels[images],
                                             meta["classes"], out_dir / "saliency.png"))
    result = {"model": str(located.checkpoint), "dataset": ds.name, "split": split, "images": images,
              "first_layer": _first_layer(model)[0], "conv_layers": [n for n, _ in convs],
              "units": [{"unit": int(u), "variance": float(feats[:, u].var()), "top_images": t.tolist()}
                        for u, t in zip(chosen, tops)], "pictures": pictures}
    atomic.write_text(out_dir / RunDir.INSPECT_FILE, json.dumps(result, indent=2))
    return result


def _kind(m: nn.Module) -> str | None:
    """Conv2d or Linear, for torch's own layers and a Keras model's (their weights in torch's layout)."""
    if isinstance(m, KerasLayer):
        return m.kind if m.kind in ("Conv2d", "Linear") else None
    return "Conv2d" if isinstance(m, nn.Conv2d) else "Linear" if isinstance(m, nn.Linear) else None


def _first_layer(model: nn.Module) -> tuple[str, nn.Module]:
    for name, m in model.named_modules():
        if _kind(m):
            return name, m
    raise MnistlabError(f"{getattr(model, 'mnistlab_name', 'the model')} has no convolution or linear first layer "
                        "to draw")


CELL = 56  # pixels per tile: 28x28 images at 2x


def gray(image_u8: torch.Tensor) -> np.ndarray:
    """A uint8 image (H, W), (1, H, W) or (3, H, W) as an (H, W, 3) picture."""
    img = image_u8.numpy()
    img = img[0] if img.ndim == 3 and img.shape[0] == 1 else img
    return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else np.ascontiguousarray(img.transpose(1, 2, 0))


def draw_filters(model: nn.Module, in_shape, path: Path) -> Path:
    name, layer = _first_layer(model)
    w = layer.weight.detach().float()
    if _kind(layer) == "Linear":  # a template per unit over the input image
        w = w[:64].reshape(-1, *in_shape)
    w = w[:, 0] if w.shape[1] == 1 else w.mean(1)  # colour inputs: the mean over channels
    n = len(w)
    cols = min(8, n)
    tiles = []
    for k in range(n):
        lim = float(w[k].abs().max()) or 1.0  # each kernel on its own symmetric scale: red +, blue -
        tiles.append(coloured(w[k].numpy(), "RdBu_r", -lim, lim))
    rows = [tiles[i:i + cols] for i in range(0, n, cols)]
    kind = "kernels" if _kind(layer) == "Conv2d" else "units"
    layer_type = f"Keras {type(layer.layer).__name__}" if isinstance(layer, KerasLayer) else type(layer).__name__
    fig, _ = mosaic_figure(rows, cell=CELL, inches_per_cell=1.1,
                           title=f"first layer ({name}: {layer_type}, {n} {kind})")
    return save_figure(fig, path)


def draw_feature_maps(model, convs, x, image_u8, path: Path, per_layer: int = 16) -> Path:
    maps = {}
    hooks = [m.register_forward_hook(lambda mod, a, out, n=n: maps.__setitem__(n, out.detach()[0]))
             for n, m in convs]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    rows, labels = [[gray(image_u8)]], ["input"]
    for n, _ in convs:
        fm = maps[n]
        rows.append([coloured(fm[c].float().numpy(), "viridis") for c in range(min(per_layer, fm.shape[0]))])
        labels.append(f"{n} ({fm.shape[0]}x{fm.shape[1]}x{fm.shape[2]})")
    rows[0] += [None] * (max(len(r) for r in rows) - 1)  # the input alone on the first row
    fig, _ = mosaic_figure(rows, cell=CELL, labels=[[label] for label in labels], inches_per_cell=0.8,
                           title="feature maps: each convolution's output channels for this image")
    return save_figure(fig, path)


def draw_top_units(images_u8, units, tops, feats, path: Path) -> Path:
    n_units, k = tops.shape
    rows = [[gray(images_u8[int(tops[r, c])]) for c in range(k)] for r in range(n_units)]
    fig, _ = mosaic_figure(rows, cell=CELL, labels=[[f"unit {int(u)}"] for u in units[:n_units]],
                           title="penultimate units of highest variance: the images that excite each most")
    return save_figure(fig, path)


def saliency(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(|d logit of the predicted class / d input|, the predictions) for a batch of prepared images."""
    x = x.clone().requires_grad_(True)
    logits = model(x)
    pred = logits.argmax(1)
    logits.gather(1, pred[:, None]).sum().backward()
    return x.grad.detach().abs().amax(1), pred


def draw_saliency(model, x, images_u8, labels, classes, path: Path) -> Path:
    grad, pred = saliency(model, x)
    n = len(x)
    rows = [[gray(images_u8[i]) for i in range(n)], [coloured(grad[i].numpy(), "hot") for i in range(n)]]
    said = [f"{classes[int(labels[i])]}>{classes[int(pred[i])]}" for i in range(n)]  # label>prediction
    fig, _ = mosaic_figure(rows, cell=CELL, labels=[said], inches_per_cell=1.2,
                           title="saliency: |gradient of the predicted logit| per pixel (label>prediction)")
    return save_figure(fig, path)


def pictures_of(run_path) -> dict | None:
    """inspect.json of a run, if `mnistlab inspect` has been run on it (checked by RunDir)."""
    return RunDir(run_path).read_inspect()
