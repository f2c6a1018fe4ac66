"""Evaluation: metrics against hand counts, the one way a run's accuracy is measured, bad inputs.
(Ensembles: test_ensemble.py; reports: test_report.py; the 3-seed runs all three use: conftest.py.)"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
import torch
from builders import snapshot, write_tiny
from PIL import Image

from mnistlab import MnistlabError
from mnistlab.analysis import ensembles
from mnistlab.analysis.evaluation import (
    compute_metrics,
    evaluate,
    expected_calibration_error,
    shifted,
)
from mnistlab.cli import main as cli_main
from mnistlab.data import registry as datasets
from mnistlab.models.inference import BATCH_SIZE, UNRECORDED_BATCH_SIZE
from mnistlab.training import config
from mnistlab.training.engine import train

# ---------- metrics against independent computations ----------

def test_metrics_match_hand_counts():
    rng = np.random.default_rng(0)
    n, k = 500, 4
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 2.5 * np.eye(k)[labels] * (rng.random(n) > 0.3)[:, None]
    probs = torch.softmax(torch.tensor(logits), 1).float()
    m = compute_metrics(probs, torch.tensor(labels), ["a", "b", "c", "d"])
    pred = probs.argmax(1).numpy()
    assert m["accuracy"] == pytest.approx((pred == labels).mean())
    assert m["errors"] == int((pred != labels).sum())
    for c in range(k):  # precision, recall, support by counting
        tp = int(((pred == c) & (labels == c)).sum())
        assert m["per_class"][c]["precision"] == pytest.approx(tp / max(1, (pred == c).sum()))
        assert m["per_class"][c]["recall"] == pytest.approx(tp / (labels == c).sum())
        assert m["per_class"][c]["support"] == int((labels == c).sum())
    assert m["macro_avg"]["recall"] == pytest.approx(np.mean([m["per_class"][c]["recall"] for c in range(k)]))
    cm = np.zeros((k, k), int)
    for t, p in zip(labels, pred):
        cm[t, p] += 1
    assert m["confusion_matrix"] == cm.tolist()
    worst = max(((cm[i, j], i, j) for i in range(k) for j in range(k) if i != j))
    assert m["most_confused"][0] == {"true": "abcd"[worst[1]], "predicted": "abcd"[worst[2]], "count": int(worst[0])}
    top2 = np.argsort(-probs.numpy(), 1)[:, :2]
    assert m["top2"] == pytest.approx(np.mean([labels[i] in top2[i] for i in range(n)]))
    nll = -np.mean(np.log(probs.numpy()[np.arange(n), labels]))
    assert m["cross_entropy"] == pytest.approx(nll, rel=1e-4)


@pytest.mark.parametrize("case", ["ten classes", "a class never predicted and one never present", "ties",
                                  "a slice without the top classes"])
def test_metrics_match_scikit_learn(case):
    """The counts evaluate makes with numpy against scikit-learn's own functions, edge cases included. The
    class count is the dataset's (`labels=range(k)`), never the data's: a slice of images of 0-6 only,
    predicted 0-6 only, still gets ten rows and a 10x10 confusion matrix."""
    from sklearn import metrics as skm

    rng = np.random.default_rng(len(case))
    n, k = 2000, 10
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 3.0 * np.eye(k)[labels] * (rng.random(n) > 0.4)[:, None]
    if case != "ten classes":
        labels[labels == 9] = 8  # class 9 never present
        logits[:, 7] = -50.0  # class 7 never predicted
    if case == "ties":
        logits = np.round(logits)  # many equal scores: top-k must break them as scikit-learn does
    if case == "a slice without the top classes":
        labels %= 7
        logits = rng.normal(size=(n, k)) + 3.0 * np.eye(k)[labels] * (rng.random(n) > 0.4)[:, None]
        logits[:, 7:] = -50.0  # nothing of 7, 8 or 9 in the slice, and nothing predicted as them
    probs = torch.softmax(torch.tensor(logits), 1).float()
    m = compute_metrics(probs, torch.tensor(labels), [str(c) for c in range(k)])
    assert len(m["per_class"]) == k and np.shape(m["confusion_matrix"]) == (k, k)
    y, p = labels, probs.numpy()
    pred = p.argmax(1)
    idx = list(range(k))
    precision, recall, f1, support = skm.precision_recall_fscore_support(y, pred, labels=idx, zero_division=0)
    for c in idx:
        assert m["per_class"][c]["precision"] == pytest.approx(precision[c], abs=1e-12)
        assert m["per_class"][c]["recall"] == pytest.approx(recall[c], abs=1e-12)
        assert m["per_class"][c]["f1"] == pytest.approx(f1[c], abs=1e-12)
        assert m["per_class"][c]["support"] == support[c]
    for avg in ("macro", "weighted"):
        pr, rc, f, _ = skm.precision_recall_fscore_support(y, pred, labels=idx, average=avg, zero_division=0)
        assert m[f"{avg}_avg"] == pytest.approx({"precision": pr, "recall": rc, "f1": f}, abs=1e-12)
    assert m["confusion_matrix"] == skm.confusion_matrix(y, pred, labels=idx).tolist()
    for t in (1, 2, 3, 5):
        assert m[f"top{t}"] == pytest.approx(skm.top_k_accuracy_score(y, p, k=t, labels=idx), abs=1e-12)
    clipped = np.clip(p, 1e-12, 1)
    assert m["cross_entropy"] == pytest.approx(skm.log_loss(y, clipped / clipped.sum(1, keepdims=True), labels=idx),
                                               rel=1e-6)


def test_ece_on_a_known_case():
    # 4 predictions at confidence 0.9 of which 2 are right (gap 0.4), 6 at 0.6 all right (gap 0.4): ECE 0.4
    probs = torch.tensor([[0.9, 0.1]] * 4 + [[0.6, 0.4]] * 6)
    labels = torch.tensor([0, 0, 1, 1] + [0] * 6)
    ece, bins = expected_calibration_error(probs, labels)
    assert ece == pytest.approx(0.4)
    assert sum(b["count"] for b in bins) == 10


def test_shifted_moves_pixels_and_fills_black():
    x = torch.arange(16, dtype=torch.uint8).view(1, 4, 4) + 1
    s = shifted(x, 1, 0)
    assert torch.equal(s[0, :, 1:], x[0, :, :3]) and (s[0, :, 0] == 0).all()


# ---------- evaluate end to end ----------

@pytest.mark.slow
def test_evaluate_writes_json_table_and_pictures(seed_runs, capsys):
    _, runs = seed_runs
    assert cli_main(["evaluate", str(runs[0])]) == 0
    text = capsys.readouterr().out
    assert "accuracy" in text and "macro" in text and "most confused" in text
    result = json.loads((runs[0] / "eval" / "test.json").read_text())
    summary = json.loads((runs[0] / "summary.json").read_text())
    # the same errors train reported, counted from the same fp32 probabilities
    assert result["errors"] == summary["test_errors"] and result["accuracy"] == summary["test_acc"]
    assert result["run_reported"]["same"] is True and f"the same {summary['test_errors']} errors" in text
    assert set(result["pictures"]) == {"confusion", "per_class", "reliability", "mistakes", "curves"}
    for path in result["pictures"].values():
        img = Image.open(path)
        assert img.format == "PNG" and img.width >= 400 and oct(os.stat(path).st_mode)[-3:] != "600"
    val = evaluate(runs[0], split="val", tta=True, pictures=False)
    assert val["n"] == 1000 and val["tta"] is True


def test_evaluate_measures_in_the_batches_the_run_recorded(seed_runs, tmp_path):
    """New runs evaluate in batches of 256; a run that recorded another size (runs before recorded
    2,000) is measured in its own, and one that recorded nothing in 2,000: every run's own number is
    the one `evaluate` reproduces."""
    _, runs = seed_runs
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert summary["evaluation"]["batch_size"] == BATCH_SIZE == 256
    assert evaluate(runs[0], pictures=False, out=tmp_path / "eval")["evaluation"]["batch_size"] == BATCH_SIZE
    old = tmp_path / "old-run"
    old.mkdir()
    for name in ("best.safetensors", "config.json"):
        (old / name).write_bytes((runs[0] / name).read_bytes())
    for recorded, used in (({**summary["evaluation"], "batch_size": 500}, 500), (None, UNRECORDED_BATCH_SIZE)):
        (old / "summary.json").write_text(json.dumps({**summary, "evaluation": recorded}))
        e = evaluate(old, pictures=False, out=tmp_path / "eval")
        assert e["evaluation"]["batch_size"] == used and UNRECORDED_BATCH_SIZE == 2000
        assert e["errors"] == summary["test_errors"] and e["run_reported"]["same"]


def test_evaluate_bad_inputs(seed_runs, tmp_path, registered, empty_cache):
    _, runs = seed_runs
    empty_run = tmp_path / "empty-run"
    empty_run.mkdir()
    (empty_run / "config.json").write_text("{}")
    with pytest.raises(MnistlabError, match="has no best.safetensors"):
        evaluate(empty_run)
    with pytest.raises(MnistlabError, match="does not exist"):
        evaluate(tmp_path / "missing.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(MnistlabError, match="not a readable safetensors checkpoint"):
        evaluate(garbage)
    # a checkpoint for another dataset's classes
    letters = dataclasses.replace(datasets.get_spec("emnist-letters"), name="letters-tiny")
    tiny, _ = write_tiny(letters, tmp_path / "data", name="letters-tiny")
    registered(tiny)
    before = snapshot(runs[0])
    with pytest.raises(MnistlabError, match="was trained for mnist"):
        evaluate(runs[0], dataset="letters-tiny", out=tmp_path / "never", data_dir=tmp_path / "data")
    assert not (tmp_path / "never").exists() and snapshot(runs[0]) == before
    # an ensemble of models with different class counts
    other = train(config.resolve(None, {"model": "logreg", "dataset": "letters-tiny", "validation": 4,
                                            "epochs": 1, "out": str(tmp_path / "r"), "progress": False,
                                            "data_dir": str(tmp_path / "data")}), quiet=True)
    with pytest.raises(MnistlabError, match="predicts 26 classes"):
        ensembles.build([runs[0], other["run_dir"]])
    with pytest.raises(MnistlabError, match="expected a file name ending in .safetensors"):
        ensembles.save(ensembles.build([runs[0]]), tmp_path / "x.pt")
