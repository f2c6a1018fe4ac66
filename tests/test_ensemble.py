"""Ensembles: vote against mean where they differ, an ensemble of one equals its model, the command
with greedy selection on validation, and members that held out other examples refused."""

from __future__ import annotations

import pytest
import torch

from mnistlab.analysis import ensembles
from mnistlab.analysis.evaluation import (
    evaluate,
)
from mnistlab.cli import main as cli_main
from mnistlab.data.normalization import Normalization
from mnistlab.models.predictor import Predictor, load_predictor
from mnistlab.training import config
from mnistlab.training.engine import train

# ---------- ensembles ----------

class Constant(torch.nn.Module):
    """A 'model' that answers the same logits for every image."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.log(torch.tensor(logits)))

    def forward(self, x):
        return self.logits.expand(x.shape[0], -1)


def test_vote_and_mean_differ_where_they_should():
    # one confident member for class 0, two lukewarm ones for class 1
    members = [Constant([0.9, 0.1]), Constant([0.4, 0.6]), Constant([0.45, 0.55])]
    norm = Normalization("scale", (0.0,), (1.0,))
    meta = {"classes": ["0", "1"], "num_classes": 2}
    images = torch.zeros(3, 28, 28, dtype=torch.uint8)
    mean = Predictor(members, [norm] * 3, "mean", meta).probs(images)
    vote = Predictor(members, [norm] * 3, "vote", meta).probs(images)
    assert mean.argmax(1).tolist() == [0, 0, 0] and vote.argmax(1).tolist() == [1, 1, 1]
    assert torch.allclose(mean[0], torch.tensor([0.5833, 0.4167]), atol=1e-4)
    # where members agree, both methods agree
    agree = [Constant([0.2, 0.8]), Constant([0.4, 0.6]), Constant([0.1, 0.9])]
    assert Predictor(agree, [norm] * 3, "mean", meta).probs(images).argmax(1).tolist() == \
        Predictor(agree, [norm] * 3, "vote", meta).probs(images).argmax(1).tolist() == [1, 1, 1]


@pytest.mark.slow
def test_an_ensemble_of_one_equals_the_model(seed_runs, tmp_path):
    _, runs = seed_runs
    single = evaluate(runs[0], pictures=False, out=tmp_path / "single")
    for method in ("mean", "vote"):
        path = ensembles.save(ensembles.build([runs[0]], method), tmp_path / f"one-{method}.safetensors")
        one = evaluate(path, pictures=False, out=tmp_path / method)
        assert one["accuracy"] == single["accuracy"] and one["confusion_matrix"] == single["confusion_matrix"]
        assert one["member_accuracy"] == [single["accuracy"]]
    probs_single = load_predictor(runs[0]).probs(torch.zeros(5, 28, 28, dtype=torch.uint8))
    probs_one = load_predictor(tmp_path / "one-mean.safetensors").probs(torch.zeros(5, 28, 28,
                                                                                             dtype=torch.uint8))
    assert torch.allclose(probs_single, probs_one)


def test_ensemble_cli_reports_members_and_selects_on_validation(seed_runs, tmp_path, capsys):
    _, runs = seed_runs
    out = tmp_path / "three.safetensors"
    assert cli_main(["ensemble", *map(str, runs), "--method", "mean", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ensemble (mean)" in text and all(str(r) in text for r in runs)
    result = evaluate(out, pictures=False, out=tmp_path / "e")
    assert len(result["member_accuracy"]) == 3
    assert result["accuracy"] >= min(result["member_accuracy"])
    assert cli_main(["ensemble", *map(str, runs), "--select", "--out", str(tmp_path / "sel.safetensors")]) == 0
    assert "greedy selection on the validation split" in capsys.readouterr().out
    # a member that held out other examples (here: 500 instead of 1,000) trained on part of the others'
    # validation split; selecting on it would be unfair, so it is refused
    other = train(config.resolve(None, {"model": "mlp", "train_subset": 6000, "validation": 500, "epochs": 1,
                                            "out": str(tmp_path / "o"), "progress": False}), quiet=True)
    assert cli_main(["ensemble", *map(str, runs), other["run_dir"], "--select", "--out",
                     str(tmp_path / "bad.safetensors")]) == 2
    assert "did not hold out the same validation examples" in capsys.readouterr().err
