"""The same numbers on every kind of CPU: the precision a run chooses (and records), both precision
paths exercised on every machine (bf16 autocast runs, emulated, on AVX2 CPUs too), and the one way a
run's accuracy is measured, which `evaluate` reproduces error for error. Also the allocator tuning,
the layout options of the fast models, and the fused optimizers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from mnistlab import MnistlabError, allocator, machine
from mnistlab.models import create_model
from mnistlab.precision import choose
from mnistlab.training.config import resolve, validate
from mnistlab.training.optim import make_optimizer

CPU = torch.device("cpu")


@pytest.mark.parametrize("features, chosen, words", [
    (["avx2", "fma"], "fp32", "no native bf16"),  # most laptops: bf16 would be emulated
    (["avx2", "fma", "avx512f", "avx512_bf16"], "bf16", "avx512_bf16"),
    (["avx2", "fma", "avx512f", "amx_bf16", "amx_tile"], "bf16", "amx_bf16"),
    (["avx2", "fma", "avx512f"], "fp32", "no native bf16"),  # AVX-512 without its BF16 extension
    (["asimd", "bf16"], "bf16", "bf16"),  # Arm with the BF16 extension
    ([], "fp32", "no listed features"),
])
def test_auto_picks_bf16_only_where_the_cpu_computes_it(features, chosen, words):
    p = choose("auto", CPU, cpu_features=features)
    assert p.requested == "auto" and p.chosen == chosen and words in p.reason


def test_an_explicit_precision_is_kept_and_emulated_bf16_is_called_slow():
    assert choose("fp32", CPU, cpu_features=["avx512_bf16"]).chosen == "fp32"
    slow = choose("bf16", CPU, cpu_features=["avx2", "fma"])
    assert slow.chosen == "bf16" and "slower than fp32" in slow.reason
    with pytest.raises(ValueError, match="fp16"):
        choose("fp16", CPU)
    with pytest.raises(MnistlabError, match=r"precision='fp16': expected auto \| fp32 \| bf16"):
        validate(resolve("seed-mlp", {"precision": "fp16"}))
    assert resolve("seed-mlp").precision == "auto" and resolve("fast").precision == "auto"


@pytest.fixture
def fake_cpu(monkeypatch):
    """fake_cpu(["avx2", "fma"]): this process describes its CPU with only those features."""
    def fake(features):
        monkeypatch.setenv(machine.FAKE_FEATURES_ENV, ",".join(features))
        machine.describe.cache_clear()
    yield fake
    monkeypatch.delenv(machine.FAKE_FEATURES_ENV, raising=False)
    machine.describe.cache_clear()


TINY_CNN = {"model": "fast", "model_args": {"width": 8, "stem_padding": 0, "flatten": "nhwc"}, "train_subset": 1500,
            "validation": 500, "batch_size": 64, "channels_last": True, "progress": False}


@pytest.mark.parametrize("features, chosen", [(["avx2", "fma"], "fp32"),
                                              (["avx2", "fma", "avx512f", "avx512_bf16"], "bf16")])
def test_auto_decides_by_the_cpu_features_and_evaluate_reproduces_the_errors(features, chosen, fake_cpu, tmp_path):
    from mnistlab.analysis.evaluate import evaluate
    from mnistlab.training.train import train

    fake_cpu(features)
    s = train(resolve(None, {**TINY_CNN, "precision": "auto", "out": str(tmp_path)}), quiet=True)
    assert s["precision"]["chosen"] == chosen and s["environment"]["cpu_features"] == features
    assert s["environment"]["cpu_features_faked_by"] == machine.FAKE_FEATURES_ENV  # never silently
    assert s["evaluation"]["precision"] == "fp32"  # whatever the run trained in
    e = evaluate(s["run_dir"], pictures=False)
    assert e["errors"] == s["test_errors"] and e["accuracy"] == s["test_acc"] and e["run_reported"]["same"]
    assert evaluate(s["run_dir"], split="val", pictures=False)["accuracy"] == s["val_acc"]
    extra = s["test_at_training_precision"]
    if chosen == "bf16":  # the same weights under bf16 inference, said in the summary
        assert extra["precision"] == "bf16" and extra["errors"] - s["test_errors"] == extra["errors_minus_fp32"]
        assert 0.5 < extra["accuracy"] <= 1 and "bf16 inference of the same weights" in extra["note"]
    else:
        assert extra is None


@pytest.mark.slow
@pytest.mark.parametrize("model, precision", [("mlp", "bf16"), ("fast", "bf16"), ("keras-cnn", "fp32")])
def test_the_evaluate_command_prints_the_errors_train_printed(model, precision, tmp_path):
    """In a new process, as a user runs it, for each precision path (bf16 is emulated on AVX2 CPUs)."""
    common = [sys.executable, "-m", "mnistlab"]
    args = ["train", "--model", model, "--train-subset", "3000", "--validation", "500", "--epochs", "1",
            "--precision", precision, "--out", str(tmp_path), "--name", "r", "--no-progress"]
    if model != "mlp":
        args.append("--channels-last")
    trained = subprocess.run([*common, *args], capture_output=True, text=True, timeout=300)
    assert trained.returncode == 0, trained.stderr
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert f"({summary['test_errors']} errors in 10000, fp32 inference" in trained.stdout
    evaluated = subprocess.run([*common, "evaluate", str(tmp_path / "r"), "--no-pictures"], capture_output=True,
                               text=True, timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"({summary['test_errors']} errors)" in evaluated.stdout
    assert f"the same {summary['test_errors']} errors `train` reported" in evaluated.stdout


def test_a_run_records_the_precision_it_chose_and_why(tmp_path):
    from mnistlab.training.train import train

    cfg = resolve("fast", {"out": str(tmp_path), "progress": False, "train_subset": 512, "batch_size": 64,
                           "validation": 500})
    summary = train(cfg, quiet=True)
    expected = choose("auto", CPU)
    assert summary["precision"] == expected.as_dict()
    header = json.loads((tmp_path / "fast-mnist-s0" / "log.jsonl").read_text().splitlines()[0])
    assert header["precision"] == expected.as_dict()
    assert header["environment"]["cpu_features"] == summary["environment"]["cpu_features"]
    assert header["allocator"]  # what was done to malloc, in words


def test_the_allocator_tuning_can_be_turned_off():
    code = "from mnistlab import allocator; print(allocator.keep_freed_memory())"
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, MNISTLAB_MALLOC_TUNING="0"), check=True).stdout
    assert "left as it is (MNISTLAB_MALLOC_TUNING=0)" in off
    state = allocator.keep_freed_memory()
    assert state == allocator.keep_freed_memory()  # once per process
    if sys.platform.startswith("linux"):
        assert "glibc malloc keeps freed memory" in state or "no glibc mallopt" in state


def test_fast_model_stem_padding_and_channels_last_flatten():
    x = torch.rand(4, 1, 28, 28)
    old = create_model("fast", (1, 28, 28), 10, width=8)  # the defaults: the model the packaged weights fit
    new = create_model("fast", (1, 28, 28), 10, width=8, stem_padding=0, flatten="nhwc")
    assert old[0][:3](x).shape[-2:] == (14, 14) and new[0][:3](x).shape[-2:] == (12, 12)
    assert new[1].in_features == 16 * 6 * 6 and old[1].in_features == 16 * 7 * 7
    # The NHWC flatten is the NCHW one with the classifier's inputs permuted: same function, other order.
    nchw = create_model("fast", (1, 28, 28), 10, width=8, stem_padding=0, flatten="nchw")
    nchw.load_state_dict(new.state_dict())
    with torch.no_grad():
        w = new[1].weight.view(10, 6, 6, 16).permute(0, 3, 1, 2).reshape(10, -1)
        nchw[1].weight.copy_(w)
    new.eval(), nchw.eval()
    assert torch.allclose(new(x), nchw(x), atol=1e-5)
    cl = new.to(memory_format=torch.channels_last)
    assert torch.allclose(cl(x.contiguous(memory_format=torch.channels_last)), nchw(x), atol=1e-5)
    for bad, words in (({"stem_padding": 3}, "stem_padding must be 0, 1 or 2"),
                       ({"flatten": "hwc"}, "flatten must be 'nchw' or 'nhwc'")):
        with pytest.raises(MnistlabError, match=words):
            create_model("fast", (1, 28, 28), 10, **bad)


def test_keras_cnn_flattens_in_keras_order_when_asked():
    a = create_model("keras-cnn", (1, 28, 28), 10)
    b = create_model("keras-cnn", (1, 28, 28), 10, flatten="nhwc")
    assert a.state_dict().keys() == b.state_dict().keys()
    assert b(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert resolve("seed-cnn").model_args == {"flatten": "nhwc"} and resolve("seed-cnn").channels_last


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_optimizers_use_the_fused_update_on_the_cpu(optimizer):
    model = torch.nn.Linear(4, 2)
    opt = make_optimizer(resolve("seed-mlp", {"optimizer": optimizer}), model.parameters())
    assert opt.defaults["fused"] is True
    before = model.weight.detach().clone()
    model(torch.rand(3, 4)).sum().backward()
    opt.step()
    assert not torch.equal(before, model.weight)
