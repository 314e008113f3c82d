"""Static check of a checkpoint's data.pkl: which globals would unpickling it import?

Nothing here executes the pickle. The allow-list mirrors what `torch.load(weights_only=True)`
accepts by default (torch/_weights_only_unpickler.py), so quick and full verification can call a
malicious file corrupt without torch installed and without unpickling a byte of it.
"""

from __future__ import annotations

import pickletools
import re
from typing import BinaryIO

_ALLOWED_EXACT = frozenset({
    "collections.OrderedDict",
    "collections.Counter",
    "torch.nn.parameter.Parameter",
    "torch.serialization._get_layout",
    "torch.Size",
    "torch.Tensor",
    "torch.device",
    "_codecs.encode",
    "builtins.bytearray",
    "builtins.set",
    "builtins.complex",
    "torch.storage.TypedStorage",
    "torch.storage.UntypedStorage",
    "torch._tensor._rebuild_from_type_v2",
    "torch.per_tensor_affine",
    "torch.per_tensor_symmetric",
    "torch.per_channel_affine",
    "torch.per_channel_symmetric",
    "torch.per_channel_affine_float_qparams",
})
# dtypes (torch.float32, torch.uint4, torch.float8_e4m3fn ...), legacy tensor and storage classes,
# and the tensor rebuild functions.
_ALLOWED_PATTERNS = (
    re.compile(r"torch\.(u?int\d+|float\d+(_\w+)?|bfloat16|complex\d+|bool|bits\w+|q(u)?int\w+)"),
    re.compile(r"torch(\.cuda)?(\.sparse)?\.\w+(Tensor|Storage)"),
    re.compile(r"torch\._utils\._rebuild_\w+"),
)
# Python 2 names that torch maps to their Python 3 module (pickle protocol 2 may carry them).
_MODULE_RENAMES = {"__builtin__": "builtins", "copy_reg": "copyreg"}
# Opcodes that import or instantiate by name; torch's safe unpickler rejects all but GLOBAL.
_UNSUPPORTED_OPCODES = frozenset({"STACK_GLOBAL", "INST", "OBJ", "EXT1", "EXT2", "EXT4"})


def is_allowed_global(full_name: str) -> bool:
    return full_name in _ALLOWED_EXACT or any(p.fullmatch(full_name) for p in _ALLOWED_PATTERNS)


def unsafe_globals(pickle_bytes: bytes) -> str | None:
    """None if the pickle only references globals a weights-only load allows, else what is wrong.

    The opcodes are decoded, never executed. A pickle that cannot be decoded is unsafe too: a
    safe unpickler would refuse it.
    """
    try:
        return _first_refused(pickle_bytes)
    except Exception as exc:  # noqa: BLE001 - genops raises ValueError, struct.error, ...: all mean "refuse"
        return f"undecodable pickle ({exc.__class__.__name__})"


def _first_refused(pickle: bytes | BinaryIO) -> str | None:
    """What a weights-only load would refuse in one pickle (bytes, or a file at its start), or None;
    decoding errors propagate to the caller."""
    for opcode, arg, _pos in pickletools.genops(pickle):
        if opcode.name in _UNSUPPORTED_OPCODES:
            return f"opcode {opcode.name}"
        if opcode.name == "GLOBAL":
            module, _, name = str(arg).partition(" ")
            full_name = f"{_MODULE_RENAMES.get(module, module)}.{name}"
            if not is_allowed_global(full_name):
                return full_name
    return None


# Modules whose callables run code or touch the system when a pickle calls them: a pickle that
# references one was planted, not written by a training script's torch.save.
_CODE_MODULES = frozenset({
    "os", "posix", "nt", "subprocess", "sys", "shutil", "socket", "importlib", "runpy", "pty",
    "ctypes", "code", "codeop", "pickle", "_pickle", "marshal", "types", "operator", "functools",
    "webbrowser", "multiprocessing", "asyncio", "signal", "commands", "popen2", "platform",
    "tempfile", "glob", "io", "_io", "urllib", "http", "ftplib", "smtplib", "telnetlib", "pdb",
    "bdb", "timeit", "trace", "cProfile", "profile", "threading", "_thread", "torch.hub",
})
_CODE_BUILTINS = frozenset({
    "eval", "exec", "compile", "open", "__import__", "getattr", "setattr", "delattr", "globals",
    "locals", "vars", "input", "breakpoint", "help", "memoryview", "apply", "execfile", "file",
})


def runs_code(full_name: str) -> bool:
    """The global is a callable that runs code or reaches the system (os.system, builtins.eval ...)."""
    module, _, name = full_name.rpartition(".")
    module = _MODULE_RENAMES.get(module, module)
    if module == "builtins":
        return name in _CODE_BUILTINS
    top = module.split(".", 1)[0]
    return module in _CODE_MODULES or top in _CODE_MODULES


def legacy_unsafe_globals(file: BinaryIO, max_pickles: int = 5) -> str | None:
    """For torch's legacy (pre-zip) format: the pickles before the raw storages (magic number,
    protocol, sys info, the object, the storage keys), decoded one after another, never run."""
    file.seek(0)
    try:
        for _ in range(max_pickles):
            refused = _first_refused(file)
            if refused is not None:
                return refused
            # The storage keys (a list of str) are the last pickle; raw bytes follow.
    except Exception as exc:  # noqa: BLE001 - genops raises ValueError, struct.error, ...: all mean "refuse"
        return f"undecodable pickle ({exc.__class__.__name__})"
    return None
