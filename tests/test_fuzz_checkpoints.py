"""Fuzzing checkpoint metadata and files (tests/fuzzing.py says how, and what must hold)."""

from __future__ import annotations

import json
import random

import pytest
import torch
from fuzzing import (
    case,
    expect_clean,
    fuzz,
    mutated,
    random_json,
)
from hypothesis import given, note
from hypothesis import strategies as st
from safetensors.torch import save_file

from mnistlab import MnistlabError
from mnistlab.data import Holdout
from mnistlab.models import checkpoint
from mnistlab.models.predictor import predictor_from
from mnistlab.serving.prediction import (
    DEFAULT_MODEL,
)


@pytest.fixture(scope="module")
def real_checkpoint():
    """A logistic regression's weights with the packaged model's metadata: the same checks and build
    path as any checkpoint, and cheap to build for every case that passes validation."""
    from mnistlab.models import create_model

    _, meta = checkpoint.load(DEFAULT_MODEL)
    meta = {**meta, "model": "logreg", "model_args": {}}
    tensors = checkpoint.prefixed(create_model("logreg").state_dict(), "model")
    return tensors, meta


def _paths(tree, prefix=()):
    yield prefix
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _paths(v, prefix + (i,))


def edited_metadata(meta: dict, tensors: dict, rng: random.Random) -> tuple[dict, dict]:
    """The checkpoint's metadata (sometimes as an ensemble of it) with 1-3 fields deleted or given
    any JSON value, chosen by `rng`."""
    meta = json.loads(json.dumps(meta))
    if rng.random() < 0.5:  # as an ensemble of it, sometimes
        meta = {"format": meta["format"], "version": meta["version"], "kind": "ensemble", "method": "mean",
                "members": [meta]}
        tensors = {k.replace("model/", "member0/model/", 1): v for k, v in tensors.items()}
    for _ in range(rng.randint(1, 3)):
        path = rng.choice([p for p in _paths(meta) if p])
        parent = meta
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, dict) and rng.random() < 0.5:
            del parent[path[-1]]
        else:
            parent[path[-1]] = random_json(rng)
    return meta, tensors


@fuzz()
@given(st.integers(0, 2**64 - 1))
def test_checkpoint_metadata(real_checkpoint, key):
    case("checkpoint metadata")
    meta, tensors = edited_metadata(real_checkpoint[1], real_checkpoint[0], random.Random(key))
    note(json.dumps(meta))  # shown with a failure
    try:
        valid = checkpoint.validate(meta, "fuzz")
    except MnistlabError:
        return
    predictor = expect_clean(predictor_from, tensors, valid, "fuzz")
    if predictor is not None and predictor.meta.get("holdout"):  # what `evaluate --split val` reads
        Holdout.from_dict(predictor.meta["holdout"])


@fuzz(share=0.1)
@given(st.data())
def test_checkpoint_files(tmp_path_factory, data):
    case("checkpoint files")
    path = tmp_path_factory.getbasetemp() / "fuzz.safetensors"
    if not path.with_suffix(".seed").exists():
        tensors, meta = checkpoint.load(DEFAULT_MODEL)
        save_file({k: v.contiguous() for k, v in tensors.items()}, path.with_suffix(".seed"),
                  metadata={"mnistlab": json.dumps(meta)})
    seed = path.with_suffix(".seed").read_bytes()
    header_end = 8 + int.from_bytes(seed[:8], "little")
    # mutate the header (where the parsing is) more often than the tensor bytes
    head = data.draw(mutated([seed[:header_end]], max_ops=4))
    path.write_bytes(head + seed[header_end:])
    result = expect_clean(checkpoint.load, path)
    if result is not None:
        tensors, meta = result
        assert all(torch.isfinite(v).all() for v in tensors.values() if v.is_floating_point())
