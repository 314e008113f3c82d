"""The small values at the top of a torch checkpoint (a step, a config dict), read without unpickling.

A listing wants nanoGPT's `iter_num` or Lightning's `global_step` without loading a checkpoint, and
a weights-only load of a large file is no listing. This walks the opcodes of the zip's data.pkl
with `pickletools.genops` and rebuilds only plain values: numbers, strings, booleans, None, and
lists, tuples and dicts of them. Nothing is imported and nothing is called: a global is a name,
a call is an opaque placeholder, except a 0-d tensor (`torch._utils._rebuild_tensor_v2` on a
storage), whose one number is read from the storage's bytes in the zip (nanoGPT's best_val_loss).
Anything unexpected gives up on the file: the answer is then {}. What a file holds is kept per file
version (path, size, mtime_ns, inode) in this process and in runctl's cache in the user's cache
directory (runs.verify_cache), never beside the file, so a second listing reads no checkpoint.
"""

from __future__ import annotations

import json
import os
import pickletools
import struct
import threading
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runctl.runs import verify_cache

# A data.pkl bigger than this is not read for a peek (a state dict of tens of thousands of tensors).
MAX_PICKLE_BYTES = 16 << 20
_MAX_OPS = 5_000_000

# storage class -> struct format of one element
_STORAGE_FORMATS = {
    "torch.FloatStorage": "<f", "torch.DoubleStorage": "<d", "torch.HalfStorage": "<e",
    "torch.LongStorage": "<q", "torch.IntStorage": "<i", "torch.ShortStorage": "<h",
    "torch.CharStorage": "<b", "torch.ByteStorage": "<B", "torch.BoolStorage": "<?",
}


@dataclass(frozen=True)
class _Global:
    name: str


@dataclass(frozen=True)
class _Storage:
    type_name: str
    key: str


@dataclass(frozen=True)
class _Scalar:
    """A 0-d tensor: one element of a storage."""

    storage: _Storage
    offset: int


class _Opaque:
    """The result of a call that is not rebuilt (a tensor with elements, an object)."""


_OPAQUE = _Opaque()
_MARK = object()

_cache: dict[tuple[str, int, int, int], dict[str, Any]] = {}
_CACHE_LEVEL = "peek"
# A top-level value longer than this as JSON (a state dict's names) is not kept.
_MAX_KEPT_CHARS = 16 << 10
_cache_lock = threading.Lock()


def peek_checkpoint(path: Path, keys: Iterable[str]) -> dict[str, Any]:
    """The plain values of `keys` in the checkpoint's top-level dict ({} for a file that is not a
    torch zip checkpoint holding a dict, or that this cannot read). Never raises."""
    wanted = tuple(keys)
    try:
        st = os.stat(path)
    except OSError:
        return {}
    cache_key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
    with _cache_lock:
        top = _cache.get(cache_key)
    if top is None:
        stored = verify_cache.load(cache_key, _CACHE_LEVEL)
        if stored is not None and isinstance(stored.get("top"), dict):
            top = stored["top"]
        else:
            top = _small(_read_top(Path(path)))
            verify_cache.store(cache_key, _CACHE_LEVEL, {"level": _CACHE_LEVEL, "top": top})
        with _cache_lock:
            if len(_cache) > 4096:
                _cache.clear()
            _cache[cache_key] = top
    return {key: top[key] for key in wanted if key in top}


def _small(top: dict[str, Any]) -> dict[str, Any]:
    """The values worth keeping: a state dict's thousand placeholders are not."""
    kept = {}
    for key, value in top.items():
        try:
            if len(json.dumps(value)) <= _MAX_KEPT_CHARS:
                kept[key] = json.loads(json.dumps(value))  # as a cache load gives it back
        except (TypeError, ValueError):
            continue
    return kept


def _read_top(path: Path) -> dict[str, Any]:
    try:
        with zipfile.ZipFile(path) as archive:
            member = next((info for info in archive.infolist()
                           if info.filename == "data.pkl" or info.filename.endswith("/data.pkl")), None)
            if member is None or member.file_size > MAX_PICKLE_BYTES:
                return {}
            data = archive.read(member)
            prefix = member.filename[: -len("data.pkl")]
            top = _evaluate(data)
            if not isinstance(top, dict):
                return {}
            return {key: _plain(value, archive, prefix) for key, value in top.items() if isinstance(key, str)}
    except Exception:  # noqa: BLE001 - a peek is best effort: any damage means "nothing known"
        return {}


def _plain(value: Any, archive: zipfile.ZipFile, prefix: str, depth: int = 0) -> Any:
    """Our placeholders turned into plain values (None for what is not plain)."""
    if depth > 8:
        return None
    if isinstance(value, _Scalar):
        return _scalar_value(value, archive, prefix)
    if isinstance(value, (_Global, _Storage, _Opaque)):
        return None
    if isinstance(value, dict):
        return {k: _plain(v, archive, prefix, depth + 1) for k, v in value.items() if isinstance(k, str | int)}
    if isinstance(value, list | tuple):
        return type(value)(_plain(v, archive, prefix, depth + 1) for v in value)
    return value


def _scalar_value(scalar: _Scalar, archive: zipfile.ZipFile, prefix: str) -> float | int | bool | None:
    fmt = _STORAGE_FORMATS.get(scalar.storage.type_name)
    if fmt is None:
        return None
    size = struct.calcsize(fmt)
    with archive.open(f"{prefix}data/{scalar.storage.key}") as member:
        raw = member.read((scalar.offset + 1) * size)
    if len(raw) < (scalar.offset + 1) * size:
        return None
    return struct.unpack_from(fmt, raw, scalar.offset * size)[0]


def _evaluate(data: bytes) -> Any:  # noqa: C901 - one branch per opcode family
    stack: list[Any] = []
    memo: dict[int, Any] = {}
    for count, (op, arg, _) in enumerate(pickletools.genops(data)):
        if count > _MAX_OPS:
            raise ValueError("pickle too long")
        name = op.name
        if name in ("PROTO", "FRAME"):
            continue
        if name == "STOP":
            return stack.pop()
        if name == "MARK":
            stack.append(_MARK)
        elif name == "EMPTY_DICT":
            stack.append({})
        elif name == "EMPTY_LIST":
            stack.append([])
        elif name == "EMPTY_TUPLE":
            stack.append(())
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            items = tuple(stack[-n:])
            del stack[-n:]
            stack.append(items)
        elif name in ("TUPLE", "LIST", "DICT", "APPENDS", "SETITEMS"):
            items = _pop_to_mark(stack)
            if name == "TUPLE":
                stack.append(tuple(items))
            elif name == "LIST":
                stack.append(list(items))
            elif name == "DICT":
                stack.append(_pairs(items))
            elif name == "APPENDS":
                if isinstance(stack[-1], list):
                    stack[-1].extend(items)
            elif isinstance(stack[-1], dict):
                stack[-1].update(_pairs(items))
        elif name == "APPEND":
            item = stack.pop()
            if isinstance(stack[-1], list):
                stack[-1].append(item)
        elif name == "SETITEM":
            value = stack.pop()
            key = stack.pop()
            if isinstance(stack[-1], dict) and _hashable(key):
                stack[-1][key] = value
        elif name in ("NONE", "NEWTRUE", "NEWFALSE"):
            stack.append({"NONE": None, "NEWTRUE": True, "NEWFALSE": False}[name])
        elif name in ("BININT", "BININT1", "BININT2", "LONG1", "LONG4", "INT", "LONG", "BINFLOAT", "FLOAT",
                      "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "UNICODE", "BINSTRING",
                      "SHORT_BINSTRING", "STRING", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8"):
            stack.append(arg)
        elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[int(arg)] = stack[-1]
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif name in ("BINGET", "LONG_BINGET", "GET"):
            stack.append(memo[int(arg)])
        elif name == "GLOBAL":
            stack.append(_Global(str(arg).replace(" ", ".", 1)))
        elif name == "STACK_GLOBAL":
            attr = stack.pop()
            module = stack.pop()
            stack.append(_Global(f"{module}.{attr}"))
        elif name == "BINPERSID":
            stack.append(_persistent(stack.pop()))
        elif name in ("REDUCE", "NEWOBJ"):
            args = stack.pop()
            func = stack.pop()
            stack.append(_call(func, args))
        elif name == "BUILD":
            stack.pop()  # the state of an object that is opaque anyway
        else:
            raise ValueError(f"unsupported opcode {name}")
    raise ValueError("no STOP")


def _pop_to_mark(stack: list[Any]) -> list[Any]:
    for index in range(len(stack) - 1, -1, -1):
        if stack[index] is _MARK:
            items = stack[index + 1 :]
            del stack[index:]
            return items
    raise ValueError("no MARK")


def _pairs(items: list[Any]) -> dict[Any, Any]:
    return {items[i]: items[i + 1] for i in range(0, len(items) - 1, 2) if _hashable(items[i])}


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _persistent(pid: Any) -> Any:
    if isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage" and isinstance(pid[1], _Global):
        return _Storage(pid[1].name, str(pid[2]))
    return _OPAQUE


def _call(func: Any, args: Any) -> Any:
    if not isinstance(func, _Global) or not isinstance(args, tuple):
        return _OPAQUE
    if func.name == "collections.OrderedDict":
        return {}
    if func.name == "torch._utils._rebuild_tensor_v2" and len(args) >= 3:
        storage, offset, size = args[0], args[1], args[2]
        if isinstance(storage, _Storage) and size == () and isinstance(offset, int):
            return _Scalar(storage, offset)
    return _OPAQUE
