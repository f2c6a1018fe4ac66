"""Model summaries (`models --summary`, `mnistlab.summary`, `Run.summary()`) against torchinfo as the oracle,
and a run's history as TensorBoard's own reader and a CSV reader see it."""

from __future__ import annotations

import csv

import pytest
import torch

import mnistlab
from mnistlab.cli import main
from mnistlab.models import create_model, list_models
from mnistlab.models.summary import summarize
from mnistlab.rundir import RunDir


@pytest.mark.parametrize("name", list_models())
def test_parameters_and_multiply_adds_agree_with_torchinfo(name):
    torchinfo = pytest.importorskip("torchinfo")
    model = create_model(name, (1, 28, 28), 10)
    theirs = torchinfo.summary(model, input_size=(1, 1, 28, 28), verbose=0)
    ours = summarize(model, (1, 28, 28))
    assert ours["params"] == theirs.total_params and ours["trainable"] == theirs.trainable_params
    norms = sum(p.numel() for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                for p in m.parameters())  # torchinfo counts a BatchNorm's parameters as multiply-adds; we do not
    assert ours["macs"] == theirs.total_mult_adds - norms and ours["flops"] == 2 * ours["macs"]


def test_models_summary_prints_each_layer_with_its_shape(capsys):
    assert main(["models", "--summary", "keras-cnn"]) == 0
    out = capsys.readouterr().out
    assert "[1, 32, 26, 26]" in out and "540,900" in out and "542,230" in out and "758,230 multiply-adds" in out


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tb")
    return mnistlab.train(model="logreg", epochs=2, train_subset=2000, validation=500, out=str(out), name="tb",
                          tensorboard=True, quiet=True, evaluate_test=False, schedule="step", gamma=0.5)


def test_a_run_summarises_its_own_model(logged_run):
    s = logged_run.summary()
    assert [layer["type"] for layer in s["layers"]] == ["Flatten", "Linear"] and s["params"] == 7850
    assert "7,850" in str(s)


def test_tensorboard_holds_every_epoch_the_learning_rate_and_the_confusion_matrix(logged_run):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = event_accumulator.EventAccumulator(str(RunDir(logged_run.run_dir).tensorboard_dir),
                                                size_guidance={event_accumulator.IMAGES: 0, event_accumulator.SCALARS: 0})
    events.Reload()
    tags = events.Tags()
    epochs = RunDir(logged_run.run_dir).epochs()
    for tag, key in (("loss/train", "train_loss"), ("accuracy/val", "val_acc"), ("learning_rate", "lr")):
        assert [e.step for e in events.Scalars(tag)] == [1, 2]
        assert [e.value for e in events.Scalars(tag)] == pytest.approx([r[key] for r in epochs], rel=1e-6)
    assert [e.value for e in events.Scalars("learning_rate")] == pytest.approx([5e-4, 2.5e-4])  # the step schedule
    assert "confusion_matrix/val" in tags["images"]
    images = events.Images("confusion_matrix/val")
    assert [i.step for i in images] == [1, 2] and images[0].width > 100
    assert images[0].encoded_image_string.startswith(b"\x89PNG")


def test_metrics_csv_is_the_log_as_a_table(logged_run):
    run = RunDir(logged_run.run_dir)
    with open(run.metrics, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for row, logged in zip(rows, run.epochs()):
        for key in ("train_loss", "val_acc", "lr"):
            assert float(row[key]) == logged[key]
