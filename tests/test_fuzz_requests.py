"""Fuzzing the HTTP request decoders: JSON and multipart bodies (tests/fuzzing.py says how, and what must hold)."""

from __future__ import annotations

import json
import random

from fuzzing import (
    IMAGE_SEEDS,
    case,
    fuzz,
    mutated,
    random_json,
    random_scalar,
    seeded,
)
from hypothesis import given
from hypothesis import strategies as st

from mnistlab.serving import requests


def _json_doc(rng: random.Random) -> dict:
    """A request body's document: {"image": rows of numbers (ragged, out of range, or not numbers at
    all), or any JSON value}, with "preprocess" sometimes (a boolean, or anything)."""
    if rng.random() < 0.7:
        width = rng.randint(1, 30)
        image = [[rng.choice((rng.randint(-5, 300), rng.uniform(-1, 256))) for _ in range(width if rng.random() < 0.9
                  else rng.randint(1, 30))] for _ in range(rng.randint(1, 30))]
    else:
        image = random_json(rng, 12)
    doc = {"image": image}
    if rng.random() < 0.5:
        doc["preprocess"] = rng.random() < 0.5 if rng.random() < 0.7 else random_scalar(rng)
    return doc


JSON_SEEDS = [json.dumps({"image": [[0, 255, 3]] * 3}).encode(), json.dumps({"image": [[0] * 28] * 28,
                                                                             "preprocess": False}).encode()]


@fuzz()
@given(st.one_of(seeded(_json_doc).map(lambda d: json.dumps(d).encode()), mutated(JSON_SEEDS), st.binary(max_size=64),
                 st.integers(1, 5000).map(lambda n: b"[" * n), st.integers(1, 500).map(lambda n: b"9" * n)))
def test_json_request_decoder(body):
    case("JSON request decoder")
    try:
        job = requests.decode("application/json", body)
    except requests.RequestError as exc:
        assert 400 <= exc.status < 500
        return
    assert (job.image is None) != (job.pixels is None)


def _form(filename: bytes, payload: bytes, boundary: bytes = b"XyZ") -> bytes:
    return (b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"file\"; filename=\"" + filename +
            b"\"\r\nContent-Type: image/png\r\n\r\n" + payload + b"\r\n--" + boundary + b"--\r\n")


FORM_SEEDS = [_form(b"a.png", IMAGE_SEEDS[0]), _form(b"b.gif", IMAGE_SEEDS[5])]


@fuzz()
@given(mutated(FORM_SEEDS), st.sampled_from(["multipart/form-data; boundary=XyZ", "multipart/form-data",
                                             'multipart/form-data; boundary="XyZ"', "multipart/form-data; boundary="]))
def test_multipart_request_decoder(body, content_type):
    case("multipart request decoder")
    try:
        job = requests.decode(content_type, body)
    except requests.RequestError as exc:
        assert 400 <= exc.status < 500
        return
    assert job.image is not None
