"""Fuzzing every parser of outside input: IDX and CIFAR-10 decoding, the gzip, zip and tar readers,
the image path of `mnistlab.predict`, the JSON and multipart request decoders, checkpoint
metadata and files, and the JSON files of a run directory. Property: every input ends in a result or a MnistlabError (a RequestError, on
the server), never another exception; a hang or a runaway allocation would fail the run too
(pytest-timeout, and the size caps the parsers enforce).

Inputs are mutations of valid seeds (bytes flipped, set to boundary values, inserted, deleted,
duplicated, cut) and structure-aware cases (IDX headers with random dimensions, JSON documents and
metadata trees with random values). Hypothesis is derandomised, so CI runs the same cases every
time, and a larger budget explores further. $MNISTLAB_FUZZ_EXAMPLES sets the examples per surface
(default below); the session summary prints the total.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import re
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import save_file

from mnistlab import MnistlabError
from mnistlab.data import Holdout, formats
from mnistlab.models import checkpoint
from mnistlab.models.ood import NotDigitModel, not_digit_model
from mnistlab.models.predictor import predictor_from
from mnistlab.serving import requests
from mnistlab.serving.prediction import (
    DEFAULT_MODEL,
    default_predictor,
    predict,
    to_mnist,
)

EXAMPLES = int(os.environ.get("MNISTLAB_FUZZ_EXAMPLES", "6000"))
CASES: dict[str, int] = {}  # surface -> cases run, for the session summary


def fuzz(share: float = 1.0):
    """Hypothesis settings for one surface: `share` of EXAMPLES cases, derandomised, no deadline."""
    return settings(max_examples=max(10, int(EXAMPLES * share)), deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


def case(surface: str) -> None:
    """Count one generated case of `surface` (the session summary prints the totals)."""
    CASES[surface] = CASES.get(surface, 0) + 1


def expect_clean(fn, *args, **kwargs):
    """Run a parser: a result, or MnistlabError; anything else fails the test (and hypothesis shrinks it)."""
    try:
        return fn(*args, **kwargs)
    except MnistlabError:
        return None


EDITS = ("flip", "set", "insert", "delete", "duplicate", "cut")


def mutate(data: bytes, rng: random.Random, max_ops: int) -> bytes:
    """`data` with up to `max_ops` random edits (bytes flipped, set to boundary values, inserted,
    deleted, duplicated, or the tail cut), chosen by `rng`."""
    data = bytearray(data)
    for _ in range(rng.randint(0, max_ops)):
        op = rng.choice(EDITS)
        i = rng.randint(0, max(0, len(data) - 1))
        if op == "flip" and data:
            data[i] ^= 1 << rng.randint(0, 7)
        elif op == "set" and data:
            width = rng.choice((1, 2, 4))
            data[i:i + width] = bytes([rng.choice((0, 1, 0x7F, 0x80, 0xFF))]) * width
        elif op == "insert":
            data[i:i] = rng.randbytes(rng.randint(0, 16))
        elif op == "delete":
            del data[i:i + rng.randint(1, 16)]
        elif op == "duplicate":
            data[i:i] = data[i:i + rng.randint(1, 64)]
        elif op == "cut":
            del data[i:]
    return bytes(data)


def mutated(seeds: list[bytes], max_ops: int = 6):
    """One of `seeds` with up to `max_ops` random edits. Hypothesis draws the seed's index and one
    integer that seeds the edits (a draw per edit costs ~10x more per case than the parsers under
    test); a failure prints the mutated bytes themselves, and the same integer gives the same bytes."""
    return st.builds(lambda which, key: mutate(seeds[which], random.Random(key), max_ops),
                     st.integers(0, len(seeds) - 1), st.integers(0, 2**64 - 1))



SCALARS = (None, True, False, 0, 1, -1, 255, 256, 2**31, -2**40, 10**30, 0.5, -0.0, 1e308, float("nan"), float("inf"),
           "", "a", "0", "mnist", "\u00fc", "\x00", "../x")


def random_text(rng: random.Random, max_size: int) -> str:
    return "".join(chr(rng.choice((rng.randint(32, 126), rng.randint(0, 0x2FF)))) for _ in range(rng.randint(0, max_size)))


def random_scalar(rng: random.Random):
    kind = rng.randint(0, 4)
    if kind == 0:
        return rng.choice(SCALARS)
    if kind == 1:
        return rng.randint(-2**40, 2**40)
    if kind == 2:
        return rng.uniform(-1e6, 1e6) * 10.0 ** rng.randint(-30, 30)
    if kind == 3:
        return random_text(rng, 8)
    return rng.random() < 0.5


def random_json(rng: random.Random, leaves: int = 10, depth: int = 0):
    """A JSON value: a scalar, or lists and objects of them nested up to 3 deep (about `leaves` leaves)."""
    if depth < 3 and leaves > 1 and rng.random() < 0.4:
        n = rng.randint(0, 4)
        if rng.random() < 0.5:
            return [random_json(rng, leaves // max(n, 1), depth + 1) for _ in range(n)]
        return {random_text(rng, 6): random_json(rng, leaves // max(n, 1), depth + 1) for _ in range(n)}
    return random_scalar(rng)


def seeded(generate):
    """A strategy of `generate(random.Random(key))` for one drawn integer key (see `mutated`)."""
    return st.integers(0, 2**64 - 1).map(lambda key: generate(random.Random(key)))

# ---------- IDX, CIFAR-10, gzip, zip, tar ----------

def idx(array: np.ndarray, code: int = 0x08) -> bytes:
    dtype = {0x08: ">u1", 0x0C: ">i4"}[code]
    return struct.pack(">I", (code << 8) | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + \
        array.astype(dtype).tobytes()


IDX_SEEDS = [idx(np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256), idx(np.arange(5) % 10),
             idx(np.arange(16).reshape(2, 8), 0x0C)]


@fuzz()
@given(st.one_of(mutated(IDX_SEEDS), st.binary(max_size=64),
                 st.builds(lambda magic, dims, tail: struct.pack(">I", magic) + b"".join(struct.pack(">I", d)
                                                                                          for d in dims) + tail,
                           st.sampled_from([0x801, 0x803, 0xC02, 0x0, 0xFFFFFFFF]),
                           st.lists(st.integers(0, 2**32 - 1), max_size=4), st.binary(max_size=64))),
       st.sampled_from([(3, 0x08), (1, 0x08), (2, 0x0C)]))
def test_idx_and_cifar_decoding(data, kind):
    case("IDX and CIFAR-10 decoding")
    ndim, code = kind
    array = expect_clean(formats.parse_idx, data, "fuzz", ndim=ndim, dtype_code=code)
    assert array is None or array.ndim == ndim
    expect_clean(formats.parse_cifar10, data, "fuzz")


GZ_SEEDS = [gzip.compress(s, mtime=0) for s in IDX_SEEDS] + [gzip.compress(b"x" * 5000) + gzip.compress(b"yz")]


@fuzz()
@given(st.one_of(mutated(GZ_SEEDS), st.binary(max_size=64).map(lambda b: b"\x1f\x8b" + b)))
def test_gzip_reader(data):
    case("gzip reader")
    out = expect_clean(formats.decompress, data, "fuzz", limit=4096)
    assert out is None or len(out) <= 4096


def _zip_seed() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("gzip/a.gz", GZ_SEEDS[0])
        zf.writestr("gzip/b.gz", GZ_SEEDS[1])
    return buf.getvalue()


def _tar_seed() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, content in (("batches/a.bin", b"\x01" * 3073), ("batches/b.bin", b"\x02" * 3073)):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tf.addfile(info, io.BytesIO(content))
    return buf.getvalue()


@fuzz(share=0.25)
@given(st.one_of(mutated([_zip_seed()]), mutated([_tar_seed()])))
def test_archive_readers(tmp_path_factory, data):
    case("zip and tar readers")
    path = tmp_path_factory.getbasetemp() / "fuzz-archive"
    path.write_bytes(data)
    limits = ({"gzip/a.gz": 4096, "gzip/b.gz": 4096} if data[:2] == b"PK" else
              {"batches/a.bin": 8192, "batches/b.bin": 8192})
    found = expect_clean(formats.read_members, path, limits)
    assert found is None or all(len(found[m]) <= limit for m, limit in limits.items())


# ---------- the image path of predict ----------

def _image_seeds() -> list[bytes]:
    seeds = []
    for fmt, mode in (("PNG", "L"), ("PNG", "RGBA"), ("PNG", "P"), ("PNG", "1"), ("JPEG", "RGB"), ("GIF", "P"),
                      ("BMP", "RGB"), ("WEBP", "RGB"), ("PNG", "I;16")):
        img = Image.new(mode, (40, 32))
        if mode != "I;16":
            img.paste(Image.new(mode, (12, 20), 255 if mode in ("L", "1", "P") else (255,) * len(mode)), (14, 6))
        buf = io.BytesIO()
        img.save(buf, format=fmt)
        seeds.append(buf.getvalue())
    return seeds


IMAGE_SEEDS = _image_seeds()


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


# ---------- the HTTP request decoders ----------

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


# ---------- checkpoints ----------

@pytest.fixture(scope="module")
def real_checkpoint():
    """A logistic regression's weights with the packaged model's metadata: the same checks and build
    path as any checkpoint, and cheap to build for every case that passes validation."""
    from mnistlab.models import create_model

    _, meta = checkpoint.load(DEFAULT_MODEL)
    meta = {**meta, "model": "logreg", "model_args": {}}
    tensors = checkpoint.prefixed(create_model("logreg").state_dict(), "model")
    return tensors, meta


JSON_VALUES = seeded(random_json)  # any JSON value, nested lists and objects included


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


# ---------- run directories ----------

RUN_SEEDS = [json.dumps({"model": "mlp", "epochs": 3, "lr": 0.01, "model_args": {"hidden": [64]}}).encode(),
             b'{"event": "start", "argv": []}\n{"epoch": 1, "train_loss": 0.5, "train_acc": 0.9}\n']


@fuzz(share=0.1)
@given(mutated(RUN_SEEDS))
def test_run_directory_files(tmp_path_factory, data):
    case("run-directory files")
    from mnistlab.rundir import RunDir
    from mnistlab.training.config import read_run_config

    run = RunDir(tmp_path_factory.getbasetemp() / "fuzz-run")
    run.path.mkdir(exist_ok=True)
    run.config.write_bytes(data)
    run.log.write_bytes(data)
    expect_clean(read_run_config, run)
    rows, damaged = run.read_log()
    assert all(isinstance(r, dict) for r in rows) and damaged >= 0
    expect_clean(run.read_summary)


# ---------- the sota study's files (a run's summary, its outputs, the plan) ----------

STUDY_SUMMARY = {"test_acc": 0.99, "val_acc": 0.995, "best_epoch": 3, "epochs_run": 4, "train_s": 12.5, "device": "cpu",
                 "precision": {"chosen": "fp32", "reason": "x"}, "holdout": None}


@fuzz(share=0.2)
@given(st.data())
def test_sota_study_files(tmp_path_factory, data):
    case("sota study files")
    from mnistlab.studies.sota_study import (
        OUTPUTS,
        Plan,
        read_outputs,
        read_summary,
        run_study,
    )

    run = tmp_path_factory.getbasetemp() / "fuzz-sota-run"  # one directory, rewritten each case
    run.mkdir(exist_ok=True)
    summary = json.loads(json.dumps(STUDY_SUMMARY))
    for _ in range(data.draw(st.integers(0, 3))):
        key = data.draw(st.sampled_from(sorted(summary)))
        if data.draw(st.booleans()):
            del summary[key]
        else:
            summary[key] = data.draw(JSON_VALUES)
    text = json.dumps(summary).encode()
    (run / "summary.json").write_bytes(data.draw(st.one_of(st.just(text), mutated([text], max_ops=3))))
    got = expect_clean(read_summary, run)
    if got is not None:
        assert isinstance(got["test_acc"], (int, float)) and isinstance(got["precision"]["chosen"], str)
    seed = tmp_path_factory.getbasetemp() / "outputs.seed"
    if not seed.exists():
        save_file({"test_probs": torch.softmax(torch.randn(20, 10), 1), "test_labels": torch.arange(20) % 10},
                  str(seed))
    raw = seed.read_bytes()
    header_end = 8 + int.from_bytes(raw[:8], "little")
    (run / OUTPUTS).write_bytes(data.draw(mutated([raw[:header_end]], max_ops=4)) + raw[header_end:])
    out = expect_clean(read_outputs, run, "test")
    if out is not None:
        probs, labels = out
        assert torch.isfinite(probs).all() and int(labels.max()) < probs.shape[1]
    plan = json.dumps({"overrides": {"epochs": "2"}}).encode()
    (run / "plan.json").write_bytes(data.draw(mutated([plan], max_ops=3)))
    expect_clean(run_study, run, Plan(overrides={"epochs": "0"}), quiet=True, throughput_steps=0)  # refused either way


# ---------- every JSON file a verb reads back from a run or a study, through its schema ----------

READER_SEEDS = {
    "summary.json": {"model": "mlp", "dataset": "mnist", "test_acc": 0.98, "val_acc": 0.97, "test_errors": 200,
                     "precision": {"chosen": "fp32"}, "evaluation": {"batch_size": 2000, "threads": 2},
                     "holdout": {"count": 5000, "seed": 0, "stratified": True, "sha256": "a" * 64}},
    "eval/test.json": {"n": 10, "accuracy": 0.9, "errors": 1, "top2": 1.0, "cross_entropy": 0.3, "ece": 0.1,
                       "dataset": "mnist", "dataset_hash": "x", "macro_avg": {"f1": 0.9}, "pictures": {"a": "b.png"},
                       "per_class": [{"class": "0", "precision": 1, "recall": 1, "f1": 1, "support": 1}],
                       "most_confused": [{"true": "1", "predicted": "7", "count": 1}]},
    "eval/attack-pgd-linf.json": {"method": "pgd", "norm": "linf", "eps": [0.1], "robust_accuracy": [0.5], "n": 10,
                                  "split": "test", "clean_accuracy": 0.9, "targeted": False, "pictures": {},
                                  "steps": 40, "masking_checks": {"passed": True}},
    "inspect/inspect.json": {"split": "test", "pictures": {"filters": "f.png"}},
    "maps/umap-pixels-test/map.json": {"method": "umap", "features": "pixels", "n": 10, "split": "test", "seed": 0,
                                       "separation_5nn": 0.9, "files": {"png": "m.png", "html": "m.html"}},
}


@fuzz(share=0.1)
@given(st.data())
def test_run_and_study_json_readers(tmp_path_factory, data):
    case("run and study JSON readers")
    from mnistlab.analysis.robust import robust_figures
    from mnistlab.rundir import RunDir
    from mnistlab.studies.transfer_study import read_curve
    from mnistlab.studies.tuning.search import read_study_summary

    run = RunDir(tmp_path_factory.getbasetemp() / "fuzz-readers" / "run")  # one directory, rewritten each case
    for name, seed in READER_SEEDS.items():
        doc = json.loads(json.dumps(seed))
        for _ in range(data.draw(st.integers(0, 3))):
            key = data.draw(st.sampled_from(sorted(doc)))
            doc[key] = data.draw(JSON_VALUES)
        text = json.dumps(doc).encode()
        (run.path / name).parent.mkdir(parents=True, exist_ok=True)
        (run.path / name).write_bytes(data.draw(st.one_of(st.just(text), mutated([text], max_ops=3))))
    run.config.write_text("{}")
    expect_clean(run.read_summary)
    expect_clean(run.read_eval, "test")
    rows = expect_clean(robust_figures, run)  # the attack file, through the rows evaluate and report print
    assert rows is None or all(isinstance(r["accuracy"], (int, float)) for r in rows)
    assert run.read_inspect() is None or isinstance(run.read_inspect()["pictures"], dict)
    assert all(isinstance(m["files"]["png"], str) for m in run.read_maps())
    study = run.path / "study"
    study.mkdir(exist_ok=True)
    seed = json.dumps({"study": "s", "objectives": ["accuracy"], "trials": {"complete": 1},
                       "chosen": {"number": 0, "val_acc": 0.9, "params": {}}}).encode()
    (study / "summary.json").write_bytes(data.draw(mutated([seed], max_ops=4)))
    expect_clean(read_study_summary, study)
    curve = json.dumps({"seeds": [0], "protocol": "p", "modes": ["scratch"],
                        "table": [{"labels_per_class": 1, "scratch": {"mean": 0.5, "std": 0.1}}]}).encode()
    (study / "curve.json").write_bytes(data.draw(mutated([curve], max_ops=4)))
    expect_clean(read_curve, study)


TOML_SEEDS = [b'model = "mlp"\nepochs = 2\nlr = 0.01\nmodel_args = { hidden = [64] }\n',
              b'[fixed]\nepochs = 1\n[params.lr]\nlow = 0.001\nhigh = 0.1\nlog = true\n']


@fuzz(share=0.2)
@given(mutated(TOML_SEEDS, max_ops=8))
def test_recipe_and_space_toml_files(tmp_path_factory, data):
    case("recipe and space TOML files")
    from mnistlab.studies.tuning.space import read_space
    from mnistlab.training.config import resolve

    path = tmp_path_factory.getbasetemp() / "fuzz.toml"
    path.write_bytes(data)
    expect_clean(resolve, str(path))
    expect_clean(read_space, str(path), "seed-mlp")


# ---------- your own code and data: references, records, arrays, image folders ----------

OWN_SOURCE = (b"import torch\nfrom torch import nn\n\n\nclass Net(nn.Module):\n    def __init__(self, num_classes=10):\n"
              b"        super().__init__()\n        self.fc = nn.Linear(784, num_classes)\n\n"
              b"    def forward(self, x):\n        return self.fc(x.flatten(1))\n")
SAFE_MODULES = ["json", "math", "no_such_module", "mnistlab.stats", "json.decoder", ""]  # nothing with side effects


def hostile_records(root) -> list[dict]:
    """The records with which a received run ran code before consent existed (issue 43): an unchanged
    library file with its true hash, paths relative to the current folder, packages a lookup imports.
    Each plants `root/MARKER` if it ever runs (fuzzpkg's __init__, evil.py)."""
    import torch.utils.collect_env as library

    marker = f"open({str(root / 'MARKER')!r}, 'w').close()\n"
    (root / "fuzzpkg").mkdir(exist_ok=True)
    (root / "fuzzpkg" / "__init__.py").write_text(marker)
    (root / "code").mkdir(exist_ok=True)
    evil = marker + OWN_SOURCE.decode()
    (root / "code" / "evil.py").write_text(evil)
    lib = Path(library.__file__).resolve()
    rows = [("module", "torch.utils.collect_env:run", str(lib), lib.read_text()),
            ("file", "code/evil.py:Net", "code/evil.py", evil), ("file", f"{root}/code/evil.py:Net", f"{root}/code/evil.py", evil),
            ("module", "fuzzpkg.nothing:Net", "", evil), ("module", "this.x:Net", "", evil),
            ("session", "__main__:Net", "", evil), ("file", "fuzzpkg/__init__.py:Net", "fuzzpkg/__init__.py", marker)]
    from mnistlab.user_code import sha256_text

    return [{"ref": ref, "kind": kind, "name": ref.rsplit(":", 1)[1], "path": path, "sha256": sha256_text(src),
             "source": src} for kind, ref, path, src in rows]


@fuzz(share=0.1)
@given(st.data())
def test_code_references_and_records(tmp_path_factory, data):
    """A model reference typed by a user, and a run's record of its code (crafted as the received runs of
    issue 43 were, hash-consistent or not, trusted or not, with a code/ copy or not), loaded where this
    user signed nothing: the object, or a MnistlabError; never another exception, and never the code of
    a record nobody here approved (no marker, no package imported), unless --trust-code ran exactly the
    copy a person can read."""
    case("code references and records")
    import sys

    from mnistlab import consent, user_code
    from mnistlab.models.registry import create_model

    root = tmp_path_factory.getbasetemp() / "fuzz-code"
    root.mkdir(exist_ok=True)
    os.environ[consent.ENV] = str(root / "nobody-signed-here")  # another user: no key, no signatures
    old_cwd = os.getcwd()
    try:
        os.chdir(root)  # where the relative records would resolve, were anything resolved against it
        sys.path.insert(0, str(root))
        source = data.draw(st.one_of(st.just(OWN_SOURCE), mutated([OWN_SOURCE], max_ops=3)))
        (root / "net.py").write_bytes(source)
        where = data.draw(st.one_of(st.just(str(root / "net.py")), st.sampled_from(SAFE_MODULES),
                                    st.text(max_size=12).map(lambda t: str(root / t))))
        name = data.draw(st.one_of(st.sampled_from(["Net", "nn", "torch.nn.Linear", "Net@1", "dumps", "x.y"]),
                                   st.text(max_size=8)))
        ref = f"{where}:{name}"
        expect_clean(create_model, ref)  # typed by the user: runs (their consent), or one clear error
        text = source.decode("utf-8", "replace")
        hostile = hostile_records(root)
        record = data.draw(st.one_of(
            st.sampled_from(hostile),
            st.builds(lambda kind: {"ref": ref, "kind": kind, "name": name, "path": where,
                                    "sha256": user_code.sha256_text(text), "source": text},
                      st.sampled_from(["file", "module", "session", "instance", "other"]))))
        record = dict(record)
        for _ in range(data.draw(st.integers(0, 2))):
            record[data.draw(st.sampled_from(sorted(record)))] = data.draw(JSON_VALUES)
        copy = data.draw(st.sampled_from([None, root / "code" / "net.py"]))
        if copy is not None:  # what a person would read: the record's own source, or something else
            copy.write_text(record["source"] if isinstance(record.get("source"), str) and data.draw(st.booleans())
                            else text, errors="surrogateescape")
        trusted = data.draw(st.booleans())
        before = set(sys.modules)
        with user_code.trusting(trusted):
            checked = expect_clean(user_code.check_record, record, "fuzz", "model")
            obj = None if checked is None else expect_clean(user_code.from_record,
                                                            user_code.Carried(checked, "fuzz", copy), "model")
        imported = {m for m in set(sys.modules) - before if m.split(".")[0] in ("fuzzpkg", "this")}
        assert not imported, f"looking at a record imported {imported}"
        ran_copy = (obj is not None and trusted and copy is not None
                    and user_code.sha256_text(copy.read_text(errors="surrogateescape")) == checked["sha256"])
        assert obj is None or ran_copy, f"a record nobody approved ran: {record['ref']!r}"
        assert ran_copy or not (root / "MARKER").exists(), "a hostile record's code ran"
        (root / "MARKER").unlink(missing_ok=True)  # the approved copy may be evil.py's text: it ran as asked
    finally:
        os.chdir(old_cwd)
        sys.path.remove(str(root))
        os.environ.pop(consent.ENV, None)


CLASS_NAMES = ["7", "T-shirt/top", "=HYPERLINK(\"http://x\",\"y\")", "+1", "-2", "@SUM(1)", "<img src=x onerror=1>",
               "a|b", "\x1b[2K\r7", "line\nbreak", "\ud800", "x" * 201, "", " ", "**bold**", "\u202eevil"]


@fuzz(share=0.05)
@given(st.lists(st.one_of(st.sampled_from(CLASS_NAMES), st.text(max_size=40)), min_size=0, max_size=12))
def test_class_names_into_pages_csv_and_terminals(tmp_path_factory, names):
    """Class names come from anyone's folders and checkpoints: refused where they cannot be shown safely,
    and where accepted, inert on every page, in every CSV cell and on every terminal line."""
    case("class names")
    import pandas as pd

    from mnistlab.analysis.data_audit import write_csv
    from mnistlab.analysis.maps import write_page
    from mnistlab.names import check_labels
    from mnistlab.reporting.run_report import md
    from mnistlab.tables import format_table

    accepted = expect_clean(check_labels, names, "fuzz")
    if accepted is None:
        return
    for name in accepted:
        assert name.isprintable() and 0 < len(name) <= 200
    line = format_table([[n, 0.5] for n in accepted], ["class", "recall"])
    assert not any(ord(c) < 32 and c != "\n" or 0x7F <= ord(c) <= 0x9F for c in line)  # nothing a terminal acts on
    out = tmp_path_factory.getbasetemp() / "fuzz-names.csv"
    write_csv(pd.DataFrame({"label": list(accepted), "score": [0.5] * len(accepted)}), out)
    cells = pd.read_csv(out, dtype=str, keep_default_na=False)["label"]
    assert not any(c.startswith(("=", "+", "-", "@")) for c in cells)  # no spreadsheet formula
    for n in accepted:  # Markdown (report.md): every character it would act on escaped
        assert not re.search(r"(?<!\\)[<>|`*_\[\]]", md(n)), md(n)
    k = len(accepted)  # the map page: names travel as JSON data, never as markup
    page = write_page(tmp_path_factory.getbasetemp() / "fuzz-names.html", np.zeros((k, 2)), np.arange(k), None,
                      list(accepted), torch.zeros(k, 28, 28, dtype=torch.uint8), np.arange(k), "fuzz").read_text()
    assert not any("<" in n and n in page for n in accepted)


@fuzz(share=0.05)
@given(st.data())
def test_own_arrays_and_image_folders(tmp_path_factory, data):
    case("own arrays and image folders")
    from mnistlab.data import Dataset

    shape = data.draw(st.lists(st.integers(0, 4), min_size=1, max_size=5))
    dtype = data.draw(st.sampled_from([np.uint8, np.float32, np.int64, np.bool_, np.float64]))
    x = np.asarray(data.draw(st.lists(st.one_of(st.floats(-2, 300), st.just(float("nan"))), min_size=int(np.prod(shape)),
                                      max_size=int(np.prod(shape))))).astype(dtype, copy=False).reshape(shape) \
        if dtype != np.uint8 else np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    y = np.asarray(data.draw(st.lists(st.integers(-1, 3), max_size=8)))
    expect_clean(Dataset.from_arrays, x, y, x, y)
    root = tmp_path_factory.getbasetemp() / "fuzz-folder"
    buf = io.BytesIO()
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(buf, format="PNG")
    for split in ("train", "test"):
        for label in ("a", "b"):
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "0.png").write_bytes(data.draw(st.one_of(st.just(buf.getvalue()),
                                                               mutated([buf.getvalue()], max_ops=3))))
    ds = expect_clean(Dataset.from_folder, root)
    if ds is not None:
        assert ds.train.images.dtype == torch.uint8 and ds.num_classes == 2
