"""Decoding the bytes of the family's file formats into numpy arrays, checking every header.

- IDX (MNIST, Fashion-MNIST, KMNIST, EMNIST, QMNIST): a big-endian magic `00 00 TT DD` (TT the
  element type, DD the number of dimensions), one big-endian uint32 per dimension, then the data.
- CIFAR-10 binary: fixed-length records of 1 label byte and 3x32x32 pixel bytes (channel planes).

Every function takes the decompressed content and a `source` string naming where it came from,
which every error message repeats. Nothing here touches the file system.
"""

from __future__ import annotations

import gzip
import struct
import zlib

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


def is_gzip(data: bytes | bytearray | memoryview) -> bool:
    return bytes(data[:2]) == b"\x1f\x8b"


def decompress(data: bytes, source: str) -> bytes:
    """Gunzip `data` if it is gzip, else return it as is; a truncated or corrupt stream is an error."""
    if not is_gzip(data):
        return data
    try:
        inflater = zlib.decompressobj(wbits=31)  # one gzip member: the common case, and the fast one
        out = inflater.decompress(data)
        if not inflater.eof:
            raise EOFError("the compressed stream ends before its end marker")
        if inflater.unused_data:  # several concatenated members: let gzip walk them
            out = gzip.decompress(data)
        return out
    except (OSError, EOFError, zlib.error) as exc:
        raise MnistlabError(
            f"{source}: not a valid gzip file ({exc}); it is probably truncated or corrupt",
            hint="delete it and fetch it again (`mnistlab data fetch NAME`), or replace it with a good copy",
        ) from None


def parse_idx(content: bytes, source: str, *, ndim: int, dtype_code: int = 0x08) -> np.ndarray:
    """The array stored in an IDX file, after checking its magic number and sizes."""
    expected_magic = (dtype_code << 8) | ndim
    if len(content) < 4 + 4 * ndim:
        raise MnistlabError(
            f"{source}: file is {len(content)} bytes, too short for an IDX header of {ndim} dimensions "
            f"({4 + 4 * ndim} bytes)",
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
    dims = struct.unpack(f">{ndim}I", content[4 : 4 + 4 * ndim])
    dtype = IDX_DTYPES[dtype_code]
    header = 4 + 4 * ndim
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(content) - header
    if actual != expected:
        shape = "x".join(str(d) for d in dims)
        raise MnistlabError(
            f"{source}: header declares {shape} {dtype.name} values ({expected} bytes of data), "
            f"but the file holds {actual} bytes after its header",
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
