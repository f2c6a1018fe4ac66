"""The classical preparations (deskew, binarize, HOG features) for every model: what each does to a
digit, and a prepared network that applies its preparation wherever it reads images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mnistlab.data import preparation
from mnistlab.data.normalization import Normalization, to_unit
from mnistlab.errors import MnistlabError
from mnistlab.models import checkpoint
from mnistlab.models.classical import hog_features
from mnistlab.models.predictor import load_predictor
from mnistlab.training.config import resolve
from mnistlab.training.engine import train

SMALL = {"train_subset": 3000, "validation": 1000, "progress": False}


def fit_run(tmp_path, model, **extra):
    cfg = resolve(None, {"model": model, **SMALL, "out": str(tmp_path), **extra})
    return train(cfg, quiet=True)





def slanted_bar(shear: float = 0.6) -> torch.Tensor:
    """A 28x28 vertical bar leaning by `shear` pixels per row, off centre."""
    img = torch.zeros(1, 1, 28, 28)
    for r in range(4, 24):
        c = int(round(9 + shear * (r - 14)))
        img[0, 0, r, c:c + 3] = 1.0
    return img


def ink_stats(img: torch.Tensor):
    ink = img[0, 0]
    rows, cols = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    total = ink.sum()
    mr, mc = (ink * rows).sum() / total, (ink * cols).sum() / total
    cov = (ink * (rows - mr) * (cols - mc)).sum() / total
    return float(mr), float(mc), float(cov)


def test_deskew_stands_a_slanted_stroke_upright_and_centres_it():
    img = slanted_bar()
    _, mc0, cov0 = ink_stats(img)
    out = preparation.deskew(img)
    mr, mc, cov = ink_stats(out)
    assert abs(cov0) > 5 and abs(cov) < 0.1 * abs(cov0)  # no correlation of row and column left
    assert abs(mr - 14) < 1.0 and abs(mc - 14) < 1.0 and abs(mc0 - 14) > 3  # moved to the centre
    assert float(out.sum()) == pytest.approx(float(img.sum()), rel=0.05)  # ink kept
    assert torch.equal(preparation.deskew(torch.zeros(2, 1, 28, 28)), torch.zeros(2, 1, 28, 28))
    assert preparation.deskew(torch.rand(3, 3, 32, 32)).shape == (3, 3, 32, 32)  # colour: one shear per image


def test_binarize_and_parse():
    x = torch.tensor([0.0, 0.49, 0.5, 0.51, 1.0]).view(1, 1, 1, 5)
    assert preparation.binarize(x).flatten().tolist() == [0, 0, 0, 1, 1]
    assert preparation.parse("none") == () and preparation.parse("deskew, binarize") == ("deskew", "binarize")
    for bad in ("blur", "deskew,deskew"):
        with pytest.raises(MnistlabError, match="prepare="):
            preparation.parse(bad)


def test_a_prepared_network_applies_its_preparation_everywhere(tmp_path, mnist):
    s = fit_run(tmp_path, "mlp", epochs=1, prepare="deskew,binarize")
    tensors, meta = checkpoint.load(Path(s["run_dir"]) / "best.safetensors")
    assert meta["normalization"]["prepare"] == ["deskew", "binarize"]
    predictor = load_predictor(s["run_dir"])
    model, norm = predictor.models[0], predictor.norms[0]
    x = mnist.test.images[:200]
    by_hand = Normalization(norm.mode, norm.mean, norm.std).apply(preparation.binarize(preparation.deskew(to_unit(x))))
    with torch.no_grad():
        expected = torch.softmax(model(by_hand), 1)
    assert torch.allclose(predictor.probs(x), expected, atol=1e-5)
    assert not torch.allclose(predictor.probs(x), torch.softmax(model(Normalization(
        norm.mode, norm.mean, norm.std).apply(to_unit(x))), 1), atol=1e-3)


def test_hog_features():
    f = hog_features(torch.rand(5, 1, 28, 28).numpy())
    assert f.shape == (5, 324) and f.dtype == np.float32 and np.isfinite(f).all()


