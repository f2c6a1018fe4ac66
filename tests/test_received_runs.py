"""Every bad file a received run (or a user's data) carries is one clear line, and nothing is written where
it should not be (issue 43, 5-18): export names, links inside a run, limits checked before training,
class names that cannot be shown, labels that wrap, unbounded folders, option names, a foreign
not-a-digit file, another program's SQLite file, a folder where a file goes, spreadsheet formulas,
Markdown, terminal control sequences, and a pipelining client; and the atomic writes under SIGKILL."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from builders import snapshot
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import mnistlab
from mnistlab import MnistlabError
from mnistlab.cli import main
from mnistlab.data import own
from mnistlab.models import ood
from mnistlab.rundir import RunDir
from mnistlab.tables import printable

TINY = {"model": "mlp", "train_subset": 600, "validation": 200, "epochs": 1, "progress": False}


@pytest.fixture(scope="module")
def run(trained) -> Path:
    return trained(**TINY).run_dir


def copy_of(run: Path, to: Path) -> Path:
    subprocess.run(["cp", "-r", str(run), str(to)], check=True)
    return to


def rewrite(run: Path, change) -> None:
    """`change(meta)` applied to both checkpoints' metadata, as a hostile sender edits them."""
    for name in (RunDir.BEST, RunDir.LAST):
        with safe_open(run / name, framework="pt") as f:
            meta = json.loads(f.metadata()["mnistlab"])
        change(meta)
        save_file(load_file(run / name), run / name, metadata={"mnistlab": json.dumps(meta)})


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("mnistlab: error: ") and "Traceback" not in err and err.count("\n") <= 2, err
    return err


# ---------- 5, 6: writes where they should not ----------

def test_export_without_out_writes_one_name_in_this_folder_whatever_the_checkpoint_says(run, tmp_path, monkeypatch,
                                                                                         capsys):
    victim = tmp_path / "victim.onnx"
    victim.write_bytes(b"someone else's model")
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    for name in ("../escaped", str(tmp_path / "victim")):
        sent = copy_of(run, tmp_path / f"sent-{len(name)}")
        rewrite(sent, lambda m, name=name: m.update(name=name))
        assert main(["export", str(sent)]) == 0
        capsys.readouterr()
    assert victim.read_bytes() == b"someone else's model" and not (tmp_path / "escaped.onnx").exists()
    assert sorted(p.name for p in here.iterdir()) == ["escaped.onnx", "victim.onnx"]  # both here, as names


@pytest.mark.parametrize("verb", ["evaluate", "inspect"])
def test_a_symlinked_folder_inside_a_run_is_not_written_through(verb, run, tmp_path, capsys):
    sent = copy_of(run, tmp_path / "sent")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "test.json").write_text("mine")
    folder = RunDir(sent).eval_dir if verb == "evaluate" else RunDir(sent).inspect_dir
    if folder.exists():
        subprocess.run(["rm", "-r", str(folder)], check=True)
    folder.symlink_to(elsewhere, target_is_directory=True)
    before = snapshot(elsewhere)
    assert main([verb, str(sent)]) == 2
    assert "is a symbolic link" in one_line(capsys) and snapshot(elsewhere) == before
    out = tmp_path / "chosen"  # a folder the user names is theirs to choose
    assert main([verb, str(sent), "--out", str(out)]) == 0 and any(out.iterdir())


# ---------- 7-10: limits where the input comes in, before any training ----------

def folder_of(root: Path, classes: list[str], per_class: int = 2, size: int = 8) -> Path:
    for split in ("train", "test"):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(np.full((size, size), 40 * i, np.uint8)).save(d / f"{i}.png")
    return root


@pytest.mark.parametrize(("make", "says"), [
    (lambda t: folder_of(t / ("p" * 210), ["a", "b"]), "a dataset folder's path may have at most 200"),
    (lambda t: folder_of(t / "f", ["a", "b" * 201]), "201 characters (at most 200)"),
    (lambda t: folder_of(t / "f", ["a", "line\nbreak"]), "a control character or line break"),
    (lambda t: folder_of(t / "f", ["a", os.fsdecode(b"caf\xe9")]), "not UTF-8"),
])
def test_an_image_folder_that_a_checkpoint_could_not_hold_is_refused_before_training(make, says, tmp_path, capsys):
    root = make(tmp_path)
    assert main(["train", "--dataset", str(root), "--model", "mlp", "--epochs", "1", "--out", str(tmp_path / "runs"),
                 "--validation", "0", "--no-progress"]) == 2
    assert says in one_line(capsys) and not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("labels", "classes", "says"), [
    (np.zeros(20, np.int64), None, "every label is 0"),
    (np.arange(20) % 2, [str(i) for i in range(1001)], "1001 classes, expected 2 to 1000"),
    (np.r_[np.arange(19) % 2, 1000], None, "label 1000, expected class indices 0 to 999"),
    (np.r_[np.arange(19) % 2, 10**9], None, "label 1000000000"),
    (np.array([*([0, 1] * 9), 1, 2**64 - 1], dtype=np.uint64), None, "label 18446744073709551615"),
    (np.r_[np.arange(19) % 2, 1e20], None, "label 100000000000000000000"),
    (np.arange(20) % 2, ["zero", "one\n"], "a control character or line break"),
    (np.arange(20) % 2, ["=cmd", "\x1b[2K"], "a control character"),
])
def test_labels_and_class_names_are_checked_as_they_come_in(labels, classes, says):
    x = np.zeros((20, 8, 8), np.uint8)
    t0 = time.perf_counter()
    with pytest.raises(MnistlabError, match=says.replace("(", r"\(").replace(")", r"\)")):
        mnistlab.Dataset.from_arrays(x, labels, x, labels, classes=classes)
    assert time.perf_counter() - t0 < 5  # no billion class names made first


def test_arrays_past_the_size_one_split_may_hold_are_refused_before_any_copy():
    view = np.broadcast_to(np.zeros((1, 512, 512), np.float32), (2_000_000, 512, 512))  # 2 TB, costs nothing
    with pytest.raises(MnistlabError, match=r"GB of pixels, more than the 2\.1 GB one split may hold"):
        mnistlab.Dataset.from_arrays(view, np.zeros(2_000_000, np.int64), view[:10], np.zeros(10, np.int64))


def test_a_folder_of_many_large_images_is_refused_after_its_first_picture(tmp_path):
    """2,800 links to one 512x512 RGB PNG: 2.2 GB of pixels, more than a split may hold."""
    one = tmp_path / "one.png"
    Image.fromarray(np.full((512, 512, 3), 128, np.uint8)).save(one)
    for split in ("train", "test"):
        for c in ("a", "b"):
            d = tmp_path / "big" / split / c
            d.mkdir(parents=True)
            for i in range(1400 if split == "train" else 1):
                os.link(one, d / f"{i}.png")
    t0 = time.perf_counter()
    with pytest.raises(MnistlabError, match=r"2,800 images of \(512, 512, 3\): 2\.2 GB of pixels"):
        own.read_folder(tmp_path / "big")
    assert time.perf_counter() - t0 < 10


def test_an_image_folder_is_read_into_one_array_without_a_second_copy(tmp_path):
    """Peak memory of reading 300 RGB pictures of 512x512 (236 MB of pixels): the split's own array and
    little more (the list-then-stack it replaced peaked at twice that), measured in a new process."""
    one = tmp_path / "one.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (512, 512, 3), dtype=np.uint8)).save(one)
    for split, n in (("train", 150), ("test", 2)):
        for c in ("a", "b"):
            d = tmp_path / "f" / split / c
            d.mkdir(parents=True)
            for i in range(n):
                os.link(one, d / f"{i}.png")
    code = ("from mnistlab.data import own\nfrom pathlib import Path\n"
            "def kb(key):\n    return int(next(l for l in open('/proc/self/status') if l.startswith(key)).split()[1])\n"
            f"before = kb('VmRSS')\nsplits, _ = own.read_folder(Path({str(tmp_path / 'f')!r}))\n"
            "print(splits['train'][0].nbytes // 1024, kb('VmHWM') - before)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    final_kb, grown_kb = map(int, done.stdout.split())
    assert final_kb == 300 * 512 * 512 * 3 // 1024
    assert grown_kb < 1.4 * final_kb, (final_kb, grown_kb)


# ---------- 11, 12: options and side files ----------

def test_a_model_option_named_source_or_recorded_survives_every_later_load(tmp_path, capsys):
    (tmp_path / "net.py").write_text(
        "from torch import nn\n\ndef Net(num_classes=10, source=8, recorded=2, name='x'):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(784, source), nn.ReLU(), nn.Linear(source, num_classes))\n")
    r = mnistlab.train(model=f"{tmp_path / 'net.py'}:Net", model_args={"source": 16, "recorded": 3, "name": "y"},
                       train_subset=600, validation=200, epochs=1, progress=False, out=str(tmp_path), quiet=True)
    assert main(["evaluate", str(r.run_dir), "--no-pictures"]) == 0
    assert f"the same {r['test_errors']} errors" in capsys.readouterr().out


def test_export_with_a_not_a_digit_file_of_another_width_is_one_line(run, tmp_path, capsys):
    sent = copy_of(run, tmp_path / "sent")
    meta = {"format": ood.FORMAT, "version": ood.VERSION, "method": "knn-cosine", "k": 5, "threshold": 0.1,
            "feature_dim": 7, "reference": {}, "calibration": {}}
    ood.save(ood.NotDigitModel(torch.rand(50, 7), 0.1, meta), sent / RunDir.OOD)
    assert main(["export", str(sent), "--not-digit", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "7 features per image, the model gives" in one_line(capsys) and not (tmp_path / "m.onnx").exists()


# ---------- 13, 14: files that are not what they should be ----------

def test_tune_leaves_another_programs_sqlite_file_as_it_was(tmp_path, capsys):
    db = tmp_path / "app.db"
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE studies (id INTEGER, name TEXT)")
        c.execute("INSERT INTO studies VALUES (1, 'mine')")
    before = db.read_bytes()
    assert main(["tune", "--recipe", "seed-mlp", "--space", "lr", "--trials", "1", "--storage", f"sqlite:///{db}",
                 "--out", str(tmp_path / "study")]) == 2
    assert "another program's SQLite database (tables: studies)" in one_line(capsys) and db.read_bytes() == before
    (tmp_path / "text.db").write_text("not a database")
    assert main(["tune", "--recipe", "seed-mlp", "--space", "lr", "--trials", "1", "--storage",
                 f"sqlite:///{tmp_path / 'text.db'}", "--out", str(tmp_path / "study")]) == 2
    assert "is not an SQLite database" in one_line(capsys)


def test_a_folder_where_a_run_file_goes_is_one_line(run, tmp_path, capsys):
    sent = copy_of(run, tmp_path / "sent")
    (sent / "eval").mkdir(exist_ok=True)
    (sent / "eval" / "test.json").unlink(missing_ok=True)
    (sent / "eval" / "test.json").mkdir()
    assert main(["report", str(sent), "--out", str(tmp_path / "report")]) == 2
    assert "test.json is a folder, where mnistlab writes a file" in one_line(capsys)


# ---------- 15-17: text from a run shown as text ----------

@pytest.mark.slow
def test_class_names_that_look_like_formulas_are_text_in_the_audit_csv_files(mnist, tmp_path):
    classes = ["=HYPERLINK(\"http://x\",\"0\")", "+1", "-2", "@SUM(3)", "4", "5", "6", "7", "8", "9"]
    ds = mnistlab.Dataset.from_arrays(mnist.train.images[:1000].numpy(), mnist.train.labels[:1000].numpy(),
                                      mnist.test.images[:600].numpy(), mnist.test.labels[:600].numpy(),
                                      classes=classes, name="formulas")
    result = mnistlab.audit(ds, split="test", folds=2, model="fast", out=tmp_path, quiet=True)
    import pandas as pd

    for name in ("ranking.csv", "issues.csv"):
        table = pd.read_csv(tmp_path / name, dtype=str, keep_default_na=False)
        cells = [c for col in table.columns for c in table[col]]
        assert not any(c.startswith(("=", "+", "@")) for c in cells), name
        assert "'=HYPERLINK(\"http://x\",\"0\")" in cells or name == "issues.csv"
    assert result.table is not None


def test_report_markdown_shows_a_runs_markup_and_pipes_as_text(run, tmp_path):
    sent = copy_of(run, tmp_path / "sent")
    summary = json.loads((sent / "summary.json").read_text())
    summary["model"] = "<img src=x onerror=alert(1)>|x"
    (sent / "summary.json").write_text(json.dumps(summary))
    assert main(["report", str(sent), "--out", str(tmp_path / "r")]) == 0
    text = (tmp_path / "r" / "report.md").read_text()
    row = next(line for line in text.splitlines() if "onerror" in line)
    assert "<img" not in text.replace("\\<", "") and row.count("|") - row.count("\\|") == 9  # 8 columns, the pipe escaped


def test_terminal_control_sequences_never_reach_the_terminal(run, tmp_path, capsys):
    sent = copy_of(run, tmp_path / "sent")
    fake = "\x1b[2K\r" + "seven.png: 7 (99.9%)"  # would overwrite the line with a fake answer
    rewrite(sent, lambda m: m.update(classes=[fake, *m["classes"][1:]]))
    Image.new("L", (28, 28)).save(tmp_path / "seven.png")
    assert main(["predict", str(tmp_path / "seven.png"), "--model", str(sent)]) == 2
    err = one_line(capsys)
    assert "\x1b" not in err and "printable characters" in err
    assert printable("a\x1b]0;title\x07b\x9bc\td") == "a?b?c\td"


# ---------- 18: a pipelining client that leaves ----------

def test_a_pipelining_client_that_leaves_after_one_answer_leaves_no_traceback(running):
    body = json.dumps({"image": [[0] * 28] * 28, "preprocess": False}).encode()
    request = (b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
               + str(len(body)).encode() + b"\r\n\r\n" + body)
    port = int(running.url.rsplit(":", 1)[1])
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(request * 3 + b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(64).startswith(b"HTTP/1.1 200")
    time.sleep(1)
    log = running.log.read_text()
    assert "Traceback" not in log and "Exception in ASGI application" not in log


# ---------- atomic writes under SIGKILL ----------

WRITER = """
import sys, torch
from mnistlab import atomic
from mnistlab.models import checkpoint
big, ckpt, n = sys.argv[1], sys.argv[2], 0
print("ready", flush=True)
while True:
    n += 1
    atomic.write_bytes(big, bytes([n % 251]) * (8 << 20))  # 8 MB, every byte the version number
    checkpoint.save(ckpt, {"model/w": torch.full((512, 512), float(n))}, {"kind": "weights", "n": n})
    print(n, flush=True)
"""


@pytest.mark.slow
def test_a_reader_sees_nothing_the_old_or_the_whole_new_file_when_the_writer_is_killed(tmp_path, run, capsys):
    """A planted bug (a plain rewrite instead of the rename) survived every kill test, since each waited
    for a checkpoint to exist before killing; here the writer is SIGKILLed at random moments while a
    reader polls, and every read is absent, or a whole version."""
    big, ckpt = tmp_path / "big.bin", tmp_path / "w.safetensors"
    rng = random.Random(0)
    seen = 0
    for trial in range(6):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(big), str(ckpt)], stdout=subprocess.PIPE)
        assert proc.stdout.readline() == b"ready\n"  # its imports done (seconds on a busy machine)
        deadline = time.time() + rng.uniform(0.2, 1.5)
        while time.time() < deadline:
            for _ in range(20):
                if big.exists():
                    data = big.read_bytes()
                    assert len(data) == 8 << 20 and data.count(data[:1]) == len(data), "a torn file"
                    seen += 1
                if ckpt.exists():
                    w = load_file(ckpt)["model/w"]
                    assert w.shape == (512, 512) and bool((w == w[0, 0]).all())
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert seen > 0
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    # temporaries only (ours end in .part; safetensors' writer stages its file as .tmpXXXXXX before
    # renaming it onto ours): the targets themselves are always whole
    assert all(p.endswith(".part") or p.startswith(".tmp") for p in leftovers), leftovers
    # a run killed the same way resumes: the same kill and resume the train tests compare bit for bit
    sent = copy_of(run, tmp_path / "run")
    (sent / "summary.json").unlink()
    assert main(["train", "--resume", str(sent), "--quiet"]) == 0 and (sent / "summary.json").is_file()
