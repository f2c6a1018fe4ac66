"""Every verb once, at tiny scale, as a user types it: the everyday loop's proof that the whole command
works end to end (each capability's own file tests it properly, many of those tests marked slow)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from builders import write_tiny
from PIL import Image

from mnistlab.cli import main
from mnistlab.data import registry as datasets

SMALL = ["--train-subset", "600", "--validation", "200", "--epochs", "1", "--no-progress"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("verbs")
    assert main(["train", "--model", "fast", "--set", "model_args={width = 8}", *SMALL, "--out", str(out), "--name",
                 "fast", "--quiet"]) == 0
    return out, out / "fast"


def test_train_evaluate_ensemble_report_export_predict(tiny_run, capsys):
    out, run = tiny_run
    summary = json.loads((run / "summary.json").read_text())
    assert main(["evaluate", str(run), "--no-pictures"]) == 0
    assert f"the same {summary['test_errors']} errors" in capsys.readouterr().out
    assert main(["ensemble", str(run), str(run), "--out", str(out / "two.safetensors")]) == 0
    assert main(["report", str(run), "--out", str(out / "report")]) == 0
    assert (out / "report" / "report.html").is_file()
    assert main(["export", str(run), "--out", str(out / "m.onnx")]) == 0 and (out / "m.onnx").stat().st_size > 1000
    Image.new("L", (56, 56)).save(out / "blank.png")
    capsys.readouterr()
    assert main(["predict", str(out / "blank.png"), "--model", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["is_digit"] is False  # an empty picture is no digit


def test_attack_inspect_map_shift(tiny_run, capsys):
    out, run = tiny_run
    assert main(["attack", str(run), "--method", "fgsm", "--eps", "0.1", "--n", "20", "--no-checks"]) == 0
    assert (run / "eval" / "attack-fgsm-linf.json").is_file()
    assert main(["shift", str(run), "--sets", "fog,uci", "--n", "10", "--no-pictures", "--quiet"]) == 0
    assert (run / "shift" / "shift-test.json").is_file() and "uci-raw" in capsys.readouterr().out
    assert main(["inspect", str(run), "--images", "0", "--units", "2", "--top", "2"]) == 0
    assert main(["map", str(run), "--method", "tsne", "--n", "40", "--quiet"]) == 0
    assert capsys.readouterr().out.strip().endswith("map.html")


def test_pretrain_transfer_curve_tune_sota(tmp_path, capsys):
    assert main(["pretrain", "--recipe", "fast", "--epochs", "1", "--batch-size", "64", "--set", "train_subset=256",
                 "--set", "model_args={width = 8}", "--out", str(tmp_path), "--quiet"]) == 0
    source = next(tmp_path.glob("pretrain-*"))
    assert main(["transfer-curve", "--source", str(source), "--labels", "1", "--seeds", "0", "--steps", "3",
                 "--modes", "scratch,probe", "--set", "model_args={width = 8}", "--out", str(tmp_path / "curve"),
                 "--quiet"]) == 0
    assert (tmp_path / "curve" / "curve.json").is_file()
    space = tmp_path / "space.toml"
    space.write_text("[fixed]\nepochs = 1\ntrain_subset = 300\nvalidation = 100\n[params.lr]\nlow = 0.001\nhigh = 0.01\n")
    assert main(["tune", "--recipe", "seed-mlp", "--space", str(space), "--trials", "1", "--out", str(tmp_path / "t"),
                 "--quiet"]) == 0
    assert main(["sota", "--out", str(tmp_path / "sota"), "--models", "mlp", "--seeds", "0", "--protocols", "paper",
                 "--set", "epochs=1", "--set", "train_subset=200", "--throughput-steps", "0", "--quiet"]) == 0
    assert (tmp_path / "sota" / "study.json").is_file()


def test_audit_data_models_recipes_bench(tmp_path, registered, capsys):
    spec = dataclasses.replace(datasets.get_spec("mnist"), name="tiny-mnist", bundled=False)
    tiny, _ = write_tiny(spec, tmp_path / "data", name="tiny-mnist", n_train=100, n_test=100)
    registered(tiny)
    assert main(["audit", "tiny-mnist", "--split", "test", "--folds", "2", "--data-dir", str(tmp_path / "data"),
                 "--out", str(tmp_path / "audit")]) == 0
    assert (tmp_path / "audit" / "issues.csv").is_file()
    for argv in (["data", "list"], ["data", "info", "mnist"], ["models"], ["recipes"]):
        assert main(argv) == 0
    assert main(["data", "show", "mnist", "--count", "4", "--out", str(tmp_path / "four.png")]) == 0
    assert main(["bench", "gpu", "--out", str(tmp_path / "bench")]) == 0  # on a CPU: says it ran nothing
    assert Path(tmp_path / "bench" / "gpu.json").is_file()
