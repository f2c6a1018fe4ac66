"""Fuzzing a run directory's files, the sota study's files, every JSON a verb reads back, recipe and space TOML (tests/fuzzing.py says how, and what must hold)."""

from __future__ import annotations

import json

import torch
from fuzzing import (
    JSON_VALUES,
    case,
    expect_clean,
    fuzz,
    mutated,
)
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import save_file

RUN_SEEDS = [json.dumps({"model": "mlp", "epochs": 3, "lr": 0.01, "model_args": {"hidden": [64]}}).encode(),
             b'{"event": "start", "argv": []}\n{"epoch": 1, "train_loss": 0.5, "train_acc": 0.9}\n']


@fuzz(share=0.1)
@given(mutated(RUN_SEEDS))
def test_run_directory_files(tmp_path_factory, data):
    case("run-directory files")
    from mnistlab.rundir import RunDir
    from mnistlab.training.config import read_run_config

    run = RunDir(tmp_path_factory.getbasetemp() / "fuzz-run")
    run.path.mkdir(exist_ok=True)
    run.config.write_bytes(data)
    run.log.write_bytes(data)
    expect_clean(read_run_config, run)
    rows, damaged = run.read_log()
    assert all(isinstance(r, dict) for r in rows) and damaged >= 0
    expect_clean(run.read_summary)


# ---------- the sota study's files (a run's summary, its outputs, the plan) ----------

STUDY_SUMMARY = {"test_acc": 0.99, "val_acc": 0.995, "best_epoch": 3, "epochs_run": 4, "train_s": 12.5, "device": "cpu",
                 "precision": {"chosen": "fp32", "reason": "x"}, "holdout": None}


@fuzz(share=0.2)
@given(st.data())
def test_sota_study_files(tmp_path_factory, data):
    case("sota study files")
    from mnistlab.studies.sota_study import (
        OUTPUTS,
        Plan,
        read_outputs,
        read_summary,
        run_study,
    )

    run = tmp_path_factory.getbasetemp() / "fuzz-sota-run"  # one directory, rewritten each case
    run.mkdir(exist_ok=True)
    summary = json.loads(json.dumps(STUDY_SUMMARY))
    for _ in range(data.draw(st.integers(0, 3))):
        key = data.draw(st.sampled_from(sorted(summary)))
        if data.draw(st.booleans()):
            del summary[key]
        else:
            summary[key] = data.draw(JSON_VALUES)
    text = json.dumps(summary).encode()
    (run / "summary.json").write_bytes(data.draw(st.one_of(st.just(text), mutated([text], max_ops=3))))
    got = expect_clean(read_summary, run)
    if got is not None:
        assert isinstance(got["test_acc"], (int, float)) and isinstance(got["precision"]["chosen"], str)
    seed = tmp_path_factory.getbasetemp() / "outputs.seed"
    if not seed.exists():
        save_file({"test_probs": torch.softmax(torch.randn(20, 10), 1), "test_labels": torch.arange(20) % 10},
                  str(seed))
    raw = seed.read_bytes()
    header_end = 8 + int.from_bytes(raw[:8], "little")
    (run / OUTPUTS).write_bytes(data.draw(mutated([raw[:header_end]], max_ops=4)) + raw[header_end:])
    out = expect_clean(read_outputs, run, "test")
    if out is not None:
        probs, labels = out
        assert torch.isfinite(probs).all() and int(labels.max()) < probs.shape[1]
    plan = json.dumps({"overrides": {"epochs": "2"}}).encode()
    (run / "plan.json").write_bytes(data.draw(mutated([plan], max_ops=3)))
    expect_clean(run_study, run, Plan(overrides={"epochs": "0"}), quiet=True, throughput_steps=0)  # refused either way


# ---------- every JSON file a verb reads back from a run or a study, through its schema ----------

READER_SEEDS = {
    "summary.json": {"model": "mlp", "dataset": "mnist", "test_acc": 0.98, "val_acc": 0.97, "test_errors": 200,
                     "precision": {"chosen": "fp32"}, "evaluation": {"batch_size": 2000, "threads": 2},
                     "holdout": {"count": 5000, "seed": 0, "stratified": True, "sha256": "a" * 64}},
    "eval/test.json": {"n": 10, "accuracy": 0.9, "errors": 1, "top2": 1.0, "cross_entropy": 0.3, "ece": 0.1,
                       "dataset": "mnist", "dataset_hash": "x", "macro_avg": {"f1": 0.9}, "pictures": {"a": "b.png"},
                       "per_class": [{"class": "0", "precision": 1, "recall": 1, "f1": 1, "support": 1}],
                       "most_confused": [{"true": "1", "predicted": "7", "count": 1}]},
    "eval/attack-pgd-linf.json": {"method": "pgd", "norm": "linf", "eps": [0.1], "robust_accuracy": [0.5], "n": 10,
                                  "split": "test", "clean_accuracy": 0.9, "targeted": False, "pictures": {},
                                  "steps": 40, "masking_checks": {"passed": True}},
    "inspect/inspect.json": {"split": "test", "pictures": {"filters": "f.png"}},
    "maps/umap-pixels-test/map.json": {"method": "umap", "features": "pixels", "n": 10, "split": "test", "seed": 0,
                                       "separation_5nn": 0.9, "files": {"png": "m.png", "html": "m.html"}},
}


@fuzz(share=0.1)
@given(st.data())
def test_run_and_study_json_readers(tmp_path_factory, data):
    case("run and study JSON readers")
    from mnistlab.analysis.robust import robust_figures
    from mnistlab.rundir import RunDir
    from mnistlab.studies.transfer_study import read_curve
    from mnistlab.studies.tuning.search import read_study_summary

    run = RunDir(tmp_path_factory.getbasetemp() / "fuzz-readers" / "run")  # one directory, rewritten each case
    for name, seed in READER_SEEDS.items():
        doc = json.loads(json.dumps(seed))
        for _ in range(data.draw(st.integers(0, 3))):
            key = data.draw(st.sampled_from(sorted(doc)))
            doc[key] = data.draw(JSON_VALUES)
        text = json.dumps(doc).encode()
        (run.path / name).parent.mkdir(parents=True, exist_ok=True)
        (run.path / name).write_bytes(data.draw(st.one_of(st.just(text), mutated([text], max_ops=3))))
    run.config.write_text("{}")
    expect_clean(run.read_summary)
    expect_clean(run.read_eval, "test")
    rows = expect_clean(robust_figures, run)  # the attack file, through the rows evaluate and report print
    assert rows is None or all(isinstance(r["accuracy"], (int, float)) for r in rows)
    assert run.read_inspect() is None or isinstance(run.read_inspect()["pictures"], dict)
    assert all(isinstance(m["files"]["png"], str) for m in run.read_maps())
    study = run.path / "study"
    study.mkdir(exist_ok=True)
    seed = json.dumps({"study": "s", "objectives": ["accuracy"], "trials": {"complete": 1},
                       "chosen": {"number": 0, "val_acc": 0.9, "params": {}}}).encode()
    (study / "summary.json").write_bytes(data.draw(mutated([seed], max_ops=4)))
    expect_clean(read_study_summary, study)
    curve = json.dumps({"seeds": [0], "protocol": "p", "modes": ["scratch"],
                        "table": [{"labels_per_class": 1, "scratch": {"mean": 0.5, "std": 0.1}}]}).encode()
    (study / "curve.json").write_bytes(data.draw(mutated([curve], max_ops=4)))
    expect_clean(read_curve, study)


TOML_SEEDS = [b'model = "mlp"\nepochs = 2\nlr = 0.01\nmodel_args = { hidden = [64] }\n',
              b'[fixed]\nepochs = 1\n[params.lr]\nlow = 0.001\nhigh = 0.1\nlog = true\n']


@fuzz(share=0.2)
@given(mutated(TOML_SEEDS, max_ops=8))
def test_recipe_and_space_toml_files(tmp_path_factory, data):
    case("recipe and space TOML files")
    from mnistlab.studies.tuning.space import read_space
    from mnistlab.training.config import resolve

    path = tmp_path_factory.getbasetemp() / "fuzz.toml"
    path.write_bytes(data)
    expect_clean(resolve, str(path))
    expect_clean(read_space, str(path), "seed-mlp")


VARIANT_SEEDS = [b"[[0.8, 0.2], [0.1, 0.9]]", b'{"removed": [3, 1, 4]}',
                 b"mnist[imbalance=exp:100,label_noise=sym:0.4,seed=0]", b"pair:0.45", b"step:10"]


@fuzz(share=0.1)
@given(mutated(VARIANT_SEEDS, max_ops=6))
def test_variant_specs_noise_matrices_and_variant_files(tmp_path_factory, data):
    """What a messy-data run reads from outside: the variant in a dataset's name or a flag, a noise
    matrix file (label_noise=matrix:FILE) and RUN/variant.json read back on --resume."""
    case("variant specs, noise matrices and variant files")
    from mnistlab.data import variants
    from mnistlab.training.engine import removed_before

    text = data.decode("utf-8", errors="replace")
    expect_clean(variants.split_name, text)
    expect_clean(variants.parse_imbalance, text)
    expect_clean(variants.parse_noise, text, 10)
    folder = tmp_path_factory.getbasetemp() / "fuzz-variant"
    folder.mkdir(exist_ok=True)
    (folder / "matrix.json").write_bytes(data)
    matrix = expect_clean(variants.read_matrix, str(folder / "matrix.json"), 2)
    assert matrix is None or (matrix.shape == (2, 2) and bool(((matrix.sum(1) - 1).abs() < 1e-6).all()))
    (folder / "variant.json").write_bytes(data)
    removed = expect_clean(removed_before, folder)
    assert removed is None or all(isinstance(i, int) and i >= 0 for i in removed)
