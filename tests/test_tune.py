"""`mnistlab tune`: Optuna search over recipes, on the bundled MNIST with small models and subsets."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("optuna")

from builders import skip_without_package

import mnistlab  # noqa: E402
from mnistlab.cli import main  # noqa: E402
from mnistlab.errors import MnistlabError  # noqa: E402
from mnistlab.rundir import RunDir  # noqa: E402
from mnistlab.studies.tuning import search  # noqa: E402
from mnistlab.studies.tuning.report import IMPORTANCE_TRIALS  # noqa: E402
from mnistlab.studies.tuning.space import parse_space, read_space  # noqa: E402

# A small, quick space: the seed MLP on 2,000 training images, 3 epochs, a learning rate wide enough
# that some trials are bad at epoch 1 (so the median pruner has something to prune).
TINY = """
[fixed]
epochs = 3
train_subset = 2000
validation = 1000
batch_size = 64

[params.lr]
low = 1e-5
high = 1.0
log = true

[params."model_args.dropout"]
low = 0.0
high = 0.5
"""


@pytest.fixture
def tiny_space(tmp_path):
    path = tmp_path / "space.toml"
    path.write_text(TINY)
    return path


class WatchedSplit:
    """A dataset's test split that records where every read of it came from (the call stack's
    function names): the search must leave it alone, and only the study's one test evaluation of the
    chosen trial may read it."""

    def __init__(self, split):
        self._split, self.reads = split, []

    def _record(self):
        self.reads.append({frame.name for frame in traceback.extract_stack()})

    def __getattr__(self, name):
        self._record()
        return getattr(self._split, name)

    def __len__(self):
        self._record()
        return len(self._split)


@pytest.fixture
def watched_mnist(mnist):
    """MNIST as a dataset of one's own (the public `Dataset.from_arrays`), its test split watched."""
    ds = mnistlab.Dataset.from_arrays(mnist.train.images.numpy(), mnist.train.labels.numpy(),
                                      mnist.test.images.numpy(), mnist.test.labels.numpy(), name="mnist-watched")
    real = ds.test
    ds.test = WatchedSplit(real)
    yield ds
    ds.test = real


@pytest.mark.slow
def test_search_prunes_writes_a_recipe_that_trains_and_never_reads_test(watched_mnist, tmp_path, capsys):
    space = tmp_path / "space.toml"
    space.write_text(TINY.replace("[fixed]\n", '[fixed]\ndataset = "mnist-watched"\n'))

    s = search.tune("seed-mlp", str(space), trials=8, sampler="random", seed=0, out=str(tmp_path / "t"))
    study_dir = tmp_path / "t" / "seed-mlp-mnist-watched-space"
    assert s["trials"]["complete"] + s["trials"]["pruned"] == 8
    assert s["trials"]["pruned"] >= 1 and s["trials"]["fail"] == 0
    # the test set: read after the search, by the study's one evaluation of the chosen trial, and nowhere else
    reads = watched_mnist.test.reads
    assert reads and all("test_once" in stack for stack in reads), [sorted(r) for r in reads if "test_once" not in r]
    # trial 0 is the recipe's own values
    assert s["baseline"]["number"] == 0 and s["baseline"]["params"] == {"lr": 0.001, "model_args.dropout": 0.2}
    assert Path(s["test"]["run_dir"]) == Path(s["chosen"]["run_dir"])
    assert s["test"]["evaluations"] == 1 and 0.5 < s["test"]["accuracy"] <= 1
    trial_dirs = sorted((study_dir / "trials").iterdir())
    assert len(trial_dirs) == 8
    for run in map(RunDir, trial_dirs):
        summary = run.read_summary()
        assert summary["test_evaluated"] is False and summary["test_acc"] is None
        assert run.read_json(RunDir.CONFIG)["evaluate_test"] is False
    pruned = [RunDir(d).read_summary() for d in trial_dirs if RunDir(d).read_summary()["stopped_early"]]
    assert len(pruned) == s["trials"]["pruned"]
    assert all("pruned by the study's median pruner" in p["stopped_because"] for p in pruned)
    assert all(p["epochs_run"] < 3 for p in pruned)
    # the chosen trial is the best validation accuracy among the complete ones
    best_val = max(RunDir(d).read_summary()["val_acc"] for d in trial_dirs
                   if not RunDir(d).read_summary()["stopped_early"])
    assert s["chosen"]["val_acc"] == pytest.approx(best_val)
    for name in ("best.toml", "summary.json", "trials.csv", "study.html", "study-history.png", "study-slices.png"):
        assert (study_dir / name).is_file(), name
    # fANOVA's importances only from enough complete trials to mean something (the count depends on
    # pruning, so on the machine's precision: each way is checked where it lands)
    assert (study_dir / "study-importances.png").exists() == (s["trials"]["complete"] >= IMPORTANCE_TRIALS)
    html = (study_dir / "study.html").read_text()
    assert "data:image/png;base64" in html and "http" not in html.split("<main>")[1].split("Machine")[0]
    assert not list(study_dir.rglob("*.part"))

    # the recipe trains, and reproduces the chosen trial's validation accuracy exactly (same seed, CPU)
    capsys.readouterr()
    assert main(["train", "--recipe", str(study_dir / "best.toml"), "--out", str(tmp_path / "r"), "--quiet"]) == 0
    (again,) = [RunDir(p).read_summary() for p in (tmp_path / "r").iterdir()]
    assert again["val_acc"] == s["chosen"]["val_acc"]  # the same weights, measured the one way
    assert again["test_acc"] == s["test"]["accuracy"]

    # running the command again continues the study: nothing new to do, the test set not read again
    s2 = search.tune("seed-mlp", str(space), trials=8, sampler="random", seed=0, out=str(tmp_path / "t"),
                        quiet=True)
    assert s2["trials"] == s["trials"] and s2["test"]["evaluations"] == 1
    # ...and more trials extend it
    s3 = search.tune("seed-mlp", str(space), trials=10, sampler="random", seed=0, out=str(tmp_path / "t"),
                        quiet=True)
    assert s3["trials"]["complete"] + s3["trials"]["pruned"] == 10
    assert (study_dir / "study-importances.png").exists() == (s3["trials"]["complete"] >= IMPORTANCE_TRIALS)

    # a trial of the study shows its study in `mnistlab report`
    assert main(["report", s["chosen"]["run_dir"], "--out", str(tmp_path / "rep")]) == 0
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "A trial of study <code>seed-mlp-mnist-watched-space</code>" in page and "study.html" in page


def _tune_command(space, out, trials, *extra):
    return [sys.executable, "-m", "mnistlab", "tune", "--recipe", "seed-mlp", "--space", str(space), "--trials",
            str(trials), "--sampler", "random", "--pruner", "none", "--out", str(out), "--heartbeat", "1", *extra]


@pytest.mark.slow
def test_study_resumes_after_sigkill_and_the_killed_trial_resumes_its_run(tmp_path):
    space = tmp_path / "space.toml"
    # slower trials, so the kill lands inside one: 3 epochs of 4,000 images at batch 16 (at 2,000 a trial
    # left ~0.3 s between its first checkpoint and its summary on a fast CPU: too narrow a window)
    space.write_text(TINY.replace("train_subset = 2000", "train_subset = 4000").replace("batch_size = 64",
                                                                                        "batch_size = 16"))
    out = tmp_path / "t"
    study_dir = out / "seed-mlp-mnist-space"
    proc = subprocess.Popen(_tune_command(space, out, 2, "--workers", "1"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    victim = study_dir / "trials" / "trial-0001"
    deadline = time.monotonic() + 240
    while not (victim / RunDir.LAST).is_file() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    assert (victim / RunDir.LAST).is_file() and not (victim / RunDir.SUMMARY).exists(), "no trial to kill"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(3)  # two heartbeats: the dead worker's trial is now stale
    done = subprocess.run(_tune_command(space, out, 2, "--workers", "1"), capture_output=True, text=True,
                          timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((study_dir / "summary.json").read_text())
    assert summary["trials"]["complete"] == 2 and summary["trials"]["fail"] == 1  # the killed attempt
    log = (victim / RunDir.LOG).read_text()
    assert '"event": "resume"' in log  # it went on from its last checkpoint, not from scratch
    s = RunDir(victim).read_summary()
    assert s["epochs_run"] == 3 and s["test_evaluated"] is False
    rows = [line for line in (study_dir / "trials.csv").read_text().splitlines()[1:]]
    assert sum(1 for r in rows if r.endswith("trial-0001")) == 2  # the failed attempt and its retry share the run


@pytest.mark.slow
def test_two_worker_processes_share_one_sqlite_study(tiny_space, tmp_path):
    # trials of 3 epochs: long enough that the worker that started first cannot take all 4 alone
    done = subprocess.run(_tune_command(tiny_space, tmp_path / "t", 4, "--workers", "2"), capture_output=True,
                          text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    optuna = pytest.importorskip("optuna")
    study = optuna.load_study(study_name="seed-mlp-mnist-space",
                              storage=f"sqlite:///{tmp_path / 't' / 'seed-mlp-mnist-space' / 'study.db'}")
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert 4 <= len(finished) <= 5  # a second worker may finish the trial it had started
    assert len({t.user_attrs["pid"] for t in finished}) == 2  # both processes took trials
    configs = [json.loads(Path(t.user_attrs["run_dir"], RunDir.CONFIG).read_text()) for t in finished]
    assert {c["threads"] for c in configs} == {max(1, (os.cpu_count() or 1) // 2)}


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server of the test's own (tests/postgres.py); skipped only where none is installed."""
    from postgres import PostgresServer, binaries

    pytest.importorskip("psycopg", reason="the PostgreSQL driver (psycopg, in the test extra)")
    skip_without_package(binaries() is not None, "postgresql", "a study shared through a database server")
    server = PostgresServer()
    yield server
    server.stop()


@pytest.mark.slow
def test_two_workers_on_two_machines_share_a_postgresql_study_and_retry_a_killed_trial(postgres, tmp_path):
    """Two `mnistlab tune` commands, as on two machines (each its own --out), on one study in a real
    PostgreSQL server; one is killed mid-trial, and the other retries that trial from its checkpoint."""
    optuna = pytest.importorskip("optuna")
    space = tmp_path / "space.toml"
    space.write_text(TINY.replace("train_subset = 2000", "train_subset = 6000").replace("batch_size = 64",
                                                                                        "batch_size = 16")
                     .replace("epochs = 3", "epochs = 4"))
    trials = 3  # finished: the killed trial's retry and two more

    def worker(machine):
        return subprocess.Popen(_tune_command(space, tmp_path / machine, trials, "--storage", postgres.url, "--study",
                                              "shared", "--set", "threads=1"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    a, b = worker("machine-a"), worker("machine-b")
    trials_a = tmp_path / "machine-a" / "shared" / "trials"
    deadline = time.monotonic() + 300
    victim = None
    while victim is None and time.monotonic() < deadline and a.poll() is None:
        for run in (trials_a.iterdir() if trials_a.is_dir() else []):
            if (run / RunDir.LAST).is_file() and not (run / RunDir.SUMMARY).exists():
                victim = run
        time.sleep(0.01)
    assert victim is not None, "machine a finished no checkpoint to be killed after"
    os.kill(a.pid, signal.SIGKILL)
    a.wait()
    out, err = b.communicate(timeout=600)
    assert b.returncode == 0, err[-3000:]

    study = optuna.load_study(study_name="shared", storage=postgres.url)
    states = [t.state.name for t in study.trials]
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == trials and states.count("FAIL") == 1 and "RUNNING" not in states  # they add up
    (killed,) = [t for t in study.trials if t.state.name == "FAIL"]
    assert killed.user_attrs["run_dir"] == str(victim.resolve()) and killed.user_attrs["pid"] == a.pid
    (retry,) = [t for t in finished if t.user_attrs["run_dir"] == str(victim.resolve())]
    assert retry.user_attrs["pid"] == b.pid and retry.number > killed.number and retry.params == killed.params
    assert retry.user_attrs["retry_of"] == killed.number
    assert '"event": "resume"' in (victim / RunDir.LOG).read_text()  # from the dead worker's checkpoint
    assert RunDir(victim).read_summary()["epochs_run"] == 4
    # none ran twice: every finished trial has a run of its own, and every run on disk is a trial's
    run_dirs = [t.user_attrs["run_dir"] for t in finished]
    assert len(set(run_dirs)) == len(run_dirs)
    on_disk = {str(p.resolve()) for m in ("machine-a", "machine-b")
               for p in (tmp_path / m / "shared" / "trials").iterdir()}
    assert on_disk == set(run_dirs)
    assert {t.user_attrs["pid"] for t in finished} <= {a.pid, b.pid} and b.pid in {t.user_attrs["pid"] for t in finished}
    assert "test accuracy of the chosen trial" in out


@pytest.mark.slow
def test_accuracy_and_time_give_a_pareto_front(tiny_space, tmp_path):
    s = search.tune("seed-mlp", str(tiny_space), trials=4, sampler="random", objectives=("accuracy", "time"),
                       out=str(tmp_path / "t"), quiet=True)
    front = s["pareto"]
    assert front and s["pruner"].startswith("none")
    # no trial of the front is beaten on both objectives by any finished trial
    rows = [json.loads(Path(t["run_dir"], RunDir.SUMMARY).read_text()) for t in front]
    every = [RunDir(p).read_summary() for p in (tmp_path / "t" / "seed-mlp-mnist-space" / "trials").iterdir()]
    for r in rows:
        assert not any(o["val_acc"] > r["val_acc"] and o["train_s"] < r["train_s"] for o in every)
    assert (tmp_path / "t" / "seed-mlp-mnist-space" / "study-pareto.png").is_file()
    assert s["chosen"]["val_acc"] == max(t["val_acc"] for t in front)


@pytest.mark.slow
def test_the_cmaes_sampler_searches_the_numeric_parameters(tiny_space, tmp_path):
    s = search.tune("seed-mlp", str(tiny_space), trials=4, sampler="cmaes", pruner="none", seed=0,
                       out=str(tmp_path / "t"), quiet=True, overrides={"epochs": "1"})
    assert s["trials"]["complete"] >= 4
    with open(tmp_path / "t" / "seed-mlp-mnist-space" / "trials.csv", newline="") as f:
        lrs = {row["lr"] for row in csv.DictReader(f)}  # trial 0 is the recipe's own; CMA-ES proposes the rest
    assert len(lrs) >= 3


@pytest.mark.slow
def test_a_study_refuses_another_space_under_its_name(tiny_space, tmp_path):
    search.tune("seed-mlp", str(tiny_space), trials=1, out=str(tmp_path / "t"), quiet=True,
                   overrides={"epochs": "1"})
    other = tmp_path / "space.toml"
    other.write_text(TINY.replace("high = 0.5", "high = 0.4"))
    with pytest.raises(MnistlabError, match="created with another space"):
        search.tune("seed-mlp", str(other), trials=1, out=str(tmp_path / "t"), quiet=True,
                       overrides={"epochs": "1"})


BAD_SPACES = [
    ("[params.momentun]\nlow = 0.1\nhigh = 0.2", r"unknown field 'momentun'\nhint: did you mean 'momentum'\?"),
    ("[params.lr]\nlow = 'a'\nhigh = 0.2", r"\[params.lr\]: 'a' is not a number"),
    ("[params.epochs]\nlow = 1.5\nhigh = 3", r"\[params.epochs\]: epochs is an integer field"),
    ("[params.lr]\nlow = 0.2\nhigh = 0.2", r"\[params.lr\]: empty range low=0.2 high=0.2"),
    ("[params.lr]\nlow = 0.3\nhigh = 0.2", r"\[params.lr\]: empty range"),
    ("[params.lr]\nlow = 0.0\nhigh = 0.2\nlog = true", r"\[params.lr\]: a log range needs low > 0"),
    ("[params.lr]\nlow = 0.0\nhigh = 0.2", r"\[params.lr\]: lr=0.0: expected a positive number"),
    ("[params.optimizer]\nchoices = []", r"\[params.optimizer\]: choices must be a non-empty list"),
    ("[params.optimizer]\nchoices = ['sgd', 'rmsprop']", r"optimizer='rmsprop': expected sgd \| adam"),
    ("[params.optimizer]\nlow = 1\nhigh = 2", r"optimizer is a str field; a range"),
    ("[params.nesterov]\nchoices = [1, 0]", r"\[params.nesterov\]: 1 is a int; nesterov expects a bool"),
    ("[params.momentum]\nlow = 0.5\nhigh = 0.9\nwhen = { solver = 'sgd' }", r"condition names 'solver'"),
    ("[params.'model_args.widht']\nlow = 8\nhigh = 16", r"model 'mlp' has no option 'widht'"),
    ("[params.lr]\nlow = 0.1\nhigh = 0.2\nlg = true", r"\[params.lr\]: unknown key\(s\) lg"),
    ("[params.out]\nchoices = ['a', 'b']", r"\[params.out\]: out is set by the tuner"),
    ("[fixed]\nepochs = 'many'\n[params.lr]\nlow = 0.1\nhigh = 0.2", r"epochs='many' is not a valid int"),
    ("[fixed]\nepochs = 2", r"no \[params.FIELD\] tables"),
    ("[params.lr]\nlow = 0.1\nhigh = 0.2\n[extra]\na = 1", r"unknown section\(s\) extra"),
]


@pytest.mark.parametrize("text,message", BAD_SPACES, ids=[m[:30] for _, m in BAD_SPACES])
def test_bad_spaces_get_errors_naming_the_field(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(MnistlabError, match=message):
        read_space(str(path), "seed-mlp")


def test_the_command_reports_a_bad_space_without_a_traceback(tmp_path, capsys):
    (tmp_path / "bad.toml").write_text("[params.lr]\nlow = 0.5\nhigh = 0.1\n")
    assert main(["tune", "--recipe", "seed-mlp", "--space", str(tmp_path / "bad.toml"), "--out",
                 str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert "[params.lr]: empty range low=0.5 high=0.1" in err and "Traceback" not in err
    for argv, text in ((["--trials", "0"], "--trials 0"), (["--objectives", "time"], "--objectives"),
                       (["--sampler", "grid"], "--sampler: invalid choice: 'grid'"), (["--storage", "nosuch://x"], "--storage")):
        assert main(["tune", "--recipe", "seed-mlp", "--space", "seed-mlp", "--out", str(tmp_path / "t"),
                     *argv]) == 2
        assert text in capsys.readouterr().err


def test_packaged_spaces_parse_against_their_recipes():
    for space, recipe in (("fast", "fast"), ("fast-pareto", "fast"), ("seed-mlp", "seed-mlp")):
        sp = read_space(space, recipe)
        assert sp.params


values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6), st.floats(allow_nan=True),
                                st.text(max_size=8)),
                      lambda inner: st.one_of(st.lists(inner, max_size=4),
                                              st.dictionaries(st.sampled_from(["low", "high", "log", "step", "choices",
                                                                               "when", "lr", "x"]), inner, max_size=5)),
                      max_leaves=12)


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fixed=st.dictionaries(st.sampled_from(["epochs", "lr", "nope", "out"]), values, max_size=2),
       params=st.dictionaries(st.sampled_from(["lr", "epochs", "optimizer", "nesterov", "model_args.dropout", "zz"]),
                              values, max_size=3))
def test_any_space_parses_or_gets_a_clear_error(fixed, params):
    try:
        sp = parse_space({"fixed": fixed, "params": params}, "seed-mlp")
    except MnistlabError as exc:
        assert exc.message
    else:
        assert len(sp.params) == len(params)
