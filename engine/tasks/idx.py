"""A reader for IDX files, the format of MNIST and Fashion-MNIST (optionally gzip-compressed).

Layout: two zero bytes, a type byte, the number of dimensions, then each dimension as a
big-endian uint32, then the data in big-endian order.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

_TYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
          0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


class IdxError(ValueError):
    """The file is not a well-formed IDX file; the message says why."""


def read_idx(path: Path) -> np.ndarray:
    """The array stored in an IDX file (`.gz` or gzip magic bytes: decompressed first)."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise IdxError(f"corrupt gzip data ({err})") from None
    return parse_idx(raw)


def parse_idx(raw: bytes) -> np.ndarray:
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise IdxError("not an IDX file (bad magic number)")
    dtype = _TYPES.get(raw[2])
    if dtype is None:
        raise IdxError(f"unknown IDX data type 0x{raw[2]:02x}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise IdxError("truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise IdxError(f"IDX data has {len(raw) - header} bytes, the header {shape} needs {expected}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    """Write `array` as an IDX file (used by tests and to export small datasets)."""
    codes = {np.dtype(v).newbyteorder("=").str: k for k, v in _TYPES.items()}
    dtype = array.dtype.newbyteorder("=")
    code = next((k for k, v in _TYPES.items() if np.dtype(v).newbyteorder("=") == dtype), None)
    if code is None:
        raise IdxError(f"IDX cannot store dtype {array.dtype} (stores {', '.join(codes)})")
    data = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    data += array.astype(_TYPES[code]).tobytes()
    Path(path).write_bytes(gzip.compress(data) if compress else data)
