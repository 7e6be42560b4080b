"""Read the pickles that public point-cloud releases ship, without letting them run code.

Point-BERT's few-shot folds (`ModelNetFewshot/5way10shot/0.pkl`) and Point-MAE's ModelNet40 caches
(`modelnet40_train_8192pts_fps.dat`) are pickles of numpy arrays in lists, tuples and dicts. A plain
`pickle.load` would call any global the file names (`os.system`, `builtins.eval`, a torch class), so here
every global goes through `find_class`, which admits only what numpy arrays, numpy scalars and plain
containers reference, and refuses anything else with one `InputError` line naming the global, before it
is called.

What the admitted globals are, as numpy 1.x / 2.x and Python 2 / 3 write them (checked by pickling):
protocol 2 and 4 arrays use `numpy.core.multiarray._reconstruct` (numpy 2: `numpy._core.multiarray`),
`numpy.ndarray` and `numpy.dtype`; protocol 5 arrays use `numpy._core.numeric._frombuffer`; numpy
scalars use `numpy.core.multiarray.scalar`; Python 3 writes bytes at protocol 2 as
`_codecs.encode(text, 'latin1')`. Python 2-era files store bytes as `str`, which need
`encoding='latin1'` to come back as the raw array buffers.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

from pc3d.errors import InputError

# (module, name) -> (numpy 2 module, name). `numpy.core` is numpy 1's name; numpy 2 keeps it only as a
# deprecated alias, so both spellings resolve to `numpy._core` without importing the alias (numpy 1: `numpy.core`).
_NUMPY_GLOBALS = {
    ("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"),
}
_NUMPY_TOP = {"ndarray", "dtype"}
_BUILTINS = {"set", "frozenset", "bytearray", "complex", "slice", "range"}
_CODECS_ALLOWED = {"latin1", "latin-1", "iso-8859-1", "iso8859-1"}


class RefusedGlobal(pickle.UnpicklingError):
    """A global outside the admitted set: the file asks for code pc3d will not run."""


def _latin1_encode(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """`_codecs.encode` restricted to latin-1 (the only use pickle makes of it: bytes at protocol 2)."""
    if encoding.lower() not in _CODECS_ALLOWED:
        raise RefusedGlobal(f"refused global _codecs.encode with codec '{encoding}'")
    return text.encode("latin1", errors)


class RestrictedUnpickler(pickle.Unpickler):
    """A `pickle.Unpickler` whose globals are numpy's array/scalar constructors and plain containers only."""

    def find_class(self, module: str, name: str) -> Any:
        import _compat_pickle

        import numpy as np

        # Python 2 names (`__builtin__`, `copy_reg`) as Python 3 reads them, so checks and messages agree
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        parts = module.split(".")
        if module == "numpy" and name in _NUMPY_TOP:
            return getattr(np, name)
        if parts[0] == "numpy" and len(parts) == 3 and parts[1] in ("core", "_core") \
                and (parts[2], name) in _NUMPY_GLOBALS:
            import importlib

            # numpy 2 lives in numpy._core (numpy.core is a deprecated alias); numpy 1 has only numpy.core
            package = "numpy._core" if int(np.__version__.split(".")[0]) >= 2 else "numpy.core"
            return getattr(importlib.import_module(f"{package}.{parts[2]}"), name)
        if module == "builtins" and name in _BUILTINS:
            import builtins

            return getattr(builtins, name)
        if module == "_codecs" and name == "encode":
            return _latin1_encode
        raise RefusedGlobal(f"refused global {module}.{name}")


def safe_loads(data: bytes, what: str = "pickle") -> Any:
    """Unpickle `data` admitting only numpy arrays, numpy scalars and plain containers.

    Python 2-era files are read with `encoding='latin1'` (their array buffers are `str`); Python 3 files
    are unaffected by it. Any other global, or a damaged file, is one InputError line."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except RefusedGlobal as exc:
        raise InputError(f"{what}: {exc} (only numpy arrays and plain containers are read from pickles)") \
            from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise InputError(f"{what}: not a readable pickle of numpy arrays (truncated or damaged: {reason})") \
            from None


def safe_load(path: str | os.PathLike) -> Any:
    """`safe_loads` of a file; a missing file is one InputError line too."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: missing file")
    return safe_loads(path.read_bytes(), str(path))


def safe_load_npy(path: str | os.PathLike) -> Any:
    """An .npy file; an object array (a pickle after the .npy header, as PartNet-E's label.npy holding a dict)
    goes through the restricted unpickler, never `np.load(allow_pickle=True)`. A 0-d object array comes back as
    the object it holds."""
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: missing file")
    with open(path, "rb") as handle:
        try:
            version = np.lib.format.read_magic(handle)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            _, _, dtype = read_header(handle)
        except ValueError as exc:
            raise InputError(f"{path}: not an .npy file ({' '.join(str(exc).split())})") from None
        if dtype != np.dtype(object):
            handle.seek(0)
            try:
                return np.load(handle, allow_pickle=False)
            except ValueError as exc:
                raise InputError(f"{path}: truncated or damaged .npy ({' '.join(str(exc).split())})") from None
        body = handle.read()
    data = safe_loads(body, str(path))
    return data.item() if isinstance(data, np.ndarray) and data.shape == () else data
