"""Shared fixtures (and only fixtures: the helpers tests import live in builders.py): an isolated cache
and config for the whole session, per-test empty caches, trained runs, the running server."""

from __future__ import annotations

import os

# Before torch loads OpenMP: worker threads sleep when idle instead of spinning. Many tests run two
# processes at once (a server beside its client, two tuning workers, a study and its killed twin);
# with the default spin-wait, two processes of 2 threads each on 2 cores ran 3.6x slower than with
# one thread each (a sota study pair: 95 s against 26 s), and a process alone is as fast either way.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Under pytest-xdist the cores are shared out among the workers (and the processes their tests start,
# which inherit this), so N workers on N cores do not run N x N threads.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS",
                          str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))

import compileall
import sys
from pathlib import Path

import pytest
from builders import MAX_BODY, Server
from hypothesis import settings

import mnistlab
from mnistlab.data import registry as datasets

# Every property test draws the same cases on every run (a test's own @settings change only what
# they name): CI fails on a change, not on the luck of the draw. Explore further with
# `pytest --hypothesis-seed=N` or a larger MNISTLAB_FUZZ_EXAMPLES.
settings.register_profile("mnistlab", derandomize=True, database=None)
settings.load_profile("mnistlab")


def pytest_configure(config):
    """The everyday loop (`-m "not slow"`) fuzzes each surface lightly; CI's full run keeps the whole
    budget (tests/fuzzing.py). An explicit MNISTLAB_FUZZ_EXAMPLES always wins."""
    if "not slow" in (config.option.markexpr or "") and "MNISTLAB_FUZZ_EXAMPLES" not in os.environ:
        os.environ["MNISTLAB_FUZZ_EXAMPLES"] = "150"
    if sys.dont_write_bytecode and not hasattr(config, "workerinput"):
        # Where no bytecode is written (PYTHONDONTWRITEBYTECODE), each of the ~100 Python processes
        # the suite starts compiled mnistlab's modules from source again (0.4 s each on 2 AVX2 cores):
        # compiled once here, they all read it (what an ordinary install does on first import).
        compileall.compile_dir(Path(mnistlab.__file__).parent, quiet=1)


# The files that take longest (seconds of test time in the full suite on 2 AVX2 cores), heaviest first.
# pytest-xdist hands out whole files in collection order (`--dist loadfile --no-loadscope-reorder`):
# starting with the longest ones lets the workers finish together instead of one waiting on a
# long file that came last. A file missing here only runs later; the order never changes a result.
HEAVIEST_FIRST = ["test_fuzz_images.py", "test_docs_run.py", "test_notebooks.py", "test_train.py", "test_own_model.py",
                  "test_first_paths.py", "test_received_runs.py", "test_consent.py", "test_classical_arrays.py", "test_fuzz_own.py",
                  "test_fuzz_runs.py", "test_fuzz_checkpoints.py", "test_classical.py",
                  "test_tune.py", "test_attack.py", "test_audit.py", "test_precision.py", "test_serve.py",
                  "test_check.py", "test_browser.py", "test_capacity.py", "test_system_and_cli.py", "test_sota.py"]


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(HEAVIEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its own order


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory):
    """Never touch the user's real cache or config; one cache shared by the session keeps MNIST loads warm. Under
    pytest-xdist the workers share it too (the cache's writes are atomic, made for concurrent users),
    so the decoded MNIST and the packaged model's not-a-digit reference are built once per run."""
    if "PYTEST_XDIST_WORKER" in os.environ:
        cache = tmp_path_factory.getbasetemp().parent / "shared-cache"
        cache.mkdir(exist_ok=True)
    else:
        cache = tmp_path_factory.mktemp("cache")
    saved = {k: os.environ.get(k) for k in ("MNISTLAB_CACHE_DIR", "MNISTLAB_DATA_DIR", "MNISTLAB_MIRROR",
                                            "MNISTLAB_CONFIG_DIR")}
    os.environ["MNISTLAB_CACHE_DIR"] = str(cache)
    # the session's own key and signatures (mnistlab.consent): what the tests train, they signed
    os.environ["MNISTLAB_CONFIG_DIR"] = str(cache.parent / "config")
    os.environ.pop("MNISTLAB_DATA_DIR", None)
    os.environ.pop("MNISTLAB_MIRROR", None)
    yield cache
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def empty_cache(tmp_path, monkeypatch) -> Path:
    """A fresh, empty user cache for this test."""
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("MNISTLAB_CACHE_DIR", str(cache))
    return cache


@pytest.fixture(scope="session")
def mnist() -> mnistlab.Dataset:
    return mnistlab.load("mnist", download=False)


@pytest.fixture
def registered():
    """Register specs for the duration of one test: `registered(spec)`."""
    names = []

    def add(spec):
        datasets.register(spec, replace=True)
        names.append(spec.name)
        return spec

    yield add
    for name in names:
        datasets.unregister(name)


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """`trained(**settings)`: what `mnistlab.train(**settings)` returns (a Run, or Runs with `seeds`),
    trained once per session (per xdist worker) for each distinct settings, in a folder of its own.
    Shared: a test that changes a run's files works on a copy (`cp -r`)."""
    made = {}

    def train(**settings):
        key = repr(sorted(settings.items()))
        if key not in made:
            out = tmp_path_factory.mktemp("trained")
            made[key] = mnistlab.train(**{"progress": False, **settings}, out=str(out), quiet=True)
        return made[key]

    return train


# the classical baselines' runs (tests/test_classical*.py): small, and trained once per worker
CLASSICAL_SMALL = {"train_subset": 3000, "validation": 1000}


@pytest.fixture(scope="session")
def knn_run(trained) -> dict:
    return trained(model="knn", **CLASSICAL_SMALL).record


@pytest.fixture(scope="session")
def net_run(trained) -> dict:
    return trained(model="mlp", epochs=2, **CLASSICAL_SMALL).record


@pytest.fixture(scope="session")
def forest_run(trained) -> dict:
    return trained(model="random-forest", model_args={"n_estimators": 3}, **CLASSICAL_SMALL).record


@pytest.fixture(scope="session")
def svm_run(trained) -> dict:
    return trained(model="svm", model_args={"pca": 20}, **{**CLASSICAL_SMALL, "train_subset": 1000}).record


@pytest.fixture(scope="session")
def seed_runs(trained):
    """Three small MLPs (seeds 0-2) trained on a slice of the real MNIST: (group, [run, run, run])."""
    runs = trained(model="mlp", train_subset=6000, validation=1000, epochs=2, seeds="0-2")
    return Path(runs), [Path(r) for r in runs.runs]



@pytest.fixture(scope="session")
def running(tmp_path_factory):
    # --max-wait 60: the tests on this server check answers under load, not shedding (test_capacity.py)
    server = Server(tmp_path_factory.mktemp("server") / "server.log", "--max-body", str(MAX_BODY), "--max-wait", "60")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def server(running):
    return running.url


FUZZ_CASES: dict[str, int] = {}  # surface -> cases, summed over the xdist workers


def pytest_sessionfinish(session):
    """An xdist worker hands its fuzz counts to the controller, which prints the summary."""
    fuzz = sys.modules.get("fuzzing")
    if hasattr(session.config, "workeroutput") and fuzz is not None:
        session.config.workeroutput["fuzz_cases"] = dict(fuzz.CASES)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    for surface, n in getattr(node, "workeroutput", {}).get("fuzz_cases", {}).items():
        FUZZ_CASES[surface] = FUZZ_CASES.get(surface, 0) + n


def pytest_terminal_summary(terminalreporter):
    """How many generated cases the fuzz tests ran (tests/fuzzing.py)."""
    fuzz = sys.modules.get("fuzzing")
    cases = FUZZ_CASES or (fuzz.CASES if fuzz is not None else {})
    if cases:
        total = sum(cases.values())
        parts = ", ".join(f"{surface} {n:,}" for surface, n in cases.items())
        terminalreporter.write_line(f"fuzz: {total:,} generated cases across {len(cases)} surfaces ({parts})")
