"""Adversarial attacks: FGSM against a hand computation, PGD's ball and [0,1] kept exactly, targeted
attacks that reach their target, the checks against gradient masking on the packaged trained model,
and clear errors for bad arguments."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import mnistlab
from mnistlab import MnistlabError
from mnistlab.attacks import ATTACKS, Attacked, fgsm, list_attacks, pgd
from mnistlab.attacks.registry import register_attack
from mnistlab.cli import main
from mnistlab.data.normalization import Normalization
from mnistlab.models.predictor import Predictor
from mnistlab.rundir import RunDir
from mnistlab.serving.prediction import DEFAULT_MODEL, default_predictor


def tiny_logreg(seed: int = 0) -> tuple[Predictor, torch.nn.Linear]:
    torch.manual_seed(seed)
    linear = torch.nn.Linear(784, 10)
    model = torch.nn.Sequential(torch.nn.Flatten(), linear)
    meta = {"name": "tiny", "classes": [str(i) for i in range(10)], "in_shape": [1, 28, 28], "num_classes": 10,
            "dataset": "mnist"}
    return Predictor([model], [Normalization("standardize", (0.5,), (0.25,))], "single", meta), linear


def test_fgsm_is_the_hand_computed_signed_gradient_step():
    """For softmax regression on standardised input z = (x - 0.5) / 0.25, the cross-entropy's gradient
    with respect to the pixel x is W^T (softmax(Wz + b) - onehot(y)) / 0.25."""
    predictor, linear = tiny_logreg()
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (5, 784)).astype(np.float32)
    y = np.array([0, 3, 5, 7, 9])
    W, b = linear.weight.detach().numpy().astype(np.float64), linear.bias.detach().numpy().astype(np.float64)
    z = (x - 0.5) / 0.25
    logits = z @ W.T + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    grad = (p - np.eye(10)[y]) @ W / 0.25
    expected = np.clip(x + 0.1 * np.sign(grad), 0, 1)
    got = fgsm(Attacked(predictor), torch.from_numpy(x).view(5, 1, 28, 28), torch.from_numpy(y), 0.1)
    np.testing.assert_allclose(got.view(5, 784).numpy(), expected, atol=1e-6)
    toward = fgsm(Attacked(predictor), torch.from_numpy(x).view(5, 1, 28, 28), torch.from_numpy(y), 0.1,
                  target=torch.full((5,), 2))
    grad_t = (p - np.eye(10)[[2] * 5]) @ W / 0.25
    np.testing.assert_allclose(toward.view(5, 784).numpy(), np.clip(x - 0.1 * np.sign(grad_t), 0, 1), atol=1e-6)


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("linf", 0.3), ("l2", 1.5), ("l2", 3.0)])
def test_pgd_stays_in_the_epsilon_ball_and_in_0_1_exactly(mnist, norm, eps):
    net = Attacked(default_predictor())
    x = mnist.test.images[:64].float()[:, None] / 255
    y = mnist.test.labels[:64]
    adv = pgd(net, x, y, eps, norm=norm, steps=10, generator=torch.Generator().manual_seed(0))
    assert adv.min() >= 0 and adv.max() <= 1
    delta = (adv - x).flatten(1)
    size = delta.abs().max(1).values if norm == "linf" else delta.norm(dim=1)
    assert float(size.max()) <= eps * (1 + 1e-5) + 1e-6
    assert float(size.mean()) > 0.3 * eps  # it did move


@pytest.mark.slow
def test_a_targeted_attack_reaches_its_target_and_accuracy_falls_with_epsilon(mnist):
    images, labels = mnist.test.images[:200], mnist.test.labels[:200]
    r = mnistlab.attack(default_predictor(), images, labels, method="pgd", eps=[0.1, 0.3], target=3, steps=20,
                        checks=False)  # the masking checks have their own test
    assert r.success[0] < r.success[1] and r.success[1] > 0.9
    assert r.accuracy[1] < 0.1 and r.clean_accuracy > 0.98


@pytest.mark.slow
def test_checks_against_gradient_masking_on_the_trained_model(mnist):
    """Accuracy falls monotonically with epsilon; PGD is never weaker than FGSM; an unbounded epsilon
    leaves nothing standing; the same seed gives the same numbers. (By hand, here: the built-in
    checks, which run these and a gradient-free attack, have their own test below.)"""
    images, labels = mnist.test.images[:100], mnist.test.labels[:100]
    eps = [0.0, 0.02, 0.05, 0.1, 0.2]
    f = mnistlab.attack(DEFAULT_MODEL, images, labels, method="fgsm", eps=eps, checks=False)
    p = mnistlab.attack(DEFAULT_MODEL, images, labels, method="pgd", eps=eps, steps=10, seed=1, checks=False)
    assert f.accuracy[0] == p.accuracy[0] == f.clean_accuracy
    assert all(a >= b for a, b in zip(p.accuracy, p.accuracy[1:])), p.accuracy
    assert all(pa <= fa for pa, fa in zip(p.accuracy, f.accuracy)), (p.accuracy, f.accuracy)
    assert mnistlab.attack(DEFAULT_MODEL, images, labels, method="pgd", eps=1.0, steps=10,
                           checks=False).accuracy[0] < 0.01
    again = mnistlab.attack(DEFAULT_MODEL, images, labels, method="pgd", eps=eps, steps=10, seed=1, checks=False)
    assert again.accuracy == p.accuracy


def test_bad_arguments_are_clear_errors(mnist):
    images, labels = mnist.test.images[:4], mnist.test.labels[:4]
    for kwargs, words in (({"eps": -0.1}, "expected a finite number >= 0"),
                          ({"eps": float("nan")}, "expected a finite number >= 0"),
                          ({"eps": []}, "at least one value"),
                          ({"norm": "l1"}, "expected linf or l2"),
                          ({"method": "cw"}, "expected one of fgsm, pgd"),
                          ({"method": "fgsm", "norm": "l2"}, "fgsm attacks in linf only, not l2"),
                          ({"target": 10}, "expected a class index from 0 to 9"),
                          ({"steps": 0}, "expected 1-10000 steps")):
        with pytest.raises(MnistlabError, match=words):
            mnistlab.attack(default_predictor(), images, labels, **kwargs)
    with pytest.raises(MnistlabError, match="same, non-zero number"):
        mnistlab.attack(default_predictor(), images, labels[:3])
    vote = Predictor(default_predictor().models * 2, default_predictor().norms * 2, "vote", default_predictor().meta)
    with pytest.raises(MnistlabError, match="vote ensemble has no gradient"):
        mnistlab.attack(vote, images, labels)


@pytest.mark.slow
def test_the_command_writes_numbers_a_curve_and_a_gallery(tmp_path, capsys):
    out = tmp_path / "attack"
    # through the command line's parser and handler, in this process (a new one costs ~4 s of start-up;
    # the command's own process is tested with autoattack below)
    assert main(["attack", str(DEFAULT_MODEL), "--method", "fgsm", "--eps", "0.1,0.3", "--n", "50", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    doc = json.loads((out / "attack-fgsm-linf.json").read_text())
    assert doc["eps"] == [0.1, 0.3] and doc["n"] == 50 and len(doc["robust_accuracy"]) == 2
    assert (out / "attack-fgsm-linf-curve.png").stat().st_size > 1000
    assert (out / "attack-fgsm-linf-gallery.png").stat().st_size > 1000
    assert "robust accuracy" in printed
    assert main(["attack", str(DEFAULT_MODEL), "--eps", "0.1,x"]) == 2
    err = capsys.readouterr().err
    assert "--eps '0.1,x'" in err and "Traceback" not in err
    assert main(["attack", str(DEFAULT_MODEL), str(DEFAULT_MODEL), "--method", "fgsm", "--eps", "0.1,0.2", "--n", "20",
                 "--no-checks", "--out", str(tmp_path / "two")]) == 0
    assert (tmp_path / "two" / "compare-fgsm-linf.png").stat().st_size > 1000
    assert (tmp_path / "two" / "2-default" / "attack-fgsm-linf.json").is_file()
    assert main(["attack", str(DEFAULT_MODEL), str(DEFAULT_MODEL)]) == 2
    assert "--out" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("method", ["fgsm-rs", "pgd"])
def test_adversarial_batches_stay_in_the_ball_and_the_run_records_the_attack(tmp_path, mnist, method):
    from mnistlab.training.adversarial import perturb
    from mnistlab.training.config import resolve
    from mnistlab.training.engine import train

    cfg = resolve("adv-fgsm-rs", {"adversarial": method, "adv_steps": 3, "out": str(tmp_path), "progress": False,
                                  "train_subset": 512, "validation": 500, "epochs": 1, "adv_eval": 50})
    pred = default_predictor()
    x = mnist.test.images[:32].float()[:, None] / 255
    adv = perturb(pred.models[0], x, mnist.test.labels[:32], pred.norms[0], cfg, torch.Generator().manual_seed(0))
    assert adv.min() >= 0 and adv.max() <= 1 and float((adv - x).abs().max()) <= 0.3 + 1e-6
    assert float((adv - x).abs().mean()) > 0.05
    summary = train(cfg, quiet=True)
    rows = [json.loads(line) for line in (tmp_path / "adv-fgsm-rs-mnist-s0" / "log.jsonl").read_text().splitlines()]
    assert rows[-1]["attack_s"] > 0 and rows[-1]["attack_s"] < rows[-1]["epoch_s"]
    robust = summary["robust"]
    assert robust["attack"].startswith("PGD-40 L-inf eps 0.3") and robust["n"] == 50
    assert 0 <= robust["accuracy"] < robust["clean_accuracy"] - 0.2 and robust["clean_accuracy"] <= 1, robust


def test_adversarial_settings_are_checked():
    from mnistlab.training.config import differences, resolve, validate

    for overrides, words in (({"adversarial": "cw"}, "expected none | fgsm-rs | pgd"),
                             ({"adv_eps": 1.5}, "adv_eps=1.5: expected 0 to 1"),
                             ({"adv_steps": 0}, "adv_steps=0: expected 1 to 1000")):
        with pytest.raises(MnistlabError, match=words):
            validate(resolve("adv-fgsm-rs", overrides))
    with pytest.raises(MnistlabError, match="cannot capture: adversarial"):
        validate(resolve("adv-fgsm-rs", {"cuda_graphs": True, "optimizer": "sgd"}))
    old_run = {k: v for k, v in resolve("seed-mlp").as_dict().items() if not k.startswith("adv")}
    assert differences(old_run, resolve("seed-mlp").as_dict()) == []  # a run from before these settings resumes


def test_apgd_checkpoints_and_the_targeted_dlr_loss_by_hand():
    from mnistlab.attacks.autoattack import checkpoints, dlr_targeted, margin

    # p = 0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 (Croce and Hein 2020, section 3.2)
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    z = torch.tensor([[5.0, 1.0, 3.0, 2.0, 0.0], [0.0, 4.0, 1.0, 1.0, 2.0]])
    y, t = torch.tensor([0, 1]), torch.tensor([2, 4])
    # sorted logits 5,3,2,1,0: -(5 - 3) / (5 - (2 + 1) / 2); 4,2,1,1,0: -(4 - 2) / (4 - (1 + 1) / 2)
    torch.testing.assert_close(dlr_targeted(z, y, t), torch.tensor([-2 / 3.5, -2 / 3.0]))
    torch.testing.assert_close(dlr_targeted(z * 7 + 3, y, t), dlr_targeted(z, y, t))  # shift and scale free
    torch.testing.assert_close(margin(z, y), torch.tensor([2.0, 2.0]))


@pytest.mark.slow
@pytest.mark.parametrize("method, norm, eps", [("apgd-ce", "linf", 0.05), ("apgd-ce", "l2", 1.0),
                                               ("apgd-t", "linf", 0.05), ("square", "linf", 0.05)])
def test_apgd_and_square_stay_in_the_ball_and_beat_a_single_step(mnist, method, norm, eps):
    from mnistlab.attacks.autoattack import apgd, square

    net = Attacked(default_predictor())
    x = mnist.test.images[:64].float()[:, None] / 255
    y = mnist.test.labels[:64].long()
    g = torch.Generator().manual_seed(0)
    if method == "square":
        adv = square(net, x, y, eps, queries=300, generator=g)
    else:
        target = None if method == "apgd-ce" else net(x).scatter(1, y[:, None], float("-inf")).argmax(1)
        adv = apgd(net, x, y, eps, norm=norm, steps=30, target=target, generator=g)
    assert adv.min() >= 0 and adv.max() <= 1
    delta = (adv - x).flatten(1)
    size = delta.abs().max(1).values if norm == "linf" else delta.norm(dim=1)
    assert float(size.max()) <= eps * (1 + 1e-5) + 1e-6
    robust = float((net(adv).argmax(1) == y).float().mean())
    one_step = fgsm(net, x, y, eps) if norm == "linf" else pgd(net, x, y, eps, norm="l2", steps=1, step_size=eps,
                                                                random_start=False)
    assert robust < float((net(one_step).argmax(1) == y).float().mean())


def test_square_stops_querying_an_example_once_it_is_broken(mnist):
    from mnistlab.attacks.autoattack import square

    net = Attacked(default_predictor())
    rows = []

    def counted(x):
        rows.append(len(x))
        return net(x)

    x = mnist.test.images[:32].float()[:, None] / 255
    y = mnist.test.labels[:32].long()
    adv = square(counted, x, y, 0.1, queries=300, generator=torch.Generator().manual_seed(0))
    broken = int((net(adv).argmax(1) != y).sum())
    assert broken >= 24 and rows[0] == 32  # eps 0.1 breaks an undefended model
    assert len(rows) <= 300 and sum(rows) < 32 * len(rows) / 2  # most examples stopped early


@pytest.mark.slow
def test_autoattack_is_the_per_example_minimum_and_names_who_broke_what(mnist):
    images, labels = mnist.test.images[:100], mnist.test.labels[:100]
    kw = {"eps": [0.05], "steps": 20, "seed": 3, "checks": False}
    ce = mnistlab.attack(DEFAULT_MODEL, images, labels, method="apgd-ce", **kw)
    aa = mnistlab.attack(DEFAULT_MODEL, images, labels, method="autoattack", targets=3, queries=200, **kw)
    assert aa.accuracy[0] <= ce.accuracy[0]
    broke = aa.settings["broken_by"][0]
    assert list(broke) == ["clean", "apgd-ce", "apgd-t", "square"]
    assert broke["apgd-ce"] == round((ce.clean_accuracy - ce.accuracy[0]) * 100)  # same seed, same first stage
    assert sum(broke.values()) == round((1 - aa.accuracy[0]) * 100)
    pred = Attacked(default_predictor())(aa.adversarial[0]).argmax(1)
    assert float((pred == torch.as_tensor(labels)).float().mean()) == aa.accuracy[0]


class _Staircase(torch.nn.Module):
    """The packaged model behind a rounding of its input to 3 grey levels: round() has a zero gradient
    everywhere, the textbook case of a defence that only masks gradients (Athalye et al. 2018)."""

    def __init__(self, predictor):
        super().__init__()
        self.model, self.norm = predictor.models[0], predictor.norms[0]

    def forward(self, x255):
        return self.model(self.norm.apply(torch.round(x255 / 255 * 2) / 2))


@pytest.mark.slow
def test_the_masking_checks_pass_on_a_trained_model_and_catch_masked_gradients(mnist):
    images, labels = mnist.test.images[:100], mnist.test.labels[:100]
    honest = mnistlab.attack(DEFAULT_MODEL, images, labels, method="pgd", eps=[0.1, 0.2], steps=20, check_n=60)
    assert honest.checks["passed"], honest.checks
    assert [c["check"] for c in honest.checks["checks"]] == [
        "accuracy falls monotonically with epsilon", "not weaker than FGSM",
        "an unbounded epsilon leaves ~nothing standing", "a gradient-free attack does not beat the gradient attacks"]
    base = default_predictor()
    masked = Predictor([_Staircase(base)], [Normalization("none", (0.0,), (1.0,))], "single", base.meta)
    fooled = mnistlab.attack(masked, images, labels, method="pgd", eps=[0.1, 0.2], steps=20, check_n=60)
    assert fooled.accuracy[-1] > 0.8  # PGD finds no gradient and reports robustness...
    failed = {c["check"] for c in fooled.checks["checks"] if not c["passed"]}
    assert not fooled.checks["passed"]  # ...which the checks refuse
    assert "a gradient-free attack does not beat the gradient attacks" in failed


@pytest.mark.slow
def test_autoattack_from_the_command_line_shows_in_evaluate_and_report(tmp_path, capsys):
    """An adversarially trained run, attacked with the strongest evaluation: the figure, the attack's
    name and the checks' verdict reach `evaluate` and `report`."""
    from mnistlab.analysis.evaluation import evaluate
    from mnistlab.reporting.run_report import report
    from mnistlab.results import Evaluation
    from mnistlab.training.config import resolve
    from mnistlab.training.engine import train

    cfg = resolve("adv-fgsm-rs", {"out": str(tmp_path), "progress": False, "train_subset": 512, "validation": 500,
                                  "epochs": 1, "adv_eval": 40})
    summary = train(cfg, quiet=True)
    run = tmp_path / "adv-fgsm-rs-mnist-s0"
    assert summary["robust"]["masking_checks"]["checks"]  # the training's own figure carries its checks
    capsys.readouterr()
    assert main(["attack", str(run), "--method", "autoattack", "--eps", "0.1", "--n", "40", "--steps", "10",
                 "--targets", "2", "--queries", "50", "--check-n", "20"]) == 0
    printed = capsys.readouterr().out
    assert "AutoAttack-style minimum over APGD-CE (10 steps) + APGD-T (10 steps, 2 targets) + Square (50 queries)" \
        in printed and "checks against gradient masking" in printed
    doc = json.loads((run / "eval" / "attack-autoattack-linf.json").read_text())
    assert doc["masking_checks"]["checks"] and sum(doc["broken_by"][0].values()) == round(
        (1 - doc["robust_accuracy"][0]) * 40)
    result = evaluate(run, pictures=False)
    attacks = [r["attack"] for r in result["robust"]]
    assert attacks[0].startswith("PGD-40") and attacks[1].startswith("AutoAttack-style")
    assert "robust accuracy:" in str(Evaluation(result)) and "under AutoAttack-style" in str(Evaluation(result))
    out = report([run], out=tmp_path / "report")
    assert "Robust accuracy" in (tmp_path / "report" / "report.md").read_text()
    assert "Robust accuracy" in (tmp_path / "report" / "report.html").read_text() and out


def test_robust_figures_skip_attack_files_they_cannot_read(tmp_path):
    """A run directory's eval/attack-*.json is outside input to `evaluate` and `report`: anything that is
    not an attack result this version wrote is left out, never a traceback."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from mnistlab.analysis.robust import robust_figures

    (tmp_path / "eval").mkdir()
    target = tmp_path / "eval" / "attack-pgd-linf.json"
    json_values = st.recursive(st.none() | st.booleans() | st.floats() | st.text(max_size=5),
                               lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                               max_leaves=10)

    @settings(max_examples=150, deadline=None)
    @given(st.one_of(st.binary(max_size=64).map(bytes.hex), json_values.map(json.dumps)))
    def check(text):
        target.write_text(text)
        assert robust_figures(RunDir(tmp_path)) == []

    check()
    target.write_text(json.dumps({"method": "pgd", "norm": "linf", "steps": 40, "eps": [0.1], "robust_accuracy": [0.5],
                                  "n": 10, "split": "test", "clean_accuracy": 0.9, "targeted": False,
                                  "masking_checks": {"passed": True, "checks": []}}))
    assert robust_figures(RunDir(tmp_path))[0]["attack"] == "PGD-40 linf"


# ---------- the registry: every attack it holds, and one added and removed ----------

LARGE = {"linf": 0.3, "l2": 4.0}  # budgets at which any working attack breaks a small undefended MLP


@pytest.fixture(scope="module")
def small_mlp(trained):
    """An undefended MLP (one epoch on 2,000 images, ~90%): what any attack at a large budget breaks."""
    return trained(model="mlp", train_subset=2000, validation=500, epochs=1).run_dir


@pytest.mark.parametrize("method, norm", [(m, n) for m in list_attacks() for n in ATTACKS[m].norms])
def test_every_registered_attack_stays_in_its_ball_and_breaks_an_undefended_model(small_mlp, mnist, method, norm):
    """Read from the registry: an attack added there is tested here. `robust <= clean` also holds for an
    attack that does nothing; a drop at a large budget does not."""
    x, y = mnist.test.images[:48], mnist.test.labels[:48]
    eps = LARGE[norm]
    r = mnistlab.attack(small_mlp, x, y, method=method, norm=norm, eps=[eps / 10, eps], steps=10, queries=200,
                        targets=2, checks=False, target=None)
    clean = x.float()[:, None] / 255
    for e, adv in zip(r.eps, r.adversarial):
        assert adv.min() >= 0 and adv.max() <= 1
        delta = (adv - clean).flatten(1)
        size = delta.abs().max(1).values if norm == "linf" else delta.norm(dim=1)
        assert float(size.max()) <= e * (1 + 1e-5) + 1e-6
    assert r.clean_accuracy > 0.7 and r.accuracy[1] < r.clean_accuracy - 0.4, r


def test_an_attack_is_one_registry_entry_beside_its_code(small_mlp, tmp_path, capsys):
    """A toy attack registered in the test: the command line offers it, runs it, records it, and
    `evaluate` names it; removed, it is gone from all of them."""

    @register_attack("noise", norms=("linf",), targeted=False, steps=1, restarts=False, rank=50,
                     named=lambda s: "uniform noise", summary="uniform noise in the eps-ball (a toy)")
    def run_noise(net, x, y, eps, *, norm, steps, step_size, target, targets, queries, generator):
        return (x + eps * (2 * torch.rand(x.shape, generator=generator) - 1)).clamp(0, 1), {}

    try:
        assert "noise" in list_attacks()
        run = tmp_path / "run"
        shutil.copytree(small_mlp, run)
        assert main(["attack", str(run), "--method", "noise", "--eps", "0.1", "--n", "100", "--quiet"]) == 0
        (doc,) = [d for _, d in RunDir(run).attack_results()]
        assert doc["method"] == "noise" and doc["n"] == 100 and 0 < doc["robust_accuracy"][0] <= doc["clean_accuracy"]
        capsys.readouterr()
        assert main(["evaluate", str(run), "--no-pictures"]) == 0
        assert "under uniform noise linf at eps 0.1" in capsys.readouterr().out
    finally:
        del ATTACKS["noise"]
    assert "noise" not in list_attacks()
    assert main(["attack", str(run), "--method", "noise"]) == 2
    assert "invalid choice: 'noise'" in capsys.readouterr().err
