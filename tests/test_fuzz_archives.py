"""Fuzzing IDX and CIFAR-10 decoding, and the gzip, zip and tar readers (tests/fuzzing.py says how, and what must hold)."""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
import zipfile

import numpy as np
from builders import idx_bytes
from fuzzing import (
    case,
    expect_clean,
    fuzz,
    mutated,
)
from hypothesis import given
from hypothesis import strategies as st

from mnistlab.data import formats

IDX_SEEDS = [idx_bytes(np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256), idx_bytes(np.arange(5) % 10),
             idx_bytes(np.arange(16).reshape(2, 8), 0x0C)]


@fuzz()
@given(st.one_of(mutated(IDX_SEEDS), st.binary(max_size=64),
                 st.builds(lambda magic, dims, tail: struct.pack(">I", magic) + b"".join(struct.pack(">I", d)
                                                                                          for d in dims) + tail,
                           st.sampled_from([0x801, 0x803, 0xC02, 0x0, 0xFFFFFFFF]),
                           st.lists(st.integers(0, 2**32 - 1), max_size=4), st.binary(max_size=64))),
       st.sampled_from([(3, 0x08), (1, 0x08), (2, 0x0C)]))
def test_idx_and_cifar_decoding(data, kind):
    case("IDX and CIFAR-10 decoding")
    ndim, code = kind
    array = expect_clean(formats.parse_idx, data, "fuzz", ndim=ndim, dtype_code=code)
    assert array is None or array.ndim == ndim
    expect_clean(formats.parse_cifar10, data, "fuzz")


GZ_SEEDS = [gzip.compress(s, mtime=0) for s in IDX_SEEDS] + [gzip.compress(b"x" * 5000) + gzip.compress(b"yz")]


@fuzz()
@given(st.one_of(mutated(GZ_SEEDS), st.binary(max_size=64).map(lambda b: b"\x1f\x8b" + b)))
def test_gzip_reader(data):
    case("gzip reader")
    out = expect_clean(formats.decompress, data, "fuzz", limit=4096)
    assert out is None or len(out) <= 4096


def _zip_seed() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("gzip/a.gz", GZ_SEEDS[0])
        zf.writestr("gzip/b.gz", GZ_SEEDS[1])
    return buf.getvalue()


def _tar_seed() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, content in (("batches/a.bin", b"\x01" * 3073), ("batches/b.bin", b"\x02" * 3073)):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tf.addfile(info, io.BytesIO(content))
    return buf.getvalue()


@fuzz(share=0.25)
@given(st.one_of(mutated([_zip_seed()]), mutated([_tar_seed()])))
def test_archive_readers(tmp_path_factory, data):
    case("zip and tar readers")
    path = tmp_path_factory.getbasetemp() / "fuzz-archive"
    path.write_bytes(data)
    limits = ({"gzip/a.gz": 4096, "gzip/b.gz": 4096} if data[:2] == b"PK" else
              {"batches/a.bin": 8192, "batches/b.bin": 8192})
    found = expect_clean(formats.read_members, path, limits)
    assert found is None or all(len(found[m]) <= limit for m, limit in limits.items())


@fuzz(share=0.05)
@given(st.data())
def test_shift_set_cache_files(data):
    """A cached shift set (the user cache's shift/*.npz) damaged in any way is made again, never trusted,
    never a traceback."""
    case("shift set cache files")
    from mnistlab.data import shift_sets

    key = {"set": "fuzz", "base": "fuzz"}  # in the session's own cache (conftest)
    made = (np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28), np.array([3, 7], dtype=np.int64))
    path = shift_sets._path(key)
    path.unlink(missing_ok=True)
    shift_sets.cached(key, lambda: made)  # the real file, written as the verb writes it
    path.write_bytes(data.draw(mutated([path.read_bytes()], max_ops=4)))
    images, labels = shift_sets.cached(key, lambda: made)
    assert np.array_equal(images, made[0]) and np.array_equal(labels, made[1])
