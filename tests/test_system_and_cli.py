"""Fashion-MNIST from Debian's package, and the `mnistlab` command run as a user runs it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from builders import FASHION_DEB, needs_package
from builders import mnistlab as mnistlab_cli
from PIL import Image

import mnistlab
from mnistlab.cli import main


@needs_package(FASHION_DEB.is_dir(), "dataset-fashion-mnist", "Fashion-MNIST read from the system")
def test_fashion_mnist_from_the_debian_package(empty_cache):
    ds = mnistlab.load("fashion-mnist", download=False)
    assert {r.origin for r in ds.sources} == {"system"}
    assert all(r.location.startswith(str(FASHION_DEB)) for r in ds.sources)
    # Debian re-gzips the files; verification by decompressed content still holds
    assert {r.verified for r in ds.sources} == {"sha256"}
    assert ds.train.images.shape == (60000, 28, 28) and ds.test.images.shape == (10000, 28, 28)
    assert ds.train.class_counts().tolist() == [6000] * 10
    assert ds.test.class_counts().tolist() == [1000] * 10
    (mean,), (std,) = ds.stats
    assert round(mean, 3) == 0.286 and round(std, 3) == 0.353
    assert ds.classes[9] == "Ankle boot"


@pytest.mark.slow
def test_cli_data_list_info_show_verify(tmp_path, capsys):
    out = mnistlab_cli("data", "list")  # the installed command, in a new process
    assert out.returncode == 0, out.stderr
    assert "mnist " in out.stdout and "bundled" in out.stdout and "cifar10" in out.stdout

    def cli(*args) -> str:  # the other subcommands through the same entry point, in this process
        capsys.readouterr()
        assert main(list(args)) == 0, capsys.readouterr().err
        return capsys.readouterr().out

    info = json.loads(cli("data", "info", "mnist", "--json"))
    assert info["splits"]["train"]["class_counts"][:3] == [5923, 6742, 5958]
    assert round(info["pixel_mean"][0], 4) == 0.1307
    assert all(f["verified"] == "sha256" for f in info["files"])

    assert "pixel mean 0.1307, std 0.3081" in cli("data", "info", "mnist")

    png = tmp_path / "first25.png"
    cli("data", "show", "mnist", "--split", "train", "--count", "25", "--out", str(png))
    image = Image.open(png)
    assert image.format == "PNG" and image.width > 5 * 28 * 3 and image.height > 5 * 28 * 3

    assert cli("data", "verify", "mnist").count(" ok ") == 4


@pytest.mark.slow
def test_cli_verify_reports_a_corrupt_copy_and_exits_nonzero(tmp_path):
    target = tmp_path / "mnist"
    target.mkdir()
    bundled = Path(mnistlab.__file__).parent / "_data" / "mnist"
    for f in bundled.glob("*-ubyte.gz"):
        (target / f.name).write_bytes(f.read_bytes())
    (target / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b" + b"garbage")
    out = mnistlab_cli("data", "verify", "mnist", "--data-dir", str(tmp_path))
    assert out.returncode == 1
    assert "error" in out.stdout and "not a valid gzip file" in out.stdout and "Traceback" not in out.stderr


@pytest.mark.slow
def test_bench_data_writes_a_table_and_json(tmp_path, capsys):
    assert main(["bench", "data", "--quick", "--out", str(tmp_path / "bench")]) == 0  # the command, in this process
    printed = capsys.readouterr().out
    assert "mnistlab.load warm" in printed and "ratio_to_reference" in printed
    result = json.loads((tmp_path / "bench" / "data.json").read_text())
    assert result["suite"] == "data" and result["machine"]["torch"]
    assert {r["name"] for r in result["rows"]} >= {"mnistlab.load warm (verified cache)"}
    assert all(r["median_s"] > 0 for r in result["rows"])


@pytest.mark.slow
@pytest.mark.parametrize("unbuffered", ["", "1"])
def test_a_closed_pipe_ends_quietly(unbuffered):
    """`mnistlab data info mnist | head -1`: the reader goes away; no BrokenPipeError traceback."""
    env = dict(os.environ, PYTHONUNBUFFERED=unbuffered)
    proc = subprocess.Popen([sys.executable, "-m", "mnistlab", "data", "info", "mnist"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # before the command has written a byte: its first write meets a closed pipe
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err


def test_the_package_claims_only_what_it_does():
    """Its one-line description names verbs the CLI has (it said 'attack' before anything attacked)."""
    from importlib.metadata import metadata

    from mnistlab.cli import build_parser

    verbs = set(build_parser()._subparsers._group_actions[0].choices)
    for text in (metadata("mnistlab")["Summary"], mnistlab.__doc__.splitlines()[0]):
        claimed = re.findall(r"\b(load|train|evaluate|attack|serve|audit|map|predict|export|ensemble|report|tune)\b",
                             text.lower())
        assert claimed and all(v in verbs or v == "load" for v in claimed), (text, claimed)
