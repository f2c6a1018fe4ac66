"""Maps (`mnistlab map`): clustered data comes out as separate islands, seeded runs repeat, a run's map
marks its real mistakes, and every file the map promises is written and readable."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mnistlab.analysis.maps import build_map, embed, separation
from mnistlab.cli import main
from mnistlab.errors import MnistlabError
from mnistlab.models.predictor import load_predictor

DEFAULT_MODEL = "src/mnistlab/_models/default.safetensors"


def clustered(n_per: int = 60, k: int = 4, dim: int = 64, seed: int = 0):
    """k tight Gaussian clusters far apart in `dim` dimensions (more than the PCA's 50)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, (k, dim))
    x = np.concatenate([c + rng.normal(0, 1, (n_per, dim)) for c in centres]).astype(np.float32)
    return x, np.repeat(np.arange(k), n_per)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["umap", "tsne"])
def test_map_of_clustered_data_separates_the_clusters_and_repeats(method):
    x, y = clustered()
    coords, settings = embed(x, method, seed=0)
    assert coords.shape == (len(x), 2) and coords.dtype == np.float32 and np.isfinite(coords).all()
    assert settings["pca_first"] == 50
    assert separation(coords, y) == 1.0
    # islands: every cluster's spread is well below the distance between cluster centres
    centres = np.stack([coords[y == c].mean(0) for c in range(4)])
    spread = max(np.linalg.norm(coords[y == c] - centres[c], axis=1).max() for c in range(4))
    gaps = [np.linalg.norm(centres[a] - centres[b]) for a in range(4) for b in range(a + 1, 4)]
    assert min(gaps) > 2 * spread
    # the same seed gives the same map; another seed, another
    assert np.array_equal(coords, embed(x, method, seed=0)[0])
    assert not np.array_equal(coords, embed(x, method, seed=1)[0])
    # the measure itself can fail: shuffled labels do not separate
    assert separation(coords, np.random.default_rng(0).permutation(y)) < 0.6
    if method == "umap":  # umap-learn's kernels went to numba's disk cache: the next process loads them
        import umap.umap_

        stats = umap.umap_.smooth_knn_dist.stats
        assert stats.cache_path and sum(stats.cache_hits.values()) + sum(stats.cache_misses.values()) > 0
        assert list(Path(stats.cache_path).glob("umap_.smooth_knn_dist-*.nbi"))


@pytest.mark.slow
def test_map_of_a_model_marks_its_mistakes_and_writes_every_file(tmp_path, mnist):
    r = build_map(DEFAULT_MODEL, method="tsne", n=400, seed=3, out=str(tmp_path / "m"), quiet=True)
    assert r["features"] == "penultimate" and r["n"] == 400 and r["dataset"] == "mnist"
    coords = np.load(r["files"]["npy"])
    assert coords.shape == (400, 2)
    rows = list(csv.DictReader(open(r["files"]["csv"])))
    assert len(rows) == 400
    index = np.array([int(row["index"]) for row in rows])
    assert len(set(index)) == 400 and (np.diff(index) > 0).all()
    labels = mnist.test.labels[index].numpy()
    assert [int(row["label"]) for row in rows] == labels.tolist()
    # the predictions are the model's own, so the marked mistakes are its real ones
    preds = load_predictor(DEFAULT_MODEL).probs(mnist.test.images[index]).argmax(1).numpy()
    assert [int(row["prediction"]) for row in rows] == preds.tolist()
    assert r["mistakes"] == int((preds != labels).sum())
    assert np.allclose([[float(row["x"]), float(row["y"])] for row in rows], coords, atol=1e-4)
    saved = json.loads((tmp_path / "m" / "map.json").read_text())
    assert saved["seed"] == 3 and saved["method"] == "tsne" and saved["separation_5nn"] > 0.9
    page = (tmp_path / "m" / "map.html").read_text()
    assert "http://" not in page and "https://" not in page  # self-contained: nothing to fetch
    assert "data:image/png;base64," in page and '"label":[' in page
    assert (tmp_path / "m" / "map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_learned_features_separate_digits_better_than_pixels(tmp_path):
    common = {"method": "tsne", "n": 600, "seed": 0, "quiet": True}
    learned = build_map(DEFAULT_MODEL, out=str(tmp_path / "a"), **common)
    pixels = build_map(DEFAULT_MODEL, features="pixels", out=str(tmp_path / "b"), **common)
    assert pixels["dimensions"] == 784 and learned["dimensions"] != 784
    assert learned["separation_5nn"] > pixels["separation_5nn"]


@pytest.mark.slow
def test_map_of_a_run_goes_in_the_run_and_the_report_shows_it(tmp_path):
    from mnistlab.reporting.run_report import report
    from mnistlab.training.config import resolve
    from mnistlab.training.engine import train

    cfg = resolve(None, {"model": "logreg", "epochs": 1, "train_subset": 2000, "validation": 500,
                         "out": str(tmp_path), "progress": False})
    run = train(cfg, quiet=True)["run_dir"]
    r = build_map(run, method="tsne", n=300, quiet=True)
    assert r["files"]["html"].startswith(run) and "maps/tsne-penultimate-test" in r["files"]["html"]
    page = (tmp_path / "report").joinpath("report.html")
    report([run], out=tmp_path / "report")
    text = page.read_text()
    assert "Maps" in text and "tsne-penultimate-test/map.html" in text


def test_bad_map_arguments_get_clear_errors(tmp_path):
    with pytest.raises(MnistlabError, match="--features penultimate needs a run"):
        build_map(None, features="penultimate")
    with pytest.raises(MnistlabError, match="--method 'pca'"):
        build_map(None, method="pca")
    with pytest.raises(MnistlabError, match="--features 'logits'"):
        build_map(DEFAULT_MODEL, features="logits")
    with pytest.raises(MnistlabError, match="--split 'val'"):
        build_map(None, split="val")
    with pytest.raises(MnistlabError, match="--n 1: expected 20 to 10000"):
        build_map(None, n=1)
    with pytest.raises(MnistlabError, match="--n 20000"):
        build_map(None, n=20000)
    with pytest.raises(MnistlabError, match="does not exist"):
        build_map(str(tmp_path / "nothing"))


@pytest.mark.slow
def test_map_command_line(tmp_path, capsys):
    out = tmp_path / "cli"  # the command's parser and handler, in this process (a new one costs ~4 s)
    assert main(["map", "--method", "tsne", "--n", "200", "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out.strip().endswith("map.html") and (out / "map.json").is_file()
    assert json.loads((out / "map.json").read_text())["features"] == "pixels"
    assert main(["map", "--method", "isomap"]) == 2
    err = capsys.readouterr().err
    assert "--method" in err and "'isomap'" in err and "did you mean 'umap'" in err and "Traceback" not in err


def test_ensembles_and_classical_models_have_no_single_feature_space(tmp_path):
    from mnistlab.analysis.ensembles import build, save
    from mnistlab.analysis.maps import learned_features

    ens = save(build([DEFAULT_MODEL, DEFAULT_MODEL]), tmp_path / "two.safetensors")
    with pytest.raises(MnistlabError, match="ensemble of 2 models"):
        learned_features(load_predictor(ens), torch.zeros(2, 28, 28, dtype=torch.uint8))


@pytest.mark.parametrize("name", [n for n in __import__("mnistlab.models", fromlist=["MODELS"]).MODELS])
def test_learned_features_are_what_every_zoo_models_head_reads(name):
    from mnistlab.analysis.maps import learned_features
    from mnistlab.data.normalization import Normalization, to_unit
    from mnistlab.models import create_model
    from mnistlab.models.heads import heads_of
    from mnistlab.models.predictor import Predictor

    torch.manual_seed(0)
    model = create_model(name, (1, 28, 28), 10).eval()
    norm = Normalization("standardize", (0.13,), (0.31,))
    meta = {"source": name, "classes": [str(i) for i in range(10)], "in_shape": [1, 28, 28], "num_classes": 10}
    images = torch.randint(0, 256, (6, 28, 28), dtype=torch.uint8)
    feats = learned_features(Predictor([model], [norm], "single", meta), images, batch_size=4)
    head = dict(model.named_modules())[heads_of(model)[0]]
    seen = []
    handle = head.register_forward_pre_hook(lambda m, args: seen.append(args[0].flatten(1)))
    with torch.no_grad():
        model(norm.apply(to_unit(images)))
    handle.remove()
    assert feats.shape[0] == 6 and torch.allclose(feats, seen[0], atol=1e-5)
