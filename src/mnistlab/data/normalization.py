"""From uint8 pixels to a model's input: the one place that scales and normalises images.

    norm = Normalization("standardize", mean=(0.1307,), std=(0.3081,))
    x = norm.apply(to_unit(images_u8))         # what training, evaluation, serving and export all do
    x = prepare(images_u8, normalize="scale", layout="flat")   # the tutorials' preprocessing, one call

Images go uint8 -> float in [0,1] (`to_unit`), are augmented there if training, then mapped to the
model's scale by `Normalization.apply`: "scale" keeps [0,1], "standardize" subtracts the training
set's per-channel mean and divides by its std, "none" gives back 0..255.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import MnistlabError
from .preparation import STEPS, apply

MIN_STD = 1e-4  # per channel, of pixels in [0,1]: far below one grey level (1/255)

MODES = ("standardize", "scale", "none")
LAYOUTS = ("nchw", "flat", "nhw", "nhwc")


@dataclass(frozen=True)
class Normalization:
    """How a model expects its input: float images in [0,1], then `mode` with the training set's stats."""

    mode: str  # "standardize" | "scale" | "none"
    mean: tuple[float, ...]  # per channel, of the [0,1]-scaled training images
    std: tuple[float, ...]
    prepare: tuple[str, ...] = ()  # deskew / binarize first (data/preparation.py), in this order

    def __post_init__(self):
        if self.mode not in MODES:
            raise MnistlabError(f"normalize={self.mode!r}: expected {' | '.join(MODES)}")

        if any(step not in STEPS for step in self.prepare) or len(set(self.prepare)) != len(self.prepare):
            raise MnistlabError(f"prepare {list(self.prepare)}: expected distinct steps from {', '.join(STEPS)}")
        if not self.mean or len(self.mean) != len(self.std):
            raise MnistlabError(f"normalisation mean {list(self.mean)} and std {list(self.std)}: expected one "
                                "value per channel in each")
        for m, s in zip(self.mean, self.std):
            # of pixels in [0,1]: a std far below one grey level (1/255), or a mean far outside, would
            # make every input enormous (a std of 1e-320 made a checkpoint's evaluation all NaN)
            if (not (math.isfinite(m) and math.isfinite(s)) or abs(m) > 1e3 or abs(s) > 1e3
                    or (self.mode == "standardize" and s < MIN_STD)):
                raise MnistlabError(
                    f"normalisation mean {list(self.mean)}, std {list(self.std)}: a standardised input needs a "
                    f"mean within +-1000 and a std from {MIN_STD:g} to 1000 per channel (pixels scaled to [0,1])",
                    hint="a std of 0 means every training pixel has the same value (an empty or all-zero "
                    "dataset?); check the data, or train with normalize='scale'")

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """float images in [0,1] (N,C,H,W) -> the model's input (prepared, then scaled)."""
        if self.prepare:

            x = apply(x, self.prepare)
        if self.mode == "none":
            return x * 255.0
        if self.mode == "scale":
            return x
        mean, std = self._constants(x.device, x.dtype)
        return (x - mean) / std

    def _constants(self, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # Made once per device: no host-to-device copy per batch (and none inside a CUDA graph).
        key = (str(device), dtype)
        cache = self.__dict__.setdefault("_cache", {})
        if key not in cache:
            cache[key] = (torch.tensor(self.mean, dtype=dtype, device=device).view(1, -1, 1, 1),
                          torch.tensor(self.std, dtype=dtype, device=device).view(1, -1, 1, 1))
        return cache[key]

    def as_dict(self) -> dict:
        d = {"normalize": self.mode, "mean": list(self.mean), "std": list(self.std)}
        return {**d, "prepare": list(self.prepare)} if self.prepare else d  # older files have no key

    @classmethod
    def from_dict(cls, d: dict) -> Normalization:
        prepare = d.get("prepare", [])
        if not isinstance(prepare, list) or not all(isinstance(s, str) for s in prepare):
            raise MnistlabError(f"normalisation prepare {prepare!r}: expected a list of step names")
        return cls(d["normalize"], tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"]),
                   tuple(prepare))


def to_unit(images_u8: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (N,H,W) or (N,C,H,W) -> float (N,C,H,W) in [0,1]."""
    x = images_u8.unsqueeze(1) if images_u8.dim() == 3 else images_u8
    return x.to(dtype).div_(255.0)


def prepare(
    images: torch.Tensor,
    *,
    normalize: str = "standardize",
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
    layout: str = "nchw",
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """uint8 images -> float tensor, in one batched op on `device` (the tutorials' preprocessing).

    normalize: "standardize" ((x/255 - mean)/std), "scale" (x/255 in [0,1]) or "none" (values 0..255).
    layout: "nchw" (channel axis added: (N,1,28,28)), "flat" ((N,784)), "nhw" (as stored) or "nhwc".
    mean/std: per-channel statistics of the [0,1]-scaled training images (required to standardize).
    """
    if layout not in LAYOUTS:
        raise MnistlabError(f"layout={layout!r}: expected {', '.join(repr(v) for v in LAYOUTS)}")
    if normalize == "standardize" and (mean is None or std is None):
        raise MnistlabError("normalize='standardize' needs the training set's mean and std",
                            hint="use Split.prepare(), which knows them, or pass mean= and std=")
    channels = images.shape[1] if images.dim() == 4 else 1

    def per_channel(value, default: float) -> tuple[float, ...]:
        if value is None:
            return (default,) * channels
        return tuple(float(v) for v in value) if isinstance(value, Sequence) else (float(value),) * channels

    norm = Normalization(normalize, per_channel(mean, 0.0), per_channel(std, 1.0))
    x = images.to(device) if device is not None else images  # move uint8: 4x fewer bytes than float
    x = norm.apply(to_unit(x, dtype))
    if layout == "flat":
        return x.reshape(x.shape[0], -1)
    if layout == "nhw":
        return x.squeeze(1) if x.shape[1] == 1 else x
    if layout == "nhwc":
        return x.permute(0, 2, 3, 1).contiguous()
    return x


def pixel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images scaled to [0,1], exact (integer sums, in chunks)."""
    per_channel = images.unsqueeze(1) if images.dim() == 3 else images  # (N,C,H,W)
    means, stds = [], []
    for c in range(per_channel.shape[1]):
        total = total_sq = 0
        n = 0
        for chunk in per_channel[:, c].reshape(-1).split(1 << 22):
            v = chunk.to(torch.int32)
            total += int(v.sum(dtype=torch.int64))
            total_sq += int((v * v).sum(dtype=torch.int64))
            n += v.numel()
        mean = total / n if n else 0.0
        var = total_sq / n - mean * mean if n else 0.0
        means.append(mean / 255)
        stds.append(max(var, 0.0) ** 0.5 / 255)
    return tuple(means), tuple(stds)
