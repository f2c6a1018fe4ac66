"""Stroke thickness, Morpho-MNIST-style (Castro et al. 2019, "Morpho-MNIST: Quantitative Assessment and
Diagnostics for Representation Learning"): a digit is upsampled 4x and binarised, its stroke thickness
measured (twice the mean distance from the skeleton to the edge), then thinned (eroded) or thickened
(dilated) by a disk whose radius is a share of that thickness, and brought back to 28x28 anti-aliased.

    thinned = restroke(images_u8, 0.3)     # strokes 30% as thick as they were (Morpho-MNIST's thinning by 0.7)
    thickened = restroke(images_u8, 2.0)   # twice as thick (Morpho-MNIST's thickening by 1.0)

Deterministic: no random numbers, float64 arithmetic, rounded to uint8 at the end.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..errors import MnistlabError

UP = 4  # the factor of the working resolution (Morpho-MNIST's)


def _skeletonize():
    try:
        from skimage.morphology import skeletonize
    except ImportError:
        raise MnistlabError("stroke thickness needs scikit-image", hint="pip install 'mnistlab[shift]'") from None
    return skeletonize


def upsampled(image_u8: np.ndarray) -> np.ndarray:
    """The digit at 4x, binarised at half intensity (bicubic, as Morpho-MNIST upsamples)."""
    big = ndimage.zoom(image_u8.astype(np.float64) / 255, UP, order=3, mode="nearest", grid_mode=True)
    return big >= 0.5


def thickness(binary: np.ndarray) -> float:
    """Mean stroke thickness of a binary image, in its own pixels: twice the mean distance to the
    background along the skeleton (0 for an empty image)."""
    skeleton = _skeletonize()(binary)
    if not skeleton.any():
        return 0.0
    return 2 * float(ndimage.distance_transform_edt(binary)[skeleton].mean())


def downsampled(binary: np.ndarray) -> np.ndarray:
    """A 4x binary image back to 28x28 in [0, 1]: a slight blur, then the mean of each 4x4 block."""
    soft = ndimage.gaussian_filter(binary.astype(np.float64), 0.5 * UP / 2, mode="constant")
    h, w = soft.shape
    return soft.reshape(h // UP, UP, w // UP, UP).mean(axis=(1, 3))


def restroke_each(image_u8: np.ndarray, factors) -> list[np.ndarray]:
    """One image with its strokes each of `factors` times as thick (1: the 4x round trip alone); the
    thickness measured once."""
    binary = upsampled(image_u8)
    radius_unit = thickness(binary) / 2 if binary.any() and any(f != 1 for f in factors) else 0.0
    inside = outside = None
    out = []
    for factor in factors:
        radius = abs(factor - 1) * radius_unit
        if factor < 1 and radius_unit:  # erosion by a disk: what lies deeper than the radius
            inside = ndimage.distance_transform_edt(binary) if inside is None else inside
            shaped = inside > radius
        elif factor > 1 and radius_unit:  # dilation by a disk: what lies within the radius of the ink
            outside = ndimage.distance_transform_edt(~binary) if outside is None else outside
            shaped = outside <= radius
        else:
            shaped = binary
        out.append(np.round(np.clip(downsampled(shaped), 0, 1) * 255).astype(np.uint8))
    return out


def restroke(images_u8: np.ndarray, factor: float | list[float]):
    """(N,28,28) uint8 with every digit's strokes `factor` times as thick (see the module docstring);
    for a list of factors, one such array per factor."""
    factors = list(factor) if isinstance(factor, (list, tuple)) else [factor]
    if any(f <= 0 for f in factors):
        raise MnistlabError(f"stroke factors {factors}: expected positive multiples of the thickness")
    each = [restroke_each(img, factors) for img in images_u8]
    arrays = [np.stack([e[k] for e in each]) if each else images_u8.copy() for k in range(len(factors))]
    return arrays if isinstance(factor, (list, tuple)) else arrays[0]
