"""Every registered dataset's loader, on small files written in its real format; and bad input."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
from builders import gz, idx_bytes, snapshot, write_tiny

import mnistlab
from mnistlab import MnistlabError
from mnistlab.cli import main as cli_main
from mnistlab.data import registry as datasets

REAL_SPECS = [datasets.get_spec(n) for n in datasets.list_datasets()]
MNIST_DIR = Path(mnistlab.__file__).parent / "_data" / "mnist"


@pytest.mark.parametrize("spec", REAL_SPECS, ids=lambda s: s.name)
def test_every_registered_format_loads_from_a_data_dir(spec, tmp_path, registered, empty_cache):
    tiny, expected = write_tiny(spec, tmp_path)
    registered(tiny)
    ds = mnistlab.load(tiny.name, data_dir=tmp_path, download=False)
    for split_name in ("train", "test"):
        images, labels = expected[split_name]
        part = ds.split(split_name)
        np.testing.assert_array_equal(part.images.numpy(), images)
        np.testing.assert_array_equal(part.labels.numpy(), labels)
    assert ds.train.images.shape[1:] == spec.image_shape
    # the spec's verification path was used, not skipped
    methods = {r.verified for r in ds.sources}
    assert methods == {"archive md5"} if spec.archives else methods <= {"sha256", "md5"}
    assert all(r.origin == "data-dir" for r in ds.sources)
    # and `mnistlab data verify` agrees
    results = mnistlab.data.verify(tiny.name, data_dir=tmp_path)
    assert {r["status"] for r in results} == {"ok"}


def test_uncompressed_and_recompressed_copies_verify_by_content(tmp_path, empty_cache):
    target = tmp_path / "mnist"
    target.mkdir()
    for f in MNIST_DIR.glob("*-ubyte.gz"):
        raw = gzip.decompress(f.read_bytes())
        if "train" in f.name:
            (target / f.name[:-3]).write_bytes(raw)  # uncompressed
        else:
            (target / f.name).write_bytes(gzip.compress(raw, compresslevel=1))  # re-compressed differently
    ds = mnistlab.load("mnist", data_dir=tmp_path)
    assert all(r.origin == "data-dir" and r.verified == "sha256" for r in ds.sources)
    assert ds.train.labels[:3].tolist() == [5, 0, 4]


def test_unknown_dataset_name():
    with pytest.raises(MnistlabError) as err:
        mnistlab.load("mnsit")
    assert "unknown dataset 'mnsit'" in err.value.message and "did you mean 'mnist'?" in err.value.hint


def _mnist_copy(tmp_path: Path) -> Path:
    target = tmp_path / "data" / "mnist"
    target.mkdir(parents=True)
    for f in MNIST_DIR.glob("*-ubyte.gz"):
        shutil.copy(f, target / f.name)
    return target


def _expect_error(data_dir: Path, cache: Path, *fragments: str) -> MnistlabError:
    before = snapshot(cache)
    with pytest.raises(MnistlabError) as err:
        mnistlab.load("mnist", data_dir=data_dir, download=False)
    text = str(err.value)
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {text!r}"
    assert snapshot(cache) == before, "a failed load changed the cache"
    return err.value


def test_truncated_gzip(tmp_path, empty_cache):
    target = _mnist_copy(tmp_path)
    path = target / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:50000])
    _expect_error(target.parent, empty_cache, str(path), "not a valid gzip file", "truncated")


def test_corrupt_content_fails_the_hash(tmp_path, empty_cache):
    target = _mnist_copy(tmp_path)
    path = target / "train-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[100] = (raw[100] + 1) % 10  # one label changed: still a valid file, but not MNIST
    path.write_bytes(gzip.compress(bytes(raw)))
    err = _expect_error(target.parent, empty_cache, str(path), "SHA-256", "expected 65a50cbb")
    assert "mnistlab data fetch mnist" in err.hint


def test_corrupt_file_is_not_masked_by_a_warm_cache(tmp_path, empty_cache):
    target = _mnist_copy(tmp_path)
    mnistlab.load("mnist", data_dir=target.parent)  # warms the decoded cache for these files
    path = target / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[-1] = (raw[-1] + 1) % 10
    path.write_bytes(gzip.compress(bytes(raw)))
    _expect_error(target.parent, empty_cache, str(path), "SHA-256")


def test_missing_file_names_where_it_looked(tmp_path, empty_cache, registered):
    tiny, _ = write_tiny(datasets.get_spec("kmnist"), tmp_path)
    registered(tiny)
    (tmp_path / tiny.name / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(MnistlabError) as err:
        mnistlab.load(tiny.name, data_dir=tmp_path, download=False)
    assert "t10k-labels-idx1-ubyte.gz not found" in err.value.message
    assert str(tmp_path / tiny.name) in err.value.message and "mnistlab data fetch" in err.value.hint
    assert snapshot(empty_cache) == {}


def _unpinned_tiny(tmp_path, registered, mutate):
    """A tiny KMNIST-format dataset with hashes left unpinned, so the parser's own checks are what fires."""
    import dataclasses

    tiny, _ = write_tiny(datasets.get_spec("kmnist"), tmp_path)
    tiny = dataclasses.replace(tiny, files={n: dataclasses.replace(f, md5=None) for n, f in tiny.files.items()})
    registered(tiny)
    mutate(tmp_path / tiny.name)
    return tiny


@pytest.mark.parametrize("case, fragments", [
    ("wrong-magic", ["train-images-idx3-ubyte.gz", "wrong magic number 0x00000801", "expected 0x00000803"]),
    ("header-sizes", ["t10k-images-idx3-ubyte.gz", "header declares 12x28x28", "holds"]),
    ("label-range", ["train-labels-idx1-ubyte.gz", "outside 0..9", "12 as stored"]),
    ("count", ["expected 24 of each"]),
    ("shape", ["images are 28x27", "expected 28x28"]),
])
def test_structural_errors(tmp_path, empty_cache, registered, case, fragments):
    def mutate(d: Path):
        if case == "wrong-magic":  # a label file where the images belong
            (d / "train-images-idx3-ubyte.gz").write_bytes((d / "train-labels-idx1-ubyte.gz").read_bytes())
        elif case == "header-sizes":  # header intact, data cut short
            raw = gzip.decompress((d / "t10k-images-idx3-ubyte.gz").read_bytes())
            (d / "t10k-images-idx3-ubyte.gz").write_bytes(gz(raw[:-100]))
        elif case == "label-range":
            (d / "train-labels-idx1-ubyte.gz").write_bytes(gz(idx_bytes(np.full(24, 12, dtype=np.uint8))))
        elif case == "count":
            (d / "train-labels-idx1-ubyte.gz").write_bytes(gz(idx_bytes(np.zeros(23, dtype=np.uint8))))
        elif case == "shape":
            (d / "train-images-idx3-ubyte.gz").write_bytes(gz(idx_bytes(np.zeros((24, 28, 27), np.uint8))))

    tiny = _unpinned_tiny(tmp_path, registered, mutate)
    with pytest.raises(MnistlabError) as err:
        mnistlab.load(tiny.name, data_dir=tmp_path, download=False)
    for fragment in fragments:
        assert fragment in str(err.value)
    assert snapshot(empty_cache) == {}


def test_md5_pinned_file_that_was_altered(tmp_path, empty_cache, registered):
    tiny, _ = write_tiny(datasets.get_spec("kmnist"), tmp_path)
    registered(tiny)
    path = tmp_path / tiny.name / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()), compresslevel=1))
    with pytest.raises(MnistlabError, match="MD5 is .* expected") as err:
        mnistlab.load(tiny.name, data_dir=tmp_path, download=False)
    assert "--no-verify" in err.value.hint
    ds = mnistlab.load(tiny.name, data_dir=tmp_path, download=False, verify=False)  # the escape hatch works
    assert {r.verified for r in ds.sources} == {"unverified"}


def test_archive_with_wrong_md5(tmp_path, empty_cache, registered):
    tiny, _ = write_tiny(datasets.get_spec("cifar10"), tmp_path)
    registered(tiny)
    archive = tmp_path / tiny.name / "cifar-10-binary.tar.gz"
    archive.write_bytes(archive.read_bytes()[:-10])
    with pytest.raises(MnistlabError, match="cifar-10-binary.tar.gz: MD5 is"):
        mnistlab.load(tiny.name, data_dir=tmp_path, download=False)


@pytest.mark.parametrize("argv, fragment", [
    (["data", "info", "mnsit"], "unknown dataset 'mnsit'"),
    (["data", "info", "kmnist"], "not found; looked in"),
    (["data", "show", "mnist", "--count", "0", "--out", "x.png"], "--count 0"),
    (["data", "show", "mnist", "--out", "grid.jpg"], "expected a file name ending in .png"),
    (["data", "show", "mnist", "--out", "no/such/dir/grid.png"], "does not exist"),
    (["bench", "nosuchsuite"], "unknown benchmark suite"),
])
def test_cli_errors_are_one_message_without_traceback(argv, fragment, capsys, empty_cache, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MNISTLAB_SYSTEM_DATA_DIRS", "")  # so "kmnist" is missing even where Debian has it
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err and err.startswith("mnistlab: error:")
    assert list(tmp_path.glob("*.png")) == []


# ---------- hostile files: bombs, impossible headers, leftovers of a kill ----------

def gzip_bomb(size: int) -> bytes:
    """`size` zero bytes, gzip-compressed in a stream (the bomb is never held uncompressed here)."""
    import zlib

    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    parts = [packer.compress(zeros) for _ in range(size >> 20)]
    return b"".join(parts) + packer.flush()


def peak_traced_bytes(fn) -> int:
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


@pytest.mark.slow
@pytest.mark.parametrize("how", ["load", "verify", "info"])
def test_a_gzip_bomb_is_refused_after_reading_what_the_file_may_hold(tmp_path, empty_cache, how, capsys):
    target = _mnist_copy(tmp_path)
    bomb = gzip_bomb(512 << 20)  # 0.5 GB of zeros in ~0.5 MB, where 47 MB of images belong
    assert len(bomb) < 1 << 20
    (target / "train-images-idx3-ubyte.gz").write_bytes(bomb)
    expected = "holds more than 47,040,016 bytes, the most 60000 28x28 images of mnist's train split can take"

    def attempt():
        if how == "load":
            with pytest.raises(MnistlabError) as err:
                mnistlab.load("mnist", data_dir=target.parent, download=False)
            assert f"train-images-idx3-ubyte.gz: {expected}" in err.value.message
        elif how == "verify":
            rows = {r["file"]: r for r in mnistlab.data.verify("mnist", data_dir=target.parent)}
            assert rows["train-images-idx3-ubyte.gz"]["status"] == "error"
            assert expected in rows["train-images-idx3-ubyte.gz"]["detail"]
        else:
            assert cli_main(["data", "info", "mnist", "--data-dir", str(target.parent)]) == 2

    assert peak_traced_bytes(attempt) < 160 << 20  # the old reader took 0.5 GB here (2.3 GB for a 1 MB bomb)
    if how == "info":
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err


@pytest.mark.slow
def test_bombs_inside_archives_are_refused(tmp_path, empty_cache, registered):
    import io
    import tarfile
    import zipfile

    # EMNIST: a zip whose member (a .gz) inflates far past its split's size
    tiny, _ = write_tiny(datasets.get_spec("emnist-letters"), tmp_path)
    registered(tiny)
    archive = tmp_path / tiny.name / "gzip.zip"
    with zipfile.ZipFile(archive, "a") as zf:
        name = tiny.files["emnist-letters-test-labels-idx1-ubyte.gz"].member
        data = {n: zf.read(n) for n in zf.namelist()}
    for size, fragment in ((256 << 20, "labels-idx1-ubyte.gz: holds more than 65,556 bytes, the most this member"),
                           (32 << 20, "labels-idx1-ubyte.gz: holds more than 20 bytes, the most 12 labels of")):
        data[name] = gzip_bomb(size)  # too large a member, then a small member that inflates too far
        with zipfile.ZipFile(archive, "w") as zf:
            for n, d in data.items():
                zf.writestr(n, d)

        def attempt():
            with pytest.raises(MnistlabError, match=fragment):
                mnistlab.load(tiny.name, data_dir=tmp_path, download=False, verify=False)

        assert peak_traced_bytes(attempt) < 64 << 20
    # CIFAR-10: a tar.gz with a member far larger than a batch can be, and one that is all zeros
    tiny, _ = write_tiny(datasets.get_spec("cifar10"), tmp_path)
    registered(tiny)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo(tiny.files["test_batch.bin"].member)
        info.size = 300 << 20
        tf.addfile(info, io.BytesIO(bytes(info.size)))
    (tmp_path / tiny.name / "cifar-10-binary.tar.gz").write_bytes(buf.getvalue())

    def attempt():
        with pytest.raises(MnistlabError, match="cifar-10-binary.tar.gz.*holds more than"):
            mnistlab.load(tiny.name, data_dir=tmp_path, download=False, verify=False)

    assert peak_traced_bytes(attempt) < 64 << 20


def test_an_oversized_plain_file_is_refused_unread(tmp_path, empty_cache):
    target = _mnist_copy(tmp_path)
    path = target / "t10k-labels-idx1-ubyte.gz"
    path.unlink()
    sparse = target / "t10k-labels-idx1-ubyte"  # an uncompressed copy, 8 GB (sparse: no disk used)
    with open(sparse, "wb") as f:
        f.truncate(8 << 30)
    with pytest.raises(MnistlabError, match=r"8,589,934,592 bytes, more than the 75,544 that 10000 labels of mnist's test split can take"):
        mnistlab.load("mnist", data_dir=target.parent, download=False)


def test_an_idx_header_whose_sizes_overflow_is_a_clear_error(tmp_path, empty_cache, registered, capsys):
    import struct

    def mutate(d: Path):  # 2^22 x 2^21 x 2^21 images declared (2^64 bytes), no data
        header = struct.pack(">IIII", 0x00000803, 1 << 22, 1 << 21, 1 << 21)
        (d / "train-images-idx3-ubyte.gz").write_bytes(gz(header))

    tiny = _unpinned_tiny(tmp_path, registered, mutate)
    with pytest.raises(MnistlabError, match=r"header declares 4194304x2097152x2097152 uint8 values "
                                            r"\(18,446,744,073,709,551,616 bytes of data\), but the file holds 0"):
        mnistlab.load(tiny.name, data_dir=tmp_path, download=False, verify=False)
    assert cli_main(["data", "info", tiny.name, "--no-verify", "--data-dir", str(tmp_path)]) == 2
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.slow
def test_temporary_files_left_by_a_killed_process_are_removed(tmp_path, empty_cache):
    import os
    import subprocess
    import sys

    decoded = empty_cache / "decoded"
    decoded.mkdir()
    killer = ("import os, signal, sys\nfrom mnistlab import atomic\n"
              "with atomic.replacing(sys.argv[1]) as tmp:\n"
              "    open(tmp, 'wb').write(bytes(1 << 20))\n"
              "    os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", killer, str(decoded / "train-images")])
    assert proc.returncode == -9
    (left,) = decoded.glob(".*.part")  # what kill -9 leaves: nothing could remove it
    mine = decoded / f".other.{os.getpid()}.abc123.part"  # a live writer's file stays
    mine.write_bytes(b"being written")
    mnistlab.load("mnist")
    assert not left.exists() and mine.exists()
    assert len(list(decoded.iterdir())) == 5  # the four decoded files, and the live writer's


def test_verify_does_not_call_an_unpinned_copy_ok(tmp_path, empty_cache, registered, capsys):
    # CIFAR-10 unpacked from its archive: nothing pinned for the batch files themselves
    tiny, _ = write_tiny(datasets.get_spec("cifar10"), tmp_path)
    registered(tiny)
    import tarfile

    with tarfile.open(tmp_path / tiny.name / "cifar-10-binary.tar.gz") as tf:
        tf.extractall(tmp_path / tiny.name, filter="data")
    (tmp_path / tiny.name / "cifar-10-binary.tar.gz").unlink()
    results = mnistlab.data.verify(tiny.name, data_dir=tmp_path)
    assert {r["status"] for r in results} == {"unpinned"}
    assert all("not verified" in r["detail"] for r in results)
    assert cli_main(["data", "verify", tiny.name, "--data-dir", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert " ok " not in captured.out and "NOT VERIFIED" in captured.err
    ds = mnistlab.load(tiny.name, data_dir=tmp_path, download=False)  # it still loads, and says how
    assert {r.verified for r in ds.sources} == {"unpinned"}
