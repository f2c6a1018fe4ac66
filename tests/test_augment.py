"""Augmentation does what it says: exact rotations and shifts, zoom about the centre, seeded draws."""

from __future__ import annotations

import torch

from mnistlab.training.augment import (
    Augment,
    affine_matrices,
    augment,
    elastic_field,
    warp,
)


def one(angle=0, shift=(0, 0), scale=1, x=None):
    """The same transform for every image of x; ints on purpose (the matrices must still be float)."""
    n = x.shape[0]
    return warp(x, affine_matrices(torch.tensor([angle] * n), torch.tensor([list(shift)] * n),
                                   torch.tensor([scale] * n), tuple(x.shape[-2:])))


def test_rotation_by_90_degrees_on_a_real_digit(mnist):
    x = mnist.test.images[:1].float().unsqueeze(1) / 255  # a 7
    assert torch.allclose(one(90, x=x), torch.rot90(x, 1, (2, 3)), atol=1e-5)  # counter-clockwise
    assert torch.allclose(one(-90, x=x), torch.rot90(x, -1, (2, 3)), atol=1e-5)
    assert torch.allclose(one(180, x=x), torch.rot90(x, 2, (2, 3)), atol=1e-5)


def test_shift_by_exact_pixels(mnist):
    x = mnist.test.images[:4].float().unsqueeze(1) / 255
    for dx, dy in [(3, 0), (0, -2), (-4, 5)]:
        expected = torch.zeros_like(x)
        src = x[..., max(0, -dy):28 - max(0, dy), max(0, -dx):28 - max(0, dx)]
        expected[..., max(0, dy):28 - max(0, -dy), max(0, dx):28 - max(0, -dx)] = src
        assert torch.allclose(one(0, (dx, dy), x=x), expected, atol=1e-5), (dx, dy)


def test_zoom_keeps_the_centre_and_scales_the_extent():
    x = torch.zeros(1, 1, 28, 28)
    x[..., 12:16, 12:16] = 1  # a 4x4 square at the centre
    big = one(0, scale=2.0, x=x)
    assert big[..., 14, 14] == 1 and big.sum().item() == x.sum().item() * 4  # area grows 4x
    small = one(0, scale=0.5, x=x)
    assert small.sum().item() == x.sum().item() / 4


def test_identity_and_seeded_random_batches(mnist):
    x = mnist.test.images[:64].float().unsqueeze(1) / 255
    assert torch.equal(augment(x, Augment(), torch.Generator().manual_seed(0)), x)  # inactive: untouched
    cfg = Augment(rotate=10, translate=0.1, zoom=0.1, elastic_alpha=8, elastic_sigma=3)
    a = augment(x, cfg, torch.Generator().manual_seed(1))
    b = augment(x, cfg, torch.Generator().manual_seed(1))
    c = augment(x, cfg, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    # every image got its own transform, and most of the ink survives (digits stay in frame)
    assert all(not torch.allclose(a[i], x[i]) for i in range(64))
    ink = a.sum((1, 2, 3)) / x.sum((1, 2, 3))
    assert ink.min() > 0.6 and ink.max() < 1.6


def test_elastic_field_is_smooth_and_scaled():
    g = torch.Generator().manual_seed(0)
    field = elastic_field(16, (28, 28), alpha=34, sigma=4, generator=g, device="cpu", dtype=torch.float32)
    assert field.shape == (16, 28, 28, 2)
    px = field * 14  # back to pixels (2/28 per pixel)
    neighbour_step = (px[:, 1:] - px[:, :-1]).abs().mean()
    assert px.abs().mean() > 0.5 and neighbour_step < px.abs().mean() / 2  # sizeable and smooth
