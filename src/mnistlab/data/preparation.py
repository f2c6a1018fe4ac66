"""The classical preparations of a digit image, for every model: deskewing and binarising.

    deskew(x)      shear each image so its strokes stand upright, centred on its centre of mass
                   (LeCun et al.'s table: L2 kNN 3.09% -> 2.4% error with it)
    binarize(x)    pixels above half intensity -> 1, the rest -> 0

Both take float images in [0,1] (N,C,H,W) and are plain tensor operations, batched, on any device
and inside a CUDA graph. A run's `prepare` setting ("deskew", "binarize" or "deskew,binarize")
becomes part of its `Normalization`, so training, evaluation, prediction, the server and ONNX export
all apply the same steps to every image, including a user's own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import MnistlabError

STEPS = ("deskew", "binarize")
MAX_SKEW = 1.5  # |shear| beyond this is a degenerate image (a single horizontal line), not handwriting
BINARY_THRESHOLD = 0.5


def parse(text: str) -> tuple[str, ...]:
    """'deskew,binarize' -> ('deskew', 'binarize'); 'none' or '' -> (); errors name the unknown step."""
    if text.strip().lower() in ("", "none"):
        return ()
    steps = tuple(s.strip().lower() for s in text.split(","))
    unknown = [s for s in steps if s not in STEPS]
    if unknown or len(set(steps)) != len(steps):
        raise MnistlabError(f"prepare={text!r}: expected none, or a comma-separated list of {', '.join(STEPS)} "
                            "(each at most once)")
    return steps


def deskew(x: torch.Tensor) -> torch.Tensor:
    """Each image sheared horizontally by its skew (the covariance of row and column over the row
    variance of its ink) and shifted so that its centre of mass lands in the image centre."""
    n, c, h, w = x.shape
    ink = x.mean(1)  # (N,H,W): one shear for all channels of an image
    total = ink.sum((1, 2)).clamp_min(1e-6)
    rows = torch.arange(h, device=x.device, dtype=x.dtype).view(1, h, 1)
    cols = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, w)
    m_r = (ink * rows).sum((1, 2)) / total
    m_c = (ink * cols).sum((1, 2)) / total
    var_r = (ink * (rows - m_r.view(-1, 1, 1)) ** 2).sum((1, 2)) / total
    cov = (ink * (rows - m_r.view(-1, 1, 1)) * (cols - m_c.view(-1, 1, 1))).sum((1, 2)) / total
    alpha = torch.where(var_r > 1e-3, cov / var_r.clamp_min(1e-3), torch.zeros_like(cov)).clamp(-MAX_SKEW, MAX_SKEW)
    # Output pixel (r, q) reads the input at (r', q') with r' = r - h/2 + m_r and
    # q' = q - w/2 + m_c + alpha (r - h/2): the shear about the centre of mass, moved to the centre.
    out_r = torch.arange(h, device=x.device, dtype=x.dtype).view(1, h, 1).expand(n, h, w)
    out_c = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, w).expand(n, h, w)
    in_r = out_r - h / 2 + m_r.view(-1, 1, 1)
    in_c = out_c - w / 2 + m_c.view(-1, 1, 1) + alpha.view(-1, 1, 1) * (out_r - h / 2)
    empty = (ink.sum((1, 2)) <= 1e-6).view(-1, 1, 1)  # an empty image stays as it is
    in_r = torch.where(empty, out_r, in_r)
    in_c = torch.where(empty, out_c, in_c)
    # grid_sample's coordinates: -1 and 1 are the outer edges of the first and last pixels.
    grid = torch.stack([(2 * in_c + 1) / w - 1, (2 * in_r + 1) / h - 1], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def binarize(x: torch.Tensor) -> torch.Tensor:
    return (x > BINARY_THRESHOLD).to(x.dtype)


def apply(x: torch.Tensor, steps: tuple[str, ...]) -> torch.Tensor:
    """float images in [0,1] (N,C,H,W) with `steps` applied in order."""
    for step in steps:
        x = deskew(x) if step == "deskew" else binarize(x)
    return x
