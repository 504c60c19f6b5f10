"""Reading, verifying and writing IDX files (the original MNIST format).

An IDX file starts with a 4-byte magic number: two zero bytes, a type code
(0x08 = unsigned byte) and the number of dimensions, followed by one big-endian
uint32 per dimension and then the data.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct

import numpy as np

from tbkit.errors import DataError

_UBYTE = 0x08


def read_bytes(path: str | os.PathLike) -> bytes:
    """Returns the (decompressed, for `.gz`) content of `path`."""
    path = os.fspath(path)
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        with open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse_idx(data: bytes, name: str, ndim: int, item_shape: tuple[int, ...] = ()) -> np.ndarray:
    """Parses IDX bytes into a uint8 array, checking magic, dimensions and length.

    Args:
      data: the uncompressed file content.
      name: file name used in error messages.
      ndim: expected number of dimensions (3 for images, 1 for labels).
      item_shape: expected shape of one item, e.g. `(28, 28)`; `()` for labels.

    Returns:
      A read-only uint8 array of shape `(count,) + item_shape` that shares `data`.

    Raises:
      DataError: the magic number, dimensions or length are wrong.
    """
    if len(data) < 4:
        raise DataError(f"{name}: truncated file ({len(data)} bytes, no IDX header)")
    zero, dtype, dims = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != _UBYTE or dims != ndim:
        magic = int.from_bytes(data[:4], "big")
        expected = (_UBYTE << 8) | ndim
        raise DataError(
            f"{name}: bad IDX magic number 0x{magic:08x} (expected 0x{expected:08x}, "
            f"unsigned bytes in {ndim} dimension{'s' if ndim > 1 else ''})"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: truncated file ({len(data)} bytes, header needs {header})")
    shape = struct.unpack(">" + "I" * ndim, data[4:header])
    if tuple(shape[1:]) != tuple(item_shape):
        raise DataError(
            f"{name}: wrong dimensions {'x'.join(map(str, shape[1:]))} per item "
            f"(expected {'x'.join(map(str, item_shape))})"
        )
    expected_len = header + int(np.prod(shape, dtype=np.int64))
    if len(data) < expected_len:
        raise DataError(
            f"{name}: truncated file ({len(data)} bytes, header announces {expected_len})"
        )
    if len(data) > expected_len:
        raise DataError(
            f"{name}: {len(data) - expected_len} unexpected trailing bytes after {shape[0]} items"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def encode_idx(array: np.ndarray) -> bytes:
    """Encodes a uint8 array as IDX bytes (the inverse of `parse_idx`)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, _UBYTE, array.ndim)
    header += struct.pack(">" + "I" * array.ndim, *array.shape)
    return header + array.tobytes()
