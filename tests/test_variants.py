"""Dataset variants on real MNIST: the class counts and flip rates the spec says (within sampling
error), the same positions from the same seed on every machine (pinned hashes), the test split
untouched, mistyped keys answered with the nearest; the remedies' arithmetic; and one small run on a
variant through train, evaluate, resume, audit and report."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mnistlab
from mnistlab.bench import variants as variants_bench
from mnistlab.cli import main
from mnistlab.data import variants
from mnistlab.data.variants import VariantSpec, flip_scores
from mnistlab.errors import MnistlabError
from mnistlab.training import config
from mnistlab.training.engine import epoch_order, resume, train
from mnistlab.training.losses import loss_function


def binomial_ok(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    """`count` successes of `n` draws is within `sigmas` standard deviations of p."""
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + 1


def test_exp_and_step_imbalance_keep_the_counts_the_formula_gives(mnist):
    counts = torch.bincount(mnist.train.labels, minlength=10)
    n_max = int(counts.min())  # 5421, class 5
    exp = mnistlab.load("mnist", imbalance="exp:100", seed=3).train
    assert exp.class_counts().tolist() == [max(1, int(n_max * 100 ** (-c / 9) + 1e-9)) for c in range(10)]
    assert exp.class_counts()[0] == n_max and exp.class_counts()[9] == n_max // 100
    step = mnistlab.load("mnist", imbalance="step:10", seed=3).train
    assert step.class_counts().tolist() == [n_max] * 5 + [n_max // 10] * 5
    # the kept examples are the dataset's own, labels and pixels
    v = exp.variant
    assert torch.equal(exp.images, mnist.train.images[v.indices]) and torch.equal(exp.labels, mnist.train.labels[v.indices])
    assert len(v.flipped) == 0 and v.record()["flip_rate"] == 0


@pytest.mark.parametrize("noise, p", [("sym:0.2", 0.2), ("sym:0.5", 0.5), ("pair:0.45", 0.45)])
def test_label_noise_flips_at_its_rate_and_where_its_matrix_says(mnist, noise, p):
    ds = mnistlab.load("mnist", label_noise=noise, seed=0)
    v = ds.train.variant
    assert torch.equal(v.true_labels, mnist.train.labels) and torch.equal(ds.train.images, mnist.train.images)
    flipped = v.labels != v.true_labels
    assert torch.equal(torch.nonzero(flipped).flatten(), v.flipped)
    assert binomial_ok(int(flipped.sum()), len(flipped), p)
    for c in range(10):  # per true class too
        members = v.true_labels == c
        assert binomial_ok(int(flipped[members].sum()), int(members.sum()), p)
    moved_to = v.labels[flipped]
    if noise.startswith("pair"):  # c -> c+1 (mod 10), nowhere else
        assert torch.equal(moved_to, (v.true_labels[flipped] + 1) % 10)
    else:  # uniformly to the other nine classes
        to_each = torch.bincount((moved_to - v.true_labels[flipped]) % 10, minlength=10)
        assert to_each[0] == 0 and all(binomial_ok(int(k), int(flipped.sum()), 1 / 9) for k in to_each[1:])


def test_a_noise_matrix_from_a_file_or_from_cleanlabs_trace(mnist, tmp_path):
    k = 10
    rows = [[0.0] * k for _ in range(k)]
    for c in range(k):
        rows[c][c], rows[c][(c + 3) % k] = 0.7, 0.3
    path = tmp_path / "noise.json"
    path.write_text(json.dumps(rows))
    v = mnistlab.load("mnist", label_noise=f"matrix:{path}", seed=0).train.variant
    flipped = v.labels != v.true_labels
    assert torch.equal(v.labels[flipped], (v.true_labels[flipped] + 3) % k)
    assert binomial_ok(int(flipped.sum()), len(flipped), 0.3)
    path.write_text(json.dumps([[0.5, 0.4] + [0.0] * (k - 2)] + rows[1:]))
    with pytest.raises(MnistlabError, match="row 0 sums to 0.9"):
        mnistlab.load("mnist", label_noise=f"matrix:{path}")
    pytest.importorskip("cleanlab")
    t = mnistlab.load("mnist", label_noise="trace:8", seed=1).train.variant
    matrix = torch.tensor(t.record()["noise_matrix"], dtype=torch.float64)
    assert abs(float(matrix.trace()) - 8) < 1e-3 and torch.allclose(matrix.sum(1), torch.ones(k, dtype=torch.float64))
    prior = torch.bincount(mnist.train.labels, minlength=k).double() / len(mnist.train)
    expected_rate = float((prior * (1 - matrix.diagonal())).sum())  # what the matrix flips on MNIST's classes
    assert binomial_ok(len(t.flipped), len(t.labels), expected_rate)


def test_the_same_seed_gives_the_same_positions_on_every_machine():
    # pinned: CPU torch generators (integer Mersenne Twister) and float64 comparisons, the same on every x86 CPU
    pinned = {("exp:100", "sym:0.4", 0, 0): ("310ac34eb67449440aba12ab5e9c7f4c", "489a07f7485c456421d0e880538a9a8a"),
              ("step:10", "pair:0.45", 0, 1): ("542abf50bdb3bc1932f58c7b06ab8a65", "2dc34d2c3f1957b95914166735002a4d"),
              ("", "", 10, 0): ("6fa2d8be8daa2782603dc963c364a412", "a8361570a0500ab8ad4845d5f0e9d5f8")}
    for (imbalance, noise, per_class, seed), (positions, labels) in pinned.items():
        record = mnistlab.load("mnist", imbalance=imbalance, label_noise=noise, labels_per_class=per_class,
                               seed=seed).train.variant.record()
        assert (record["sha256"][:32], record["labels_sha256"][:32]) == (positions, labels), (imbalance, noise, seed)
    other = mnistlab.load("mnist", imbalance="exp:100", label_noise="sym:0.4", seed=1).train.variant.record()
    assert other["sha256"][:32] != pinned[("exp:100", "sym:0.4", 0, 0)][0]
    # the name form is the same variant, and what a variant's repr names
    ds = mnistlab.load("mnist[imbalance=exp:100,noise=sym:0.4]")
    assert ds.name == "mnist[imbalance=exp:100,label_noise=sym:0.4,seed=0]" and ds.base == "mnist"
    assert ds.train.variant.sha256.startswith(pinned[("exp:100", "sym:0.4", 0, 0)][0])


def test_the_test_split_is_never_altered(mnist):
    ds = mnistlab.load("mnist", imbalance="exp:10", label_noise="sym:0.5", labels_per_class=0, seed=2)
    assert torch.equal(ds.test.images, mnist.test.images) and torch.equal(ds.test.labels, mnist.test.labels)
    assert ds.test.variant is None and ds.stats == mnist.stats and ds.content_hash == mnist.content_hash


def test_an_unknown_variant_key_or_kind_suggests_the_nearest(capsys):
    with pytest.raises(MnistlabError) as err:
        config.resolve(None, {"imbalanse": "exp:10"})
    assert "did you mean 'imbalance'" in err.value.hint
    with pytest.raises(MnistlabError) as err:
        mnistlab.load("mnist[imbalance=exp:10,label_nois=sym:0.2]")
    assert "did you mean 'label_noise'" in err.value.hint
    with pytest.raises(MnistlabError) as err:
        config.resolve(None, {"label_noise": "symmetric:0.2"})  # a longer spelling: its start is a kind
    assert "did you mean 'sym'" in err.value.hint
    with pytest.raises(MnistlabError) as err:
        config.resolve(None, {"loss": "logit_adjust"})
    assert "did you mean 'logit_adjusted'" in err.value.hint
    for bad, fragment in (({"imbalance": "exp:0.5"}, "from 1 to 1e6"), ({"label_noise": "sym:1.5"}, "below 1"),
                          ({"sampling": "oversample"}, "uniform | balanced"),
                          ({"variant_validation": "as-train", "validation": 0}, "needs a validation split"),
                          ({"dataset": "mnist[imbalance=exp:100]"}, "takes its variant as settings"),
                          ({"loss": "gce", "label_smoothing": 0.1}, "set label_smoothing=0")):
        with pytest.raises(MnistlabError) as err:
            config.resolve(None, bad)
        assert fragment in err.value.message + (err.value.hint or ""), bad
    assert main(["train", "--imbalanse", "exp:10"]) == 2  # argparse's own: the flag is unknown
    assert "--imbalance" in capsys.readouterr().err


def test_the_remedies_losses_and_sampling_are_what_their_papers_write():
    torch.manual_seed(0)
    logits, labels = torch.randn(64, 10), torch.randint(0, 10, (64,))
    counts = torch.tensor([1000, 500, 250, 120, 60, 30, 15, 8, 4, 2])

    def loss(name, **kw):
        return loss_function(config.resolve(None, {"loss": name, **kw}), 10, counts)(logits, labels)

    weight = counts.sum() / (10 * counts.double())
    assert torch.allclose(loss("class_weighted"), F.cross_entropy(logits, labels, weight=weight.float()))
    prior = counts.double() / counts.sum()
    assert torch.allclose(loss("logit_adjusted", logit_tau=1.0), F.cross_entropy(logits + prior.log().float(), labels))
    p = F.softmax(logits, 1)[torch.arange(64), labels]
    assert torch.allclose(loss("gce", gce_q=0.7), ((1 - p ** 0.7) / 0.7).mean())
    # balanced sampling: every class about equally often, whatever its count
    ys = torch.repeat_interleave(torch.arange(10), counts)
    order = epoch_order(config.resolve(None, {"sampling": "balanced"}), ys, torch.Generator().manual_seed(0))
    drawn = torch.bincount(ys[order], minlength=10)
    assert len(order) == len(ys) and all(binomial_ok(int(d), len(ys), 0.1) for d in drawn)


def test_flip_scores_count_as_a_hand_count_does():
    s = flip_scores(flagged=[1, 2, 3, 9], flipped=[2, 3, 4], n=10, ranking=[3, 2, 9, 4, 0, 1, 5, 6, 7, 8])
    assert (s["found"], s["flagged"], s["planted"]) == (2, 4, 3)
    assert s["precision"] == 0.5 and s["recall"] == 2 / 3
    assert s["ranking_precision_at_planted"] == 2 / 3  # the first three ranked: 3, 2, 9
    assert math.isclose(s["ranking_average_precision"], (1 / 1 + 2 / 2 + 3 / 4) / 3)


def test_the_bench_rows_compare_each_remedy_with_plain():
    def fake(settings, seed, out):  # the suite's own arithmetic, on made-up summaries
        gain = {"gce": 0.1}.get(settings.get("loss"), 0.0)
        return {"test_acc": 0.8 + gain + seed / 100, "test_balanced_acc": 0.7 + gain, "wall_s": 1.0,
                "run_dir": f"r{seed}", "variant": {"flip_rate": 0.2, "count": 100},
                "cleaning": {"planted_flips": {"precision": 0.9, "recall": 0.95}} if "clean_labels" in settings else None}

    rows = variants_bench.table([0, 1, 2], quick=False, train=fake)
    sym50 = {r["remedy"]: r for r in rows if r["setting"] == "symmetric 50%"}
    assert math.isclose(sym50["plain"]["test_acc"], 81.0) and sym50["plain"]["coteaching"] == 91.68
    assert math.isclose(sym50["generalized cross-entropy"]["vs_plain"], 10.0)
    cleaned = sym50["train on what cleanlab keeps"]
    assert math.isclose(cleaned["audit_precision"], 90.0) and math.isclose(cleaned["audit_recall"], 95.0)
    assert cleaned["command"] == ("mnistlab train --recipe variants --label-noise sym:0.5 --train-subset 10000 "
                                  "--clean-labels cleanlab --seeds 0-2")
    assert {r["setting"] for r in rows} == {s[0] for s in variants_bench.SETTINGS}


TINY = {"model": "fast", "model_args": {"width": 8}, "train_subset": 1500, "validation": 300, "epochs": 2,
        "batch_size": 64, "progress": False, "precision": "fp32"}


@pytest.mark.slow
def test_a_run_on_a_variant_through_every_verb(tmp_path, capsys):
    """Train (with a remedy) on an imbalanced, noisy variant; the run records it; evaluate reproduces
    the run's test and as-train validation figures; a run stopped after its first epoch and resumed is
    the same run bit for bit; audit scores itself on the planted flips; report shows it."""
    settings = {**TINY, "imbalance": "exp:10", "label_noise": "sym:0.3", "variant_validation": "as-train",
                "loss": "logit_adjusted", "sampling": "balanced", "out": str(tmp_path)}
    whole = train(config.resolve(None, {**settings, "name": "whole"}), quiet=True)
    v = whole["variant"]
    assert v["imbalance"] == "exp:10" and v["count"] == sum(v["class_counts"]) == len(json.loads(
        (tmp_path / "whole" / "variant.json").read_text())["positions"])
    assert whole["test_evaluated"] and 0 <= whole["test_balanced_acc"] <= 1 and 0 <= whole["test_macro_f1"] <= 1
    assert v["validation"]["mode"] == "as-train" and v["validation"]["count"] < 300
    saved = json.loads((tmp_path / "whole" / "variant.json").read_text())
    assert len(saved["flipped"]) == v["flipped"] and set(saved["flipped"]) <= set(saved["positions"])

    ev = mnistlab.evaluate(tmp_path / "whole")
    assert ev["n"] == 10_000 and ev["errors"] == whole["test_errors"]  # the test split, whole and untouched
    assert ev["variant"]["sha256"] == v["sha256"] and "recall_vs_count" in ev["pictures"]
    assert math.isclose(ev["balanced_accuracy"], whole["test_balanced_acc"])
    val = mnistlab.evaluate(tmp_path / "whole", split="val", pictures=False)
    assert val["n"] == v["validation"]["count"]

    class Stop(BaseException):
        pass

    def stop_at_2(row):
        if row["epoch"] == 2:
            raise Stop  # as a kill after epoch 1's checkpoint would leave the run

    with pytest.raises(Stop):
        train(config.resolve(None, {**settings, "name": "cut"}), quiet=True, on_epoch=stop_at_2)
    resumed = resume(tmp_path / "cut", quiet=True)
    for key in ("test_acc", "test_errors", "val_acc", "test_balanced_acc", "variant"):
        assert resumed[key] == whole[key], key

    pytest.importorskip("cleanlab")
    audit = mnistlab.audit(str(tmp_path / "whole"), model="fast", folds=2, quiet=True)
    p = audit["planted_flips"]
    assert audit["n"] == v["count"] and p["planted"] == v["flipped"] and 0 <= p["recall"] <= 1
    assert (tmp_path / "whole" / "audit" / "issues.csv").is_file()
    capsys.readouterr()
    assert main(["report", str(tmp_path / "whole"), "--out", str(tmp_path / "report")]) == 0
    assert "Trained on a variant of mnist" in (tmp_path / "report" / "report.html").read_text()


@pytest.mark.slow
def test_training_on_what_cleanlab_keeps_removes_mostly_flips_and_resumes_without_scoring_again(tmp_path):
    pytest.importorskip("cleanlab")
    settings = {**TINY, "model_args": {"width": 16}, "train_subset": 4000, "validation": 0, "epochs": 1,
                "label_noise": "sym:0.3", "clean_labels": "cleanlab", "clean_folds": 2, "clean_epochs": 2,
                "optimizer": "adam", "lr": 1e-3, "out": str(tmp_path)}
    s = train(config.resolve(None, {**settings, "name": "clean"}), quiet=True)
    c = s["cleaning"]
    assert c["removed"] + c["kept"] == 4000 and c["planted_flips"]["planted"] == s["variant"]["flipped"]
    assert c["planted_flips"]["precision"] > 0.5 and c["planted_flips"]["recall"] > 0.5  # far above chance (0.3)
    removed = json.loads((tmp_path / "clean" / "variant.json").read_text())["removed"]
    assert len(removed) == c["removed"]
    # resuming reads the removal back: a tampered list is refused against the checkpoint's hash
    (tmp_path / "clean" / "summary.json").unlink()
    saved = json.loads((tmp_path / "clean" / "variant.json").read_text())
    (tmp_path / "clean" / "variant.json").write_text(json.dumps({**saved, "removed": removed[1:]}))
    with pytest.raises(MnistlabError, match="label cleaning is not what the data gives now"):
        resume(tmp_path / "clean", quiet=True)
    (tmp_path / "clean" / "variant.json").write_text(json.dumps(saved))
    again = resume(tmp_path / "clean", quiet=True)
    assert again["cleaning"]["removed_sha256"] == c["removed_sha256"] and again["test_acc"] == s["test_acc"]


def test_a_variant_dataset_passed_to_train_becomes_settings(tmp_path):
    ds = mnistlab.load("mnist", labels_per_class=3, label_noise="sym:0.2", seed=4)
    run = mnistlab.train(dataset=ds, model="logreg", epochs=1, validation=0, progress=False, out=str(tmp_path),
                         quiet=True)
    cfg = json.loads((run.run_dir / "config.json").read_text())
    assert (cfg["dataset"], cfg["labels_per_class"], cfg["label_noise"], cfg["variant_seed"]) == ("mnist", 3, "sym:0.2", 4)
    assert run["variant"]["count"] == 30 and run["labelled"]["per_class"] == 3
    # the run drew the same 30 (no holdout here), with the same noise
    assert run["variant"]["sha256"] == ds.train.variant.sha256
    assert np.array_equal(np.bincount(np.asarray(json.loads((run.run_dir / "variant.json").read_text())["labels"]),
                                      minlength=10), ds.train.class_counts().numpy())


def test_variant_spec_names_round_trip():
    spec = VariantSpec("step:10", "pair:0.45", 0, 7)
    base, parsed = variants.split_name(spec.name("fashion-mnist"))
    assert (base, parsed) == ("fashion-mnist", spec)
    assert variants.split_name("mnist") == ("mnist", None)


@pytest.mark.parametrize("messy", [{"label_noise": "sym:0.2"}, {"imbalance": "exp:10"}, {"clean_labels": "cleanlab"}])
def test_synthetic_digits_are_refused_beside_a_variant_with_one_line(tmp_path, messy):
    """A messy-data run's examples, flips and removals are MNIST's own: synthetic digits appended to them
    would change the protocol the bench compares with and what the audit is scored on."""
    cfg = config.resolve(None, {**TINY, **messy, "synthetic": "printed:20", "out": str(tmp_path)})
    with pytest.raises(MnistlabError, match="synthetic='printed:20' with a dataset variant") as caught:
        train(cfg, quiet=True)
    assert 'synthetic = "none"' in caught.value.hint and not any(tmp_path.iterdir())  # nothing left behind
