"""Batched, seeded data augmentation on the device: rotation, translation, zoom, elastic distortion.

One sampling grid per batch holds the random affine transform of every image and, optionally, a
Simard-style elastic displacement field (uniform noise smoothed by a Gaussian, scaled by alpha);
one `grid_sample` applies it all. Images are expected in [0,1] with a black background, so the
zero padding of `grid_sample` is background (normalise after augmenting).

    x = augment(x, Augment(rotate=10, translate=0.1, zoom=0.1), generator)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from ..errors import MnistlabError


@dataclass(frozen=True)
class Augment:
    rotate: float = 0.0  # max rotation, degrees (uniform in [-rotate, rotate])
    translate: float = 0.0  # max shift, fraction of the image size per axis
    zoom: float = 0.0  # max scale change, fraction (scale uniform in [1-zoom, 1+zoom])
    elastic_alpha: float = 0.0  # elastic displacement strength, pixels (Simard et al. use ~34 with sigma 4)
    elastic_sigma: float = 4.0  # smoothness of the elastic field, pixels

    @property
    def active(self) -> bool:
        return any((self.rotate, self.translate, self.zoom, self.elastic_alpha))

    def as_dict(self) -> dict:
        return asdict(self)


# Named presets; a recipe or `--augment NAME` picks one, explicit fields override it.
PRESETS: dict[str, Augment] = {
    "none": Augment(),
    "seed": Augment(rotate=10, translate=0.1, zoom=0.1),  # the Keras ImageDataGenerator tutorials' values
    "an2020": Augment(rotate=20, translate=0.2),  # An et al. (2020)
    "elastic": Augment(rotate=10, translate=0.1, zoom=0.1, elastic_alpha=34, elastic_sigma=4),
}


def preset(name: str) -> Augment:
    if name not in PRESETS:
        raise MnistlabError(f"augment={name!r}: expected one of {', '.join(PRESETS)}")
    return PRESETS[name]


def affine_matrices(angle_deg: torch.Tensor, shift_px: torch.Tensor, scale: torch.Tensor,
                    size: tuple[int, int]) -> torch.Tensor:
    """(N,2,3) matrices for `F.affine_grid`: rotate images by angle (counter-clockwise as displayed),
    scale them by `scale` about the centre, then shift them by (dx, dy) pixels (right, down)."""
    h, w = size
    dtype = angle_deg.dtype if angle_deg.is_floating_point() else torch.float32
    angle_deg, shift_px, scale = (torch.as_tensor(t, device=angle_deg.device).to(dtype)
                                  for t in (angle_deg, shift_px, scale))
    a = angle_deg * (math.pi / 180)
    cos, sin = torch.cos(a), torch.sin(a)
    # affine_grid maps output coordinates to input coordinates (normalised to [-1,1]), so this is
    # the inverse transform: undo the shift, then the scale and rotation. The (h/w) terms keep
    # rotations rigid on non-square images; y points down on screen, hence the signs.
    inv = 1.0 / scale
    theta = torch.zeros(angle_deg.shape[0], 2, 3, dtype=dtype, device=angle_deg.device)
    theta[:, 0, 0] = cos * inv
    theta[:, 0, 1] = -sin * inv * (h / w)
    theta[:, 1, 0] = sin * inv * (w / h)
    theta[:, 1, 1] = cos * inv
    tx = shift_px[:, 0] * 2 / w
    ty = shift_px[:, 1] * 2 / h
    theta[:, 0, 2] = -(theta[:, 0, 0] * tx + theta[:, 0, 1] * ty)
    theta[:, 1, 2] = -(theta[:, 1, 0] * tx + theta[:, 1, 1] * ty)
    return theta


def warp(x: torch.Tensor, theta: torch.Tensor, displacement: torch.Tensor | None = None,
         mode: str = "bilinear") -> torch.Tensor:
    """Apply (N,2,3) affine matrices, plus an optional (N,H,W,2) displacement in normalised units."""
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    if displacement is not None:
        grid = grid + displacement
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)


def _gaussian_kernel(sigma: float, device, dtype) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def smooth_field(noise: torch.Tensor, alpha: float, sigma: float) -> torch.Tensor:
    """(N,2,H,W) uniform noise in [-1,1] -> (N,H,W,2) smooth displacements of about `alpha` pixels,
    in grid_sample's normalised units (a Gaussian blur, separable, dx and dy kept apart)."""
    _, _, h, w = noise.shape
    k = _gaussian_kernel(sigma, noise.device, noise.dtype)
    r = k.numel() // 2
    noise = F.conv2d(F.pad(noise, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(2, 1, 1, -1), groups=2)
    noise = F.conv2d(F.pad(noise, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).expand(2, 1, -1, 1), groups=2)
    disp_px = noise * alpha
    scale = torch.tensor([2.0 / w, 2.0 / h], device=noise.device, dtype=noise.dtype)
    return disp_px.permute(0, 2, 3, 1) * scale


def elastic_field(n: int, size: tuple[int, int], alpha: float, sigma: float, generator: torch.Generator,
                  device, dtype) -> torch.Tensor:
    """(N,H,W,2) smooth random displacements of about `alpha` pixels, in grid_sample's normalised units."""
    noise = torch.rand(n, 2, *size, generator=generator, device=device, dtype=dtype) * 2 - 1
    return smooth_field(noise, alpha, sigma)


@dataclass
class Draw:
    """The random numbers of one batch's augmentation, drawn apart from their use: the CUDA-graph
    step draws them outside the graph into buffers the captured step reads."""

    angle: torch.Tensor  # (N,) degrees
    scale: torch.Tensor  # (N,)
    shift: torch.Tensor  # (N,2) pixels (right, down)
    noise: torch.Tensor | None  # (N,2,H,W) uniform in [-1,1], smoothed into the elastic field; None if off

    def tensors(self) -> list[torch.Tensor]:
        return [t for t in (self.angle, self.scale, self.shift, self.noise) if t is not None]


def draw(cfg: Augment, n: int, size: tuple[int, int], generator: torch.Generator, device) -> Draw | None:
    """A batch's random transform parameters, from `generator` only (None when `cfg` does nothing)."""
    if not cfg.active:
        return None
    h, w = size
    dt = torch.float32

    def uniform(limit: float) -> torch.Tensor:
        return (torch.rand(n, generator=generator, device=device, dtype=dt) * 2 - 1) * limit

    angle = uniform(cfg.rotate)
    scale = 1 + uniform(cfg.zoom)
    shift = torch.stack([uniform(cfg.translate * w), uniform(cfg.translate * h)], dim=1)
    noise = None
    if cfg.elastic_alpha:
        noise = torch.rand(n, 2, h, w, generator=generator, device=device, dtype=dt) * 2 - 1
    return Draw(angle, scale, shift, noise)


def apply(x: torch.Tensor, cfg: Augment, params: Draw | None) -> torch.Tensor:
    """Transform a batch (N,C,H,W) of [0,1] images by `params` (from `draw`); nothing for None."""
    if params is None:
        return x
    theta = affine_matrices(params.angle, params.shift, params.scale, tuple(x.shape[-2:]))
    disp = None
    if params.noise is not None:
        disp = smooth_field(params.noise, cfg.elastic_alpha, cfg.elastic_sigma).to(x.dtype)
    return warp(x, theta, disp)


def augment(x: torch.Tensor, cfg: Augment, generator: torch.Generator) -> torch.Tensor:
    """Randomly transform a batch (N,C,H,W) of [0,1] images; draws come from `generator` only."""
    return apply(x, cfg, draw(cfg, x.shape[0], tuple(x.shape[-2:]), generator, x.device))
