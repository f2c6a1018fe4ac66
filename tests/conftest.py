"""Shared fixtures: an isolated cache for the whole session, and per-test empty caches."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import mnistlab
from mnistlab.data import registry as datasets


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory):
    """Never touch the user's real cache; one cache shared by the session keeps MNIST loads warm."""
    cache = tmp_path_factory.mktemp("cache")
    saved = {k: os.environ.get(k) for k in ("MNISTLAB_CACHE_DIR", "MNISTLAB_DATA_DIR", "MNISTLAB_MIRROR")}
    os.environ["MNISTLAB_CACHE_DIR"] = str(cache)
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


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` with its bytes: to show that a failed operation wrote nothing."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(Path(directory).rglob("*")) if p.is_file()}


def keep_artifact(path: Path) -> None:
    """Copy a screenshot to $MNISTLAB_TEST_ARTIFACTS, when set, for people to look at."""
    import shutil

    dest = os.environ.get("MNISTLAB_TEST_ARTIFACTS")
    if dest:
        Path(dest).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(dest) / Path(path).name)
