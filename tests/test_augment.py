"""Augmentation does what it says: exact rotations and shifts, zoom about the centre, seeded draws."""

from __future__ import annotations

import torch

from mnistlab.training.augment import (
    PRESETS,
    Augment,
    affine_matrices,
    augment,
    draw,
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


def test_shear_slants_a_vertical_bar_and_keeps_the_centre():
    x = torch.zeros(1, 1, 28, 28)
    x[..., 4:24, 13:15] = 1  # an upright bar through the centre
    slanted = warp(x, affine_matrices(torch.zeros(1), torch.zeros(1, 2), torch.ones(1), (28, 28), torch.tensor([0.4])))
    top, bottom = (slanted[0, 0, r].argmax().item() for r in (6, 21))
    assert abs(top - bottom) >= 4  # the bar leans
    assert slanted[0, 0, 13:15, 12:16].sum() > 2  # the middle stays where it was


def test_the_pixel_changes_are_seeded_stay_in_range_and_each_does_what_it_says(mnist):
    x = mnist.test.images[:256].float().unsqueeze(1) / 255
    robust = PRESETS["robust"]
    a, b = (augment(x, robust, torch.Generator().manual_seed(3)) for _ in range(2))
    assert torch.equal(a, b) and a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    changed = (a - x).abs().sum((1, 2, 3)) > 0
    assert changed.float().mean() > 0.9
    ink = x.sum((1, 2, 3))

    def alone(**kw):
        return augment(x, Augment(**kw, share=1.0), torch.Generator().manual_seed(4))

    grown = alone(stroke=1.0)
    assert ((grown.sum((1, 2, 3)) > ink).float().mean() - 0.5).abs() < 0.15  # about half grow, half shrink
    blurred = alone(blur=1.5)
    assert (blurred.amax((1, 2, 3)) <= x.amax((1, 2, 3)) + 1e-6).all()  # a blur never brightens the peak
    lit = alone(contrast=0.7)
    assert lit[:, :, 0, 0].mean() > 0.05  # the background lifted
    noisy = alone(noise=0.3)
    assert ((noisy - x).abs().mean((1, 2, 3)) > 0).float().mean() > 0.9
    covered = augment(x, Augment(occlude=1.0), torch.Generator().manual_seed(5))
    assert ((covered != x).sum((1, 2, 3)) > 0).float().mean() > 0.8


def test_a_preset_without_the_new_changes_draws_what_it_always_drew(mnist):
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    seed = PRESETS["seed"]
    params = draw(seed, 32, (28, 28), g1, "cpu")
    assert params.shear is None and params.pixel is None  # nothing more is drawn from the generator
    angle = (torch.rand(32, generator=g2) * 2 - 1) * seed.rotate
    assert torch.equal(params.angle, angle)
