"""A Keras 3 model, unchanged, through every verb: the tutorial's code in a file (examples/keras_tutorial.py)
and a model built in this process, trained on the torch backend with their initializers, the final
softmax taken off, channels-last inputs, Keras layer names in checkpoints and pictures."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

keras_missing = pytest.mark.skipif(
    __import__("importlib").util.find_spec("keras") is None,
    reason="Keras 3 is not installed (pip install 'mnistlab[keras]'; the test extra brings it, so CI runs these)")
pytestmark = keras_missing

import mnistlab  # noqa: E402
from mnistlab.cli import main  # noqa: E402
from mnistlab.errors import MnistlabError  # noqa: E402
from mnistlab.models import create_model, keras_bridge  # noqa: E402
from mnistlab.rundir import RunDir  # noqa: E402

TUTORIAL = Path(__file__).resolve().parents[1] / "examples" / "keras_tutorial.py"
SMALL = {"train_subset": 2000, "validation": 500, "epochs": 1, "progress": False, "precision": "fp32"}


@pytest.fixture(scope="module")
def keras_run(tmp_path_factory):
    """The tutorial file trained with the seed-cnn recipe's settings, at a smoke size, from the command line."""
    out = tmp_path_factory.mktemp("keras-runs")
    code = main(["train", "--recipe", "seed-cnn", "--model", f"{TUTORIAL}:network", "--out", str(out), "--name", "k",
                 "--train-subset", "2000", "--validation", "500", "--epochs", "1", "--no-progress"])
    assert code == 0
    return out / "k"


@pytest.mark.slow
def test_the_tutorial_trains_with_the_recipe_and_records_its_code(keras_run, capsys):
    summary = RunDir(keras_run).read_summary()
    assert summary["test_acc"] > 0.85 and summary["params"] == 542_230  # the tutorial's own count
    assert summary["code"]["model"]["ref"].endswith("keras_tutorial.py:network")
    assert (keras_run / "code" / "keras_tutorial.py").read_text() == TUTORIAL.read_text()
    config = json.loads((keras_run / "config.json").read_text())
    assert config["model_args"] == {} and config["optimizer"] == "adam" and config["batch_size"] == 32
    start = RunDir(keras_run).read_log()[0][0]
    assert start["precision"]["chosen"] == "fp32"


@pytest.mark.slow
def test_checkpoints_hold_the_keras_layers_by_name_in_keras_layouts(keras_run):
    from safetensors.torch import load_file

    tensors = load_file(str(keras_run / "best.safetensors"))
    assert {k: tuple(v.shape) for k, v in tensors.items()} == {
        "model/conv2d.kernel": (3, 3, 1, 32), "model/conv2d.bias": (32,), "model/dense.kernel": (5408, 100),
        "model/dense.bias": (100,), "model/dense_1.kernel": (100, 10), "model/dense_1.bias": (10,)}


def test_a_fresh_copy_per_seed_from_the_layers_own_initializers():
    torch.manual_seed(0)
    a = create_model(f"{TUTORIAL}:network")
    torch.manual_seed(0)
    b = create_model(f"{TUTORIAL}:network")
    torch.manual_seed(1)
    c = create_model(f"{TUTORIAL}:network")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.conv2d.kernel, c.conv2d.kernel)
    # he_uniform: U(+-sqrt(6 / fan_in)); glorot_uniform on the output (Keras' default); zero biases
    for kernel, limit in ((a.conv2d.kernel, math.sqrt(6 / 9)), (a.dense.kernel, math.sqrt(6 / 5408)),
                          (a.dense_1.kernel, math.sqrt(6 / 110))):
        assert 0.9 * limit < float(kernel.detach().abs().max()) <= limit * (1 + 1e-6)
        assert abs(float(kernel.detach().std()) - limit / math.sqrt(3)) < 0.1 * limit
    assert all(float(b.abs().max()) == 0 for b in (a.conv2d.bias, a.dense.bias, a.dense_1.bias))


def test_inputs_go_in_channels_last_and_the_final_softmax_is_taken_off():
    torch.manual_seed(0)
    net = create_model(f"{TUTORIAL}:network")
    assert net.layout == "channels_last" and "softmax" in net.softmax_removed
    x = torch.rand(4, 1, 28, 28)
    logits = net.eval()(x)
    assert not torch.allclose(logits.sum(1), torch.ones(4))  # logits, not probabilities
    keras_input = x.permute(0, 2, 3, 1)  # what the Keras model itself is given (N, 28, 28, 1)
    by_hand = torch.relu(torch.nn.functional.conv2d(keras_input.permute(0, 3, 1, 2), net.conv2d.weight,
                                                    net.conv2d.bias))
    by_hand = torch.nn.functional.max_pool2d(by_hand, 2).permute(0, 2, 3, 1).flatten(1)  # Keras' flatten order
    by_hand = torch.relu(by_hand @ net.dense.kernel + net.dense.bias) @ net.dense_1.kernel + net.dense_1.bias
    torch.testing.assert_close(logits, by_hand, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_the_user_model_object_is_not_touched_and_a_model_from_python_trains(tmp_path):
    keras = keras_bridge.keras_module()
    from keras import layers

    model = keras.Sequential([keras.Input((28, 28, 1)), layers.Flatten(), layers.Dense(32, activation="relu"),
                              layers.Dense(10, activation="softmax")])
    before = [w.copy() for w in model.get_weights()]
    run = mnistlab.train("seed-cnn", model=model, out=str(tmp_path), quiet=True, **SMALL)
    assert run.test_acc > 0.6  # 62 steps of a small MLP; chance is 10%
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # its weights are its own
    assert mnistlab.evaluate(run.run_dir, pictures=False).errors == run.errors


@pytest.mark.slow
def test_every_verb_takes_the_keras_run(keras_run, tmp_path, capsys):
    ev = mnistlab.evaluate(keras_run, pictures=False)
    assert ev.errors == RunDir(keras_run).read_summary()["test_errors"]  # the same errors train reported
    r = mnistlab.attack(str(keras_run), method="fgsm", eps=[0.1], n=100, checks=False, quiet=True)
    assert 0 <= r.accuracy[0] < ev.accuracy
    inspected = mnistlab.inspect(str(keras_run), images="0,1")
    assert inspected["first_layer"] == "conv2d" and inspected["conv_layers"] == ["conv2d"]
    summary = mnistlab.summary(str(keras_run))
    assert [layer["name"] for layer in summary["layers"]] == ["conv2d", "max_pooling2d", "flatten", "dense", "dense_1"]
    assert summary["layers"][0]["output_shape"] == [1, 26, 26, 32]  # Keras' own layout
    native = mnistlab.summary("keras-cnn")
    assert (summary["params"], summary["macs"]) == (native["params"], native["macs"])  # the same network
    [result] = mnistlab.predict([np.zeros((28, 28), np.uint8)], model=str(keras_run))
    assert abs(sum(p for _, p in result.top3) - 1) < 1 and 0 <= result.probability <= 1
    page = mnistlab.report([str(keras_run)], out=str(tmp_path / "report"))
    assert Path(page["html"]).is_file()


@pytest.mark.slow
def test_export_to_onnx_gives_the_same_probabilities(keras_run, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    saved = mnistlab.export(str(keras_run), out=str(tmp_path / "k.onnx"))
    images = torch.rand(5, 1, 28, 28)
    from mnistlab.models.predictor import load_predictor

    predictor = load_predictor(keras_run)
    expected = predictor.probs((images * 255).round().to(torch.uint8)).numpy()
    session = ort.InferenceSession(saved["file"])
    got = session.run(None, {"images": ((images * 255).round() / 255).numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.slow
def test_check_runs_its_mechanics_on_a_keras_model():
    result = mnistlab.check(f"{TUTORIAL}:network", mechanics_only=True, quiet=True, normalize="scale")
    assert result["status"] == "works", result["verdict"]
    softmax = next(f for f in result["findings"] if f["name"] == "softmax")
    assert softmax["ok"]  # its softmax was taken off: the model gives logits


def test_keras_imported_with_another_backend_is_refused_with_the_fix(monkeypatch):
    keras = keras_bridge.keras_module()
    monkeypatch.setattr(keras.config, "backend", lambda: "tensorflow")
    with pytest.raises(MnistlabError) as err:
        keras_bridge.keras_module()
    assert "tensorflow backend" in err.value.message and "KERAS_BACKEND=torch" in err.value.hint


@pytest.mark.slow
def test_the_backend_is_chosen_before_a_file_imports_keras(tmp_path):
    from builders import mnistlab as mnistlab_cli

    # a new process, KERAS_BACKEND set to another backend by the user: the file still gets Keras on torch
    done = mnistlab_cli("models", "--summary", f"{TUTORIAL}:network", env={**os.environ, "KERAS_BACKEND": "jax"})
    assert done.returncode == 0, done.stderr
    assert "dense_1" in done.stdout and "Dense (Keras)" in done.stdout
    assert "KERAS_BACKEND=jax set; mnistlab runs Keras on torch" in done.stderr
