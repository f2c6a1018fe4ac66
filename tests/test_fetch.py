"""Downloads against a real HTTP server on 127.0.0.1: bad mirrors skipped, nothing half-written."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from builders import FileServer, snapshot, write_tiny

import mnistlab
from mnistlab import MnistlabError
from mnistlab.cli import main as cli_main
from mnistlab.data import registry as datasets

FORMATS = ["kmnist", "qmnist", "emnist-letters", "cifar10", "fashion-mnist"]


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    with FileServer(root) as server:
        yield server, root


@pytest.mark.slow
@pytest.mark.parametrize("base", FORMATS)
def test_load_downloads_past_a_404_and_an_html_page(base, served, registered, empty_cache):
    server, root = served
    tiny, expected = write_tiny(datasets.get_spec(base), root)
    spec = registered(dataclasses.replace(tiny, mirrors=(
        server.mirror("missing", tiny.name), server.mirror("html", tiny.name), server.mirror("good", tiny.name))))
    ds = mnistlab.load(spec.name, download=True, progress=False)
    np.testing.assert_array_equal(ds.test.images.numpy(), expected["test"][0])
    np.testing.assert_array_equal(ds.train.labels.numpy(), expected["train"][1])
    assert {r.origin for r in ds.sources} == {"cache"}
    # every download tried the 404 mirror, then the HTML one, then succeeded
    kinds = [p.split("/")[1] for p in server.requests]
    assert kinds.count("good") == len(spec.archives) or kinds.count("good") == len(spec.files)
    assert kinds[:3] == ["missing", "html", "good"]
    # no temporary files were left behind, and a second load needs no network
    assert not [p for p in empty_cache.rglob("*") if p.name.endswith(".part")]
    server.requests.clear()
    mnistlab.load(spec.name, download=True)
    assert server.requests == []


def test_transient_failures_are_retried_and_bad_bodies_rejected(served, registered, empty_cache):
    server, root = served
    tiny, _ = write_tiny(datasets.get_spec("mnist"), root)
    spec = registered(dataclasses.replace(tiny, mirrors=(
        server.mirror("htmlsniff", tiny.name),  # HTML body under a binary content type
        server.mirror("corrupt", tiny.name),  # hash mismatch: next mirror, no retry
        server.mirror("short", tiny.name),  # truncated body: retried, then next mirror
        server.mirror("flaky", tiny.name),  # 503 once, then good
    )))
    paths = mnistlab.data.fetch(spec.name, progress=False, backoff=0.01)
    assert len(paths) == 4 and all(p.parent == empty_cache / spec.name for p in paths)
    first_file = [p for p in server.requests if "train-images" in p]
    assert [p.split("/")[1] for p in first_file] == (
        ["htmlsniff", "corrupt", "short", "short", "short", "flaky", "flaky"])
    assert mnistlab.load(spec.name, download=False).train.labels.shape == (24,)


@pytest.mark.slow
def test_every_mirror_failing_gives_one_error_listing_them_and_leaves_the_cache_empty(
        served, registered, empty_cache, capsys):
    server, root = served
    tiny, _ = write_tiny(datasets.get_spec("kmnist"), root)
    spec = registered(dataclasses.replace(tiny, mirrors=(
        server.mirror("missing", tiny.name), server.mirror("html", tiny.name),
        server.mirror("corrupt", tiny.name), "http://127.0.0.1:9/")))  # port 9: connection refused
    before = snapshot(empty_cache)
    with pytest.raises(MnistlabError) as err:
        mnistlab.data.fetch(spec.name, progress=False, backoff=0.01, retries=1)
    text = str(err.value)
    assert "could not download train-images-idx3-ubyte.gz; every mirror failed" in text
    assert "HTTP 404" in text and "HTML page" in text and "failed verification" in text
    assert "connection failed" in text and "place it at" in text
    assert snapshot(empty_cache) == before
    # and through the CLI: one message, exit 2, no traceback
    assert cli_main(["data", "fetch", spec.name, "--quiet"]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert snapshot(empty_cache) == before


def test_cli_fetch_uses_the_mirror_override_with_a_progress_bar(served, registered, empty_cache, monkeypatch,
                                                                  capsys):
    server, root = served
    tiny, _ = write_tiny(datasets.get_spec("kmnist"), root)
    registered(dataclasses.replace(tiny, mirrors=("http://127.0.0.1:9/",)))
    monkeypatch.setenv("MNISTLAB_MIRROR", f"{server.url}/good")
    assert cli_main(["data", "fetch", tiny.name]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("downloaded ") == 4
    assert "train-images-idx3-ubyte.gz" in captured.err  # tqdm's bar, labelled with the file
    assert cli_main(["data", "verify", tiny.name]) == 0
    assert cli_main(["data", "fetch", tiny.name]) == 0  # already present: nothing to do
    assert "already present" in capsys.readouterr().out
