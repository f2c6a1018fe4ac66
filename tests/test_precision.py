"""The same numbers on every kind of CPU: the precision a run chooses (and records), both precision
paths exercised on every machine (bf16 autocast runs, emulated, on AVX2 CPUs too), and the one way a
run's accuracy is measured, which `evaluate` reproduces error for error. (What else makes
training fast on CPUs: test_speed.py.)"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys

import pytest
import torch

from mnistlab import MnistlabError, machine
from mnistlab.cli import main
from mnistlab.precision import choose
from mnistlab.training.config import resolve, validate

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


@pytest.mark.slow
@pytest.mark.parametrize("features, chosen", [(["avx2", "fma"], "fp32"),
                                              (["avx2", "fma", "avx512f", "avx512_bf16"], "bf16")])
def test_auto_decides_by_the_cpu_features_and_evaluate_reproduces_the_errors(features, chosen, fake_cpu, tmp_path):
    from mnistlab.analysis.evaluation import evaluate
    from mnistlab.training.engine import train

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


EVALUATE_PATHS = [("mlp", "bf16"), ("fast", "bf16"), ("keras-cnn", "fp32")]


@pytest.fixture(scope="module")
def trained_and_evaluated(tmp_path_factory):
    """Each path trained here through the command line, what `train` printed, and what `evaluate`
    printed for each, all three in one new process (a start costs seconds; the point is that it is
    not the process that trained)."""
    out, printed = tmp_path_factory.mktemp("paths"), {}
    for model, precision in EVALUATE_PATHS:
        args = ["train", "--model", model, "--train-subset", "1000", "--validation", "500", "--epochs", "1",
                "--precision", precision, "--out", str(out), "--name", f"{model}-{precision}", "--no-progress"]
        if model != "mlp":
            args.append("--channels-last")
        if model == "fast":  # a narrow one: bf16 is emulated, and slow, on AVX2 CPUs
            args += ["--set", "model_args={width = 8}"]
        with contextlib.redirect_stdout(io.StringIO()) as said:
            assert main(args) == 0
        printed[model, precision] = said.getvalue()
    runs = [str(out / f"{m}-{p}") for m, p in EVALUATE_PATHS]
    script = ("import sys\nfrom mnistlab.cli import main\nfor run in sys.argv[1:]:\n"
              "    print('=== ' + run, flush=True)\n    assert main(['evaluate', run, '--no-pictures']) == 0\n")
    done = subprocess.run([sys.executable, "-c", script, *runs], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    evaluated = dict(zip(EVALUATE_PATHS, done.stdout.split("=== ")[1:]))
    return out, printed, evaluated


@pytest.mark.slow
@pytest.mark.parametrize("model, precision", EVALUATE_PATHS)
def test_the_evaluate_command_prints_the_errors_train_printed(model, precision, trained_and_evaluated):
    """`evaluate` in a new process, as a user runs it, reproduces what `train` printed (trained here,
    through the same command line), for each precision path (bf16 is emulated on AVX2 CPUs)."""
    out, printed, evaluated = trained_and_evaluated
    summary = json.loads((out / f"{model}-{precision}" / "summary.json").read_text())
    assert summary["precision"]["chosen"] == precision
    assert f"({summary['test_errors']} errors in 10000, fp32 inference" in printed[model, precision]
    assert evaluated[model, precision].startswith(str(out / f"{model}-{precision}"))
    assert f"({summary['test_errors']} errors)" in evaluated[model, precision]
    assert f"the same {summary['test_errors']} errors `train` reported" in evaluated[model, precision]


def test_a_run_records_the_precision_it_chose_and_why(tmp_path):
    from mnistlab.training.engine import train

    cfg = resolve("fast", {"out": str(tmp_path), "progress": False, "train_subset": 512, "batch_size": 64,
                           "validation": 500})
    summary = train(cfg, quiet=True)
    expected = choose("auto", CPU)
    assert summary["precision"] == expected.as_dict()
    header = json.loads((tmp_path / "fast-mnist-s0" / "log.jsonl").read_text().splitlines()[0])
    assert header["precision"] == expected.as_dict()
    assert header["environment"]["cpu_features"] == summary["environment"]["cpu_features"]
    assert header["allocator"]  # what was done to malloc, in words
