"""The not-a-digit model (issue 30): letters, scribbles and shapes drawn as a person draws them are
flagged, digits drawn the same way and MNIST's own are not; the model is fitted once and stored
where its checkpoint is (the run directory, or the user cache for a loose file), and whatever an
ood.safetensors file holds is checked before it is used."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open

import mnistlab
from mnistlab import MnistlabError
from mnistlab.data import drawn
from mnistlab.models import ood
from mnistlab.models.predictor import load_predictor
from mnistlab.rundir import RunDir
from mnistlab.serving.prediction import DEFAULT_MODEL, default_predictor


def flagged(results) -> float:
    return float(np.mean([not r.is_digit for r in results]))


def test_the_default_model_flags_drawn_letters_and_scribbles_and_not_drawn_digits():
    letters = mnistlab.predict(drawn.letters(160, seed=11))
    scribbles = mnistlab.predict(drawn.scribbles(80, seed=12))
    digits, labels = drawn.digits(100, seed=13)
    read = mnistlab.predict(digits)
    assert flagged(letters) >= 0.55 and flagged(scribbles) >= 0.55, (flagged(letters), flagged(scribbles))
    assert flagged(read) <= 0.03 and np.mean([r.label == y for r, y in zip(read, labels)]) >= 0.9
    reasons = {reason for r in letters for reason in r.reasons}
    assert "it looks like none of the digits the model learned from" in reasons
    mnist_test = mnistlab.predict(list(mnistlab.load("mnist").test.images[:500].numpy()))
    assert flagged(mnist_test) <= 0.03


def test_fitted_once_stored_in_the_cache_for_a_loose_checkpoint_and_read_back_the_same():
    predictor = default_predictor()
    nd = ood.not_digit_model(predictor)
    file = ood.file_for(DEFAULT_MODEL)
    assert file.is_file() and file.parent.name == "ood"  # the user cache: the package is not written to
    with safe_open(file, "pt") as f:
        meta = json.loads(f.metadata()["mnistlab-ood"])
    assert meta["k"] == ood.K and meta["reference"]["images"] == 10 * ood.PER_CLASS
    assert "validation holdout" in meta["calibration"]["source"]
    assert abs(meta["calibration"]["flagged"] - ood.FLAG_RATE) < 0.005  # the threshold does what it says
    again = ood.load_file(file)
    feats = torch.rand(7, again.reference.shape[1], generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.score(feats), ood.NotDigitModel(nd.reference.half(), nd.threshold, {}, nd.k).score(feats))
    s = again.score(feats)
    assert ((s >= 0) & (s < 1)).all()


@pytest.mark.slow
def test_a_run_gets_its_own_not_a_digit_model_in_its_directory(tmp_path):
    run = mnistlab.train("seed-mlp", epochs=1, train_subset=3000, validation=500, out=str(tmp_path), name="r",
                         quiet=True)
    results = mnistlab.predict(drawn.digits(20, seed=3)[0], model=run.run_dir)
    stored = RunDir(run.run_dir).path / RunDir.OOD
    assert stored.is_file()
    nd = ood.load_file(stored)
    assert nd.meta["reference"]["split"] == "train less the validation holdout"
    assert nd.meta["calibration"]["images"] == 500
    assert len(results) == 20
    # an ensemble has none: predict falls back to the top probability, and says so in its reasons
    ens = mnistlab.ensemble([run.run_dir, run.run_dir], out=str(tmp_path / "ens.safetensors"))
    assert ood.not_digit_model(load_predictor(ens.saved)) is None


def test_a_damaged_or_hostile_file_is_a_clear_error(tmp_path):
    nd = ood.NotDigitModel(torch.rand(20, 6), 0.3, {"format": ood.FORMAT, "version": 1, "method": "knn-cosine",
                                                    "k": 5, "threshold": 0.3, "feature_dim": 6, "reference": {},
                                                    "calibration": {}})
    good = ood.save(nd, tmp_path / "good.safetensors").read_bytes()
    assert ood.load_file(tmp_path / "good.safetensors").k == 5
    bad = tmp_path / "bad.safetensors"

    @settings(max_examples=300, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.integers(0, len(good) - 1), st.integers(1, 255), st.integers(0, len(good)))
    def check(at, xor, cut):
        data = bytearray(good)
        data[at] ^= xor
        bad.write_bytes(bytes(data[:max(cut, at + 1)]))
        try:
            got = ood.load_file(bad)
        except MnistlabError as exc:
            assert str(bad) in str(exc)
            return
        assert got.reference.shape[1] == got.meta["feature_dim"] and torch.isfinite(got.reference).all()

    check()
    from safetensors.torch import save_file

    for tensors, meta in (({"reference": torch.full((3, 6), float("nan")).half()}, nd.meta),
                          ({"reference": torch.rand(3, 7).half()}, nd.meta),
                          ({"reference": torch.rand(3, 6)}, nd.meta),
                          ({"reference": torch.rand(3, 6).half()}, {**nd.meta, "k": -1}),
                          ({"reference": torch.rand(3, 6).half(), "x": torch.zeros(1)}, nd.meta)):
        save_file(tensors, bad, metadata={"mnistlab-ood": json.dumps(meta)})
        with pytest.raises(MnistlabError, match="bad.safetensors"):
            ood.load_file(bad)
    with pytest.raises(MnistlabError, match="features per image"):
        nd.distance(torch.rand(2, 5))


@pytest.mark.slow
def test_bench_ood_meets_the_goals_and_beats_the_top_probability():
    from mnistlab.bench.ood import GOAL_AUROC, bench_ood

    rows = {r["name"]: r for r in bench_ood(quick=True)}
    assert rows["MNIST test digits"]["flagged_now"] <= 0.02
    assert rows["other writers (UCI 8x8, upscaled)"]["flagged_now"] <= 0.05
    for r in rows.values():
        if r["kind"] == "not digits":
            assert r["auroc_now"] >= GOAL_AUROC - 0.02 and r["auroc_now"] > r["auroc_before"], r


def test_evaluate_reports_the_share_flagged_when_asked(tmp_path, capsys):
    from mnistlab.cli import main as cli_main

    ev = mnistlab.evaluate(DEFAULT_MODEL, out=tmp_path, pictures=False, not_digit=True)
    assert ev.record["not_digit"]["images"] == 2000 and ev.record["not_digit"]["flagged"] <= 0.03
    assert cli_main(["evaluate", str(DEFAULT_MODEL), "--out", str(tmp_path), "--no-pictures", "--not-digit"]) == 0
    assert "not a digit:" in capsys.readouterr().out
