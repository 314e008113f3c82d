"""Checking a `.safetensors` file's structure without the safetensors package.

The format: an 8-byte little-endian header length N, N bytes of JSON ({name: {dtype, shape,
data_offsets: [begin, end]}, "__metadata__": {...}}), then the tensor bytes; offsets count from the
end of the header, every tensor's span is its shape times its dtype's width, and the spans tile the
data section exactly. The format carries no checksum, so a flipped bit inside tensor data cannot be
seen; a cut or padded file, a damaged header and inconsistent offsets can.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import BinaryIO

TRUNCATED = "truncated"
NOT_SAFETENSORS = "not a safetensors file"
_MAX_HEADER_BYTES = 100 << 20  # the safetensors library's own limit
_DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32, "C64": 64,
    "I64": 64, "U64": 64, "F64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}


@dataclass(frozen=True)
class SafetensorsHeader:
    tensors: int
    parameters: int
    dtypes: tuple[str, ...]
    data_bytes: int


def looks_like_safetensors(head: bytes) -> bool:
    """The first bytes read as an 8-byte header length followed by the start of a JSON object."""
    if len(head) < 9:
        return False
    length = int.from_bytes(head[:8], "little")
    return 2 <= length <= _MAX_HEADER_BYTES and head[8:9] == b"{"


def scan(file: BinaryIO, size: int) -> tuple[SafetensorsHeader | None, str | None]:
    """(the header's summary, None) or (None, the first problem found); reads only the header."""
    file.seek(0)
    prefix = file.read(8)
    if len(prefix) < 8:
        return None, f"{TRUNCATED}: {size} bytes, shorter than the 8-byte header length"
    length = int.from_bytes(prefix, "little")
    if length > _MAX_HEADER_BYTES:
        return None, f"{NOT_SAFETENSORS}: header length {length} is implausible"
    if 8 + length > size:
        return None, f"{TRUNCATED}: the header needs {8 + length} bytes, the file has {size}"
    raw = file.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        return None, f"{NOT_SAFETENSORS}: header is not JSON ({exc.__class__.__name__})"
    if not isinstance(header, dict):
        return None, f"{NOT_SAFETENSORS}: header is not a JSON object"
    return _check(header, size - 8 - length)


def _check(header: dict[str, object], data_size: int) -> tuple[SafetensorsHeader | None, str | None]:
    spans: list[tuple[int, int, str]] = []
    parameters = 0
    dtypes: set[str] = set()
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict):
            return None, f"{NOT_SAFETENSORS}: entry {name!r} is not an object"
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in _DTYPE_BITS:
            return None, f"{NOT_SAFETENSORS}: tensor {name!r} has unknown dtype {dtype!r}"
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            return None, f"{NOT_SAFETENSORS}: tensor {name!r} has a bad shape {shape!r}"
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
                and 0 <= offsets[0] <= offsets[1]):
            return None, f"{NOT_SAFETENSORS}: tensor {name!r} has bad data_offsets {offsets!r}"
        count = math.prod(shape)
        expected = (count * _DTYPE_BITS[dtype] + 7) // 8
        if offsets[1] - offsets[0] != expected:
            return None, (f"{NOT_SAFETENSORS}: tensor {name!r} spans {offsets[1] - offsets[0]} bytes, "
                          f"its {dtype} shape {shape} needs {expected}")
        spans.append((offsets[0], offsets[1], name))
        parameters += count
        dtypes.add(dtype)
    spans.sort()
    end = 0
    for begin, stop, name in spans:
        if begin != end:
            what = "overlaps the previous tensor" if begin < end else f"leaves a gap at byte {end}"
            return None, f"{NOT_SAFETENSORS}: tensor {name!r} {what}"
        end = stop
    if end > data_size:
        return None, f"{TRUNCATED}: the header describes {end} bytes of tensor data, the file holds {data_size}"
    if end < data_size:
        return None, f"{NOT_SAFETENSORS}: {data_size - end} bytes after the last tensor"
    return SafetensorsHeader(tensors=len(spans), parameters=parameters, dtypes=tuple(sorted(dtypes)),
                             data_bytes=end), None
