"""Batched, seeded data augmentation on the device: rotation, translation, zoom, shear, elastic
distortion, and pixel-level changes: stroke thickness, blur, contrast and illumination, occlusion, noise.

One sampling grid per batch holds the random affine transform of every image and, optionally, a
Simard-style elastic displacement field (uniform noise smoothed by a Gaussian, scaled by alpha);
one `grid_sample` applies it all. Images are expected in [0,1] with a black background, so the
zero padding of `grid_sample` is background (normalise after augmenting).

The pixel-level changes are generic (none copies a corruption of `mnistlab shift`; docs/shift.md
says which of those each resembles): each touches a share (`share`) of the images, at a strength
drawn per image up to its maximum, in this order:

- stroke: grey-level dilation or erosion (3x3 max or min, twice for more than a pixel), blended, so
  strokes grow or shrink by up to `stroke` pixels; or (a quarter of these) the strokes' outline, the
  morphological gradient (dilation less erosion);
- blur: a Gaussian of up to `blur` pixels, its own width per axis;
- contrast: the background raised and the ink's range narrowed, each by up to `contrast`, and a
  smooth illumination field (a 4x4 grid of random levels, interpolated) of up to `contrast` added;
- occlude: a rectangle (2 to 14 pixels a side) painted one random grey, or inverted, or a stray pen
  stroke of three segments drawn across the image;
- noise: additive, multiplicative (speckle) or salt-and-pepper noise of up to `noise` (standard
  deviation, or the share of pixels hit).

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
    shear: float = 0.0  # max shear along x, radians (uniform in [-shear, shear])
    stroke: float = 0.0  # max stroke growth or shrinkage, pixels (grey-level dilation / erosion)
    blur: float = 0.0  # max Gaussian blur, pixels (standard deviation, drawn per axis)
    contrast: float = 0.0  # max background lift, loss of ink range and illumination, fractions of [0,1]
    occlude: float = 0.0  # share of images with a rectangle painted over (0 = off)
    noise: float = 0.0  # max noise: standard deviation (additive, speckle) or share of pixels (salt and pepper)
    share: float = 0.3  # the share of images each pixel-level change (stroke, blur, contrast, noise) touches

    @property
    def active(self) -> bool:
        return any((self.rotate, self.translate, self.zoom, self.elastic_alpha, self.shear)) or self.pixels

    @property
    def geometric(self) -> bool:
        return any((self.rotate, self.translate, self.zoom, self.elastic_alpha, self.shear))

    @property
    def pixels(self) -> bool:
        return any((self.stroke, self.blur, self.contrast, self.occlude, self.noise))

    def as_dict(self) -> dict:
        return asdict(self)


# Named presets; a recipe or `--augment NAME` picks one, explicit fields override it.
PRESETS: dict[str, Augment] = {
    "none": Augment(),
    "seed": Augment(rotate=10, translate=0.1, zoom=0.1),  # the Keras ImageDataGenerator tutorials' values
    "an2020": Augment(rotate=20, translate=0.2),  # An et al. (2020)
    "elastic": Augment(rotate=10, translate=0.1, zoom=0.1, elastic_alpha=34, elastic_sigma=4),
    # digits as they come from elsewhere: turned, sized, slanted, moved, warped, thick or thin, blurred,
    # faint or lit unevenly, partly covered, noisy (the `robust` recipe; chosen on validation, docs/shift.md)
    "robust": Augment(rotate=30, translate=0.15, zoom=0.25, shear=0.4, elastic_alpha=15, elastic_sigma=4,
                      stroke=2.0, blur=1.5, contrast=0.75, occlude=0.25, noise=0.3, share=0.2),
}


def preset(name: str) -> Augment:
    if name not in PRESETS:
        raise MnistlabError(f"augment={name!r}: expected one of {', '.join(PRESETS)}")
    return PRESETS[name]


def affine_matrices(angle_deg: torch.Tensor, shift_px: torch.Tensor, scale: torch.Tensor,
                    size: tuple[int, int], shear: torch.Tensor | None = None) -> torch.Tensor:
    """(N,2,3) matrices for `F.affine_grid`: rotate images by angle (counter-clockwise as displayed),
    scale them by `scale` about the centre, then shift them by (dx, dy) pixels (right, down); a
    `shear` (radians) slants them along x first."""
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
    if shear is not None:  # output (x, y) reads input (x + tan(shear) y, y), before the rotation's inverse
        t = torch.tan(torch.as_tensor(shear, device=angle_deg.device).to(dtype)) * (w / h)
        theta[:, 0, 1] = theta[:, 0, 1] + theta[:, 0, 0] * t
        theta[:, 1, 1] = theta[:, 1, 1] + theta[:, 1, 0] * t
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
    shear: torch.Tensor | None = None  # (N,) radians; None if off
    pixel: torch.Tensor | None = None  # (N,PIXEL_DRAWS) uniform in [0,1): which changes, how strong; None if off
    field: torch.Tensor | None = None  # (N,3,H,W) uniform in [0,1): noise, salt and pepper; None if off
    light: torch.Tensor | None = None  # (N,1,4,4) uniform in [0,1): the illumination grid; None if off

    def tensors(self) -> list[torch.Tensor]:
        return [t for t in (self.angle, self.scale, self.shift, self.noise, self.shear, self.pixel, self.field,
                            self.light) if t is not None]


PIXEL_DRAWS = 26  # uniform numbers per image for the pixel-level changes (see `pixel_changes`)


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
    out = Draw(angle, scale, shift, noise)
    if cfg.shear:  # drawn after the others, so a preset without shear draws what it always drew
        out.shear = uniform(cfg.shear)
    if cfg.pixels:
        out.pixel = torch.rand(n, PIXEL_DRAWS, generator=generator, device=device, dtype=dt)
        out.field = torch.rand(n, 3, h, w, generator=generator, device=device, dtype=dt)
        out.light = torch.rand(n, 1, 4, 4, generator=generator, device=device, dtype=dt)
    return out


def apply(x: torch.Tensor, cfg: Augment, params: Draw | None) -> torch.Tensor:
    """Transform a batch (N,C,H,W) of [0,1] images by `params` (from `draw`); nothing for None."""
    if params is None:
        return x
    if cfg.geometric:
        theta = affine_matrices(params.angle, params.shift, params.scale, tuple(x.shape[-2:]), params.shear)
        disp = None
        if params.noise is not None:
            disp = smooth_field(params.noise, cfg.elastic_alpha, cfg.elastic_sigma).to(x.dtype)
        x = warp(x, theta, disp)
    if params.pixel is not None:
        x = pixel_changes(x, cfg, params)
    return x


def _mix(x: torch.Tensor, changed: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per image (weight (N,) in [0,1]), `x` blended toward `changed`."""
    w = weight.view(-1, *([1] * (x.dim() - 1))).to(x.dtype)
    return x + w * (changed - x)


def _dilate(x: torch.Tensor, pad_value: float = 0.0) -> torch.Tensor:
    """The 3x3 grey-level dilation (maximum) of (N,C,H,W), by shifted maxima (a 3x3 max-pool with stride 1
    runs ~4x slower on CPUs)."""
    h, w = x.shape[-2:]
    p = F.pad(x, (1, 1, 1, 1), value=pad_value)
    rows = torch.maximum(torch.maximum(p[..., :, 0:w], p[..., :, 1:w + 1]), p[..., :, 2:w + 2])
    return torch.maximum(torch.maximum(rows[..., 0:h, :], rows[..., 1:h + 1, :]), rows[..., 2:h + 2, :])


def _erode(x: torch.Tensor) -> torch.Tensor:
    return -_dilate(-x, pad_value=0.0)


def _blur(x: torch.Tensor, sigma_x: torch.Tensor, sigma_y: torch.Tensor, radius: int) -> torch.Tensor:
    """Each image (N,C,H,W) blurred by its own Gaussian (sigma per axis, pixels; 0: unchanged)."""
    n, c, h, w = x.shape
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)

    def kernels(sigma):
        k = torch.exp(-0.5 * (t / sigma.to(x.dtype).clamp_min(1e-3).view(-1, 1)) ** 2)
        return (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (N*C, 2r+1)

    y = x.reshape(1, n * c, h, w)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="replicate"), kernels(sigma_x).view(n * c, 1, 1, -1),
                 groups=n * c)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="replicate"), kernels(sigma_y).view(n * c, 1, -1, 1),
                 groups=n * c)
    return y.view(n, c, h, w)


def _stray_stroke(u: torch.Tensor, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """(N,1,H,W) in [0,1]: a pen stroke of three segments from the left edge to the right, through
    heights u20-u23, 1 to 2.5 pixels wide (u24), anti-aliased: a stray mark across the digit."""
    xs = torch.tensor([0.0, w / 3, 2 * w / 3, w - 1.0], device=like.device, dtype=like.dtype)
    ys = u[:, 20:24].to(like.dtype) * (h - 1)  # (N,4)
    cols = torch.arange(w, device=like.device, dtype=like.dtype).view(1, 1, w)
    rows = torch.arange(h, device=like.device, dtype=like.dtype).view(1, h, 1)
    nearest = None
    for k in range(3):  # distance from each pixel to segment k, the nearest kept
        x0, x1 = xs[k], xs[k + 1]
        y0, y1 = ys[:, k].view(-1, 1, 1), ys[:, k + 1].view(-1, 1, 1)
        dx, dy = x1 - x0, y1 - y0
        t = (((cols - x0) * dx + (rows - y0) * dy) / (dx * dx + dy * dy)).clamp(0, 1)
        d = torch.sqrt((cols - x0 - t * dx) ** 2 + (rows - y0 - t * dy) ** 2)
        nearest = d if nearest is None else torch.minimum(nearest, d)
    half = (0.5 + 0.75 * u[:, 24].to(like.dtype)).view(-1, 1, 1)
    return (1 - (nearest - half).clamp_min(0)).clamp(0, 1).unsqueeze(1)


def pixel_changes(x: torch.Tensor, cfg: Augment, params: Draw) -> torch.Tensor:
    """The pixel-level changes (see the module docstring) of a [0,1] batch, by the draws in `params`:
    column k of `params.pixel` decides one thing per image, in the order below."""
    u, f = params.pixel, params.field
    n, _, h, w = x.shape
    share = cfg.share
    if cfg.stroke:  # u0: whether; u1: how much (pixels); u2: grow or shrink
        amount = torch.where(u[:, 0] < share, u[:, 1] * cfg.stroke, torch.zeros_like(u[:, 1]))
        grow = u[:, 2] < 0.5
        one_d, one_e = _dilate(x), _erode(x)
        two_d, two_e = _dilate(one_d), _erode(one_e)
        first = torch.where(grow.view(-1, 1, 1, 1), one_d, one_e)
        second = torch.where(grow.view(-1, 1, 1, 1), two_d, two_e)
        restroked = torch.where((amount <= 1).view(-1, 1, 1, 1), _mix(x, first, amount.clamp(0, 1)),
                                _mix(first, second, (amount - 1).clamp(0, 1)))
        # u18: a quarter of the touched images become their strokes' outline (the morphological gradient)
        outline = (one_d - one_e).clamp(0, 1)
        outlined = (u[:, 0] < share) & (u[:, 18] < 0.25)
        x = torch.where(outlined.view(-1, 1, 1, 1), outline, restroked)
    if cfg.blur:  # u3: whether; u4, u5: the standard deviation across and down
        on = (u[:, 3] < share).to(x.dtype)
        x = _blur(x, u[:, 4] * cfg.blur * on, u[:, 5] * cfg.blur * on, max(1, int(math.ceil(3 * cfg.blur))))
    if cfg.contrast:  # u6: whether; u7: background lift; u8: ink range lost; u9: illumination
        on = (u[:, 6] < share).to(x.dtype)
        lift, loss, lit = (on * u[:, k] * cfg.contrast for k in (7, 8, 9))
        light = F.interpolate(params.light.to(x.dtype), size=(h, w), mode="bilinear", align_corners=True)
        x = lift.view(-1, 1, 1, 1) + (1 - lift - loss).clamp_min(0.05).view(-1, 1, 1, 1) * x
        x = (x + lit.view(-1, 1, 1, 1) * light) / (1 + lit.view(-1, 1, 1, 1))
    if cfg.occlude:  # u10: whether; u19: which kind; u11-u15: the rectangle and its grey; u20-u25: the stroke
        side = 2 + 12 * u[:, 11:13]
        top_left = u[:, 13:15] * (torch.tensor([w, h], device=x.device, dtype=x.dtype) - side)
        cols = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, w)
        rows = torch.arange(h, device=x.device, dtype=x.dtype).view(1, h, 1)
        inside = ((cols >= top_left[:, 0, None, None]) & (cols < (top_left[:, 0] + side[:, 0])[:, None, None])
                  & (rows >= top_left[:, 1, None, None]) & (rows < (top_left[:, 1] + side[:, 1])[:, None, None]))
        on = u[:, 10] < cfg.occlude
        kind = u[:, 19]  # a third each: a grey rectangle, the rectangle inverted, a stray pen stroke across
        painted = torch.where(inside.unsqueeze(1), u[:, 15].view(-1, 1, 1, 1).to(x.dtype), x)
        inverted = torch.where(inside.unsqueeze(1), 1 - x, x)
        stroke = torch.maximum(x, u[:, 15].view(-1, 1, 1, 1).to(x.dtype).clamp_min(0.5) * _stray_stroke(u, h, w, x))
        pick = torch.where(kind < 1 / 3, 0, torch.where(kind < 2 / 3, 1, 2)).view(-1, 1, 1, 1)
        occluded = torch.where(pick == 0, painted, torch.where(pick == 1, inverted, stroke))
        x = torch.where(on.view(-1, 1, 1, 1), occluded, x)
    if cfg.noise:  # u16: whether, and which kind; u17: how strong
        kind = u[:, 16] / share  # below 1: noise of one of three kinds, each a third of that share
        strength = (u[:, 17] * cfg.noise).view(-1, 1, 1, 1)
        gauss = (f[:, 0:1] - 0.5) * math.sqrt(12)  # unit variance
        additive = x + strength * gauss
        speckle = x * (1 + 2 * strength * gauss)
        salted = torch.where(f[:, 1:2] < strength, (f[:, 2:3] < 0.5).to(x.dtype), x)
        pick = kind.view(-1, 1, 1, 1)
        x = torch.where(pick < 1 / 3, additive, torch.where(pick < 2 / 3, speckle, torch.where(pick < 1, salted, x)))
    return x.clamp(0, 1)


def augment(x: torch.Tensor, cfg: Augment, generator: torch.Generator) -> torch.Tensor:
    """Randomly transform a batch (N,C,H,W) of [0,1] images; draws come from `generator` only."""
    return apply(x, cfg, draw(cfg, x.shape[0], tuple(x.shape[-2:]), generator, x.device))
