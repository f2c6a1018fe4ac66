"""The saved scikit-learn models: plain arrays, each checked before use (against scikit-learn's own
predictions, tampered, fuzzed), and the earlier skops format refused with one clear error."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnistlab.cli import main
from mnistlab.data.normalization import to_unit
from mnistlab.errors import MnistlabError
from mnistlab.models import checkpoint
from mnistlab.models.classical import ClassicalModel
from mnistlab.models.predictor import load_predictor

# ---------- the saved model: plain arrays, each checked before use; the old skops bytes refused ----------


ORACLE_CASES = [("knn", {}), ("knn", {"weights": "distance", "metric": "manhattan", "pca": 20}),
                ("knn", {"metric": "cosine", "k": 5}), ("knn", {"metric": "chebyshev", "pca": 10}),
                ("svm", {"pca": 30}), ("svm", {"pca": 30, "probability": True}),
                ("svm", {"pca": 30, "nystroem": 200}), ("svm", {"pca": 20, "kernel": "poly"}),
                ("svm", {"pca": 20, "kernel": "sigmoid", "gamma": 0.01}), ("random-forest", {"n_estimators": 20}),
                ("random-forest", {"n_estimators": 5, "max_depth": 4, "pca": 20}), ("logreg-sklearn", {"max_iter": 50}),
                ("logreg-sklearn", {"features": "hog", "max_iter": 50})]


@pytest.mark.slow
@pytest.mark.parametrize("two_classes", [False, True], ids=["10 classes", "2 classes"])
@pytest.mark.parametrize("model,args", ORACLE_CASES, ids=[f"{m}-{a}" for m, a in ORACLE_CASES])
def test_the_arrays_give_what_scikit_learn_gives(model, args, two_classes, mnist):
    """mnistlab's inference on the stored arrays against scikit-learn's own on the fitted pipeline."""
    import warnings

    from mnistlab.models.classical import (
        features_of,
        fit_pipeline,
        make_pipeline,
        resolved_args,
    )

    a = resolved_args(model, args)
    x = to_unit(mnist.train.images[:1500].unsqueeze(1))
    xt = to_unit(mnist.test.images[:500].unsqueeze(1))
    y = mnist.train.labels[:1500].numpy()
    y = (y > 4).astype(np.int64) * 3 if two_classes else y  # classes 0 and 3 of 10: some never seen
    f, ft = features_of(x, a["features"]), features_of(xt, a["features"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipeline = fit_pipeline(make_pipeline(model, a, 0, 0), a, f, y)
    m = ClassicalModel.from_pipeline(model, a, pipeline, 10, (1, 28, 28))
    ours = m(xt).numpy()
    theirs = pipeline.predict_proba(ft) if m.gives_probabilities else pipeline.decision_function(ft)
    if theirs.ndim == 1:
        theirs = np.stack([-theirs, theirs], 1)
    seen = np.unique(y)
    if m.gives_probabilities:
        assert np.allclose(np.exp(ours[:, seen]), np.clip(theirs, 1e-7, 1), atol=2e-6)
    else:
        assert np.allclose(ours[:, seen], theirs, atol=1e-4)
    assert (ours.argmax(1) == seen[theirs.argmax(1)]).mean() >= 0.998  # float32 output: ties may round apart
    unseen = np.setdiff1d(np.arange(10), seen)
    assert (ours[:, unseen] < ours[:, seen].min(1, keepdims=True) + 1e-6).all()  # never seen, never chosen


def _arrays(run) -> tuple[dict, dict]:
    tensors, meta = checkpoint.load(Path(run) / "best.safetensors")
    return tensors, {k: v for k, v in meta.items() if k not in ("format", "version")}


def _saved(tensors, meta, path) -> Path:
    return checkpoint.save(path, tensors, meta)


def _edit(name, fn):
    return lambda t: t.update({f"model/{name}": fn(t[f"model/{name}"])})


TAMPERED = [  # (run, edit of the tensors, what the error names): the defects the hardening found
    ("knn", _edit("knn.fit_x", lambda a: a[:, :1].contiguous()), "knn.fit_x"),  # a one-column training matrix
    ("knn", _edit("knn.y", lambda a: a + 1000), "knn.y"),  # labels past the classes
    ("knn", _edit("classes", lambda a: torch.zeros_like(a)), "classes"),  # all-zero classes
    ("knn", _edit("knn.fit_x", lambda a: a[:2].contiguous()), "knn.fit_x"),  # fewer examples than neighbours
    ("knn", _edit("knn.fit_x", lambda a: a.long()), "knn.fit_x"),  # integers where features are floats
    ("knn", lambda t: t.update({"model/linear.coef": torch.zeros(10, 784)}), "linear.coef"),  # a swapped last step
    ("knn", lambda t: t.pop("model/knn.y"), "knn.y"),
    ("svm", _edit("svc.dual_coef", lambda a: a[:, :5].contiguous()), "svc.dual_coef"),  # wrong shape
    ("svm", _edit("svc.n_support", lambda a: a * 2), "svc.n_support"),
    ("svm", _edit("svc.gamma", lambda a: torch.tensor(-1.0, dtype=torch.float64)), "svc.gamma"),
    ("svm", _edit("pca.components", lambda a: a.T.contiguous()), "pca.components"),
    ("forest", _edit("forest.children_left", lambda a: torch.where(a > 0, a + 10**6, a)), "forest.children_left"),
    ("forest", _edit("forest.children_left", lambda a: torch.where(a > 0, torch.zeros_like(a), a)),
     "forest.children_left"),  # a cycle back to the root
    ("forest", _edit("forest.feature", lambda a: torch.where(a >= 0, a + 5000, a)), "forest.feature"),
    ("forest", _edit("forest.offsets", lambda a: a.flip(0).contiguous()), "forest.offsets"),
    ("forest", _edit("forest.value", lambda a: -a), "forest.value"),
]


@pytest.mark.parametrize("which,edit,name", TAMPERED, ids=[f"{w}-{n}-{i}" for i, (w, _, n) in enumerate(TAMPERED)])
def test_tampered_arrays_get_one_clear_error_naming_the_array(which, edit, name, knn_run, svm_run, forest_run,
                                                              tmp_path):
    run = {"knn": knn_run, "svm": svm_run, "forest": forest_run}[which]["run_dir"]
    tensors, meta = _arrays(run)
    edit(tensors)
    path = _saved(tensors, meta, tmp_path / "bad.safetensors")
    with pytest.raises(MnistlabError, match=f"classical model array '{name}'") as err:
        load_predictor(path)
    assert "damaged or altered" in err.value.hint


def test_options_the_arrays_cannot_serve_are_refused(knn_run, tmp_path):
    tensors, meta = _arrays(knn_run["run_dir"])
    for args, words in (({"metric": "levenshtein"}, "metric='levenshtein'"), ({"k": 10**6}, "k=1000000: expected 1 to 1000"),
                        ({"features": "sift"}, "features='sift'")):
        path = _saved(tensors, {**meta, "model_args": {**meta["model_args"], **args}}, tmp_path / "opt.safetensors")
        with pytest.raises(MnistlabError, match=words):
            load_predictor(path)


def test_stored_values_that_overflow_to_inf_are_a_clear_error_not_scikit_learns():
    """Found by the fuzz below: arrays scaled by 1e30 are finite when loaded, and the images' features
    they make overflow to inf, which scikit-learn's kernels refused with a ValueError."""
    from mnistlab.models.classical_format import _kernel

    with pytest.raises(MnistlabError, match="not finite"):
        _kernel(np.array([[np.inf, 1e30]]), np.zeros((2, 2)), "rbf", 0.5, 0.0, 3)
    assert _kernel(np.ones((1, 2)), np.ones((3, 2)), "rbf", 0.5, 0.0, 3).shape == (1, 3)


@pytest.mark.slow
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_classical_arrays_load_and_run_or_get_a_clear_error(knn_run, svm_run, forest_run, tmp_path, data):
    run = data.draw(st.sampled_from([knn_run, svm_run, forest_run]))["run_dir"]
    tensors, meta = _arrays(run)
    names = sorted(k for k in tensors if k.startswith("model/"))
    for _ in range(data.draw(st.integers(1, 3))):
        key = data.draw(st.sampled_from(names))
        if key not in tensors:  # dropped by an earlier mutation
            continue
        a = tensors[key]
        how = data.draw(st.sampled_from(["value", "shape", "dtype", "drop", "nan", "scale"]))
        if how == "value" and a.numel():
            flat = a.flatten().clone()
            value = data.draw(st.sampled_from([-2, -1, 0, 1, 7, 10**6, 2**40]))
            if not a.is_floating_point() and a.dtype != torch.bool:  # the write must fit the dtype (int32 after a draw)
                value = max(min(value, torch.iinfo(a.dtype).max), torch.iinfo(a.dtype).min)
            flat[data.draw(st.integers(0, a.numel() - 1))] = value
            tensors[key] = flat.view(a.shape)
        elif how == "shape" and a.dim():
            tensors[key] = a.flatten()[: max(0, a.numel() - data.draw(st.integers(1, 3)))].contiguous()
        elif how == "dtype":
            tensors[key] = a.to(data.draw(st.sampled_from([torch.float32, torch.float64, torch.int64, torch.int32])))
        elif how == "drop":
            tensors.pop(key)
        elif how == "nan" and a.is_floating_point() and a.numel():
            tensors[key] = a.clone().flatten().index_fill_(0, torch.tensor([0]), float("nan")).view(a.shape)
        elif how == "scale" and a.is_floating_point():
            tensors[key] = a * data.draw(st.sampled_from([0.0, -1.0, 1e30]))
    path = _saved(tensors, meta, tmp_path / "fuzz.safetensors")
    try:
        p = load_predictor(path)
    except MnistlabError as exc:
        assert exc.message
        return
    out = p.probs(torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8))  # what loads must run
    assert out.shape == (3, 10)


# The earlier format (skops bytes in one uint8 tensor) is refused before a byte of it is parsed; these
# are the files that crashed, hung or exhausted the earlier mnistlab, run as a user would run them.

def _legacy(tmp_path, meta, blob: bytes) -> Path:
    tensors = {"model/skops": torch.frombuffer(bytearray(blob), dtype=torch.uint8)}
    return _saved(tensors, meta, tmp_path / "legacy.safetensors")


def _tampered_forest_blob() -> bytes:
    """A 2-tree forest in skops form whose trees' child indices point far outside them."""
    import io

    import skops.io as sio
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline

    x = np.random.default_rng(0).random((60, 784)).astype(np.float32)
    forest = Pipeline([("model", RandomForestClassifier(2, random_state=0))]).fit(x, np.arange(60) % 10)
    src = zipfile.ZipFile(io.BytesIO(sio.dumps(forest)))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name.endswith(".npy"):
                arr = np.load(io.BytesIO(data), allow_pickle=False)
                if arr.dtype.names and "left_child" in arr.dtype.names:
                    arr = arr.copy()
                    arr["left_child"][arr["left_child"] > 0] = 10**7
                    buf = io.BytesIO()
                    np.save(buf, arr, allow_pickle=False)
                    data = buf.getvalue()
            dst.writestr(name, data)
    return out.getvalue()


def _shared_node_blob(depth: int = 40) -> bytes:
    """A skops schema of `depth` lists, each holding two references to the one before: a few KB, and
    2**depth nodes for an audit that walks references again (the earlier mnistlab's took 3.9 s at 18)."""
    import io

    def listed(i, content):
        return {"__class__": "list", "__module__": "builtins", "__loader__": "ListNode", "content": content, "__id__": i}

    def ref(i):
        return {"__class__": "list", "__module__": "builtins", "__loader__": "CachedNode", "__id__": i}

    levels = [listed(1, [])] + [listed(k, [ref(k - 1), ref(k - 1)]) for k in range(2, depth + 2)]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("schema.json", json.dumps({**listed(10**6, levels), "protocol": 2, "_skops_version": "0.10.0"}))
    return out.getvalue()


def _zip_member_bomb(count: int = 200_000_000) -> bytes:
    """A skops zip whose one .npy member declares `count` float64 zeros and inflates to all of them
    (1.6 GB from 1.5 MB). Its deflate stream is one compressed 16 MB block of zeros written again
    and again: after a full flush each block stands alone, so the copies inflate to the zeros they hold,
    and building the file takes a second instead of deflating 1.6 GB (5 s)."""
    import io
    import struct
    import zlib

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (count,)})
    head, chunk = header.getvalue(), bytes(1 << 24)
    repeats = count * 8 // len(chunk)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate, as zip members hold it
    first, block = (deflate.compress(b) + deflate.flush(zlib.Z_FULL_FLUSH) for b in (head, chunk))
    stream = first + block * repeats + deflate.flush()
    crc = zlib.crc32(head)
    for _ in range(repeats):
        crc = zlib.crc32(chunk, crc)
    npy = ("a.npy", 8, crc, stream, len(head) + repeats * len(chunk))
    schema = ('{"__class__": "ndarray", "__module__": "numpy", "__loader__": "NdArrayNode", "type": "numpy", '
              '"file": "a.npy", "protocol": 2, "__id__": 1}').encode()
    members = [("schema.json", 0, zlib.crc32(schema), schema, len(schema)), npy]
    out, central = io.BytesIO(), b""
    for name, method, crc_, data, size in members:  # local header + data; the central directory after
        fields = struct.pack("<HHHHHIIIHH", 20, 0, method, 0, 0x21, crc_, len(data), size, len(name), 0)
        central += b"PK\x01\x02" + struct.pack("<H", 20) + fields + struct.pack("<HHHII", 0, 0, 0, 0, out.tell())
        central += name.encode()
        out.write(b"PK\x03\x04" + fields + name.encode() + data)
    offset = out.tell()
    out.write(central + b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, 2, 2, len(central), offset, 0))
    return out.getvalue()


def _run_measured(argv: list[str], timeout: float = 120) -> tuple[subprocess.CompletedProcess, int]:
    """(the finished command, its peak resident memory in MB), the command in a fresh wrapper process."""
    wrapper = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:]); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024, file=sys.stderr); "
               "sys.exit(p.returncode)")
    done = subprocess.run([sys.executable, "-c", wrapper, sys.executable, "-m", "mnistlab", *argv],
                          capture_output=True, text=True, timeout=timeout)
    *err, peak = done.stderr.strip().splitlines() or ["0"]
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout, "\n".join(err)), int(peak)


@pytest.mark.slow
@pytest.mark.parametrize("blob", ["tampered forest", "shared-node schema", "zip member bomb"])
def test_a_hostile_checkpoint_of_the_earlier_format_is_a_clear_error_in_every_command(blob, forest_run, tmp_path,
                                                                                       capsys):
    if blob == "tampered forest":
        pytest.importorskip("skops")
    make = {"tampered forest": _tampered_forest_blob, "shared-node schema": _shared_node_blob,
            "zip member bomb": _zip_member_bomb}[blob]
    _, meta = _arrays(forest_run["run_dir"])
    path = _legacy(tmp_path, meta, make())
    from PIL import Image

    Image.new("L", (28, 28)).save(tmp_path / "d.png")
    commands = {"evaluate": ["evaluate", str(path)], "predict": ["predict", str(tmp_path / "d.png"), "--model", str(path)],
                "serve": ["serve", "--model", str(path), "--port", "0"]}
    # one loader refuses them all: every command for the crashing file (one in a new process, measured;
    # the others through main() here: a crash would take this test's worker down with it), one command
    # in a new process for each of the others
    measured = {"tampered forest": "serve", "shared-node schema": "predict", "zip member bomb": "serve"}[blob]
    done, peak_mb = _run_measured(commands[measured])
    assert done.returncode == 2, (measured, done.returncode, done.stderr[-800:])  # not 139 (SIGSEGV), not a hang
    assert "skops bytes" in done.stderr and "Traceback" not in done.stderr
    assert peak_mb < 1500, peak_mb  # nothing of the file was decompressed
    if blob == "tampered forest":
        for command in ("evaluate", "predict"):
            capsys.readouterr()
            assert main(commands[command]) == 2, command
            err = capsys.readouterr().err
            assert "skops bytes" in err and "Traceback" not in err, (command, err)


