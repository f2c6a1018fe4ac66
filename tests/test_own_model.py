"""Your own model, optimizer, loss and data through every verb, from the CLI and from Python, with the
run recording the code it used and refusing to run changed code unless trusted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from builders import Server
from builders import mnistlab as mnistlab_cli
from PIL import Image

import mnistlab
from mnistlab.cli import main
from mnistlab.rundir import RunDir
from mnistlab.user_code import sha256_text

SMALL = ["--train-subset", "2000", "--validation", "200", "--epochs", "1", "--batch-size", "32", "--no-progress"]

NETS = '''
import torch
import torch.nn.functional as F
from torch import nn


class TinyNet(nn.Module):
    """Conv-pool-dense: the contract is normalized (N, 1, 28, 28) in, logits out."""

    def __init__(self, num_classes=10, width=16):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                      nn.Linear(8 * 14 * 14, width), nn.ReLU())
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.head(self.features(x))


def wrong_shape():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 7))


def raises(num_classes):
    raise RuntimeError("this factory is broken")


class SignSGD(torch.optim.Optimizer):
    """A one-line optimizer of one's own: step against the gradient's sign."""

    def __init__(self, params, lr=1e-3):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad.sign(), alpha=-group["lr"])


def smoothed(logits, labels):
    return F.cross_entropy(logits, labels, label_smoothing=0.05)
'''


@pytest.fixture(scope="module")
def own_run(tmp_path_factory):
    """A model in a temporary .py file, trained from the CLI over 3 seeds."""
    root = tmp_path_factory.mktemp("own")
    (root / "nets.py").write_text(NETS)
    assert main(["train", "--model", f"{root / 'nets.py'}:TinyNet", "--set", "model_args={width = 24}",
                 "--seeds", "0-2", *SMALL, "--out", str(root / "runs"), "--quiet"]) == 0
    group = next((root / "runs").glob("TinyNet-mnist-seeds*"))
    return root, json.loads((group / "summary.json").read_text())


def test_a_model_in_a_file_trains_over_seeds_and_its_run_records_the_code(own_run):
    root, seeds = own_run
    assert len(seeds["runs"]) == 3 and seeds["test_acc"]["std"] > 0  # three runs, three different seeds
    assert 0.3 < seeds["test_acc"]["mean"] <= 1  # 2,000 images, one epoch: well past chance (10%)
    run = Path(seeds["runs"][0])
    summary = json.loads((run / "summary.json").read_text())
    code = summary["code"]["model"]
    assert code["sha256"] == sha256_text(NETS) and code["path"] == str(root / "nets.py") and code["kind"] == "file"
    assert (run / "code" / "nets.py").read_text() == NETS  # the copy, to read and for --trust-code
    assert json.loads((run / "config.json").read_text())["model_args"] == {"width": 24}


@pytest.mark.slow
def test_every_verb_loads_the_run_in_a_new_process(own_run, tmp_path):
    root, seeds = own_run
    run = seeds["runs"][0]
    summary = json.loads((Path(run) / "summary.json").read_text())
    # the command line's evaluate, then the other verbs as a notebook calls them, in one new process
    # (a start costs ~4 s)
    verbs = (f"import mnistlab\nfrom mnistlab.cli import main\nrun = {run!r}\n"
             "assert main(['evaluate', run, '--no-pictures']) == 0\n"
             "mnistlab.attack(run, method='pgd', eps=[0.1], n=20, steps=5, checks=False)\n"
             "mnistlab.map(run, method='tsne', n=40, quiet=True)\n"
             "mnistlab.inspect(run, images='0', units=2, top=2)\n"
             f"mnistlab.export(run, out={str(tmp_path / 'own.onnx')!r})\n")
    done = subprocess.run([sys.executable, "-c", verbs], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"the same {summary['test_errors']} errors" in done.stdout
    assert json.loads((Path(run) / "eval" / "attack-pgd-linf.json").read_text())["robust_accuracy"]
    rd = RunDir(run)
    assert (rd.inspect_dir / RunDir.INSPECT_FILE).is_file() and list(rd.maps_dir.glob(f"*/{RunDir.MAP_FILE}"))

    import onnxruntime as ort

    images = mnistlab.load("mnist").test.images[:5]
    x = (images.numpy()[:, None] / 255).astype(np.float32)  # the graph takes [0,1] floats (N,1,28,28)
    onnx_probs = ort.InferenceSession(str(tmp_path / "own.onnx")).run(None, {"images": x})[0]
    torch_probs = mnistlab.models.predictor.load_predictor(run).probs(images).numpy()
    assert np.abs(onnx_probs - torch_probs).max() < 1e-4

    server = Server(tmp_path / "serve.log", "--model", run)
    try:
        digit = mnistlab.load("mnist").test.images[0].numpy()
        answer = httpx.post(f"{server.url}/api/predict", json={"image": digit.tolist(), "preprocess": False},
                            timeout=30)
        assert answer.status_code == 200 and answer.json()["digit"] in "0123456789"
    finally:
        server.stop()


@pytest.mark.slow
def test_edited_code_runs_as_recorded_and_elsewhere_only_when_approved(own_run, tmp_path):
    root, seeds = own_run
    run = tmp_path / "run"
    subprocess.run(["cp", "-r", seeds["runs"][1], str(run)], check=True)
    summary = json.loads((run / "summary.json").read_text())
    # the run's record names nets.py in the fixture's folder: edit it there (put back afterwards)
    source = root / "nets.py"
    original = source.read_text()
    try:
        source.write_text(original.replace("nn.ReLU(), nn.MaxPool2d", "nn.Tanh(), nn.MaxPool2d"))
        edited = mnistlab_cli("evaluate", run, "--no-pictures")  # this user signed it: the recorded copy runs, said so
        assert edited.returncode == 0, edited.stderr
        assert f"the same {summary['test_errors']} errors" in edited.stdout  # the recorded copy, not the edit
        assert f"{source} has changed since the run recorded it: running the copy" in edited.stderr
        # another user (a config folder without this key): refused, then --trust-code runs code/nets.py
        other = {**os.environ, "MNISTLAB_CONFIG_DIR": str(tmp_path / "other")}
        refused = mnistlab_cli("evaluate", run, "--no-pictures", env=other)
        assert refused.returncode == 2 and refused.stdout == "" and "Traceback" not in refused.stderr
        assert "did not record or approve" in refused.stderr and str(run / "code" / "nets.py") in refused.stderr
        trusted = mnistlab_cli("evaluate", run, "--no-pictures", "--trust-code", env=other)
        assert trusted.returncode == 0, trusted.stderr
        assert f"the same {summary['test_errors']} errors" in trusted.stdout
    finally:
        source.write_text(original)


@pytest.mark.parametrize(("model", "says"), [
    ("{root}/nets.py:wrong_shape", "returned shape (2, 7) for a batch of 2 images 1x28x28, expected (2, 10)"),
    ("{root}/nets.py:raises", "building it raised RuntimeError: this factory is broken (at {root}/nets.py:"),
    ("{root}/missing.py:Net", "no file {root}/missing.py"),
    ("{root}/nets.py:TinyNett", "has no 'TinyNett'"),  # hint: did you mean 'TinyNet'? (test_first_paths)
    ("no_such_package.models:Net", "no module named 'no_such_package'"),
])
def test_a_broken_model_gets_one_clear_line(tmp_path, capsys, model, says):
    (tmp_path / "nets.py").write_text(NETS)
    assert main(["train", "--model", model.format(root=tmp_path), *SMALL, "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert says.format(root=tmp_path) in err.strip().splitlines()[0] and "Traceback" not in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # nothing half-written


def test_own_optimizer_and_loss_from_python_are_recorded_and_compare_with_adam(tmp_path):
    sys.path.insert(0, str(tmp_path))
    (tmp_path / "my_nets.py").write_text(NETS)
    try:
        import my_nets
    finally:
        sys.path.remove(str(tmp_path))
    small = {"train_subset": 2000, "validation": 200, "epochs": 1, "batch_size": 32, "progress": False,
             "out": str(tmp_path / "runs")}
    mine = mnistlab.train(model=my_nets.TinyNet, optimizer=my_nets.SignSGD, loss=my_nets.smoothed, lr=2e-3,
                          quiet=True, **small)
    adam = mnistlab.train(model=my_nets.TinyNet, quiet=True, **small)
    assert set(mine["code"]) == {"model", "optimizer", "loss"} and "code" in adam
    assert mine["code"]["optimizer"]["path"] == str(tmp_path / "my_nets.py")
    assert mine.accuracy > 0.3 and adam.accuracy > 0.3  # both learn; the report compares them
    assert mine.accuracy != adam.accuracy
    again = mnistlab.evaluate(mine.run_dir, pictures=False)
    assert again.errors == mine["test_errors"]


def test_a_broken_optimizer_or_loss_is_named(tmp_path, capsys):
    (tmp_path / "nets.py").write_text(NETS + "\ndef scalar_less(logits, labels):\n    return logits\n")
    base = ["train", "--model", "mlp", *SMALL, "--out", str(tmp_path / "runs")]
    assert main([*base, "--set", f"loss={tmp_path}/nets.py:scalar_less"]) == 2
    assert "returned (4, 10), expected one number" in capsys.readouterr().err
    assert main([*base, "--set", f"optimizer={tmp_path}/nets.py:TinyNet"]) == 2
    assert "is the class TinyNet, not a torch.optim.Optimizer subclass" in capsys.readouterr().err


def test_an_instance_from_a_notebook_trains_here_and_is_refused_elsewhere(tmp_path):
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    r = mnistlab.train(model=net, train_subset=2000, validation=200, epochs=1, batch_size=32, progress=False,
                       quiet=True, out=str(tmp_path))
    assert r.accuracy > 0.5
    assert mnistlab.evaluate(r.run_dir, pictures=False).errors == r["test_errors"]  # this process: the object
    elsewhere = mnistlab_cli("evaluate", r.run_dir, "--no-pictures")
    assert elsewhere.returncode == 2 and "an object made in another Python session" in elsewhere.stderr


def test_a_dataset_from_arrays_and_one_from_an_image_folder_train_and_evaluate(tmp_path):
    rng = np.random.default_rng(0)

    def blobs(n):  # two classes anyone can tell apart: a bright square left or right
        x = rng.integers(0, 40, (n, 16, 16)).astype(np.uint8)
        y = np.arange(n) % 2
        for img, label in zip(x, y):
            img[4:12, (1 if label == 0 else 9):(7 if label == 0 else 15)] = 255
        return x, y

    (xa, ya), (xb, yb) = blobs(300), blobs(100)
    ds = mnistlab.Dataset.from_arrays(xa.astype(np.float32) / 255, ya, xb[..., None], yb, classes=["left", "right"],
                                      name="squares")
    assert ds.train.images.dtype == torch.uint8 and tuple(ds.test.images.shape) == (100, 16, 16)
    assert "<img" in ds.train._repr_html_()
    r = mnistlab.train(dataset=ds, model="mlp", validation=50, epochs=2, progress=False, quiet=True,
                       out=str(tmp_path / "runs"))
    assert r.accuracy > 0.9 and r["dataset"] == "squares"
    assert mnistlab.evaluate(r.run_dir, pictures=False).errors == r["test_errors"]

    folder = tmp_path / "squares"
    for split, (x, y) in (("train", (xa, ya)), ("test", (xb, yb))):
        for i, (img, label) in enumerate(zip(x, y)):
            (folder / split / ["left", "right"][label]).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(folder / split / ["left", "right"][label] / f"{i}.png")
    # trained through the command line in this process, evaluated in a new one
    assert main(["train", "--dataset", str(folder), "--model", "mlp", "--validation", "50", "--epochs", "2",
                 "--no-progress", "--out", str(tmp_path / "runs2"), "--quiet"]) == 0
    run = next((tmp_path / "runs2").iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["dataset"] == str(folder) and summary["test_acc"] > 0.9
    assert summary["dataset_hash"] == mnistlab.Dataset.from_folder(folder).content_hash
    again = mnistlab_cli("evaluate", run, "--no-pictures")
    assert again.returncode == 0 and f"the same {summary['test_errors']} errors" in again.stdout


@pytest.mark.parametrize(("args", "says"), [
    ((np.zeros((10, 28, 28)), np.zeros(9), np.zeros((5, 28, 28)), np.zeros(5)), "y_train: shape [9], expected (10,)"),
    ((np.full((10, 28, 28), np.nan), np.zeros(10), np.zeros((5, 28, 28)), np.zeros(5)), "x_train: values must be"),
    ((np.zeros((10, 28)), np.zeros(10), np.zeros((5, 28, 28)), np.zeros(5)), "x_train: an array of shape [10, 28]"),
    ((np.zeros((10, 28, 28)), -np.ones(10), np.zeros((5, 28, 28)), np.zeros(5)), "y_train: label -1"),
    ((np.zeros((10, 28, 28)), np.zeros(10), np.zeros((5, 32, 32)), np.zeros(5)), "x_test: images of shape [32, 32]"),
    ((np.array([["a"]]), np.zeros(1), np.zeros((5, 28, 28)), np.zeros(5)), "x_train: an array of <U1"),
])
def test_bad_arrays_get_an_error_that_names_the_argument(args, says):
    with pytest.raises(mnistlab.MnistlabError, match=None) as caught:
        mnistlab.Dataset.from_arrays(*args)
    assert says in caught.value.message


@pytest.mark.slow
def test_the_readme_example_runs_as_it_stands(tmp_path):
    """The README's own-model lines, verbatim, as a script in a new process."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("<!-- own-model-example -->", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "example.py").write_text(block)
    done = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "test accuracy (%)" in done.stdout and "eps 0.1: " in done.stdout and "5-NN accuracy" in done.stdout
    runs = json.loads(next((tmp_path / "runs").glob("my_net-mnist-seeds*/summary.json")).read_text())
    assert runs["test_acc"]["mean"] > 0.85 and len(runs["runs"]) == 3  # 6,000 images, one epoch: about 90%
