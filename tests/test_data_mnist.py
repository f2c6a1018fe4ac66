"""The bundled MNIST, loaded for real: shapes, counts, labels, statistics, splits, preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mnistlab
from mnistlab import MnistlabError

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_shapes_dtypes_and_sources(mnist):
    assert mnist.train.images.shape == (60000, 28, 28)
    assert mnist.test.images.shape == (10000, 28, 28)
    assert mnist.train.images.dtype == torch.uint8 and mnist.train.labels.dtype == torch.int64
    assert mnist.classes == tuple("0123456789")
    assert {r.verified for r in mnist.sources} == {"sha256"}
    assert len(mnist.sources) == 4


def test_known_facts_of_mnist(mnist):
    assert mnist.train.class_counts().tolist() == TRAIN_COUNTS
    assert mnist.train.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert mnist.test.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    (mean,), (std,) = mnist.stats
    assert round(mean, 4) == 0.1307 and round(std, 4) == 0.3081
    # the histogram method agrees with the direct float computation
    x = mnist.train.images.double() / 255
    assert mean == pytest.approx(x.mean().item(), abs=1e-9)
    assert std == pytest.approx(x.std(unbiased=False).item(), abs=1e-9)


def test_load_data_is_keras_shaped():
    (x_train, y_train), (x_test, y_test) = mnistlab.load_data("mnist")
    assert x_train.shape == (60000, 28, 28) and x_train.dtype == np.uint8
    assert y_train.shape == (60000,) and y_train.dtype == np.uint8
    assert x_test.shape == (10000, 28, 28) and y_test.shape == (10000,)
    assert y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]


def test_stratified_split_is_exact_seeded_and_disjoint(mnist):
    train, val = mnist.train.split(validation=5000, seed=0, stratified=True)
    assert len(train) == 55000 and len(val) == 5000
    # each class keeps its share: within one example of the exact quota
    quota = torch.tensor(TRAIN_COUNTS, dtype=torch.float64) * 5000 / 60000
    assert (val.class_counts() - quota).abs().max() < 1
    assert (train.class_counts() + val.class_counts()).tolist() == TRAIN_COUNTS
    # the same seed gives the same split; another seed another one
    _, again = mnist.train.split(validation=5000, seed=0)
    _, other = mnist.train.split(validation=5000, seed=1)
    assert torch.equal(val.images, again.images) and torch.equal(val.labels, again.labels)
    assert not torch.equal(val.images, other.images)
    # disjoint and complete: the pixel sums of the parts add up to the whole
    total = mnist.train.images.sum(dtype=torch.int64)
    assert train.images.sum(dtype=torch.int64) + val.images.sum(dtype=torch.int64) == total


def test_split_by_fraction_and_unstratified(mnist):
    train, val = mnist.train.split(validation=0.1, seed=3, stratified=False)
    assert len(val) == 6000 and len(train) == 54000


@pytest.mark.parametrize("bad", [0, 60000, -5, 1.5])
def test_split_rejects_impossible_sizes(mnist, bad):
    with pytest.raises(MnistlabError, match="validation="):
        mnist.train.split(validation=bad)


def test_prepare_layouts_and_normalisation(mnist):
    test = mnist.test
    x, y = test.prepare(normalize="scale", layout="flat")
    assert x.shape == (10000, 784) and x.dtype == torch.float32
    assert x.min() == 0 and x.max() == 1
    assert torch.equal(y, test.labels)
    x, _ = test.prepare(normalize="standardize", layout="nchw")
    assert x.shape == (10000, 1, 28, 28)
    (mean,), (std,) = mnist.stats
    expected = (test.images[0].double() / 255 - mean) / std
    assert torch.allclose(x[0, 0].double(), expected, atol=1e-5)
    x, _ = test.prepare(normalize="none", layout="nhw")
    assert x.shape == (10000, 28, 28) and x.max() == 255
    x, _ = mnist.train.prepare(normalize="standardize", layout="flat")
    assert x.mean().item() == pytest.approx(0, abs=1e-4) and x.std().item() == pytest.approx(1, abs=1e-4)


def test_prepare_rejects_unknown_options(mnist):
    with pytest.raises(MnistlabError, match="layout='nwhc'"):
        mnist.test.prepare(layout="nwhc")
    with pytest.raises(MnistlabError, match="normalize='zscore'"):
        mnist.test.prepare(normalize="zscore")


def test_torch_dataset_and_loader(mnist):
    ds = mnist.test.torch_dataset(normalize="scale")
    img, label = ds[0]
    assert img.shape == (1, 28, 28) and label == 7
    loader = mnist.test.loader(batch_size=256, shuffle=True, seed=0)
    xb, yb = next(iter(loader))
    assert xb.shape == (256, 1, 28, 28) and yb.shape == (256,)
    xb2, yb2 = next(iter(mnist.test.loader(batch_size=256, shuffle=True, seed=0)))
    assert torch.equal(yb, yb2)  # seeded shuffling
    assert sum(len(b[1]) for b in loader) == 10000


def test_tensors_are_writable_and_independent(mnist):
    # torch must own writable memory: no warnings, and editing one load does not change another
    ds = mnistlab.load("mnist")
    ds.train.images[0, 0, 0] = 255
    assert mnistlab.load("mnist").train.images[0, 0, 0] == 0
