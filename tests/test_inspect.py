"""`mnistlab inspect`: filters, feature maps, top images per unit and saliency of a trained model."""

from __future__ import annotations

import json

import pytest
import torch

from mnistlab.errors import MnistlabError
from mnistlab.training import config
from mnistlab.training.engine import train


def quick_run(tmp_path, recipe, name):
    cfg = config.resolve(recipe, {"epochs": 1, "validation": 0, "labels_per_class": 30, "progress": False,
                                      "threads": 1, "out": str(tmp_path), "name": name})
    return train(cfg, quiet=True)["run_dir"]


@pytest.mark.slow
def test_inspect_draws_what_a_cnn_learned_and_the_report_shows_it(tmp_path, mnist):
    from mnistlab.analysis.inspection import inspect_model, saliency
    from mnistlab.data.normalization import Normalization
    from mnistlab.models.heads import penultimate
    from mnistlab.models.predictor import load_model
    from mnistlab.reporting.run_report import report

    run = quick_run(tmp_path, "fast", "cnn")
    r = inspect_model(run, images=[0, 5], units=4, top=5)
    assert r["first_layer"] == "0.0" and r["conv_layers"] == ["0.0", "0.3", "0.7"]
    assert set(r["pictures"]) == {"filters", "featuremaps-0", "featuremaps-5", "top-units", "saliency"}
    for path in r["pictures"].values():
        assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert json.loads(open(f"{run}/inspect/inspect.json").read())["units"] == r["units"]
    # the top images of a unit are the test images with the highest activation of that unit
    model, meta = load_model(run)
    norm = Normalization.from_dict(meta["normalization"])
    x = norm.apply(mnist.test.images.float().div(255)[:, None])
    with torch.no_grad():
        feats = penultimate(model, x)
    unit = r["units"][0]
    assert feats[unit["top_images"], unit["unit"]].tolist() == feats[:, unit["unit"]].topk(5).values.tolist()
    grad, pred = saliency(model, x[:3])
    assert grad.shape == (3, 28, 28) and (grad >= 0).all() and grad.sum() > 0
    page = open(report([run], out=str(tmp_path / "rep"))["html"]).read()
    assert "What the network learned" in page and "first-layer filters" in page


@pytest.mark.slow
def test_inspect_draws_a_linear_models_templates(tmp_path):
    from mnistlab.analysis.inspection import inspect_model

    run = quick_run(tmp_path, "seed-mlp", "mlp")
    r = inspect_model(run, images=[1], units=2, top=3, out=str(tmp_path / "o"))
    assert r["first_layer"] == "1" and r["conv_layers"] == [] and "featuremaps-1" not in r["pictures"]
    assert (tmp_path / "o" / "filters.png").is_file()


def test_inspect_explains_bad_arguments(tmp_path, capsys):
    from mnistlab.cli import main

    run = quick_run(tmp_path, "fast", "cnn")
    for args, fragment in [(["--images", "10000"], "test split has images 0 to 9999"),
                           (["--images", "a"], "--images 'a'"), (["--split", "val"], "invalid choice: 'val' (choose from 'test', 'train')"),
                           (["--units", "0"], "expected 1 to 32 units")]:
        assert main(["inspect", run, *args]) != 0
        err = capsys.readouterr().err
        assert fragment in err and "Traceback" not in err, (args, err)
    with pytest.raises(MnistlabError):
        from mnistlab.analysis.inspection import inspect_model

        inspect_model(str(tmp_path / "nothing"))
