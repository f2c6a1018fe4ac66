"""The learning-rate finder: its smoothing and rules against hand-made curves (an early spike, too few
points, a NaN), the weights put back after a sweep, and the goal on the recipes: within 3x of the rate
each recipe was tuned with on validation."""

from __future__ import annotations

import math

import pytest
import torch

import mnistlab
from mnistlab.analysis.checks import Finding, verdict
from mnistlab.cli import main
from mnistlab.training import config, lr_finder
from mnistlab.training.engine import build, make_step
from mnistlab.training.setup import load_data, set_up

LRS = [1e-6 * (1e7 ** (i / 99)) for i in range(100)]  # 1e-6 .. 10 over 100 steps


def curve(spike: bool = False) -> list[float]:
    """A range test's shape: flat, a fall centred at lr 1e-2 (log-logistic), then a climb past lr 1."""
    out = []
    for i, lr in enumerate(LRS):
        x = math.log10(lr)
        loss = 2.3 - 2.0 / (1 + math.exp(-3 * (x + 2))) + (max(0.0, x) ** 2) * 3
        out.append(loss - (1.5 if spike and i == 3 else 0.0) + (1.5 if spike and i == 2 else 0.0))
    return out


def test_the_smoothed_loss_is_bias_corrected():
    assert lr_finder.smoothed([3.0, 3.0, 3.0]) == pytest.approx([3.0, 3.0, 3.0])  # no pull towards 0 at the start
    s = lr_finder.smoothed([1.0, 0.0], beta=0.5)
    assert s == pytest.approx([1.0, (0.25) / (1 - 0.25)])


def test_the_rules_find_the_fall_and_an_early_spike_does_not_fool_the_steepest():
    clean, spiked = curve(), curve(spike=True)
    steepest = lr_finder.steepest(LRS, clean)
    assert 3e-3 < steepest < 3e-2  # the fall's middle: lr 1e-2
    assert lr_finder.steepest(LRS, spiked) == steepest  # Lightning #1767: a drop in the first tenth
    lowest = lr_finder.minimum(LRS, clean)
    assert 1e-2 < lowest < 2  # the lowest loss: where the climb begins
    assert LRS[0] < lr_finder.valley(LRS, clean) < lowest


def test_too_few_points_and_a_loss_that_never_falls_give_no_suggestion_and_say_why():
    found, why = lr_finder.suggestions(LRS[:8], curve()[:8])
    assert set(found.values()) == {None} and "only 8 point(s)" in why and "start lower" in why
    found, why = lr_finder.suggestions(LRS[60:], sorted(curve()[60:]))  # rising all the way
    assert found["steepest"] is None and found["minimum"] is None and "never fell" in why


def test_the_recommendation_follows_the_schedule():
    assert lr_finder.recommended_rule("onecycle") == "minimum"
    assert lr_finder.recommended_rule("none") == lr_finder.recommended_rule("cosine") == "steepest"


@pytest.fixture(scope="module")
def small():
    cfg = config.resolve("seed-mlp", {"train_subset": 1000, "validation": 100, "progress": False, "precision": "fp32"})
    env = set_up(cfg, quiet=True)
    data = load_data(cfg, env)
    parts = build(cfg, data, env)
    return cfg, env, data, parts, make_step(cfg, data, parts, env)


def test_a_sweep_puts_the_weights_and_the_optimizer_back(small):
    cfg, env, data, parts, step = small
    before = {k: v.clone() for k, v in parts.model.state_dict().items()}
    lrs, losses, stopped = lr_finder.sweep(parts.model, parts.opt, step, lr_finder._batches(cfg, data, parts, env, 40),
                                           LRS[::2][:40], diverge=4.0)
    assert len(losses) >= 20 and all(math.isfinite(v) for v in losses)
    after = parts.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not parts.opt.state and parts.opt.param_groups[0]["lr"] == cfg.lr


def test_a_nan_ends_the_sweep_and_is_no_point_of_the_curve(small):
    cfg, env, data, parts, step = small
    calls = []

    def failing(idx, gen):  # the real step, until the loss turns NaN at the 25th
        calls.append(1)
        loss, logits = step(idx, gen)
        return (torch.tensor(float("nan")) if len(calls) == 25 else loss), logits

    lrs, losses, stopped = lr_finder.sweep(parts.model, parts.opt, failing,
                                           lr_finder._batches(cfg, data, parts, env, 60), LRS[:60], diverge=4.0)
    assert len(losses) == 24 and "the loss became nan" in stopped
    found, why = lr_finder.suggestions(lrs, lr_finder.smoothed(losses))  # fastai #3477: NaN broke this
    assert all(v is None or math.isfinite(v) for v in found.values())


def test_checks_learning_rate_advice_names_the_finder_with_the_command_filled_in():
    cfg = config.resolve(None, {"model": "mlp", "optimizer": "sgd", "batch_size": 64})
    from mnistlab.analysis.checks import find_rate

    said = find_rate(cfg)
    assert "`mnistlab lr-find --optimizer sgd --batch-size 64`" in said
    status, sentence = verdict([Finding("output", True, "ok")], {"diverged": [0], "mean": 0.1, "std": 0.0}, [], 10,
                               find=said)
    assert status == "something is wrong" and "lower the learning rate?" in sentence and "mnistlab lr-find" in sentence


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["seed-cnn", "fast"])
def test_on_the_recipes_it_suggests_within_3x_of_their_own_rate(recipe, tmp_path, capsys):
    # the goal, at the packaged sweep (1e-7 to 10, 100 steps, seeds 0-2), fp32 on any CPU
    found = mnistlab.lr_find(recipe, out=str(tmp_path), quiet=True, precision="fp32")
    given = config.resolve(recipe).lr
    assert 1 / 3 <= found.lr / given <= 3, str(found)
    assert found["rules"]["valley"] and found["rules"]["steepest"]["seeds"] == 3
    assert found["recommended"]["command"] == f"mnistlab train --recipe {recipe} --lr {found.lr:g}"
    assert (tmp_path / f"lr-find-{recipe}-mnist" / "lr-find.png").is_file()


def test_the_command_prints_the_train_command_it_suggests(tmp_path, capsys):
    code = main(["lr-find", "--recipe", "seed-mlp", "--seeds", "0", "--steps", "40", "--out", str(tmp_path),
                 "--train-subset", "2000"])
    out = capsys.readouterr().out
    assert code == 0 and "train with it: mnistlab train --recipe seed-mlp --lr " in out
    assert "steepest" in out and "valley" in out and "minimum" in out
