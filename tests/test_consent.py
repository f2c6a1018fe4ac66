"""A run you receive runs no code you did not approve: user code runs without asking only where this user,
on this machine, recorded it (train signs what it records) or approved it (`mnistlab trust`); a run
from elsewhere is refused before anything is imported, and `--trust-code` runs only the copy a person
can read in the run's code/ folder. Each hostile run below plants a marker file if its code ever runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import mnistlab
from mnistlab import consent, rundir, schema, user_code
from mnistlab.cli import main
from mnistlab.rundir import RunDir

SMALL = ["--train-subset", "1000", "--validation", "200", "--epochs", "1", "--batch-size", "64", "--no-progress"]

NET = '''
from torch import nn


class Net(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.fc = nn.Linear(784, num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))
'''


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """A run of a model in a file of this user's, trained (and so signed) under the session's key."""
    root = tmp_path_factory.mktemp("consent")
    (root / "net.py").write_text(NET)
    assert main(["train", "--model", f"{root / 'net.py'}:Net", *SMALL, "--out", str(root / "runs"), "--quiet"]) == 0
    return root, next((root / "runs").iterdir())


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """Another user (or this one on another machine): a config folder with no key and no signatures."""
    monkeypatch.setenv(consent.ENV, str(tmp_path / "other-config"))
    return tmp_path


def received(run: Path, to: Path) -> Path:
    """A copy of `run`, as a run someone sent arrives."""
    shutil.copytree(run, to)
    return to


def rewrite(run: Path, change) -> None:
    """Apply `change(meta)` to the metadata of both checkpoints of `run` (and the JSON beside each), and
    make config.json say what the checkpoints' config says, as a thorough sender would."""
    for name in (RunDir.BEST, RunDir.LAST):
        file = run / name
        with safe_open(file, framework="pt") as f:
            meta = json.loads(f.metadata()["mnistlab"])
        change(meta)
        save_file(load_file(file), file, metadata={"mnistlab": json.dumps(meta)})
        file.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    if "config" in meta:
        (run / "config.json").write_text(json.dumps(meta["config"], indent=2))


def plant(meta: dict, record: dict, **args) -> None:
    meta["model"] = record["ref"]
    meta["model_args"] = args
    meta["code"] = {"model": record}
    if "config" in meta:
        meta["config"]["model"], meta["config"]["model_args"] = record["ref"], args


def record_of(kind: str, ref: str, path: str, source: str) -> dict:
    return {"ref": ref, "kind": kind, "name": ref.rsplit(":", 1)[1], "path": path,
            "sha256": user_code.sha256_text(source), "source": source}


def verbs(run: Path, tmp: Path) -> list[list[str]]:
    """Every verb that loads a run's model, as a user types it."""
    Image.new("L", (28, 28)).save(tmp / "blank.png")
    return [["evaluate", str(run), "--no-pictures"], ["predict", str(tmp / "blank.png"), "--model", str(run)],
            ["export", str(run), "--out", str(tmp / "m.onnx")], ["attack", str(run), "--method", "fgsm", "--eps", "0.1",
                                                                   "--n", "20", "--no-checks"],
            ["map", str(run), "--method", "tsne", "--n", "40", "--quiet"], ["inspect", str(run)],
            ["report", str(run), "--out", str(tmp / "report")],
            ["ensemble", str(run), str(run), "--out", str(tmp / "e.safetensors")],
            ["serve", "--model", str(run), "--port", "1"], ["train", "--resume", str(run), "--quiet"]]


def refuses_every_verb(run: Path, tmp: Path, marker: Path, capsys, says: str) -> None:
    for argv in verbs(run, tmp):
        if argv[0] == "train":
            (run / "summary.json").unlink(missing_ok=True)  # a run that says it was cut short, for --resume
        status = main(argv)
        err = capsys.readouterr().err
        assert not marker.exists(), f"{argv[0]} ran the sender's code"
        assert status == 2 and says in err and "Traceback" not in err, (argv[0], status, err)


# ---------- the four ways a received run ran code without --trust-code (issue 43, 1-4) ----------

def test_a_library_module_with_its_true_hash_is_refused_by_every_verb(own, elsewhere, capsys):
    """1: an unchanged library file proves nothing about who chose to run it (torch's collect_env runs
    a shell command given as a model argument)."""
    root, run = own
    hostile = received(run, elsewhere / "c1run")
    marker = elsewhere / "MARKER"
    import torch.utils.collect_env as target

    source = Path(target.__file__).read_text()
    record = record_of("module", "torch.utils.collect_env:run", str(Path(target.__file__).resolve()), source)
    rewrite(hostile, lambda m: plant(m, record, command=f"touch {marker}"))
    refuses_every_verb(hostile, elsewhere, marker, capsys, "did not record or approve on this machine")


def test_a_relative_path_in_a_record_never_resolves_against_the_current_folder(own, elsewhere, capsys, monkeypatch):
    """2: a record naming code/evil.py (shipped inside the run, with its true hash) from the folder
    holding the run, or from inside it."""
    root, run = own
    hostile = received(run, elsewhere / "c2run")
    marker = elsewhere / "MARKER"
    evil = f"open({str(marker)!r}, 'w').close()\n" + NET
    (hostile / "code").mkdir(exist_ok=True)
    (hostile / "code" / "evil.py").write_text(evil)
    for where, ref_path, typed in ((elsewhere, "c2run/code/evil.py", "c2run"), (hostile, "code/evil.py", ".")):
        monkeypatch.chdir(where)
        rewrite(hostile, lambda m: plant(m, record_of("file", f"{ref_path}:Net", ref_path, evil)))
        for flags in ([], ["--trust-code"]):
            status = main(["evaluate", typed, "--no-pictures", *flags])
            err = capsys.readouterr().err
            assert not marker.exists() and status == 2 and "absolute path" in err, err
    # an absolute path to the shipped file, its hash true: not recorded here, so refused all the same
    absolute = str(hostile / "code" / "evil.py")
    rewrite(hostile, lambda m: plant(m, record_of("file", f"{absolute}:Net", absolute, evil)))
    assert main(["evaluate", str(hostile), "--no-pictures"]) == 2
    assert not marker.exists() and "did not record or approve" in capsys.readouterr().err


def test_no_package_is_imported_or_found_before_the_decision(own, elsewhere, capsys, monkeypatch):
    """3: resolving `package.module:Name` imported the parent package before any hash was compared
    (a run folder with an __init__.py ran from its parent folder, `this.x:Net` printed the Zen)."""
    root, run = own
    hostile = received(run, elsewhere / "c4run")
    marker = elsewhere / "MARKER"
    (hostile / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.chdir(elsewhere)
    monkeypatch.syspath_prepend(str(elsewhere))
    for ref in ("c4run.nothing:Net", "this.x:Net"):
        rewrite(hostile, lambda m, ref=ref: plant(m, record_of("module", ref, "", NET)))
        assert main(["evaluate", str(hostile), "--no-pictures"]) == 2
        out = capsys.readouterr()
        assert not marker.exists() and "Beautiful is better" not in out.out and "did not record" in out.err
        assert "c4run" not in sys.modules and "this" not in sys.modules


def test_trust_code_runs_exactly_the_copy_a_person_reads(own, elsewhere, capsys):
    """4: --trust-code ran the source inside best.safetensors while code/*.py (which the hint says to
    read) said something else; now it runs the copy in code/, and only if it is the checkpoint's code."""
    root, run = own
    hostile = received(run, elsewhere / "c3run")
    marker = elsewhere / "MARKER"
    shown = hostile / "code" / "net.py"
    evil = f"open({str(marker)!r}, 'w').close()\n" + NET
    path = str(root / "sender" / "net.py")  # its copy is code/net.py
    rewrite(hostile, lambda m: plant(m, record_of("file", f"{path}:Net", path, evil)))  # code/ shows the clean net
    assert main(["evaluate", str(hostile), "--no-pictures", "--trust-code"]) == 2
    err = capsys.readouterr().err
    assert not marker.exists() and str(shown) in err and "not the code the checkpoint carries" in err
    assert main(["trust", str(hostile), "--yes"]) == 2 and not marker.exists()  # nor will trust approve it
    assert "what you would read is not what would run" in capsys.readouterr().err
    shown.unlink()
    assert main(["evaluate", str(hostile), "--no-pictures", "--trust-code"]) == 2
    assert "is missing or not a plain file" in capsys.readouterr().err and not marker.exists()


def test_a_source_edited_without_its_hash_is_refused_even_when_trusted(own, elsewhere, capsys):
    """A planted bug (dropping the SHA-256 comparison of a record) survived the fuzz; this fails on it."""
    root, run = own
    hostile = received(run, elsewhere / "stale")

    def edit(meta):
        meta["code"]["model"]["source"] += "\nprint('edited')\n"
    rewrite(hostile, edit)
    (hostile / "code" / "net.py").write_text(json.loads((hostile / "best.json").read_text())["code"]["model"]["source"])
    for flags in ([], ["--trust-code"]):
        assert main(["evaluate", str(hostile), "--no-pictures", *flags]) == 2
        assert "does not have the recorded SHA-256" in capsys.readouterr().err


# ---------- consent as a user sees it ----------

def test_own_runs_load_without_asking_and_a_received_one_asks_with_where_to_read_it(own, tmp_path, capsys,
                                                                                    monkeypatch):
    root, run = own
    summary = json.loads((run / "summary.json").read_text())
    assert main(["evaluate", str(run), "--no-pictures"]) == 0  # this session's key signed it when it trained
    assert f"the same {summary['test_errors']} errors" in capsys.readouterr().out
    elsewhere = tmp_path
    monkeypatch.setenv(consent.ENV, str(elsewhere / "other-config"))
    got = received(run, elsewhere / "from-a-colleague")
    assert main(["evaluate", str(got), "--no-pictures"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and f"read it in {got / 'code' / 'net.py'}" in err  # one line and its hint
    assert f"mnistlab trust {got}" in err and "--trust-code" in err
    assert main(["evaluate", str(got), "--no-pictures", "--trust-code"]) == 0  # once, for this command
    capsys.readouterr()
    assert main(["evaluate", str(got), "--no-pictures"]) == 2  # ... and not after it
    capsys.readouterr()

    # `mnistlab trust` shows the code and asks; without a terminal to answer, it approves nothing
    monkeypatch.setattr(sys, "stdin", open("/dev/null"))
    assert main(["trust", str(got)]) == 2
    out = capsys.readouterr()
    assert "class Net(nn.Module):" in out.out and str(got / "code" / "net.py") in out.out and "--yes" in out.err
    assert main(["trust", str(got), "--yes"]) == 0
    assert "approved" in capsys.readouterr().out
    assert main(["evaluate", str(got), "--no-pictures"]) == 0
    assert f"the same {summary['test_errors']} errors" in capsys.readouterr().out
    key = consent.key_file()
    assert key.stat().st_mode & 0o077 == 0 and key.parent.stat().st_mode & 0o077 == 0  # this user's alone
    assert main(["trust", str(got), "--revoke"]) == 0
    assert main(["evaluate", str(got), "--no-pictures"]) == 2


def test_trust_from_python_and_a_signed_copy_runs_when_the_file_is_gone(own, elsewhere, capsys):
    root, run = own
    got = received(run, elsewhere / "colleague")
    alice = "/home/alice/net.py"  # where the sender trained it: no such file here
    rewrite(got, lambda m: plant(m, record_of("file", f"{alice}:Net", alice, NET)))
    with pytest.raises(mnistlab.MnistlabError, match="did not record or approve"):
        mnistlab.evaluate(got, pictures=False)
    result = mnistlab.trust(got)
    assert result.code[0]["signed"] and result.code[0]["read"] == str(got / "code" / "net.py")
    assert "approved" in str(result)
    # approved after reading: the copy that was shown runs (never a file at a path the sender chose)
    assert mnistlab.evaluate(got, pictures=False).accuracy > 0.5


def test_a_lone_checkpoint_points_to_trust_not_to_a_code_folder(own, elsewhere, capsys):
    root, run = own
    lone = elsewhere / "model.safetensors"
    shutil.copy(run / RunDir.BEST, lone)
    assert main(["evaluate", str(lone), "--no-pictures", "--trust-code"]) == 2
    err = capsys.readouterr().err
    assert "outside any run directory" in err and f"mnistlab trust {lone}" in err
    assert main(["trust", str(lone), "--yes"]) == 0 and "class Net" in capsys.readouterr().out
    assert main(["evaluate", str(lone), "--no-pictures"]) == 0


def test_the_key_is_made_once_even_by_writers_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv(consent.ENV, str(tmp_path / "cfg"))
    record = record_of("file", "/x/net.py:Net", "/x/net.py", NET)
    assert not consent.is_signed(record) and not consent.key_file().exists()  # looking makes no key
    consent.sign(record)
    key = consent.key_file().read_text()
    consent.sign(record_of("file", "/x/other.py:Net", "/x/other.py", NET))
    assert consent.key_file().read_text() == key and consent.is_signed(record)
    consent.key_file().write_text("not a key\n")
    with pytest.raises(mnistlab.MnistlabError, match="expected 64 hex digits"):
        consent.is_signed(record)


def test_torch_sees_no_difference_in_what_a_signed_run_builds(own):
    """The consent check changes what may run, not what is built: the weights load exactly."""
    root, run = own
    model, _ = mnistlab.models.predictor.load_model(run)
    saved = load_file(run / RunDir.BEST)
    assert all(torch.equal(v, saved[f"model/{k}"]) for k, v in model.state_dict().items())


# ---------- what a second hostile sender tried (the note lists them all) ----------

def test_resuming_a_run_never_runs_code_its_config_names_without_a_record(own, elsewhere, capsys):
    """config.json (and the checkpoint's config) naming os:system, or a file shipped in the run, with no
    signed record: refused before anything is built."""
    root, run = own
    marker = elsewhere / "MARKER"
    mlp = mnistlab.train(model="mlp", train_subset=600, validation=200, epochs=1, progress=False, quiet=True,
                         out=str(elsewhere / "runs")).run_dir
    for i, (role, ref, args) in enumerate((("model", "os:system", {"command": f"touch {marker}"}),
                                           ("optimizer", "runs/x/code/opt.py:Opt", {}))):
        sent = received(mlp, elsewhere / f"r{i}")
        (sent / "summary.json").unlink()

        def edit(meta):
            meta["config"][role] = ref
            meta["config"]["model_args"] = args if role == "model" else meta["config"]["model_args"]
        rewrite(sent, edit)
        assert main(["train", "--resume", str(sent)]) == 2
        err = capsys.readouterr().err
        assert not marker.exists() and "carries no record of, so it does not run" in err, err


def test_an_approved_run_runs_the_copy_it_showed_and_nothing_beside_it(own, elsewhere, capsys, monkeypatch):
    """A record naming /proc/self/cwd/RUN/code/net.py (absolute, but resolved against the current folder),
    whose net.py imports a sibling the trust listing never showed: after `trust`, the shown copy runs
    alone (an approval is of the code read, never of a place a sender names)."""
    root, run = own
    sent = received(run, elsewhere / "a4")
    marker = elsewhere / "MARKER"
    importing = "import mnist_layers  # noqa\n" + NET
    (sent / "code" / "mnist_layers.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (sent / "code" / "net.py").write_text(importing)
    path = "/proc/self/cwd/a4/code/net.py"
    rewrite(sent, lambda m: plant(m, record_of("file", f"{path}:Net", path, importing)))
    monkeypatch.chdir(elsewhere)
    assert main(["trust", str(sent), "--yes"]) == 0
    assert "import mnist_layers" in capsys.readouterr().out  # what it showed
    assert main(["evaluate", str(sent), "--no-pictures"]) == 2  # the copy alone cannot import its sibling
    err = capsys.readouterr().err
    assert not marker.exists() and "No module named 'mnist_layers'" in err, err


def test_trust_prints_no_terminal_sequences_or_bidi_controls(own, elsewhere, capsys):
    root, run = own
    sent = received(run, elsewhere / "a15")
    source = NET.replace("class Net", "# \u202e}⁦ hidden \u2066\nclass Net")
    path = str(elsewhere / "x\x1b]0;owned\x07\x1b[2K\x1b[1A.py")
    (sent / "code" / Path(path).name).write_text(source)
    rewrite(sent, lambda m: plant(m, record_of("file", f"{path}:Net", path, source)))
    for flags in (["--yes"], ["--revoke"]):
        main(["trust", str(sent), *flags])
        out = capsys.readouterr()
        assert not any(c in out.out + out.err for c in "\x1b\x07\u202e\u2066"), (out.out + out.err)[:400]


def test_a_checkpoint_asking_for_a_network_too_large_to_build_is_one_line(own, elsewhere, capsys):
    root, run = own
    mlp = mnistlab.train(model="rnn", train_subset=300, validation=100, epochs=1, progress=False, quiet=True,
                         out=str(elsewhere / "runs")).run_dir
    rewrite(mlp, lambda m: m.update(model_args={"layers": 3_000_000}))
    t0 = time.perf_counter()
    assert main(["evaluate", str(mlp), "--no-pictures"]) == 2
    assert "expected numbers within +-4096" in capsys.readouterr().err and time.perf_counter() - t0 < 30


def test_a_named_pipe_or_a_huge_document_in_a_run_never_hangs_a_reader(own, elsewhere, capsys):
    root, run = own
    sent = received(run, elsewhere / "fifo")
    (sent / "eval").mkdir(exist_ok=True)
    os.mkfifo(sent / "eval" / "attack-fgsm-linf.json")
    (sent / "maps" / "umap-pixels-test").mkdir(parents=True)
    os.mkfifo(sent / "maps" / "umap-pixels-test" / "map.json")
    done = subprocess.run([sys.executable, "-m", "mnistlab", "report", str(sent), "--out", str(elsewhere / "r")],
                          capture_output=True, text=True, timeout=120, env={**os.environ})
    assert done.returncode in (0, 2) and "Traceback" not in done.stderr  # it ended: the pipes were skipped
    junk = json.dumps({"junk": [{}] * 3_000_000})
    with pytest.raises(mnistlab.MnistlabError, match="more than 2,000,000 objects and arrays"):
        schema.parse_json(junk, "junk")


def test_a_received_tuning_study_never_trains_into_or_removes_a_folder_it_names(tmp_path, capsys):
    """A queued trial whose run_dir names a folder of the user's: tune trains under its own trials/ only."""
    optuna = pytest.importorskip("optuna")
    space = tmp_path / "space.toml"
    space.write_text("[fixed]\nepochs = 1\ntrain_subset = 600\nvalidation = 200\n\n[params.lr]\nlow = 1e-4\n"
                     "high = 1e-2\nlog = true\n")
    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "sub" / "data.txt").write_text("mine")
    out = tmp_path / "study"
    assert main(["tune", "--recipe", "seed-mlp", "--space", str(space), "--trials", "1", "--out", str(out),
                 "--no-baseline", "--quiet"]) == 0
    (db,) = out.rglob("study.db")
    storage = f"sqlite:///{db}"
    study = optuna.load_study(study_name=optuna.get_all_study_names(storage)[0], storage=storage)
    study.enqueue_trial({"lr": 1e-3}, user_attrs={"run_dir": str(victim)})
    main(["tune", "--recipe", "seed-mlp", "--space", str(space), "--trials", "2", "--out", str(out), "--no-baseline",
          "--quiet"])
    capsys.readouterr()
    assert (victim / "sub" / "data.txt").read_text() == "mine" and sorted(p.name for p in victim.iterdir()) == ["sub"]


def test_a_study_folder_that_is_a_link_is_neither_written_through_nor_removed(tmp_path):
    victim = tmp_path / "victim"
    (victim / "seed-0").mkdir(parents=True)
    (victim / "seed-0" / "f").write_text("mine")
    study = tmp_path / "study"
    (study / "runs" / "paper").mkdir(parents=True)
    (study / "runs" / "paper" / "m5").symlink_to(victim, target_is_directory=True)
    with pytest.raises(mnistlab.MnistlabError, match="is a symbolic link"):
        rundir.remove_run(study, study / "runs" / "paper" / "m5" / "seed-0")
    with pytest.raises(mnistlab.MnistlabError, match="leads out of"):
        rundir.no_links_below(study, study / ".." / "victim")
    assert (victim / "seed-0" / "f").read_text() == "mine"
