"""Fuzzing the image path of `mnistlab.predict`, and arrays through the preprocessing (tests/fuzzing.py says how, and what must hold)."""

from __future__ import annotations

import numpy as np
import pytest
from fuzzing import (
    IMAGE_SEEDS,
    case,
    expect_clean,
    fuzz,
    mutated,
)
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from mnistlab.models.ood import NotDigitModel, not_digit_model
from mnistlab.serving.prediction import (
    default_predictor,
    predict,
    to_mnist,
)


@pytest.fixture(scope="module")
def lighter_not_digit():
    """The packaged model with a not-a-digit reference of 500 images instead of 10,000: the same
    code path, and each decodable case costs about 1 ms instead of 10 (the kNN over all references)."""
    predictor = default_predictor()
    full = not_digit_model(predictor)
    predictor.not_digit = NotDigitModel(full.reference[::20], full.threshold, full.meta, full.k)
    yield
    predictor.not_digit = full


@fuzz(share=0.65)  # ~3,900 cases, the costliest per case: the suite stays at ~42,000 in all
@given(mutated(IMAGE_SEEDS))
def test_images_through_predict(lighter_not_digit, data):
    case("images through mnistlab.predict")
    result = expect_clean(predict, data)  # the packaged model, loaded once
    assert result is None or (len(result) == 1 and 0 <= result[0].not_digit <= 1)
    # the server's look at a PNG header (is it a small drawing?) answers yes or no, whatever the bytes
    from mnistlab.serving.server import QUICK_PIXELS, is_quick

    quick = is_quick("image/png", data)
    assert quick in (True, False)
    if quick:  # then the header is a PNG's and declares few enough pixels
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(data[16:20], "big") * int.from_bytes(
            data[20:24], "big") <= QUICK_PIXELS


@fuzz(share=0.25)
@given(st.one_of(
    st.lists(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=8), min_size=1,
             max_size=8),
    st.lists(st.lists(st.integers(-300, 300), min_size=3, max_size=3), min_size=1, max_size=40)))
def test_arrays_through_preprocessing(rows):
    case("arrays through the preprocessing")
    from mnistlab.data.images import to_pixels

    pixels = expect_clean(to_pixels, rows if len({len(r) for r in rows}) == 1 else np.array([1.5j]))
    if pixels is not None:
        out, _ = to_mnist(Image.fromarray(pixels))
        assert out.shape == (28, 28) and out.dtype == np.uint8
