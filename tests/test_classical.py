"""Classical baselines as runs (kNN, SVM, random forest, logistic regression), the classical
preparations (deskew, binarize, HOG) for every model, and the safety of the saved scikit-learn models."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnistlab.cli import main
from mnistlab.data import preparation
from mnistlab.data.normalization import Normalization, to_unit
from mnistlab.errors import MnistlabError
from mnistlab.models import checkpoint
from mnistlab.models.classical import ClassicalModel, hog_features
from mnistlab.models.predictor import load_predictor
from mnistlab.training.config import resolve
from mnistlab.training.engine import train

SMALL = {"train_subset": 3000, "validation": 1000, "progress": False}


def fit_run(tmp_path, model, **extra):
    cfg = resolve(None, {"model": model, **SMALL, "out": str(tmp_path), **extra})
    return train(cfg, quiet=True)


@pytest.fixture(scope="module")
def knn_run(trained):
    return trained(model="knn", **SMALL).record


@pytest.fixture(scope="module")
def net_run(trained):
    return trained(model="mlp", epochs=2, **SMALL).record


# ---------- runs like a network's ----------


@pytest.mark.slow
def test_a_knn_run_has_a_network_runs_files_and_numbers(knn_run, mnist):
    run = Path(knn_run["run_dir"])
    assert {p.name for p in run.iterdir()} >= {"config.json", "log.jsonl", "best.safetensors", "best.json",
                                               "summary.json"}
    s = json.loads((run / "summary.json").read_text())
    assert s["model"] == "knn" and s["test_evaluated"] and s["seed"] == 0
    assert 0.90 < s["val_acc"] and 0.90 < s["test_acc"] < 0.99
    assert s["classical"]["size"]["stored_examples"] == 3000
    # the test figure is the fitted model's own: recompute it with scikit-learn directly
    from sklearn.neighbors import KNeighborsClassifier

    from mnistlab.data import load

    train_split, _ = load("mnist").train.split(validation=1000, seed=0, stratified=True)
    x = train_split.images[:3000].reshape(3000, -1).numpy() / 255
    ref = KNeighborsClassifier(3).fit(x, train_split.labels[:3000].numpy())
    pred = ref.predict(mnist.test.images.reshape(10000, -1).numpy() / 255)
    assert s["test_acc"] == pytest.approx((pred == mnist.test.labels.numpy()).mean(), abs=1e-6)
    header = json.loads((run / "log.jsonl").read_text().splitlines()[0])
    assert header["holdout"]["count"] == 1000


@pytest.mark.slow
def test_a_classical_run_evaluates_reports_ensembles_and_predicts(knn_run, net_run, tmp_path, mnist):
    from PIL import Image

    from mnistlab.analysis.ensembles import build, save
    from mnistlab.analysis.evaluation import evaluate
    from mnistlab.reporting.run_report import report
    from mnistlab.serving.prediction import predict

    run = knn_run["run_dir"]
    e = evaluate(run, split="test")
    assert e["accuracy"] == knn_run["test_acc"] and e["errors"] == knn_run["test_errors"] and e["model"] == "knn"
    assert Path(e["pictures"]["confusion"]).is_file()
    assert evaluate(run, split="val")["accuracy"] == knn_run["val_acc"]
    r = report([run, net_run["run_dir"]], out=tmp_path / "report")
    text = Path(r["html"]).read_text()
    assert "knn" in text and "mlp" in text
    # an ensemble of the kNN and the network: the mean of their probabilities
    ens = save(build([run, net_run["run_dir"]], "mean"), tmp_path / "mixed.safetensors")
    p = load_predictor(ens)
    x = mnist.test.images[:500]
    members = [load_predictor(run).probs(x), load_predictor(net_run["run_dir"]).probs(x)]
    assert torch.allclose(p.probs(x), (members[0] + members[1]) / 2, atol=1e-6)
    assert evaluate(ens, split="test", pictures=False)["members"] == 2
    # predict a user's own image file
    for i in range(3):
        Image.fromarray(mnist.test.images[i].numpy()).save(tmp_path / f"d{i}.png")
    results = predict([tmp_path / f"d{i}.png" for i in range(3)], model=run)
    assert [r.digit for r in results] == [int(v) for v in mnist.test.labels[:3]]


@pytest.mark.slow
@pytest.mark.parametrize("model,args,floor", [
    ("svm", {"pca": 40}, 0.93), ("svm", {"pca": 40, "nystroem": 300}, 0.90), ("random-forest", {"n_estimators": 30}, 0.90),
    ("logreg-sklearn", {"max_iter": 50}, 0.85), ("logreg-sklearn", {"features": "hog"}, 0.90),
    ("knn", {"k": 1, "metric": "manhattan", "pca": 30}, 0.90)])
def test_every_classical_model_fits_reproducibly(tmp_path, model, args, floor, mnist):
    a = fit_run(tmp_path / "a", model, model_args=args)
    b = fit_run(tmp_path / "b", model, model_args=args)
    assert a["test_acc"] > floor
    x = mnist.test.images[:300]
    assert torch.equal(load_predictor(a["run_dir"]).probs(x), load_predictor(b["run_dir"]).probs(x))


@pytest.mark.slow
def test_an_svm_without_probabilities_votes_but_does_not_average(tmp_path, net_run):
    from mnistlab.analysis.ensembles import build

    svm = fit_run(tmp_path, "svm", model_args={"pca": 30}, train_subset=1500)
    assert svm["classical"]["probabilities"] == "softmax of decision values"
    with pytest.raises(MnistlabError, match="cannot join a mean of probabilities"):
        build([svm["run_dir"], net_run["run_dir"]], "mean")
    assert build([svm["run_dir"], net_run["run_dir"]], "vote").method == "vote"
    calibrated = fit_run(tmp_path, "svm", model_args={"pca": 30, "probability": True}, train_subset=1500)
    assert calibrated["classical"]["probabilities"] == "predict_proba"
    assert build([calibrated["run_dir"], net_run["run_dir"]], "mean").method == "mean"


# ---------- preparations ----------


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


# ---------- bad settings ----------


@pytest.mark.parametrize("overrides,message", [
    ({"model": "knn", "model_args": {"k": 0}}, "k=0: expected 1 to 1000"),
    ({"model": "knn", "model_args": {"neighbours": 3}}, "has no option neighbours"),
    ({"model": "knn", "model_args": {"metric": "hamming"}}, "metric='hamming'"),
    ({"model": "svm", "model_args": {"gamma": "big"}}, "gamma='big'"),
    ({"model": "svm", "model_args": {"C": "ten"}}, "C='ten': expected a float"),
    ({"model": "random-forest", "model_args": {"n_estimators": 2.5}}, "n_estimators=2.5"),
    ({"model": "knn", "model_args": {"features": "sift"}}, "features='sift'"),
    ({"model": "knn", "augment": "seed"}, "augment='seed' does not apply to the classical model"),
    ({"model": "svm", "device": "cuda"}, "scikit-learn models run on the CPU"),
    ({"model": "mlp", "prepare": "sharpen"}, "prepare='sharpen'"),
])
def test_bad_classical_settings_get_clear_errors(overrides, message):
    with pytest.raises(MnistlabError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve(None, overrides)


@pytest.mark.slow
def test_a_classical_run_cannot_be_resumed_and_the_cli_says_why(knn_run, capsys):
    assert main(["train", "--resume", knn_run["run_dir"]]) == 2  # the command line, in this process
    err = capsys.readouterr().err
    assert "Traceback" not in err and "nothing to resume" in err
    assert main(["train", "--model", "knn", "--set", "model_args={k = -1}"]) == 2
    err = capsys.readouterr().err
    assert "k=-1" in err and "Traceback" not in err


# ---------- the saved model: plain arrays, each checked before use; the old skops bytes refused ----------


ORACLE_CASES = [("knn", {}), ("knn", {"weights": "distance", "metric": "manhattan", "pca": 20}),
                ("knn", {"metric": "cosine", "k": 5}), ("knn", {"metric": "chebyshev", "pca": 10}),
                ("svm", {"pca": 30}), ("svm", {"pca": 30, "probability": True}),
                ("svm", {"pca": 30, "nystroem": 200}), ("svm", {"pca": 20, "kernel": "poly"}),
                ("svm", {"pca": 20, "kernel": "sigmoid", "gamma": 0.01}), ("random-forest", {"n_estimators": 20}),
                ("random-forest", {"n_estimators": 5, "max_depth": 4, "pca": 20}), ("logreg-sklearn", {"max_iter": 50}),
                ("logreg-sklearn", {"features": "hog", "max_iter": 50})]


@pytest.mark.slow
@pytest.mark.parametrize("two_classes", [False, True], ids=["10 classes", "2 classes"])
@pytest.mark.parametrize("model,args", ORACLE_CASES, ids=[f"{m}-{a}" for m, a in ORACLE_CASES])
def test_the_arrays_give_what_scikit_learn_gives(model, args, two_classes, mnist):
    """mnistlab's inference on the stored arrays against scikit-learn's own on the fitted pipeline."""
    import warnings

    from mnistlab.models.classical import (
        features_of,
        fit_pipeline,
        make_pipeline,
        resolved_args,
    )

    a = resolved_args(model, args)
    x = to_unit(mnist.train.images[:1500].unsqueeze(1))
    xt = to_unit(mnist.test.images[:500].unsqueeze(1))
    y = mnist.train.labels[:1500].numpy()
    y = (y > 4).astype(np.int64) * 3 if two_classes else y  # classes 0 and 3 of 10: some never seen
    f, ft = features_of(x, a["features"]), features_of(xt, a["features"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipeline = fit_pipeline(make_pipeline(model, a, 0, 0), a, f, y)
    m = ClassicalModel.from_pipeline(model, a, pipeline, 10, (1, 28, 28))
    ours = m(xt).numpy()
    theirs = pipeline.predict_proba(ft) if m.gives_probabilities else pipeline.decision_function(ft)
    if theirs.ndim == 1:
        theirs = np.stack([-theirs, theirs], 1)
    seen = np.unique(y)
    if m.gives_probabilities:
        assert np.allclose(np.exp(ours[:, seen]), np.clip(theirs, 1e-7, 1), atol=2e-6)
    else:
        assert np.allclose(ours[:, seen], theirs, atol=1e-4)
    assert (ours.argmax(1) == seen[theirs.argmax(1)]).mean() >= 0.998  # float32 output: ties may round apart
    unseen = np.setdiff1d(np.arange(10), seen)
    assert (ours[:, unseen] < ours[:, seen].min(1, keepdims=True) + 1e-6).all()  # never seen, never chosen


def _arrays(run) -> tuple[dict, dict]:
    tensors, meta = checkpoint.load(Path(run) / "best.safetensors")
    return tensors, {k: v for k, v in meta.items() if k not in ("format", "version")}


def _saved(tensors, meta, path) -> Path:
    return checkpoint.save(path, tensors, meta)


@pytest.fixture(scope="module")
def forest_run(trained):
    return trained(model="random-forest", model_args={"n_estimators": 3}, **SMALL).record


@pytest.fixture(scope="module")
def svm_run(trained):
    return trained(model="svm", model_args={"pca": 20}, **{**SMALL, "train_subset": 1000}).record


def _edit(name, fn):
    return lambda t: t.update({f"model/{name}": fn(t[f"model/{name}"])})


TAMPERED = [  # (run, edit of the tensors, what the error names): the defects the hardening found
    ("knn", _edit("knn.fit_x", lambda a: a[:, :1].contiguous()), "knn.fit_x"),  # a one-column training matrix
    ("knn", _edit("knn.y", lambda a: a + 1000), "knn.y"),  # labels past the classes
    ("knn", _edit("classes", lambda a: torch.zeros_like(a)), "classes"),  # all-zero classes
    ("knn", _edit("knn.fit_x", lambda a: a[:2].contiguous()), "knn.fit_x"),  # fewer examples than neighbours
    ("knn", _edit("knn.fit_x", lambda a: a.long()), "knn.fit_x"),  # integers where features are floats
    ("knn", lambda t: t.update({"model/linear.coef": torch.zeros(10, 784)}), "linear.coef"),  # a swapped last step
    ("knn", lambda t: t.pop("model/knn.y"), "knn.y"),
    ("svm", _edit("svc.dual_coef", lambda a: a[:, :5].contiguous()), "svc.dual_coef"),  # wrong shape
    ("svm", _edit("svc.n_support", lambda a: a * 2), "svc.n_support"),
    ("svm", _edit("svc.gamma", lambda a: torch.tensor(-1.0, dtype=torch.float64)), "svc.gamma"),
    ("svm", _edit("pca.components", lambda a: a.T.contiguous()), "pca.components"),
    ("forest", _edit("forest.children_left", lambda a: torch.where(a > 0, a + 10**6, a)), "forest.children_left"),
    ("forest", _edit("forest.children_left", lambda a: torch.where(a > 0, torch.zeros_like(a), a)),
     "forest.children_left"),  # a cycle back to the root
    ("forest", _edit("forest.feature", lambda a: torch.where(a >= 0, a + 5000, a)), "forest.feature"),
    ("forest", _edit("forest.offsets", lambda a: a.flip(0).contiguous()), "forest.offsets"),
    ("forest", _edit("forest.value", lambda a: -a), "forest.value"),
]


@pytest.mark.parametrize("which,edit,name", TAMPERED, ids=[f"{w}-{n}-{i}" for i, (w, _, n) in enumerate(TAMPERED)])
def test_tampered_arrays_get_one_clear_error_naming_the_array(which, edit, name, knn_run, svm_run, forest_run,
                                                              tmp_path):
    run = {"knn": knn_run, "svm": svm_run, "forest": forest_run}[which]["run_dir"]
    tensors, meta = _arrays(run)
    edit(tensors)
    path = _saved(tensors, meta, tmp_path / "bad.safetensors")
    with pytest.raises(MnistlabError, match=f"classical model array '{name}'") as err:
        load_predictor(path)
    assert "damaged or altered" in err.value.hint


def test_options_the_arrays_cannot_serve_are_refused(knn_run, tmp_path):
    tensors, meta = _arrays(knn_run["run_dir"])
    for args, words in (({"metric": "levenshtein"}, "metric='levenshtein'"), ({"k": 10**6}, "k=1000000: expected 1 to 1000"),
                        ({"features": "sift"}, "features='sift'")):
        path = _saved(tensors, {**meta, "model_args": {**meta["model_args"], **args}}, tmp_path / "opt.safetensors")
        with pytest.raises(MnistlabError, match=words):
            load_predictor(path)


def test_stored_values_that_overflow_to_inf_are_a_clear_error_not_scikit_learns():
    """Found by the fuzz below: arrays scaled by 1e30 are finite when loaded, and the images' features
    they make overflow to inf, which scikit-learn's kernels refused with a ValueError."""
    from mnistlab.models.classical_format import _kernel

    with pytest.raises(MnistlabError, match="not finite"):
        _kernel(np.array([[np.inf, 1e30]]), np.zeros((2, 2)), "rbf", 0.5, 0.0, 3)
    assert _kernel(np.ones((1, 2)), np.ones((3, 2)), "rbf", 0.5, 0.0, 3).shape == (1, 3)


@pytest.mark.slow
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_classical_arrays_load_and_run_or_get_a_clear_error(knn_run, svm_run, forest_run, tmp_path, data):
    run = data.draw(st.sampled_from([knn_run, svm_run, forest_run]))["run_dir"]
    tensors, meta = _arrays(run)
    names = sorted(k for k in tensors if k.startswith("model/"))
    for _ in range(data.draw(st.integers(1, 3))):
        key = data.draw(st.sampled_from(names))
        if key not in tensors:  # dropped by an earlier mutation
            continue
        a = tensors[key]
        how = data.draw(st.sampled_from(["value", "shape", "dtype", "drop", "nan", "scale"]))
        if how == "value" and a.numel():
            flat = a.flatten().clone()
            value = data.draw(st.sampled_from([-2, -1, 0, 1, 7, 10**6, 2**40]))
            if not a.is_floating_point() and a.dtype != torch.bool:  # the write must fit the dtype (int32 after a draw)
                value = max(min(value, torch.iinfo(a.dtype).max), torch.iinfo(a.dtype).min)
            flat[data.draw(st.integers(0, a.numel() - 1))] = value
            tensors[key] = flat.view(a.shape)
        elif how == "shape" and a.dim():
            tensors[key] = a.flatten()[: max(0, a.numel() - data.draw(st.integers(1, 3)))].contiguous()
        elif how == "dtype":
            tensors[key] = a.to(data.draw(st.sampled_from([torch.float32, torch.float64, torch.int64, torch.int32])))
        elif how == "drop":
            tensors.pop(key)
        elif how == "nan" and a.is_floating_point() and a.numel():
            tensors[key] = a.clone().flatten().index_fill_(0, torch.tensor([0]), float("nan")).view(a.shape)
        elif how == "scale" and a.is_floating_point():
            tensors[key] = a * data.draw(st.sampled_from([0.0, -1.0, 1e30]))
    path = _saved(tensors, meta, tmp_path / "fuzz.safetensors")
    try:
        p = load_predictor(path)
    except MnistlabError as exc:
        assert exc.message
        return
    out = p.probs(torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8))  # what loads must run
    assert out.shape == (3, 10)


# The earlier format (skops bytes in one uint8 tensor) is refused before a byte of it is parsed; these
# are the files that crashed, hung or exhausted the earlier mnistlab, run as a user would run them.

def _legacy(tmp_path, meta, blob: bytes) -> Path:
    tensors = {"model/skops": torch.frombuffer(bytearray(blob), dtype=torch.uint8)}
    return _saved(tensors, meta, tmp_path / "legacy.safetensors")


def _tampered_forest_blob() -> bytes:
    """A 2-tree forest in skops form whose trees' child indices point far outside them."""
    import io

    import skops.io as sio
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline

    x = np.random.default_rng(0).random((60, 784)).astype(np.float32)
    forest = Pipeline([("model", RandomForestClassifier(2, random_state=0))]).fit(x, np.arange(60) % 10)
    src = zipfile.ZipFile(io.BytesIO(sio.dumps(forest)))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name.endswith(".npy"):
                arr = np.load(io.BytesIO(data), allow_pickle=False)
                if arr.dtype.names and "left_child" in arr.dtype.names:
                    arr = arr.copy()
                    arr["left_child"][arr["left_child"] > 0] = 10**7
                    buf = io.BytesIO()
                    np.save(buf, arr, allow_pickle=False)
                    data = buf.getvalue()
            dst.writestr(name, data)
    return out.getvalue()


def _shared_node_blob(depth: int = 40) -> bytes:
    """A skops schema of `depth` lists, each holding two references to the one before: a few KB, and
    2**depth nodes for an audit that walks references again (the earlier mnistlab's took 3.9 s at 18)."""
    import io

    def listed(i, content):
        return {"__class__": "list", "__module__": "builtins", "__loader__": "ListNode", "content": content, "__id__": i}

    def ref(i):
        return {"__class__": "list", "__module__": "builtins", "__loader__": "CachedNode", "__id__": i}

    levels = [listed(1, [])] + [listed(k, [ref(k - 1), ref(k - 1)]) for k in range(2, depth + 2)]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("schema.json", json.dumps({**listed(10**6, levels), "protocol": 2, "_skops_version": "0.10.0"}))
    return out.getvalue()


def _zip_member_bomb(count: int = 200_000_000) -> bytes:
    """A skops zip whose one .npy member declares `count` float64 zeros and inflates to all of them
    (1.6 GB from 1.5 MB). Its deflate stream is one compressed 16 MB block of zeros written again
    and again: after a full flush each block stands alone, so the copies inflate to the zeros they hold,
    and building the file takes a second instead of deflating 1.6 GB (5 s)."""
    import io
    import struct
    import zlib

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (count,)})
    head, chunk = header.getvalue(), bytes(1 << 24)
    repeats = count * 8 // len(chunk)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate, as zip members hold it
    first, block = (deflate.compress(b) + deflate.flush(zlib.Z_FULL_FLUSH) for b in (head, chunk))
    stream = first + block * repeats + deflate.flush()
    crc = zlib.crc32(head)
    for _ in range(repeats):
        crc = zlib.crc32(chunk, crc)
    npy = ("a.npy", 8, crc, stream, len(head) + repeats * len(chunk))
    schema = ('{"__class__": "ndarray", "__module__": "numpy", "__loader__": "NdArrayNode", "type": "numpy", '
              '"file": "a.npy", "protocol": 2, "__id__": 1}').encode()
    members = [("schema.json", 0, zlib.crc32(schema), schema, len(schema)), npy]
    out, central = io.BytesIO(), b""
    for name, method, crc_, data, size in members:  # local header + data; the central directory after
        fields = struct.pack("<HHHHHIIIHH", 20, 0, method, 0, 0x21, crc_, len(data), size, len(name), 0)
        central += b"PK\x01\x02" + struct.pack("<H", 20) + fields + struct.pack("<HHHII", 0, 0, 0, 0, out.tell())
        central += name.encode()
        out.write(b"PK\x03\x04" + fields + name.encode() + data)
    offset = out.tell()
    out.write(central + b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, 2, 2, len(central), offset, 0))
    return out.getvalue()


def _run_measured(argv: list[str], timeout: float = 120) -> tuple[subprocess.CompletedProcess, int]:
    """(the finished command, its peak resident memory in MB), the command in a fresh wrapper process."""
    wrapper = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:]); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024, file=sys.stderr); "
               "sys.exit(p.returncode)")
    done = subprocess.run([sys.executable, "-c", wrapper, sys.executable, "-m", "mnistlab", *argv],
                          capture_output=True, text=True, timeout=timeout)
    *err, peak = done.stderr.strip().splitlines() or ["0"]
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout, "\n".join(err)), int(peak)


@pytest.mark.slow
@pytest.mark.parametrize("blob", ["tampered forest", "shared-node schema", "zip member bomb"])
def test_a_hostile_checkpoint_of_the_earlier_format_is_a_clear_error_in_every_command(blob, forest_run, tmp_path,
                                                                                       capsys):
    if blob == "tampered forest":
        pytest.importorskip("skops")
    make = {"tampered forest": _tampered_forest_blob, "shared-node schema": _shared_node_blob,
            "zip member bomb": _zip_member_bomb}[blob]
    _, meta = _arrays(forest_run["run_dir"])
    path = _legacy(tmp_path, meta, make())
    from PIL import Image

    Image.new("L", (28, 28)).save(tmp_path / "d.png")
    commands = {"evaluate": ["evaluate", str(path)], "predict": ["predict", str(tmp_path / "d.png"), "--model", str(path)],
                "serve": ["serve", "--model", str(path), "--port", "0"]}
    # one loader refuses them all: every command for the crashing file (one in a new process, measured;
    # the others through main() here: a crash would take this test's worker down with it), one command
    # in a new process for each of the others
    measured = {"tampered forest": "serve", "shared-node schema": "predict", "zip member bomb": "serve"}[blob]
    done, peak_mb = _run_measured(commands[measured])
    assert done.returncode == 2, (measured, done.returncode, done.stderr[-800:])  # not 139 (SIGSEGV), not a hang
    assert "skops bytes" in done.stderr and "Traceback" not in done.stderr
    assert peak_mb < 1500, peak_mb  # nothing of the file was decompressed
    if blob == "tampered forest":
        for command in ("evaluate", "predict"):
            capsys.readouterr()
            assert main(commands[command]) == 2, command
            err = capsys.readouterr().err
            assert "skops bytes" in err and "Traceback" not in err, (command, err)


def test_what_needs_a_network_says_so_for_a_classical_run(knn_run, tmp_path, mnist):
    from mnistlab.analysis.inspection import inspect_model
    from mnistlab.analysis.maps import build_map
    from mnistlab.attacks import attack
    from mnistlab.serving.backend import accelerate
    from mnistlab.serving.onnx_export import export

    run = knn_run["run_dir"]
    x, y = mnist.test.images[:20], mnist.test.labels[:20]
    with pytest.raises(MnistlabError, match="--method pgd.*needs a network"):
        attack(run, x, y, method="pgd", eps=[0.1])
    # a query-only attack needs no gradient: it runs
    r = attack(run, x, y, method="square", eps=[0.3], queries=20, checks=False)
    assert r.accuracy[0] < r.clean_accuracy - 0.1  # it broke some (measured: 95% -> 75%)
    with pytest.raises(MnistlabError, match="ONNX export needs a network"):
        export(run, out=tmp_path / "knn.onnx")
    with pytest.raises(MnistlabError, match="no filters"):
        inspect_model(run)
    with pytest.raises(MnistlabError, match="no learned features"):
        build_map(run, method="tsne", n=50, quiet=True)
    predictor = load_predictor(run)
    assert accelerate(predictor) is predictor  # the server runs it with PyTorch around scikit-learn
    m = build_map(run, features="pixels", method="tsne", n=200, quiet=True)
    assert m["mistakes"] is not None and m["model_accuracy"] > 0.8
