"""Classical baselines as runs (kNN, SVM, random forest, logistic regression): a network run's files
and numbers, every verb, reproducible fits, clear errors for bad settings and for what needs a network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mnistlab.cli import main
from mnistlab.errors import MnistlabError
from mnistlab.models.predictor import load_predictor
from mnistlab.training.config import resolve
from mnistlab.training.engine import train

SMALL = {"train_subset": 3000, "validation": 1000, "progress": False}


def fit_run(tmp_path, model, **extra):
    cfg = resolve(None, {"model": model, **SMALL, "out": str(tmp_path), **extra})
    return train(cfg, quiet=True)



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
