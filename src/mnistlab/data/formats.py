"""Decoding the bytes of the family's file formats into numpy arrays, checking every header and size.

- gzip: streamed, and stopped as soon as the output passes the most the file may hold (a few
  hundred bytes of a gzip bomb cost nothing).
- zip (EMNIST) and tar.gz (CIFAR-10): members read with the same cap; a member whose header
  declares more than the cap is refused before it is read.
- IDX (MNIST, Fashion-MNIST, KMNIST, EMNIST, QMNIST): a big-endian magic `00 00 TT DD` (TT the
  element type, DD the number of dimensions), one big-endian uint32 per dimension, then the data.
- CIFAR-10 binary: fixed-length records of 1 label byte and 3x32x32 pixel bytes (channel planes).

Every function takes a `source` string naming where the bytes came from, which every error message
repeats. Only the archive readers touch the file system.
"""

from __future__ import annotations

import gzip
import io
import math
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..errors import MnistlabError

# IDX element type code -> numpy dtype (big-endian where it matters)
IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
IDX_TYPE_NAMES = {0x08: "uint8", 0x09: "int8", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32", 0x0E: "float64"}
CIFAR_RECORD = 1 + 3 * 32 * 32  # label byte + pixel planes
CHUNK = 1 << 20  # bytes per read when streaming


def is_gzip(data: bytes | bytearray | memoryview) -> bool:
    return bytes(data[:2]) == b"\x1f\x8b"


def _too_large(source: str, limit: int, what: str) -> MnistlabError:
    return MnistlabError(
        f"{source}: holds more than {limit:,} bytes, the most {what} can take",
        hint="the file is not the one expected here (or it is a decompression bomb): delete it and fetch it again",
    )


def decompress(data: bytes, source: str, *, limit: int, what: str = "this file") -> bytes:
    """Gunzip `data` if it is gzip, else return it as is; never more than `limit` bytes of output.

    Concatenated gzip members are followed; a truncated or corrupt stream, or an output that would
    pass `limit` (the most the file may hold: `what` says what that is), is a clear error.
    """
    if not is_gzip(data):
        if len(data) > limit:
            raise _too_large(source, limit, what)
        return data
    out: list[bytes] = []
    size, rest = 0, memoryview(data)
    try:
        while True:
            inflater = zlib.decompressobj(wbits=31)  # one gzip member
            chunk = inflater.decompress(rest, limit + 1 - size)
            size += len(chunk)
            out.append(chunk)
            if size > limit or inflater.unconsumed_tail:
                raise _too_large(source, limit, what)
            if not inflater.eof:
                raise EOFError("the compressed stream ends before its end marker")
            rest = memoryview(inflater.unused_data)
            if not is_gzip(rest):  # trailing zero padding is allowed by gzip(1); anything else is not ours
                if bytes(rest).strip(b"\x00"):
                    raise zlib.error("data after the end of the gzip stream")
                return b"".join(out)
    except (EOFError, zlib.error) as exc:
        raise MnistlabError(
            f"{source}: not a valid gzip file ({exc}); it is probably truncated or corrupt",
            hint="delete it and fetch it again (`mnistlab data fetch NAME`), or replace it with a good copy",
        ) from None


def read_members(path: Path, limits: Mapping[str, int]) -> dict[str, bytes]:
    """The bytes of the archive members named in `limits` (member -> most bytes it may hold).

    A zip is read member by member; a tar (gzip-compressed or not) in one streamed pass, whose
    total decompressed size is capped too, so a bomb inside an archive costs nothing either.
    """
    try:
        if zipfile.is_zipfile(path):
            return _zip_members(path, limits)
        return _tar_members(path, limits)
    except KeyError as exc:
        raise MnistlabError(f"{path}: archive lacks member {exc}",
                            hint="the archive is incomplete or not the expected one: fetch it again") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, EOFError, OSError, zlib.error,
            NotImplementedError, ValueError) as exc:
        raise MnistlabError(f"{path}: cannot read the archive ({exc})",
                            hint="it is probably truncated or corrupt: delete it and fetch it again") from None


def _zip_members(path: Path, limits: Mapping[str, int]) -> dict[str, bytes]:
    found = {}
    with zipfile.ZipFile(path) as zf:
        for member, limit in limits.items():
            info = zf.getinfo(member)  # KeyError when absent
            if info.file_size > limit:
                raise _too_large(f"{path}:{member}", limit, "this member")
            with zf.open(info) as f:
                data = f.read(limit + 1)
            if len(data) > limit:  # the header understated it
                raise _too_large(f"{path}:{member}", limit, "this member")
            found[member] = data
    return found


class _Capped(io.RawIOBase):
    """A read-only stream that fails once more than `limit` bytes have been read through it."""

    def __init__(self, inner, limit: int, source: str):
        self.inner, self.limit, self.source, self.seen = inner, limit, source, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.inner.read(min(len(buffer), CHUNK))
        self.seen += len(data)
        if self.seen > self.limit:
            raise _too_large(self.source, self.limit, "this archive")
        buffer[:len(data)] = data
        return len(data)


def _tar_members(path: Path, limits: Mapping[str, int]) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    # Other members (CIFAR-10's readme, its label names) are small: allow 16 MB beside the data.
    total = sum(limits.values()) + (16 << 20)
    with open(path, "rb") as raw:
        compressed = is_gzip(raw.read(2))
        raw.seek(0)
        inner = gzip.GzipFile(fileobj=raw) if compressed else raw
        with tarfile.open(fileobj=io.BufferedReader(_Capped(inner, total, str(path))), mode="r|") as tf:
            for info in tf:
                limit = limits.get(info.name)
                if limit is None or not info.isfile():
                    continue
                if info.size > limit:
                    raise _too_large(f"{path}:{info.name}", limit, "this member")
                found[info.name] = tf.extractfile(info).read()
    missing = set(limits) - set(found)
    if missing:
        raise KeyError(", ".join(sorted(missing)))
    return found


def parse_idx(content: bytes, source: str, *, ndim: int, dtype_code: int = 0x08) -> np.ndarray:
    """The array stored in an IDX file, after checking its magic number and sizes."""
    expected_magic = (dtype_code << 8) | ndim
    header = 4 + 4 * ndim
    if len(content) < header:
        raise MnistlabError(
            f"{source}: file is {len(content)} bytes, too short for an IDX header of {ndim} dimensions "
            f"({header} bytes)",
            hint="the file is truncated: delete it and fetch it again",
        )
    magic = struct.unpack(">I", content[:4])[0]
    if magic != expected_magic:
        kind = f"{IDX_TYPE_NAMES.get(dtype_code, hex(dtype_code))} with {ndim} dimension(s)"
        raise MnistlabError(
            f"{source}: wrong magic number 0x{magic:08X}, expected 0x{expected_magic:08X} (IDX {kind})",
            hint="this is not the IDX file expected here (an image file where labels belong, another format, "
            "or a corrupt download)",
        )
    dims = struct.unpack(f">{ndim}I", content[4:header])
    dtype = IDX_DTYPES[dtype_code]
    expected = math.prod(dims) * dtype.itemsize  # Python integers: a header of 2^22 x 2^21 x 2^21 cannot wrap
    actual = len(content) - header
    if actual != expected:
        shape = "x".join(str(d) for d in dims)
        raise MnistlabError(
            f"{source}: header declares {shape} {dtype.name} values ({expected:,} bytes of data), "
            f"but the file holds {actual:,} bytes after its header",
            hint="the file is truncated or its header is corrupt: delete it and fetch it again",
        )
    return np.frombuffer(content, dtype=dtype, offset=header).reshape(dims)


def parse_cifar10(content: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N,3,32,32), labels uint8 (N,)) from one CIFAR-10 binary batch file."""
    if len(content) == 0 or len(content) % CIFAR_RECORD:
        raise MnistlabError(
            f"{source}: {len(content)} bytes is not a whole number of CIFAR-10 records of {CIFAR_RECORD} bytes",
            hint="the file is truncated or not a CIFAR-10 binary batch: fetch it again",
        )
    records = np.frombuffer(content, dtype=np.uint8).reshape(-1, CIFAR_RECORD)
    return records[:, 1:].reshape(-1, 3, 32, 32), records[:, 0]
