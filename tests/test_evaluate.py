"""Evaluation, ensembles and reports: metrics against hand counts, ensemble semantics, bad inputs,
and the HTML report rendered by a real headless Chromium."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from builders import write_tiny
from conftest import keep_artifact, snapshot
from PIL import Image

from mnistlab import MnistlabError
from mnistlab.analysis import ensemble
from mnistlab.analysis.evaluate import (
    compute_metrics,
    evaluate,
    expected_calibration_error,
    shifted,
)
from mnistlab.analysis.report import report
from mnistlab.cli import main as cli_main
from mnistlab.data import registry as datasets
from mnistlab.data.normalization import Normalization
from mnistlab.models.predictor import Predictor, load_predictor
from mnistlab.training import config as config_mod
from mnistlab.training.train import train, train_seeds


@pytest.fixture(scope="session")
def seed_runs(tmp_path_factory):
    """Three small MLPs (seeds 0-2) trained on a slice of the real MNIST."""
    out = tmp_path_factory.mktemp("runs")
    cfg = config_mod.resolve(None, {"model": "mlp", "train_subset": 6000, "validation": 1000, "epochs": 2,
                                    "out": str(out), "progress": False})
    summary = train_seeds(cfg, [0, 1, 2], quiet=True)
    return Path(summary["group_dir"]), [Path(r) for r in summary["runs"]]


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


# ---------- ensembles ----------

class Constant(torch.nn.Module):
    """A 'model' that answers the same logits for every image."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.log(torch.tensor(logits)))

    def forward(self, x):
        return self.logits.expand(x.shape[0], -1)


def test_vote_and_mean_differ_where_they_should():
    # one confident member for class 0, two lukewarm ones for class 1
    members = [Constant([0.9, 0.1]), Constant([0.4, 0.6]), Constant([0.45, 0.55])]
    norm = Normalization("scale", (0.0,), (1.0,))
    meta = {"classes": ["0", "1"], "num_classes": 2}
    images = torch.zeros(3, 28, 28, dtype=torch.uint8)
    mean = Predictor(members, [norm] * 3, "mean", meta).probs(images)
    vote = Predictor(members, [norm] * 3, "vote", meta).probs(images)
    assert mean.argmax(1).tolist() == [0, 0, 0] and vote.argmax(1).tolist() == [1, 1, 1]
    assert torch.allclose(mean[0], torch.tensor([0.5833, 0.4167]), atol=1e-4)
    # where members agree, both methods agree
    agree = [Constant([0.2, 0.8]), Constant([0.4, 0.6]), Constant([0.1, 0.9])]
    assert Predictor(agree, [norm] * 3, "mean", meta).probs(images).argmax(1).tolist() == \
        Predictor(agree, [norm] * 3, "vote", meta).probs(images).argmax(1).tolist() == [1, 1, 1]


def test_an_ensemble_of_one_equals_the_model(seed_runs, tmp_path):
    _, runs = seed_runs
    single = evaluate(runs[0], pictures=False, out=tmp_path / "single")
    for method in ("mean", "vote"):
        path = ensemble.save(ensemble.build([runs[0]], method), tmp_path / f"one-{method}.safetensors")
        one = evaluate(path, pictures=False, out=tmp_path / method)
        assert one["accuracy"] == single["accuracy"] and one["confusion_matrix"] == single["confusion_matrix"]
        assert one["member_accuracy"] == [single["accuracy"]]
    probs_single = load_predictor(runs[0]).probs(torch.zeros(5, 28, 28, dtype=torch.uint8))
    probs_one = load_predictor(tmp_path / "one-mean.safetensors").probs(torch.zeros(5, 28, 28,
                                                                                             dtype=torch.uint8))
    assert torch.allclose(probs_single, probs_one)


def test_ensemble_cli_reports_members_and_selects_on_validation(seed_runs, tmp_path, capsys):
    _, runs = seed_runs
    out = tmp_path / "three.safetensors"
    assert cli_main(["ensemble", *map(str, runs), "--method", "mean", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ensemble (mean)" in text and all(str(r) in text for r in runs)
    result = evaluate(out, pictures=False, out=tmp_path / "e")
    assert len(result["member_accuracy"]) == 3
    assert result["accuracy"] >= min(result["member_accuracy"])
    assert cli_main(["ensemble", *map(str, runs), "--select", "--out", str(tmp_path / "sel.safetensors")]) == 0
    assert "greedy selection on the validation split" in capsys.readouterr().out
    # a member that held out other examples (here: 500 instead of 1,000) trained on part of the others'
    # validation split; selecting on it would be unfair, so it is refused
    other = train(config_mod.resolve(None, {"model": "mlp", "train_subset": 6000, "validation": 500, "epochs": 1,
                                            "out": str(tmp_path / "o"), "progress": False}), quiet=True)
    assert cli_main(["ensemble", *map(str, runs), other["run_dir"], "--select", "--out",
                     str(tmp_path / "bad.safetensors")]) == 2
    assert "did not hold out the same validation examples" in capsys.readouterr().err


# ---------- evaluate end to end ----------

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
    other = train(config_mod.resolve(None, {"model": "logreg", "dataset": "letters-tiny", "validation": 4,
                                            "epochs": 1, "out": str(tmp_path / "r"), "progress": False,
                                            "data_dir": str(tmp_path / "data")}), quiet=True)
    with pytest.raises(MnistlabError, match="predicts 26 classes"):
        ensemble.build([runs[0], other["run_dir"]])
    with pytest.raises(MnistlabError, match="expected a file name ending in .safetensors"):
        ensemble.save(ensemble.build([runs[0]]), tmp_path / "x.pt")


# ---------- report, in a real browser ----------

CHROMIUM = shutil.which("chromium")


@pytest.mark.skipif(CHROMIUM is None and os.environ.get("CI") != "true",
                    reason="Debian's chromium is not installed (CI installs it)")
def test_report_renders_in_headless_chromium(seed_runs, tmp_path):
    group, runs = seed_runs
    result = report([group, runs[0]], out=tmp_path / "report")
    html = Path(result["html"]).read_text()
    assert "<img src=\"data:image/png;base64," in html and "http" not in html.split("<body>")[1][:2000]
    md = Path(result["markdown"]).read_text()
    assert "| run | model |" in md and "±" in md  # the group row shows mean ± std over its 3 seeds
    assert result["rows"][0]["seeds"] == [0, 1, 2]
    shot = tmp_path / "report.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars"]
    subprocess.run([CHROMIUM, *flags, "--window-size=1280,2000", f"--screenshot={shot}",
                    Path(result["html"]).as_uri()], capture_output=True, timeout=120, check=True)
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", Path(result["html"]).as_uri()], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert "Headline" in dom and "Model card" in dom and dom.count("<img") >= 10
    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.shape == (2000, 1280)
    assert img.std() > 20  # a rendered page with figures, not a blank or error screen
    keep_artifact(shot)
