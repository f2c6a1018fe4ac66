"""One answer to "which model does this reference mean, and where do its outputs go" (models/source.py),
checked through every verb that takes a model: each kind of reference a user passes (a run directory as
text or path, a `Run`, the run's best or last checkpoint, a checkpoint on its own, a group of runs) gives
the same model and the same output place from evaluate, attack, inspect, map, export and predict."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import mnistlab
from mnistlab import MnistlabError
from mnistlab.models.default import DEFAULT_MODEL
from mnistlab.models.predictor import load_predictor
from mnistlab.models.source import locate, locate_each

# settings of this file's own (the run's eval/ and inspect/ are written here: no other test shares it)
SETTINGS = {"model": "mlp", "train_subset": 700, "validation": 200, "epochs": 1}


@pytest.fixture(scope="module")
def run(trained):
    return trained(**SETTINGS)


@pytest.fixture(scope="module")
def group(trained):
    return trained(**SETTINGS, seeds="0-1")


def references(run) -> dict:
    """Every way a user names the run's model, and the run directory each must resolve to."""
    d = run.run_dir
    return {"directory (text)": str(d), "directory (Path)": d, "Run object": run,
            "best checkpoint": d / "best.safetensors", "last checkpoint": d / "last.safetensors"}


def test_every_kind_of_reference_resolves_to_its_run_and_its_weights(run, tmp_path):
    for kind, ref in references(run).items():
        found = locate(ref)
        assert found.run is not None and found.run.path == run.run_dir, kind
        want = "last.safetensors" if kind == "last checkpoint" else "best.safetensors"
        assert found.checkpoint == run.run_dir / want, kind
        assert found.output_dir(None, "eval") == run.run_dir / "eval", kind
        assert found.output_dir(tmp_path / "mine", "eval") == tmp_path / "mine", kind
    lone = tmp_path / "lone.safetensors"
    shutil.copy(run.run_dir / "best.safetensors", lone)
    found = locate(lone)
    assert found.run is None and found.checkpoint == lone
    assert found.output_dir(None, "eval") == tmp_path / "lone-eval"


def test_a_group_is_several_models_one_clear_error_where_one_is_meant(group):
    assert [f.run.path for f in locate_each(group)] == [Path(r) for r in group.runs]
    with pytest.raises(MnistlabError, match="is a group of 2 runs") as e:
        locate(group)
    assert "pass one of them" in e.value.hint
    for verb in (mnistlab.evaluate, mnistlab.inspect, mnistlab.export):
        with pytest.raises(MnistlabError, match="is a group of 2 runs"):
            verb(group)


def test_evaluate_of_any_reference_writes_into_the_run_with_its_attacks_listed(run):
    """evaluate RUN/best.safetensors once wrote best-eval/ beside the run and dropped its robust rows."""
    mnistlab.attack(run, method="fgsm", eps="0.1", n=100, checks=False, quiet=True)
    seen = {}
    for kind, ref in references(run).items():
        if kind == "last checkpoint":
            continue  # other weights: the run's figures are the best weights'
        ev = mnistlab.evaluate(ref, pictures=False)
        assert Path(ev.record["json"]) == run.run_dir / "eval" / "test.json", kind
        assert [r["attack"] for r in ev.record["robust"]] == ["FGSM linf"], kind
        assert ev.record["run_reported"]["same"], kind
        seen[kind] = (ev.errors, ev.record["robust"][0]["accuracy"])
    assert len(set(seen.values())) == 1, seen  # the same model each time
    assert not list(run.run_dir.parent.glob("*-eval"))  # nothing beside the run


def test_attack_inspect_and_map_write_into_the_run_from_a_checkpoint(run, tmp_path):
    best = run.run_dir / "best.safetensors"
    report = mnistlab.attack(best, method="fgsm", eps="0.05", n=50, checks=False, quiet=True)
    assert Path(report.docs[0]["json"]).parent == run.run_dir / "eval"
    shown = mnistlab.inspect(best, images="0", units=2, top=2)
    assert all(Path(p).parent == run.run_dir / "inspect" for p in shown.record["pictures"].values())
    pytest.importorskip("umap")
    drawn = mnistlab.map(best, n=300, quiet=True)
    assert Path(drawn.record["files"]["npy"]).parent.parent == run.run_dir / "maps"
    lone = tmp_path / "lone.safetensors"
    shutil.copy(best, lone)
    shown = mnistlab.inspect(lone, images="0", units=2, top=2)
    assert all(Path(p).parent == tmp_path / "lone-inspect" for p in shown.record["pictures"].values())


def test_predict_and_export_use_the_model_they_are_given(run, tmp_path, mnist):
    """predict(img, model=run) once could have answered from the packaged model and no test would see."""
    digit = mnist.test.images[0].numpy()
    want = None
    for kind, ref in references(run).items():
        if kind == "last checkpoint":
            continue
        (p,) = mnistlab.predict([digit], model=ref)
        probs = load_predictor(run.run_dir).probs(torch.from_numpy(p.image)[None, None])[0]
        assert np.allclose(p.probabilities, probs.tolist(), atol=1e-6), kind
        packaged = mnistlab.predict([digit])[0].probabilities
        assert not np.allclose(p.probabilities, packaged, atol=1e-3), kind  # a small MLP is not the packaged CNN
        want = want or p.probabilities
        assert p.probabilities == want, kind
    saved = mnistlab.export(run.run_dir / "best.safetensors", out=str(tmp_path / "m.onnx"))
    assert saved.record["file"] == str(tmp_path / "m.onnx")


def test_default_names_the_packaged_model_with_its_outputs_here_unless_a_file_has_that_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    packaged = locate("default")
    assert packaged.checkpoint == DEFAULT_MODEL and packaged.run is None
    assert packaged.output_dir(None, "shift").resolve() == (tmp_path / "default-shift").resolve()
    assert not any(DEFAULT_MODEL.parent.glob("default-*"))  # nothing written inside the package
    (tmp_path / "default").mkdir()  # a folder of that name is what the user means: it is no run
    with pytest.raises(MnistlabError, match="default is neither a run directory"):
        locate("default")
