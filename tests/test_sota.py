"""The state-of-the-art study (`mnistlab sota`) at CPU scale: the same command the GPU study runs,
with a small model, a slice of the training images and two epochs. It must finish after a SIGKILL
with the numbers of an uninterrupted study, choose ensemble members without ever reading a test
output, and refuse what it cannot do with errors that name the setting."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from mnistlab import MnistlabError
from mnistlab.cli import main
from mnistlab.studies.sota_study import (
    OUTPUTS,
    Plan,
    run_study,
    select_two_level,
    summarise,
)

SMALL = ["--models", "fast,mlp", "--seeds", "0-1", "--set", "epochs=2", "--set", "train_subset=800",
         "--set", "ema=0.9", "--throughput-steps", "0"]


def sota_cli(out, *extra, **kw):
    return subprocess.Popen([sys.executable, "-m", "mnistlab", "sota", "--out", str(out), *SMALL, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"), **kw)


def per_seed(study: Path) -> dict:
    res = json.loads((study / "study.json").read_text())
    return {(p, m, r["seed"]): (r["test_acc"], r["val_acc"])
            for p, e in res["protocols"].items() for m, s in e["singles"].items() for r in s["per_seed"]}


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """A study SIGKILLed in its first run after that run's first checkpoint, then run again with the
    same command ("cut", the whole study the other tests read); beside it, uninterrupted, the killed
    run's own study (fast, seed 0, both protocols: "whole"), the numbers the resumed one must repeat.
    Every other run of "cut" trained from scratch after the kill, as in any study."""
    base = tmp_path_factory.mktemp("sota")
    cut = sota_cli(base / "cut")
    first = base / "cut" / "runs" / "paper" / "fast" / "seed-0"
    deadline = time.time() + 300
    while not (first / "last.safetensors").exists() and time.time() < deadline and cut.poll() is None:
        time.sleep(0.01)
    cut.send_signal(signal.SIGKILL)
    cut.wait()
    killed_before_summary = not (first / "summary.json").exists()
    again = sota_cli(base / "cut")
    # the reference in this process while the resumed study runs in its own
    assert main(["sota", "--out", str(base / "whole"), *SMALL, "--models", "fast", "--seeds", "0"]) == 0
    out_again, err_again = again.communicate(timeout=900)
    assert again.returncode == 0, err_again
    return {"whole": base / "whole", "cut": base / "cut", "again_stdout": out_again,
            "killed_before_summary": killed_before_summary}


@pytest.mark.slow
def test_an_interrupted_study_finishes_with_the_numbers_of_an_uninterrupted_one(studies):
    assert studies["killed_before_summary"], "the kill came after the run had finished: nothing was resumed"
    assert "paper fast seed 0: resuming" in studies["again_stdout"]
    whole, cut = per_seed(studies["whole"]), per_seed(studies["cut"])
    assert len(cut) == 2 * 2 * 2 and len(whole) == 2  # 2 protocols x 2 models x 2 seeds; the reference's 2
    assert {key: cut[key] for key in whole} == whole  # bit-identical on the CPU (a failure shows which run)
    for protocol in ("paper", "val"):  # the resumed run's weights and outputs, byte for byte
        for name in ("last.safetensors", OUTPUTS):
            a, b = (studies[s] / "runs" / protocol / "fast" / "seed-0" / name for s in ("whole", "cut"))
            ta, tb = load_file(str(a)), load_file(str(b))
            assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta if not k.startswith("rng/"))
    study = studies["cut"]
    for name in ("plan.json", "study.json", "table.md", "report.md"):
        assert (study / name).is_file()
    table = (study / "table.md").read_text()
    assert "| paper | two-level: fast+mlp, every seed (vote)" in table
    assert "| val | two-level, chosen on val (mean)" in table
    report = (study / "report.md").read_text()
    assert "paper protocol: all 60,000 train" in report and "| val | mlp | 1 |" in report


@pytest.mark.slow
def test_the_outputs_are_the_runs_own_numbers(studies):
    """Each run's saved test probabilities give the accuracy its summary reported (the same weights:
    last-epoch for the paper protocol, best-on-validation for ours), and the paper runs saw no holdout."""
    study = studies["cut"]
    for protocol in ("paper", "val"):
        for seed in range(2):
            run = study / "runs" / protocol / "fast" / f"seed-{seed}"
            summary = json.loads((run / "summary.json").read_text())
            t = load_file(str(run / OUTPUTS))
            errors = int((t["test_probs"].argmax(1) != t["test_labels"]).sum())
            assert errors == summary["test_errors"]
            if protocol == "paper":
                assert summary["holdout"] is None and "val_probs" not in t and summary["best_epoch"] is None
            else:
                assert summary["holdout"]["count"] == 5000 and t["val_probs"].shape == (5000, 10)


@pytest.mark.slow
def test_ensemble_selection_never_reads_a_test_output(studies, tmp_path):
    """Make every member the validation split passed over perfect on the test set: the choice must
    not move (only the final test numbers may)."""
    import shutil

    study = tmp_path / "study"
    shutil.copytree(studies["cut"], study)
    plan = Plan(**json.loads((study / "study.json").read_text())["plan"])
    # one member wrong on every validation image: validation leaves it out, so there is always one to test
    file = study / "runs" / "val" / plan.models[0] / f"seed-{plan.seeds[-1]}" / OUTPUTS
    t = load_file(str(file))
    t["val_probs"] = F.one_hot((t["val_labels"] + 1) % 10, 10).float()
    save_file(t, str(file))
    before = summarise(plan, study)["protocols"]["val"]
    chosen = {m: set(c["members"]) for m, c in before["selection"]["per_model"].items()}
    changed = 0
    for m in plan.models:
        for i, seed in enumerate(plan.seeds):
            if i in chosen[m]:
                continue
            file = study / "runs" / "val" / m / f"seed-{seed}" / OUTPUTS
            t = load_file(str(file))
            t["test_probs"] = F.one_hot(t["test_labels"], 10).float()  # a perfect test score
            save_file(t, str(file))
            changed += 1
    after = summarise(plan, study)["protocols"]["val"]
    assert after["selection"] == before["selection"]
    assert changed >= 1  # a member left out was made perfect on test; the per-model rows kept their members
    assert [e["members"] for e in after["ensembles"]] == [e["members"] for e in before["ensembles"]]
    # and the other way round: validation decides; a member made perfect on validation is chosen first
    m = plan.models[0]
    loser = next(i for i in range(len(plan.seeds)) if i not in chosen[m]) if len(chosen[m]) < len(plan.seeds) \
        else len(plan.seeds) - 1
    file = study / "runs" / "val" / m / f"seed-{plan.seeds[loser]}" / OUTPUTS
    t = load_file(str(file))
    t["val_probs"] = F.one_hot(t["val_labels"], 10).float()
    save_file(t, str(file))
    assert summarise(plan, study)["protocols"]["val"]["selection"]["per_model"][m]["members"][0] == loser


@pytest.mark.slow
def test_a_study_in_parts_summarises_what_it_is_asked_for(studies, tmp_path):
    """A rerun may name fewer models or seeds (a study trained one GPU session per model): it trains
    nothing new and reports only those runs."""
    import shutil

    study = tmp_path / "study"
    shutil.copytree(studies["cut"], study)
    part = Plan(models=["mlp"], seeds=[1], overrides={"epochs": "2", "train_subset": "800", "ema": "0.9"})
    results = run_study(study, part, quiet=True, throughput_steps=0)
    assert {r["seed"] for r in results["protocols"]["paper"]["singles"]["mlp"]["per_seed"]} == {1}
    assert list(results["protocols"]["val"]["singles"]) == ["mlp"]
    assert per_seed(studies["cut"])[("val", "mlp", 1)] == (
        results["protocols"]["val"]["singles"]["mlp"]["per_seed"][0]["test_acc"],
        results["protocols"]["val"]["singles"]["mlp"]["per_seed"][0]["val_acc"])


def test_two_level_selection_on_made_up_outputs():
    """Per architecture the greedy choice starts from its best member and adds one only if it helps;
    across architectures likewise."""
    labels = torch.arange(10).repeat(10)  # 100 examples
    right = F.one_hot(labels, 10).float()
    wrong = F.one_hot((labels + 1) % 10, 10).float()

    def member(n_right):  # right on the first n_right examples, 0.91 sure of every answer
        p = wrong * 0.9 + 0.01
        p[:n_right] = right[:n_right] * 0.9 + 0.01
        return p

    val = {"a": [member(60), member(90), member(70)], "b": [member(80)]}
    choice = select_two_level(val, labels)
    assert choice["per_model"]["a"]["members"] == [1]
    assert choice["per_model"]["a"]["val_acc"] == pytest.approx(0.9)
    assert choice["models"] == ["a"] and choice["val_acc"] == pytest.approx(0.9)
    # a member right where the best one is wrong (and confident there) joins it
    fixer = torch.full((100, 10), 0.1)  # unsure everywhere but where the best member is wrong
    fixer[90:] = right[90:]
    choice = select_two_level({"a": [member(90), fixer]}, labels)
    assert choice["per_model"]["a"]["members"] == [0, 1] and choice["val_acc"] == pytest.approx(1.0)


def test_bad_studies_are_refused_by_name(tmp_path):
    cases = [
        (Plan(protocols=["test"]), "--protocols test: expected some of paper, val"),
        (Plan(models=["resnet1000"]), "--models resnet1000: expected zoo models"),
        (Plan(overrides={"validation": "100"}), "--set validation=...: the study sets validation itself"),
        (Plan(overrides={"epochs": "0"}), "epochs=0: expected at least 1"),
        (Plan(overrides={"cuda_graphs": "true", "adversarial": "pgd"}), "cuda_graphs=true cannot capture: adversarial"),
    ]
    for plan, words in cases:
        with pytest.raises(MnistlabError, match=words.replace("(", r"\(").replace(")", r"\)")):
            run_study(tmp_path / "s", plan, quiet=True, throughput_steps=0)
        assert not any((tmp_path / "s" / "runs").glob("*/*/*")), "nothing may be trained for a refused plan"
        for f in (tmp_path / "s").glob("plan.json"):
            f.unlink()
    with pytest.raises(MnistlabError, match="--throughput-steps -1: expected 0"):
        run_study(tmp_path / "s", Plan(), quiet=True, throughput_steps=-1)
    # a rerun must train with the same settings (it may ask for other models, seeds or protocols)
    (tmp_path / "s").mkdir(exist_ok=True)
    (tmp_path / "s" / "plan.json").write_text(json.dumps({"overrides": {"epochs": "2"}}))
    with pytest.raises(MnistlabError, match=r"other settings \(--set\): \{'epochs': '2'\}, not \{'epochs': '3'\}"):
        run_study(tmp_path / "s", Plan(overrides={"epochs": "3"}), quiet=True)
    (tmp_path / "s" / "plan.json").write_text("{not json")
    with pytest.raises(MnistlabError, match="plan.json: not valid JSON"):
        run_study(tmp_path / "s", Plan(), quiet=True)


def test_damaged_outputs_give_a_clear_error(tmp_path):
    from mnistlab.studies.sota_study import read_outputs

    run = tmp_path / "run"
    run.mkdir()
    for content in (b"", b"\x00" * 100, os.urandom(300)):
        (run / OUTPUTS).write_bytes(content)
        with pytest.raises(MnistlabError, match="cannot read the test outputs"):
            read_outputs(run, "test")
    save_file({"test_probs": torch.full((3, 10), float("nan")), "test_labels": torch.zeros(3, dtype=torch.long)},
              str(run / OUTPUTS))
    with pytest.raises(MnistlabError, match="expected finite"):
        read_outputs(run, "test")


@pytest.mark.slow
def test_cli_sota_errors_exit_2(tmp_path, capsys):
    assert main(["sota", "--out", str(tmp_path), "--seeds", "x"]) == 2
    err = capsys.readouterr().err
    assert "--seeds 'x'" in err and "Traceback" not in err
