"""ONNX export: ONNX Runtime's outputs equal PyTorch's on real test images, at any batch size."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from mnistlab import MnistlabError
from mnistlab.analysis import ensembles
from mnistlab.cli import main as cli_main
from mnistlab.models.predictor import load_predictor
from mnistlab.serving.onnx_export import export
from mnistlab.serving.prediction import DEFAULT_MODEL
from mnistlab.training.config import resolve
from mnistlab.training.engine import train


def ort_probs(path, images_u8):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = (images_u8.float() / 255).unsqueeze(1).numpy()
    return session.run(["probabilities"], {"images": x})[0]


@pytest.mark.slow
def test_default_model_exports_and_matches_pytorch(mnist, tmp_path, capsys):
    out = tmp_path / "default.onnx"
    assert cli_main(["export", str(DEFAULT_MODEL), "--format", "onnx", "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    model = onnx.load(out)
    onnx.checker.check_model(model)
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["classes"]) == list("0123456789") and meta["dataset"] == "mnist"
    images = mnist.test.images[:2000]
    expected = load_predictor(DEFAULT_MODEL).probs(images).numpy()
    got = ort_probs(out, images)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert (got.argmax(1) == expected.argmax(1)).all()
    for n in (1, 37):  # the batch axis is dynamic
        assert ort_probs(out, images[:n]).shape == (n, 10)


@pytest.mark.slow
def test_mean_ensemble_exports_as_one_graph(mnist, tmp_path):
    runs = [train(resolve(None, {"model": m, "train_subset": 3000, "validation": 500, "epochs": 1, "seed": s,
                                 "normalize": norm, "out": str(tmp_path), "progress": False}), quiet=True)["run_dir"]
            for m, s, norm in (("mlp", 0, "standardize"), ("lenet5", 1, "scale"))]
    path = ensembles.save(ensembles.build(runs, "mean"), tmp_path / "two.safetensors")
    out = export(path, out=tmp_path / "two.onnx")
    images = mnist.test.images[:500]
    np.testing.assert_allclose(ort_probs(out, images), load_predictor(path).probs(images).numpy(),
                               atol=1e-5)
    vote = ensembles.save(ensembles.build(runs, "vote"), tmp_path / "vote.safetensors")
    with pytest.raises(MnistlabError, match="vote ensemble has no probabilities"):
        export(vote, out=tmp_path / "vote.onnx")
    with pytest.raises(MnistlabError, match="expected a file name ending in .onnx"):
        export(path, out=tmp_path / "two.pt")
    with pytest.raises(MnistlabError, match="an ensemble has no one feature space"):
        export(path, out=tmp_path / "two-score.onnx", not_digit=True)
    assert not (tmp_path / "vote.onnx").exists() and not (tmp_path / "two-score.onnx").exists()


@pytest.mark.slow
def test_the_not_digit_score_goes_into_the_graph_and_matches_predict(mnist, tmp_path, capsys):
    from mnistlab.data.drawn import letters
    from mnistlab.data.mnist_form import to_mnist
    from mnistlab.models.ood import scores_of

    out = tmp_path / "with-score.onnx"
    assert cli_main(["export", str(DEFAULT_MODEL), "--not-digit", "--out", str(out)]) == 0
    model = onnx.load(out)
    assert [o.name for o in model.graph.output] == ["probabilities", "not_digit_score"]
    meta = json.loads({p.key: p.value for p in model.metadata_props}["not_digit"])
    assert meta["flag_above"] == 0.5 and meta["k"] == 5
    predictor = load_predictor(DEFAULT_MODEL)
    drawn = torch.stack([torch.from_numpy(to_mnist(img)[0]) for img in letters(100, seed=1)])
    images = torch.cat([mnist.test.images[:300], drawn])  # digits, then letters drawn as on the page
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    probs, score = session.run(None, {"images": (images.float() / 255).unsqueeze(1).numpy()})
    np.testing.assert_allclose(probs, predictor.probs(images).numpy(), atol=1e-5)
    expected = scores_of(predictor, images).numpy()
    np.testing.assert_allclose(score, expected, atol=2e-3)  # fp16 reference in the graph, fp16 in the file
    # at the calibrated threshold: few digits flagged, most letters (bench ood: AUROC 0.99 for letters)
    assert (score[:300] > 0.5).mean() <= 0.05 and (score[300:] > 0.5).mean() >= 0.6
