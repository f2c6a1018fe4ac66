"""The data audit: flipped labels found first, folds that never score what they trained on, cleanlab
fed out-of-fold probabilities, the command's files and cache, and clear errors for bad arguments."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import mnistlab
from mnistlab import MnistlabError
from mnistlab.analysis import data_audit
from mnistlab.cli import main as cli_main


def small(mnist, n_train: int = 3000, n_test: int = 1500, name: str = "mnist-small") -> mnistlab.Dataset:
    """A slice of MNIST as a dataset of one's own: what the audit's plumbing tests run on."""
    return mnistlab.Dataset.from_arrays(mnist.train.images[:n_train].numpy(), mnist.train.labels[:n_train].numpy(),
                                        mnist.test.images[:n_test].numpy(), mnist.test.labels[:n_test].numpy(),
                                        name=name)


def flipped_pool(mnist, n: int = 4000, flips: int = 40, seed: int = 0):
    """The first n test images with `flips` labels moved to another class at known positions."""
    rng = np.random.default_rng(seed)
    labels = mnist.test.labels[:n].clone()
    where = rng.choice(n, flips, replace=False)
    for i in where:
        labels[i] = int((labels[i] + rng.integers(1, 10)) % 10)
    data = data_audit.Pool(mnist.test.images[:n], labels, np.full(n, "test"), np.arange(n))
    return data, set(int(i) for i in where)


@pytest.mark.slow
def test_flipped_labels_are_ranked_first_and_no_fold_scores_what_it_trained_on(mnist):
    data, flipped = flipped_pool(mnist)
    oof = data_audit.out_of_fold(mnist, data, folds=4, recipe="fast", seed=0, overrides={"epochs": 3})
    assert len(oof["trained_on"]) == 4
    for k, trained in enumerate(oof["trained_on"]):  # the record of what each fold's model saw
        assert np.array_equal(trained, np.flatnonzero(oof["fold"] != k))  # fold k's model never saw fold k
    assert sorted(np.bincount(oof["fold"])) == [1000] * 4
    table, _ = data_audit.find_issues(data.labels.numpy(), oof["probs"], oof["features"], list(mnist.classes), data)
    # the ranking (every image, worst label first): the flipped ones at its head
    ranked = data_audit.ranking(data, oof["probs"], list(mnist.classes), table)["index"].to_numpy()
    assert len(set(ranked[:len(flipped)].tolist()) & flipped) >= 0.8 * len(flipped)
    assert set(ranked[:2 * len(flipped)].tolist()) >= flipped
    # confident learning's flags: fold models trained on 3,000 images (about 96% out of fold) leave it
    # less sure than the ranking, so its bounds are looser
    labels_flagged = table[table["issue"].isin(["mislabeled", "ambiguous"])]
    top = set(labels_flagged["index"].head(len(flipped)))
    precision = len(top & flipped) / max(len(top), 1)
    recall = len(set(labels_flagged["index"]) & flipped) / len(flipped)
    assert precision >= 0.7 and recall >= 0.7, (precision, recall, len(labels_flagged))
    first = labels_flagged.iloc[0]
    assert first["index"] in flipped and first["given_label"] != first["suggested_label"]


@pytest.mark.slow
def test_cleanlab_gets_the_out_of_fold_probabilities(tmp_path, monkeypatch):
    import cleanlab.filter

    seen = []
    real = cleanlab.filter.find_label_issues

    def recording(labels, pred_probs, **kw):
        seen.append(np.array(pred_probs))
        return real(labels, pred_probs, **kw)

    monkeypatch.setattr(cleanlab.filter, "find_label_issues", recording)
    ds = small(mnistlab.load("mnist"))
    table, oof, _, _ = data_audit._audit(ds.name, split="test", folds=3, recipe="fast", seed=0, out=tmp_path)
    assert len(seen) == 1 and np.array_equal(seen[0], oof["probs"])
    assert 0.85 < oof["accuracy"] < 1.0  # scored by models that never saw the image: not in-sample perfect
    assert list(table.columns[:4]) == ["index", "split", "index_in_split", "issue"]
    # each fold's model trained on all of train and the other two test folds, never its own fold
    folds = json.loads((tmp_path / "folds.json").read_text())
    assert [f["trained_on"] for f in folds] == [{"test": 1500 - f["scored"], "train": 3000} for f in folds]
    assert sum(f["scored"] for f in folds) == 1500 and all(f["overlap_with_own_fold"] == 0 for f in folds)
    again = mnistlab.audit(ds, split="test", folds=3, model="fast", out=tmp_path, quiet=True)  # the public door
    assert again.cached and again.table.equals(table.drop(columns=[]))  # an Audit: figures, and the table
    other = mnistlab.audit(ds, split="test", folds=3, model="fast", seed=1, out=tmp_path, quiet=True)
    assert not other.cached  # another seed is another experiment, not the cache


def test_a_damaged_or_foreign_cache_is_recomputed_never_trusted(tmp_path):
    """oof.json / oof.npz are files a user's directory holds: whatever they contain, read_cache gives
    the scores only when they are whole and match the audit's key, else None; never a traceback."""
    import io

    from hypothesis import given, settings
    from hypothesis import strategies as st

    key = {"dataset": "mnist", "n": 4, "folds": 2}
    good = {"probs": np.full((4, 10), 0.1, np.float32), "features": np.zeros((4, 3), np.float32),
            "fold": np.array([0, 1, 0, 1])}

    def write(meta_text: str, npz: bytes):
        (tmp_path / "oof.json").write_text(meta_text)
        (tmp_path / "oof.npz").write_bytes(npz)

    buf = io.BytesIO()
    np.savez_compressed(buf, **good)
    whole = buf.getvalue()
    meta = json.dumps({"key": key, "seconds": 1.0, "accuracy": 0.5})
    write(meta, whole)
    assert data_audit.read_cache(tmp_path, key, 10)["cached"]
    assert data_audit.read_cache(tmp_path, {**key, "folds": 3}, 10) is None  # another experiment's scores
    assert data_audit.read_cache(tmp_path, key, 26) is None  # another dataset's classes

    @settings(max_examples=120, deadline=None)
    @given(st.binary(max_size=200), st.integers(0, len(whole)), st.text(max_size=40))
    def check(noise, cut, meta_text):
        write(meta, whole[:cut] + noise)  # truncated or corrupt archive
        got = data_audit.read_cache(tmp_path, key, 10)
        assert got is None or all(np.array_equal(got[k], good[k]) for k in good)  # never wrong scores
        write(meta_text, whole)  # any metadata text
        assert data_audit.read_cache(tmp_path, key, 10) is None

    check()
    for bad in ({"probs": good["probs"][:3]}, {"fold": np.zeros(5)}, {"probs": np.full((4, 10), np.nan)}):
        buf = io.BytesIO()
        np.savez_compressed(buf, **{**good, **bad})
        write(meta, buf.getvalue())
        assert data_audit.read_cache(tmp_path, key, 10) is None


def test_knn_graph_is_exact_and_finds_a_planted_duplicate():
    from mnistlab.analysis.data_audit import knn_graph

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(300, 20, generator=gen)
    x[7] = x[123] * 1.0001  # the same direction
    g = knn_graph(x, k=3, chunk=64)
    assert g.shape == (300, 300) and g.nnz == 900
    assert g[7].indices[0] == 123 and g[7].data[0] < 1e-6
    unit = x / x.norm(dim=1, keepdim=True)
    brute = (1 - unit @ unit.T).clamp_min(0).fill_diagonal_(float("inf")).topk(3, largest=False)
    assert np.array_equal(g.indices.reshape(300, 3), brute.indices.numpy())
    assert np.allclose(g.data.reshape(300, 3), brute.values.numpy(), atol=1e-6)
    dense = g.toarray()  # each pair's distance computed once: the same both ways where both are kept
    both = (dense > 0) & (dense.T > 0)
    assert both.any() and np.array_equal(dense[both], dense.T[both])
    with pytest.raises(MnistlabError, match="needs more than 3 images, and has 3"):
        knn_graph(x[:3], k=3)


@pytest.mark.slow
def test_the_command_writes_its_files_and_refuses_bad_arguments(tmp_path, capsys, mnist):
    from PIL import Image

    folder = tmp_path / "digits"  # a dataset as a user has one: a folder of images, one subfolder per class
    for split, part, n in (("train", mnist.train, 600), ("test", mnist.test, 300)):
        for i in range(n):
            (folder / split / str(int(part.labels[i]))).mkdir(parents=True, exist_ok=True)
            Image.fromarray(part.images[i].numpy()).save(folder / split / str(int(part.labels[i])) / f"{i}.png")
    out = tmp_path / "audit"
    # the command's parser and handler, in this process (a new one costs ~4 s of start-up)
    assert cli_main(["audit", str(folder), "--split", "test", "--folds", "2", "--top", "10", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    # 150 images a fold teach the fold models little: the audit says its flags mean little (finding planted
    # flips is tested above, on real-sized data)
    assert "out-of-fold accuracy" in printed and "warning: the fold models read only" in printed
    rows = json.loads((out / "issues.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    assert sum(summary["issues"].values()) == len(rows) == len((out / "issues.csv").read_text().splitlines()) - 1
    assert set(summary["per_class"]) == {str(i) for i in range(10)}
    assert summary["issues"]["mislabeled"] > 0 and (out / "top-label-issues.png").stat().st_size > 1000
    assert (out / "test-top20.png").stat().st_size > 1000 and summary["gallery_test"]
    assert (out / "ranking-top.png").stat().st_size > 1000
    ranking = (out / "ranking.csv").read_text().splitlines()
    assert len(ranking) == 301 and ranking[0].startswith("rank,index,split,index_in_split,given_label")
    quality = [float(line.split(",")[6]) for line in ranking[1:]]
    assert quality == sorted(quality) and [line.split(",")[0] for line in ranking[1:4]] == ["1", "2", "3"]
    assert not list(out.glob("*.part"))
    for args, words in ((["--folds", "1"], "--folds 1: expected 2 to"),
                        (["--split", "val"], "invalid choice"),
                        (["--model", "nope"], "nope"),
                        (["--top", "0"], "--top 0: expected a whole number from 1"),
                        (["--split", "test", "--clean-seeds", "1"], "--clean-seeds needs the training images")):
        try:  # in this process: the arguments are refused before any work, as in a new one
            code = cli_main(["audit", "mnist", "--out", str(out), *args])
        except SystemExit as exc:  # argparse's own refusals
            code = exc.code
        err = capsys.readouterr().err
        assert code == 2 and words in err and "Traceback" not in err, (args, err)


@pytest.mark.slow
def test_cleaning_effect_trains_with_the_flagged_images_kept_removed_and_relabelled(mnist):
    import pandas as pd

    table = pd.DataFrame({"index": [0, 1, 2], "split": ["train"] * 3, "index_in_split": [0, 1, 2],
                          "issue": ["mislabeled"] * 3, "given_label": ["5", "0", "4"],
                          "suggested_label": ["3", "6", "9"]})
    ds = small(mnist, n_train=8000, n_test=100, name="mnist-8000")  # the experiment's plumbing, at a small scale
    n_val = 1000
    effect = data_audit.clean_effect(ds, table, recipe="fast", seeds=[0], overrides={"train_subset": 0},
                                    validation=n_val)
    variants = effect["variants"]
    val = set(ds.train.validation_indices(n_val).tolist())
    expected_flagged = sum(1 for i in (0, 1, 2) if i not in val)
    assert effect["flagged_training_images"] == expected_flagged
    assert variants["as given"]["training_images"] == 8000 - n_val
    assert variants["flagged removed"]["training_images"] == 8000 - n_val - expected_flagged
    assert all(0.85 < v["mean"] < 1 for v in variants.values())


@pytest.mark.slow
def test_fifty_flipped_test_labels_are_found_at_the_top_of_the_ranking(mnist, tmp_path):
    """Issue 30's check: 50 labels of MNIST test moved to another class; the audit of the test split
    (each fold's model trained on the first 15,000 training images and the other fold) ranks at
    least 45 of them among its first 100 of 10,000 (49 when measured; a quarter of the training
    images keeps the test's cost down, and weaker fold models only make the property harder)."""
    rng = np.random.default_rng(30)
    labels = mnist.test.labels.clone()
    where = rng.choice(len(labels), 50, replace=False)
    for i in where:
        labels[i] = int((labels[i] + rng.integers(1, 10)) % 10)
    ds = mnistlab.Dataset.from_arrays(mnist.train.images[:15_000].numpy(), mnist.train.labels[:15_000].numpy(),
                                      mnist.test.images.numpy(), labels.numpy(), name="mnist-flipped")
    result = mnistlab.audit(ds, split="test", folds=2, model="fast", out=tmp_path, quiet=True)
    import pandas as pd

    ranking = pd.read_csv(tmp_path / "ranking.csv")
    top = set(ranking["index_in_split"].head(100))
    found = len(top & {int(i) for i in where})
    print(f"planted label errors in the top 100: {found} of 50; out-of-fold accuracy {result.oof_accuracy:.4f}")
    assert found >= 45, found
