"""Transfer learning: init_from, the head, freezing, label budgets, and the transfer curve."""

from __future__ import annotations

import json

import pytest
import torch
from builders import write_tiny
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mnistlab
from mnistlab.data import registry as datasets
from mnistlab.data import variants
from mnistlab.errors import MnistlabError
from mnistlab.models import checkpoint as ckpt
from mnistlab.models import create_model, list_models
from mnistlab.models.heads import head_modules, penultimate
from mnistlab.rundir import RunDir
from mnistlab.training import config, transfer
from mnistlab.training.engine import train

QUICK = {"epochs": 1, "validation": 0, "progress": False, "threads": 1}


def run(tmp_path, name, recipe="fast", **settings_):
    cfg = config.resolve(recipe, {**QUICK, "out": str(tmp_path), "name": name, **settings_})
    return train(cfg, quiet=True)


@pytest.fixture
def letters_source(tmp_path, registered):
    """A `fast` model trained on a tiny EMNIST-letters (26 classes) written in the real format."""
    tiny, _ = write_tiny(datasets.get_spec("emnist-letters"), tmp_path / "data", n_train=520, n_test=26)
    registered(tiny)
    summary = run(tmp_path, "letters", dataset=tiny.name, data_dir=str(tmp_path / "data"), evaluate_test=False)
    return summary["run_dir"]


def weights(run_dir) -> dict[str, torch.Tensor]:
    tensors, meta = ckpt.load(RunDir(run_dir).best)
    return ckpt.with_prefix(tensors, "model")


def test_every_zoo_model_splits_into_features_and_a_head():
    x = torch.rand(3, 1, 28, 28)
    for name in list_models():
        model = create_model(name).eval()
        heads = head_modules(name, (1, 28, 28))
        features = penultimate(model, x, heads)
        modules = dict(model.named_modules())
        out = features
        for h in heads:  # the head, applied to the penultimate features, gives the model's logits
            out = modules[h](out)
        assert features.ndim == 2 and features.shape[0] == 3, name
        torch.testing.assert_close(out, model(x), msg=name)
        assert all(p.shape[0] == 10 for h in heads for p in modules[h].parameters(recurse=False)), name


@pytest.mark.parametrize("name", list_models())
def test_freezing_features_leaves_only_the_head_to_train(name):
    model = create_model(name)
    heads = head_modules(name, (1, 28, 28))
    frozen = transfer.freeze(model, "features", heads)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(any(n.startswith(h + ".") for h in heads) for n in trainable), name
    assert len(frozen) + len(trainable) == len(list(model.parameters()))
    cfg = config.resolve("fast", {"lr_backbone": 0.01})
    assert transfer.param_groups(model, cfg, heads) == [{"params": [p for p in model.parameters() if p.requires_grad]}]


def test_a_new_head_is_reported_and_frozen_features_stay_bit_identical(tmp_path, letters_source):
    source = weights(letters_source)
    summary = run(tmp_path, "probe", labels_per_class=20, epochs=2, init_from=str(letters_source),
                  freeze="features")
    t = summary["transfer"]
    assert t["head"] == "new" and t["reinitialised"] == ["1"]  # 26 letters -> 10 digits: auto picks a new head
    assert t["skipped"] == ["1.bias", "1.weight"] and t["source_dataset"].startswith("emnist-letters")
    assert t["source_run"] == str(letters_source) and t["frozen"] == 9
    assert t["frozen_norms"] == ["0.1", "0.4", "0.8"]
    after = weights(summary["run_dir"])
    features = [k for k in after if not k.startswith("1.")]
    assert len(features) == t["loaded"] == 18  # conv weights, BatchNorm weights, biases and statistics
    for k in features:  # parameters and BatchNorm statistics alike
        assert torch.equal(after[k], source[k]), k
    assert after["1.weight"].shape == (10, source["1.weight"].shape[1])
    config = json.loads((RunDir(summary["run_dir"]).config).read_text())
    assert config["init_from"] == str(letters_source)  # the source is in the config and the summary


@pytest.mark.slow
def test_fine_tuning_moves_the_features_at_their_own_rate(tmp_path, letters_source):
    source = weights(letters_source)
    slow = run(tmp_path, "slow", labels_per_class=20, epochs=2, init_from=str(letters_source), lr_backbone=1e-6)
    fast = run(tmp_path, "fast", labels_per_class=20, epochs=2, init_from=str(letters_source))
    moved = {n: (weights(r["run_dir"])["0.0.weight"] - source["0.0.weight"]).abs().max().item()
             for n, r in (("slow", slow), ("fast", fast))}
    assert 0 < moved["slow"] < 1e-4 < moved["fast"]
    assert slow["transfer"]["frozen"] == 0


def test_keeping_a_head_of_other_classes_says_to_use_a_new_one(tmp_path, letters_source):
    with pytest.raises(MnistlabError) as err:
        run(tmp_path, "keep", labels_per_class=5, init_from=str(letters_source), head="keep")
    assert "1.weight is (26, 1152) in the checkpoint, (10, 1152) here" in err.value.message
    assert "head=new" in err.value.hint


def test_a_checkpoint_of_another_architecture_names_the_mismatched_tensors(tmp_path):
    source = run(tmp_path, "src", labels_per_class=5)
    with pytest.raises(MnistlabError) as err:
        run(tmp_path, "other", recipe="seed-cnn", labels_per_class=5, init_from=source["run_dir"])
    msg = err.value.message
    assert "(fast on mnist) does not fit keras-cnn" in msg and "6 tensor(s) mismatched" in msg
    assert "0.0.weight is (16, 1, 5, 5) in the checkpoint, (32, 1, 3, 3) here" in msg
    assert "0.0.bias (32,) is not in the checkpoint" in msg
    with pytest.raises(MnistlabError) as err:  # same names, other shapes: a narrower `fast`
        run(tmp_path, "narrow", labels_per_class=5, init_from=source["run_dir"],
            model_args='{"width": 8, "stem_padding": 0, "flatten": "nhwc"}')
    assert "0.0.weight is (16, 1, 5, 5) in the checkpoint, (8, 1, 5, 5) here" in err.value.message
    assert "fast" in err.value.hint


@pytest.mark.slow
def test_bad_transfer_settings_get_clear_errors(tmp_path):
    source = run(tmp_path, "src", labels_per_class=5)
    for settings_, fragment in [({"freeze": "conv9"}, "'conv9' names no parameters of fast"),
                                ({"freeze": "0,1"}, "freezes every parameter"),
                                ({"head": "new"}, "head='new' needs init_from"),
                                ({"head": "maybe"}, "head='maybe': expected auto | new | keep"),
                                ({"init_from": str(tmp_path / "nowhere")}, "does not exist"),
                                ({"labels_per_class": 6000}, "class 0 has only"),
                                ({"lr_backbone": -1}, "lr_backbone=-1.0: expected a positive")]:
        settings_ = {"labels_per_class": 5, **settings_}
        if "head" in settings_ and settings_["head"] == "maybe":
            settings_["init_from"] = source["run_dir"]
        with pytest.raises(MnistlabError) as err:
            run(tmp_path, "bad", **settings_)
        assert fragment in err.value.message, (settings_, err.value.message)


def test_label_budgets_are_stratified_and_drawn_by_seed(mnist):
    labels = mnist.train.labels
    a = variants.labelled_subset(labels, 7, 0, 10, "train")
    assert torch.equal(torch.bincount(labels[a], minlength=10), torch.full((10,), 7))
    assert torch.equal(a, variants.labelled_subset(labels, 7, 0, 10, "train"))
    assert not torch.equal(a, variants.labelled_subset(labels, 7, 1, 10, "train"))
    # budgets of one seed are nested: the 7 images of a class are among its 50
    assert set(a.tolist()) <= set(variants.labelled_subset(labels, 50, 0, 10, "train").tolist())


def test_a_run_records_its_labelled_examples(tmp_path):
    s0 = run(tmp_path, "a", labels_per_class=3, validation=1000, evaluate_test=False)
    again = run(tmp_path, "b", labels_per_class=3, validation=1000, evaluate_test=False)
    other = run(tmp_path, "c", labels_per_class=3, validation=1000, evaluate_test=False, seed=1)
    assert s0["labelled"]["count"] == 30 and s0["labelled"]["per_class"] == 3
    assert s0["labelled"]["sha256"] == again["labelled"]["sha256"] != other["labelled"]["sha256"]
    assert s0["val_acc"] == again["val_acc"]  # same seed, same images, same numbers


@pytest.mark.slow
def test_the_transfer_curve_trains_three_ways_resumes_and_reports(tmp_path, capsys):
    from mnistlab.reporting.run_report import report
    from mnistlab.studies.transfer_study import transfer_curve

    source = run(tmp_path, "src", labels_per_class=50)
    out = tmp_path / "curve"
    # one seed: that another seed draws other images is test_a_run_records_its_labelled_examples'
    curve = transfer_curve(source["run_dir"], "mnist", [1, 3], [0], steps=4, out=str(out), quiet=True,
                           overrides={"threads": "1"})
    assert [e["labels_per_class"] for e in curve["table"]] == [1, 3]
    assert {r["mode"] for r in curve["runs"]} == {"scratch", "probe", "finetune"} and len(curve["runs"]) == 6
    by = {(r["mode"], r["labels_per_class"], r["seed"]): RunDir(r["run_dir"]).read_summary() for r in curve["runs"]}
    assert by[("scratch", 1, 0)]["transfer"] is None
    assert by[("probe", 1, 0)]["transfer"]["frozen"] == 9
    assert by[("finetune", 3, 0)]["transfer"]["frozen"] == 0
    assert by[("probe", 3, 0)]["labelled"]["sha256"] == by[("scratch", 3, 0)]["labelled"]["sha256"]  # same images
    assert by[("probe", 3, 0)]["labelled"]["sha256"] != by[("probe", 1, 0)]["labelled"]["sha256"]
    assert (out / "curve.png").stat().st_size > 5000
    assert json.loads((out / "curve.json").read_text())["table"] == curve["table"]
    stamp = (out / "runs" / "probe-n1-s0" / "summary.json").stat().st_mtime_ns
    again = transfer_curve(source["run_dir"], "mnist", [1, 3], [0], steps=4, out=str(out), quiet=True,
                           overrides={"threads": "1"})  # finished runs are kept
    assert again["table"] == curve["table"]
    assert (out / "runs" / "probe-n1-s0" / "summary.json").stat().st_mtime_ns == stamp
    page = report([str(out / "runs" / "probe-n1-s0")], out=str(tmp_path / "report"))
    html = open(page["html"]).read()
    assert "Transfer" in html and "linear probe" in html and "data:image/png;base64" in html


def test_a_budget_trains_in_equal_batches_for_about_the_same_steps():
    from mnistlab.studies.transfer_study import schedule

    assert schedule(10, 10, 96, 300) == (50, 150)  # not 96 + 4
    assert schedule(1, 10, 96, 300) == (10, 300)
    assert schedule(100, 10, 96, 300) == (91, 27)  # 11 batches of 91 (the last 90)
    assert schedule(1000, 10, 96, 300) == (96, 3)
    assert schedule(5000, 10, 96, 300) == (96, 1)  # at least one epoch


def test_the_command_explains_bad_curve_arguments(tmp_path, capsys):
    from mnistlab.cli import main

    for args, fragment in [(["--labels", "1,x"], "--labels '1,x'"), (["--labels", "0,5"], "distinct positive"),
                           (["--modes", "scratch,zeroshot"], "expected some of scratch, probe, finetune"),
                           (["--labels", "7000", "--modes", "scratch"], "smallest class has"),
                           (["--source", str(tmp_path / "none")], "does not exist")]:
        assert main(["transfer-curve", "--out", str(tmp_path / "c"), *args]) != 0
        err = capsys.readouterr().err
        assert fragment in err and "Traceback" not in err, (args, err)


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=512))
def test_init_from_any_file_is_an_error_or_works(tmp_path, blob):
    path = tmp_path / "x.safetensors"
    path.write_bytes(blob)
    cfg = config.resolve("fast", {**QUICK, "init_from": str(path), "labels_per_class": 1})
    model = create_model("fast", **cfg.model_args)
    with pytest.raises(MnistlabError):
        transfer.initialise(model, cfg, mnistlab.load("mnist").classes, ("1",))


def test_contrastive_loss_finds_partners():
    from mnistlab.training.pretraining import nt_xent

    z = torch.randn(64, 16)
    assert nt_xent(z, z, 0.05).item() < 0.05  # each view's partner is itself: found
    noise = nt_xent(torch.randn(64, 16), torch.randn(64, 16), 1.0).item()
    assert abs(noise - torch.log(torch.tensor(127.0)).item()) < 0.5  # unrelated views: chance among 127


@pytest.mark.slow
def test_pretraining_without_labels_gives_features_that_init_from_loads(tmp_path):
    from mnistlab.training.pretraining import pretrain

    cfg = config.resolve("fast", {**QUICK, "train_subset": 1024, "epochs": 2, "batch_size": 128, "lr": 2e-3,
                                      "out": str(tmp_path), "name": "ssl"})
    s = pretrain(cfg, quiet=True)
    assert s["pretraining"]["method"] == "contrastive" and s["test_evaluated"] is False
    torch.manual_seed(0)
    fresh = create_model("fast", **cfg.model_args)  # the weights pretraining started from (seed 0)
    learned = weights(s["run_dir"])
    assert not torch.equal(learned["0.0.weight"], fresh.state_dict()["0.0.weight"])
    probe = run(tmp_path, "probe", labels_per_class=5, init_from=s["run_dir"], freeze="features")
    assert probe["transfer"]["head"] == "new" and probe["transfer"]["loaded"] == 18  # auto: the head learned nothing
    with pytest.raises(MnistlabError, match="reads no labels"):
        pretrain(config.resolve("fast", {**QUICK, "labels_per_class": 5}), quiet=True)
