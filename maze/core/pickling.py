"""cloudpickle, keeping where code came from.

cloudpickle (3.1 and later) writes every code object it carries by value with the file name
`<dynamic-code>`, so a traceback from a task function shows `File "<dynamic-code>", line 7` instead of
the user's file. Task code (and the methods of a user's classes sent as values) is pickled here with
each code object's own `co_filename` kept: tracebacks on the worker name the user's file and line
(and show the source line where that file exists on the worker too). Where cloudpickle's code
reducer is not where this expects it, plain cloudpickle is used: only file names are lost.
"""

from __future__ import annotations

import io
import types
from collections import ChainMap
from collections.abc import Callable
from typing import Any

import cloudpickle

_DYNAMIC = "<dynamic-code>"
_reduce_code: Callable[[types.CodeType], Any] | None = getattr(cloudpickle.cloudpickle, "_code_reduce", None)


def _code_keeping_filename(code: types.CodeType) -> Any:
    assert _reduce_code is not None
    rebuild, args = _reduce_code(code)
    return rebuild, tuple(code.co_filename if type(a) is str and a == _DYNAMIC else a for a in args)


class _Pickler(cloudpickle.Pickler):  # type: ignore[misc]
    dispatch_table = ChainMap({types.CodeType: _code_keeping_filename}, cloudpickle.Pickler.dispatch_table)


def dumps(obj: Any) -> bytes:
    """`cloudpickle.dumps(obj)`, with the code it carries by value naming its own files."""
    if _reduce_code is None:
        return bytes(cloudpickle.dumps(obj))
    with io.BytesIO() as file:
        _Pickler(file, protocol=cloudpickle.DEFAULT_PROTOCOL).dump(obj)
        return file.getvalue()
