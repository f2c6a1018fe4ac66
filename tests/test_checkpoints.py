"""Checkpoints written by someone else: every field of the metadata and every tensor is checked before
a model is built, and a bad one is a clear error from every command that loads models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mnistlab import MnistlabError
from mnistlab.analysis import ensembles
from mnistlab.cli import main as cli_main
from mnistlab.models import checkpoint
from mnistlab.models.predictor import load_predictor
from mnistlab.serving.prediction import DEFAULT_MODEL, predict


@pytest.fixture(scope="module")
def good(trained) -> Path:
    """A real checkpoint: a small CNN trained for one short epoch on MNIST."""
    return trained(model="lenet5", train_subset=2000, validation=500, epochs=1).run_dir / "best.safetensors"


def rewritten(src: Path, dest: Path, *, meta=None, tensors=None, raw_meta: str | None = None) -> Path:
    """A copy of checkpoint `src` with its metadata (a dict, or raw JSON text) and/or tensors replaced."""
    original = load_file(src)
    with open(src, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_len))
    text = raw_meta if raw_meta is not None else json.dumps(meta if meta is not None
                                                            else json.loads(header["__metadata__"]["mnistlab"]))
    save_file(tensors if tensors is not None else original, dest, metadata={"mnistlab": text})
    return dest


def meta_of(path: Path) -> dict:
    return checkpoint.read_header(path)[0]


def edit(meta: dict, path: str, value):
    """meta with the field at dotted `path` set to `value` (or removed, for the string "<remove>")."""
    meta = json.loads(json.dumps(meta))
    *parents, last = path.split(".")
    target = meta
    for key in parents:
        target = target[int(key)] if key.isdigit() else target[key]
    if value == "<remove>":
        del target[last]
    else:
        target[last] = value
    return meta


BAD_FIELDS = [
    ("model", "<remove>", "field 'model'"),
    ("in_shape", "<remove>", "field 'in_shape'"),
    ("normalization", "<remove>", "field 'normalization'"),
    ("classes", "<remove>", "field 'classes'"),
    ("model", "resnet", "field 'model': expected one of"),
    ("model_args", [1, 2], "field 'model_args'"),
    ("model_args", {"width": {"a": 1}}, "field 'model_args'"),
    ("classes", ["0"], "field 'classes': expected 10 distinct class names"),
    ("classes", list("0123456780"), "10 distinct class names"),
    ("num_classes", 100000, "field 'num_classes': expected an integer from 2 to 1000"),
    ("num_classes", True, "field 'num_classes'"),
    ("in_shape", [1, 100000, 100000], "field 'in_shape'"),
    ("in_shape", [1, 28], "field 'in_shape'"),
    ("normalization.std", [0.0], "a std from 0.0001 to 1000"),
    ("normalization.std", [1e-320], "a std from 0.0001 to 1000"),
    ("normalization.std", [0.3, 0.3], "one value per channel"),
    ("normalization.mean", ["x"], "field 'normalization'"),
    ("normalization.normalize", "whiten", "field 'normalization'"),
    ("kind", "model", "field 'kind'"),
    ("version", 99, "version 99"),
    ("holdout", {"count": 5000}, "field 'holdout'"),
    ("holdout.sha256", "abc", "field 'holdout'"),
]


@pytest.mark.parametrize("field, value, fragment", BAD_FIELDS, ids=[f"{f}={v}" for f, v, _ in BAD_FIELDS])
def test_bad_metadata_fields_are_named(good, tmp_path, field, value, fragment):
    path = rewritten(good, tmp_path / "bad.safetensors", meta=edit(meta_of(good), field, value))
    with pytest.raises(MnistlabError) as err:
        load_predictor(path)
    assert fragment in err.value.message and str(path) in err.value.message


def test_metadata_that_is_not_an_object(good, tmp_path):
    for text, fragment in (("[1, 2, 3]", "a JSON list, expected an object"), ("not json", "not valid JSON"),
                           ("[" * 100_000, "not valid JSON"), ('{"a": ' + "9" * 5000 + "}", "not valid JSON")):
        path = rewritten(good, tmp_path / "bad.safetensors", raw_meta=text)
        with pytest.raises(MnistlabError, match=fragment):
            load_predictor(path)


def test_tensors_that_do_not_match_the_model(good, tmp_path):
    tensors = load_file(good)
    name = next(k for k in tensors if k.endswith("weight"))
    cases = [({k: v for k, v in tensors.items() if k != name}, f"missing {name[len('model/'):]}"),
             ({**tensors, "model/extra.weight": torch.zeros(3)}, "unexpected extra.weight"),
             ({**tensors, name: torch.zeros(2, 2)}, "wrong shape or type"),
             ({**tensors, name: tensors[name].double()}, "wrong shape or type"),
             ({**tensors, name: torch.full_like(tensors[name], float("nan"))}, "holds NaN or infinite values")]
    for changed, fragment in cases:
        path = rewritten(good, tmp_path / "bad.safetensors", tensors=changed)
        with pytest.raises(MnistlabError, match=fragment):
            load_predictor(path)


def test_an_ensemble_without_members_or_with_mismatched_ones(good, tmp_path):
    path = ensembles.save(ensembles.build([good, good]), tmp_path / "two.safetensors")
    meta = meta_of(path)
    for field, value, fragment in (("members", [], "field 'members': expected a list of 1 to 64"),
                                   ("members.1.classes", list("abcdefghij"), "members[1]"),
                                   ("method", "median", "field 'method'"),
                                   ("members.0.model", "<remove>", "field 'members[0].model'")):
        bad = rewritten(path, tmp_path / "bad.safetensors", meta=edit(meta, field, value))
        with pytest.raises(MnistlabError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
            load_predictor(bad)


@pytest.mark.slow
def test_a_tiny_file_declaring_a_huge_model_allocates_nothing(good, tmp_path):
    """1.6 KB with `model_args` for a large model used to allocate GBs before the weights were checked;
    now the model is built on the meta device first, and the shapes disagree."""
    meta = edit(edit(meta_of(good), "model", "mlp"), "model_args", {"hidden": [4096] * 40})
    path = rewritten(good, tmp_path / "huge.safetensors", meta=meta)
    assert path.stat().st_size < 300_000
    script = ("import resource, sys\nfrom mnistlab import MnistlabError\n"
              "from mnistlab.models.predictor import load_predictor\n"
              "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
              "try:\n    load_predictor(sys.argv[1])\nexcept MnistlabError as e:\n    print(e.message)\n"
              "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)\n")
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120)
    message, grown_mb = out.stdout.strip().rsplit("\n", 1)
    assert "weights do not match the model" in message
    assert int(grown_mb) < 100  # a real MLP of 40 layers of 4,096 is 2.7 GB


@pytest.mark.slow
def test_every_command_that_loads_a_model_refuses_a_bad_one(good, tmp_path, capsys):
    path = rewritten(good, tmp_path / "bad.safetensors", meta=edit(meta_of(good), "classes", ["0"]))
    image = tmp_path / "digit.png"
    from PIL import Image

    Image.new("L", (28, 28)).save(image)
    for argv in (["evaluate", str(path)], ["predict", str(image), "--model", str(path)],
                 ["export", str(path), "--out", str(tmp_path / "x.onnx")], ["ensemble", str(path), "--out",
                                                                              str(tmp_path / "e.safetensors")]):
        assert cli_main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "field 'classes'" in err and "Traceback" not in err
    # the server refuses to start on it (before it listens), instead of answering every request with a 500
    assert cli_main(["serve", "--model", str(path), "--port", "9"]) == 2
    err = capsys.readouterr().err
    assert "field 'classes'" in err and "Traceback" not in err


def test_the_packaged_model_passes_its_own_checks():
    meta, shapes = checkpoint.read_header(DEFAULT_MODEL)
    assert meta["kind"] == "weights" and meta["holdout"]["count"] == 5000
    assert predict([torch.zeros(28, 28).numpy()])[0].not_digit == 1.0
