"""`mnistlab check` (issue 32): deliberately broken models, an optimizer and a learning rate, each
caught by the check it names; the zoo's models and a correct model of one's own pass; the command
prints a verdict and writes check.json."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mnistlab
from mnistlab.cli import main

BROKEN = Path(__file__).resolve().parent / "user_code" / "broken.py"


def ref(name: str) -> str:
    return f"{BROKEN}:{name}"


def failed(result) -> set[str]:
    return {f["name"] for f in result.findings if f["ok"] is False}


@pytest.mark.parametrize("name, check", [("NoNonlinearity", "nonlinearity"), ("SoftmaxOutput", "softmax"),
                                         ("FrozenLayer", "gradients"), ("BatchDependent", "batch independence"),
                                         ("DeadReLU", "dead units")])
def test_a_broken_model_is_caught_by_the_check_it_names(name, check):
    r = mnistlab.check(ref(name), mechanics_only=True)
    assert r.status == "something is wrong" and check in failed(r), (r.verdict, failed(r))
    assert r.verdict.startswith(f"something is wrong: {check}:")  # the most specific cause, named first


def test_an_optimizer_whose_step_does_nothing_is_caught():
    r = mnistlab.check("mlp", optimizer=ref("DoesNothing"), mechanics_only=True)
    assert failed(r) >= {"optimizer", "overfit one batch"} and "changed no parameter" in r.verdict


@pytest.mark.parametrize("model", ["logreg", "mlp", "keras-cnn", "lenet5", "fast", "rnn", ref("Correct")])
def test_the_zoo_and_a_correct_model_pass_the_mechanics(model):
    r = mnistlab.check(model, mechanics_only=True)
    assert not failed(r), r.verdict
    names = [f["name"] for f in r.findings]
    assert names[:3] == ["output", "softmax", "initial loss"] and "overfit one batch" in names and "speed" in names


@pytest.mark.slow
def test_a_correct_model_works_between_the_references_and_broken_learning_is_named(tmp_path):
    good = mnistlab.check(ref("Correct"), quick=True, out=tmp_path / "good")
    assert good.status == "works", good.verdict
    assert {a["name"] for a in good.references} == {"logistic regression", "the MLP", "the fast CNN"}
    assert len(good.yours["runs"]) == 3 and good.yours["mean"] > 0.85
    saved = json.loads((tmp_path / "good" / "check.json").read_text())
    assert saved["verdict"] == good.verdict and "test never read" in saved["split"]
    assert all(len(r["curve"]) == 1 and r["curve"][-1] == r["val_acc"] for r in good.yours["runs"])  # 1 epoch
    for name in ("curves", "confusion", "mistakes"):  # its figures next to the field's, in a notebook too
        assert (tmp_path / "good" / f"{name}.png").stat().st_size > 1000
    assert len(good.pictures()) == 3 and "<img" in good._repr_html_()
    page = (tmp_path / "good" / "check.html").read_text()
    assert "works:" in page and len(re.findall(r"<img src=[\"']data:image/png;base64,", page)) >= 2 and "<script" not in page
    # a learning rate 100x too high: Adam at 0.1 instead of 1e-3. Every arm gets the same small search, so
    # the model is judged at a rate that suits it, and the verdict says which rate that was
    hot = mnistlab.check("mlp", lr=0.1, quick=True)
    assert hot.yours["lr"] < 0.1 and f"train it with --lr {hot.yours['lr']:g}" in hot.verdict, hot.verdict
    assert "not at the lr=0.1 it was given" in hot.verdict
    # no `out`: its pictures are there to show while this process runs (and go when it ends, below)
    assert hot.pictures() and all(Path(f).is_file() for f in hot.pictures().values())
    # labels shuffled against the images: it fits one batch, and learns nothing
    mnist = mnistlab.load("mnist")
    rng = np.random.default_rng(0)
    shuffled = mnistlab.Dataset.from_arrays(mnist.train.images.numpy(), rng.permutation(mnist.train.labels.numpy()),
                                            mnist.test.images.numpy(), mnist.test.labels.numpy(), name="shuffled")
    noise = mnistlab.check("mlp", dataset=shuffled, quick=True, seeds="0")  # one seed: chance is chance
    assert noise.status == "something is wrong" and "chance level" in noise.verdict, noise.verdict
    assert "shuffled" in noise.verdict


def test_pictures_drawn_without_an_out_folder_are_removed_when_the_process_ends():
    script = ("from mnistlab.analysis.checks import _scratch\nd = _scratch()\n(d / 'curves.png').write_bytes(b'x')\n"
              "print(d)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    folder = Path(done.stdout.strip())
    assert folder.name.startswith("mnistlab-check-") and not folder.exists()


@pytest.mark.slow
def test_the_command_prints_a_verdict_and_exits_by_it(tmp_path, capsys):
    assert main(["check", ref("SoftmaxOutput"), "--mechanics-only", "--out", str(tmp_path)]) == 1
    assert "verdict: something is wrong: softmax" in capsys.readouterr().out
    assert json.loads((tmp_path / "check.json").read_text())["status"] == "something is wrong"
    capsys.readouterr()
    assert main(["check", "nope"]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "Traceback" not in err


@pytest.mark.slow
def test_an_optimizer_and_a_loss_of_ones_own_are_checked_against_the_standard_ones():
    opt = mnistlab.check("mlp", optimizer=ref("HandSGD"), lr=0.05, quick=True, seeds="0-1")
    assert opt.role == "optimizer" and opt.status == "works", opt.verdict
    assert {a["name"] for a in opt.references} == {"adam on the same model", "sgd on the same model"}
    loss = mnistlab.check("mlp", loss=ref("hand_cross_entropy"), quick=True, seeds="0-1")
    assert loss.role == "loss" and loss.status == "works", loss.verdict
    assert [a["name"] for a in loss.references] == ["cross-entropy on the same model"]
    # the same numbers as the built-in cross-entropy: the hand-written one computes the same loss
    assert abs(loss.yours["mean"] - loss.references[0]["mean"]) < 0.01
