"""The paths people walk first, walked as they would: a researcher with a hand-written layer and optimizer
("does my implementation work?"), a student coming from the Keras tutorial, a teacher preparing pictures
of Fashion-MNIST. Each step is the command or the Python call as the docs give it; a traceback, a silent
minute, a dead end or a caption that runs into its neighbour fails the test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from builders import FASHION_DEB, needs_package
from PIL import Image, ImageDraw

import mnistlab
from mnistlab import machine, precision
from mnistlab.analysis import checks
from mnistlab.cli import main
from mnistlab.pictures import fit_caption, image_grid
from mnistlab.rundir import RunDir

TINY = {"train_subset": 1500, "validation": 300, "epochs": 1, "progress": False, "quiet": True}

# A researcher's own net: a batch norm of their own whose running mean moves in place (lerp_, which
# meets a bf16 tensor under autocast), F.relu rather than nn.ReLU
RESEARCHER = '''
import torch
import torch.nn.functional as F
from torch import nn


class MyBatchNorm(nn.Module):
    def __init__(self, n, momentum=0.1):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.bias = nn.Parameter(torch.zeros(n))
        self.register_buffer("running_mean", torch.zeros(n))
        self.momentum = momentum

    def forward(self, x):
        if self.training:
            mean = x.mean(0)
            self.running_mean.lerp_(mean, self.momentum)
        else:
            mean = self.running_mean
        return (x - mean) * self.weight + self.bias


class Net(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.fc1 = nn.Linear(784, 64)
        self.bn = MyBatchNorm(64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x):
        return self.fc2(F.relu(self.bn(self.fc1(x.flatten(1)))))


class Broken(Net):
    def forward(self, x):
        if self.training:
            raise ValueError("my layer is not finished")
        return super().forward(x)
'''

OPTIMIZERS = '''
import torch


class MomentumSGD(torch.optim.Optimizer):
    """Correct, at its own default rate."""

    def __init__(self, params, lr=0.05, momentum=0.9, weight_decay=0.0):
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self):
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is not None:
                    d = p.grad + g["weight_decay"] * p
                    buf = self.state[p]["buf"] = self.state[p].get("buf", torch.zeros_like(p)) * g["momentum"] + d
                    p.add_(buf, alpha=-g["lr"])


class WrongDecay(MomentumSGD):
    @torch.no_grad()
    def step(self):
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is not None:
                    p.add_(p.grad - g["weight_decay"] * p, alpha=-g["lr"])


class Forgetful(MomentumSGD):
    @torch.no_grad()
    def step(self):
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is not None:
                    buf = self.state[p].get("buf", torch.zeros_like(p)) * g["momentum"] + p.grad
                    p.add_(buf, alpha=-g["lr"])
'''


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("first-paths")
    (root / "mynet.py").write_text(RESEARCHER)
    (root / "opt.py").write_text(OPTIMIZERS)
    return root


# ---------- the researcher ----------

def test_own_code_trains_in_fp32_under_auto_and_the_run_says_so(lab, monkeypatch, capsys):
    """1: auto put the user's fp32 code in bf16 autocast without saying so; on a CPU with native bf16
    (faked here: the choice is what is tested) the zoo still gets bf16, their own code fp32."""
    zoo = precision.choose("auto", torch.device("cpu"), ["avx512_bf16"])
    own = precision.choose("auto", torch.device("cpu"), ["avx512_bf16"], own=("model",))
    assert zoo.chosen == "bf16" and own.chosen == "fp32" and "your own code" in own.reason
    monkeypatch.setenv(machine.FAKE_FEATURES_ENV, "avx2,avx512_bf16")
    machine.describe.cache_clear()
    try:
        assert main(["train", "--model", f"{lab / 'mynet.py'}:Net", "--train-subset", "1000", "--validation", "200",
                     "--epochs", "1", "--no-progress", "--out", str(lab / "runs")]) == 0
    finally:
        machine.describe.cache_clear()
    out = capsys.readouterr().out
    assert "auto: fp32, because the model is your own code" in out.splitlines()[0]


def test_an_exception_in_own_code_is_one_line_and_the_rerun_works(lab, capsys):
    """1: bf16 asked for, the in-place update fails inside their forward: one line naming their file
    and line with the exception's own message, and nothing left that refuses the rerun."""
    argv = ["train", "--model", f"{lab / 'mynet.py'}:Net", "--seeds", "0-1", "--precision", "bf16",
            "--train-subset", "500", "--validation", "100", "--epochs", "1", "--no-progress",
            "--out", str(lab / "bf16"), "--name", "mine"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("mnistlab: error: model ") and "Traceback" not in err and err.count("\n") == 2
    assert f"{lab / 'mynet.py'}:" in err and "expected dtype float" in err  # their line, torch's message
    assert not (lab / "bf16" / "mine").exists()
    assert main([*argv[:5], "--precision", "fp32", *argv[7:]]) == 0  # the same command, fixed: no "already exists"
    capsys.readouterr()
    with pytest.raises(mnistlab.MnistlabError, match=r"training raised ValueError: my layer is not finished \(at "):
        mnistlab.train(model=f"{lab / 'mynet.py'}:Broken", out=str(lab / "broken"), **TINY)


def test_check_streams_its_lines_says_skipped_and_catches_optimizer_bugs(lab, capsys):
    """2 and 3: each mechanics line as it completes; what could not run is 'skip', never 'ok'; the
    optimizer bugs a learning curve would blame on the learning rate are named."""
    r = mnistlab.check(f"{lab / 'mynet.py'}:Net", mechanics_only=True)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("check of ") and "optimizer adam at lr 0.001" in lines[0]  # the settings used
    assert any(" ok   dead units " in line and "ReLU call" in line for line in lines)  # F.relu is watched
    assert any(" ok   eval determinism " in line for line in lines)
    # the field's classic slip in a batch norm of one's own: the running mean moved with gradient history
    assert r.status == "something is wrong" and r.verdict.startswith("something is wrong: buffers: buffer(s) "
                                                                      "bn.running_mean carry gradient history")
    assert r.settings["lr"] == 0.001 and r.settings["optimizer"] == "adam"
    found = {f.name: f for f in checks.optimizer_mechanics(
        dataclass_cfg(optimizer=f"{lab / 'opt.py'}:WrongDecay", lr=0.05))}
    assert found["weight decay"].ok is False and "sign is wrong" in found["weight decay"].detail
    found = {f.name: f for f in checks.optimizer_mechanics(dataclass_cfg(optimizer=f"{lab / 'opt.py'}:Forgetful",
                                                                            lr=0.05))}
    assert found["momentum"].ok is False and "momentum buffer is not kept" in found["momentum"].detail
    found = {f.name: f for f in checks.optimizer_mechanics(dataclass_cfg(optimizer="adam", lr=1e-3))}
    assert found["momentum"].skipped and all(f.ok for f in found.values() if not f.skipped)
    no_relu = mnistlab.check("logreg", mechanics_only=True, quiet=True)
    dead = next(f for f in no_relu.findings if f["name"] == "dead units")
    assert dead["skipped"] and "no ReLU" in dead["detail"]


def dataclass_cfg(**settings):
    from mnistlab.training.config import resolve

    return resolve(None, settings)


@pytest.mark.slow
def test_a_correct_hand_written_optimizer_at_its_own_rate_works(lab):
    """2: compared fairly: every arm gets the same small learning-rate search, and the rates that won
    are said; the optimizer's own default (0.05) is where its search starts."""
    r = mnistlab.check("mlp", optimizer=f"{lab / 'opt.py'}:MomentumSGD", quick=True, seeds="0-1", quiet=True)
    assert r.settings["lr"] == 0.05 and r.status == "works", r.verdict
    assert all(arm["lr_search"] and arm["lr"] > 0 for arm in [r.yours, *r.references])
    assert "at lr" in r.conclusion()


@pytest.mark.slow
def test_the_researchers_path_check_train_evaluate_attack_report(lab, tmp_path, capsys):
    """The path end to end, each result handed to the next verb as it came back."""
    runs = mnistlab.train(model=f"{lab / 'mynet.py'}:Net", seeds=[0, 1], out=str(tmp_path), **TINY)
    ev = mnistlab.evaluate(runs.runs[0])  # a Run, as train returned it
    text = str(ev)
    assert "precision" in text and "confusion matrix" in text and "most confident mistakes" in text
    assert ev.confusion_matrix.names == [str(i) for i in range(10)] and ev.confusion_matrix.sum() == 10_000
    attack = mnistlab.attack(runs.runs[1].run_dir / RunDir.BEST, method="fgsm", eps=[0.1], n=100, quiet=True)
    assert attack.docs[0]["json"].startswith(str(runs.runs[1].run_dir / RunDir.EVAL))  # RUN/eval/, not best-eval/
    with pytest.raises(mnistlab.MnistlabError, match="is a group of 2 runs") as err:
        mnistlab.evaluate(runs)
    assert "runs.runs[0]" in str(err.value) and "mnistlab ensemble" in str(err.value)
    report = mnistlab.report(runs, out=str(tmp_path / "report"))  # a Runs, as train returned it
    page = Path(report.html).read_text()
    assert "median seed)" in page  # its details from the median seed, said so
    assert runs.runs[0].history["val_accuracy"][0] == runs.runs[0]["val_acc"]


# ---------- the student ----------

def test_a_recipe_shown_is_a_recipe_file_and_a_dry_run_keeps_nothing(tmp_path, capsys, monkeypatch):
    """4 and 7."""
    monkeypatch.chdir(tmp_path)
    assert main(["recipes", "--show", "seed-cnn"]) == 0
    (tmp_path / "my.toml").write_text(capsys.readouterr().out)
    assert main(["train", "--recipe", "my.toml", "--dry-run"]) == 0
    assert "nothing kept" in capsys.readouterr().out and sorted(p.name for p in tmp_path.iterdir()) == ["my.toml"]
    assert str(mnistlab.recipes(show="seed-cnn")) == (tmp_path / "my.toml").read_text().rstrip("\n")
    assert "keras-cnn" in str(mnistlab.models()) and "seed-cnn" in str(mnistlab.recipes())


def test_results_flow_into_the_next_verb_and_print_what_the_readme_says(tmp_path):
    """5 and 6: a Run goes wherever a run directory goes; print(evaluate(run)) is the whole table."""
    run = mnistlab.train(recipe="seed-mlp", out=str(tmp_path), **TINY)
    ev = mnistlab.evaluate(run, pictures=False)
    assert ev.errors == run["test_errors"] and "weighted" in str(ev) and "true \\ read as" in str(ev)
    assert set(run.history) >= {"loss", "accuracy", "val_loss", "val_accuracy", "lr"}
    seven = Image.new("L", (28, 28))
    ImageDraw.Draw(seven).line([(6, 6), (21, 6), (11, 23)], fill=255, width=3)
    prediction = mnistlab.predict([seven], model=run)[0]
    assert isinstance(prediction.digit, int) and prediction.class_name == str(prediction.digit)


@pytest.mark.parametrize(("argv", "says"), [
    (["train", "--model", "kears-cnn", "--dry-run"], "did you mean 'keras-cnn'?"),
    (["train", "--recipe", "seed-cn", "--dry-run"], "did you mean 'seed-cnn'?"),
    (["trian"], "did you mean 'train'?"),
    (["train", "--dataset", "Fashion-MNIST", "--dry-run"], "did you mean 'fashion-mnist'?"),
    (["evaluate", "runs/x", "--splt", "val"], "--splt: did you mean '--split'?"),
    (["attack", "runs/x", "--method", "pgdd"], "did you mean 'pgd'?"),
])
def test_a_typo_gets_the_nearest_name(argv, says, capsys):
    """11, and a wrong flag to a subcommand shows that subcommand's usage, not the top-level one."""
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's own errors exit
        status = exc.code
    err = capsys.readouterr().err
    assert status == 2 and says in err, err
    if argv[0] in ("evaluate", "attack"):
        assert f"usage: mnistlab {argv[0]}" in err


def test_python_seed_with_a_list_points_to_seeds():
    with pytest.raises(mnistlab.MnistlabError, match="pass seeds=") as err:
        mnistlab.train(seed=[0, 1], dry_run=True)
    assert "seed=[0, 1]" in str(err.value)


# ---------- the teacher ----------

FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def test_captions_fit_their_tiles_whatever_the_class_names():
    """8: every caption of every gallery is laid out within its own tile."""
    captions = [f"{a}>{b} {p}%" for a, b, p in zip(FASHION, reversed(FASHION), range(90, 100))]
    for scale in (3, 4):
        for caption in captions:
            lines, size = fit_caption(caption, 28 * scale, max(10, 4 * scale))
            assert 1 <= len(lines) <= 3 and "".join(lines).replace(" ", "") == caption.replace(" ", ""), lines
    grid = image_grid(np.zeros((10, 28, 28), np.uint8), captions, scale=3, cols=10)
    ink = np.asarray(grid.convert("L")) < 128
    for c in range(1, 10):  # the 4-pixel gutter between two tiles stays white under every caption
        gutter = 4 + c * (84 + 4) - 4
        assert not ink[84 + 4:, gutter:gutter + 4].any(), f"a caption crosses into tile {c}"


@pytest.mark.slow
@needs_package(FASHION_DEB.exists(), "dataset-fashion-mnist", "Fashion-MNIST's pictures and report")
def test_the_teachers_fashion_pictures_and_report(tmp_path):
    """8 and 9: Fashion-MNIST's long names in the mistakes and saliency pictures; a report after an
    evaluation without pictures has them, and shows the attack with its eps."""
    run = mnistlab.train(recipe="fast", dataset="fashion-mnist", out=str(tmp_path), **TINY)
    assert mnistlab.evaluate(run, pictures=False)
    mnistlab.attack(run, method="fgsm", eps=[0.05, 0.1], n=64, checks=False, quiet=True)
    mnistlab.inspect(run, images="0,1,2,3")
    report = mnistlab.report(run, out=str(tmp_path / "report"))
    page = Path(report.html).read_text()
    assert "confusion matrix (test)" in page and "misclassified test images" in page  # evaluated again, with them
    assert "fgsm (linf) on 64 test images: original, perturbation, adversarial at eps 0.1" in page
    saliency = Image.open(RunDir(run.run_dir).inspect_dir / "saliency.png")
    assert saliency.width > 400  # drawn; its labels wrapped to the tiles (pictures.mosaic_figure)


def test_two_groups_seed_runs_are_told_apart_in_a_legend(tmp_path):
    from mnistlab.analysis.attack_reports import distinct_names

    a, b = tmp_path / "mine-seeds" / "seed-0", tmp_path / "fast-seeds" / "seed-0"
    assert distinct_names([a, b]) == ["mine-seeds/seed-0", "fast-seeds/seed-0"]
