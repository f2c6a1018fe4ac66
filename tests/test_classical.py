"""Classical baselines as runs (kNN, SVM, random forest, logistic regression), the classical
preparations (deskew, binarize, HOG) for every model, and the safety of the saved scikit-learn models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnistlab.data import preparation
from mnistlab.data.normalization import Normalization, to_unit
from mnistlab.errors import MnistlabError
from mnistlab.models import checkpoint
from mnistlab.models.classical import ClassicalModel, hog_features
from mnistlab.models.predictor import load_predictor
from mnistlab.training.config import resolve
from mnistlab.training.train import train

SMALL = {"train_subset": 3000, "validation": 1000, "progress": False}


def fit_run(tmp_path, model, **extra):
    cfg = resolve(None, {"model": model, **SMALL, "out": str(tmp_path), **extra})
    return train(cfg, quiet=True)


@pytest.fixture(scope="module")
def knn_run(tmp_path_factory):
    return fit_run(tmp_path_factory.mktemp("knn"), "knn")


@pytest.fixture(scope="module")
def net_run(tmp_path_factory):
    return fit_run(tmp_path_factory.mktemp("net"), "mlp", epochs=2)


# ---------- runs like a network's ----------


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


def test_a_classical_run_evaluates_reports_ensembles_and_predicts(knn_run, net_run, tmp_path, mnist):
    from PIL import Image

    from mnistlab.analysis.ensemble import build, save
    from mnistlab.analysis.evaluate import evaluate
    from mnistlab.analysis.report import report
    from mnistlab.serving.predict import predict

    run = knn_run["run_dir"]
    e = evaluate(run, split="test")
    assert e["accuracy"] == pytest.approx(knn_run["test_acc"], abs=1e-6) and e["model"] == "knn"
    assert Path(e["pictures"]["confusion"]).is_file()
    assert evaluate(run, split="val")["accuracy"] == pytest.approx(knn_run["val_acc"], abs=1e-6)
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
    assert [r.digit for r in results] == [str(int(v)) for v in mnist.test.labels[:3]]


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


def test_an_svm_without_probabilities_votes_but_does_not_average(tmp_path, net_run):
    from mnistlab.analysis.ensemble import build

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


def test_a_classical_run_cannot_be_resumed_and_the_cli_says_why(knn_run):
    p = subprocess.run([sys.executable, "-m", "mnistlab", "train", "--resume", knn_run["run_dir"]],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "Traceback" not in p.stderr and "nothing to resume" in p.stderr
    p = subprocess.run([sys.executable, "-m", "mnistlab", "train", "--model", "knn", "--set", "model_args={k = -1}"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "k=-1" in p.stderr and "Traceback" not in p.stderr


# ---------- the saved model: skops inside the checkpoint, checked before it is built ----------


def _with_blob(src_run: str, blob: bytes, out: Path) -> Path:
    tensors, meta = checkpoint.load(Path(src_run) / "best.safetensors")
    tensors["model/skops"] = torch.frombuffer(bytearray(blob), dtype=torch.uint8) if blob else torch.zeros(0, dtype=torch.uint8)
    return checkpoint.save(out, tensors, {k: v for k, v in meta.items() if k not in ("format", "version")})


def test_a_checkpoint_naming_foreign_types_is_refused_before_anything_runs(knn_run, tmp_path):
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    evil = Pipeline([("f", FunctionTransformer(os.system)), ("model", LogisticRegression())])
    path = _with_blob(knn_run["run_dir"], sio.dumps(evil), tmp_path / "evil.safetensors")
    with pytest.raises(MnistlabError, match="names types mnistlab does not load: .*system"):
        load_predictor(path)


def test_a_pipeline_that_does_not_match_its_description_is_refused(knn_run, tmp_path):
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    x = np.random.default_rng(0).random((40, 10))
    wrong = Pipeline([("model", LogisticRegression())]).fit(x, np.arange(40) % 2)  # 10 inputs, not 784
    path = _with_blob(knn_run["run_dir"], sio.dumps(wrong), tmp_path / "wrong.safetensors")
    with pytest.raises(MnistlabError, match="does not fit its description"):
        load_predictor(path)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_skops_bytes_get_clear_errors(knn_run, tmp_path, data):
    blob = (Path(knn_run["run_dir"]) / "best.safetensors")
    tensors, _ = checkpoint.load(blob)
    good = tensors["model/skops"].numpy().tobytes()
    how = data.draw(st.sampled_from(["random", "truncate", "flip", "empty", "zip"]))
    if how == "random":
        bad = data.draw(st.binary(min_size=0, max_size=2000))
    elif how == "truncate":
        bad = good[:data.draw(st.integers(0, len(good) - 1))]
    elif how == "flip":
        pos = data.draw(st.integers(0, len(good) - 1))
        bad = good[:pos] + bytes([good[pos] ^ 0xFF]) + good[pos + 1:]
    elif how == "empty":
        bad = b""
    else:  # a valid zip with a nonsense schema
        import io

        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("schema.json", data.draw(st.sampled_from(['{"__class__": "Pipeline"}', "[]", "{", "null"])))
        bad = buf.getvalue()
    path = _with_blob(knn_run["run_dir"], bad, tmp_path / "fuzz.safetensors")
    try:
        p = load_predictor(path)
    except MnistlabError:
        return
    # a flipped byte inside the compressed data may leave a loadable model: it must still work as one
    assert isinstance(p.models[0], ClassicalModel)
    assert p.probs(torch.zeros(2, 28, 28, dtype=torch.uint8)).shape == (2, 10)


def test_what_needs_a_network_says_so_for_a_classical_run(knn_run, tmp_path, mnist):
    from mnistlab.analysis.attack import attack
    from mnistlab.analysis.inspect import inspect_model
    from mnistlab.analysis.maps import build_map
    from mnistlab.serving.backend import accelerate
    from mnistlab.serving.export import export

    run = knn_run["run_dir"]
    x, y = mnist.test.images[:20], mnist.test.labels[:20]
    with pytest.raises(MnistlabError, match="--method pgd.*needs a network"):
        attack(run, x, y, method="pgd", eps=[0.1])
    # a query-only attack needs no gradient: it runs
    r = attack(run, x, y, method="square", eps=[0.3], queries=20, checks=False)
    assert r.accuracy[0] <= r.clean_accuracy
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
