"""Turning task functions into bytes the cluster can carry (values: maze.sdk.blobs)."""

from __future__ import annotations

import hashlib
import sys
import sysconfig
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import cloudpickle

from maze.core import pickling
from maze.core.errors import SerializationError

_INSTALLED = {
    Path(p).resolve()
    for p in {sysconfig.get_path("purelib"), sysconfig.get_path("platlib"), sysconfig.get_path("stdlib")}
    if p
}


def _is_local_module(module_name: str) -> bool:
    """A module of the user's own project (not stdlib, not an installed package): ship it by value,
    since a worker cannot import it."""
    module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None)
    if module is None or path is None or module_name == "__main__":
        return False
    resolved = Path(path).resolve()
    if any(resolved.is_relative_to(root) for root in _INSTALLED):
        return False
    return not module_name.startswith("maze.")


def pickle_function(fn: Callable[..., Any]) -> tuple[str, bytes]:
    """(sha256 hex, cloudpickle bytes). Functions of local modules travel by value."""
    module_name = getattr(fn, "__module__", "") or ""
    by_value = _is_local_module(module_name)
    if by_value:
        cloudpickle.register_pickle_by_value(sys.modules[module_name])
    try:
        blob = pickling.dumps(fn)  # tracebacks name the function's own file (maze/core/pickling.py)
    except Exception as exc:
        raise SerializationError(
            f"task function {getattr(fn, '__name__', fn)!r} cannot be serialized by cloudpickle: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    finally:
        if by_value:
            cloudpickle.unregister_pickle_by_value(sys.modules[module_name])
    return hashlib.sha256(blob).hexdigest(), blob


_local_modules: tuple[int, list[ModuleType]] = (-1, [])


@contextmanager
def local_modules_by_value() -> Iterator[None]:
    """While pickling a value: objects of the user's own modules (not installed on workers) travel
    by value, as task functions do. Classes defined in `__main__` do so anyway."""
    global _local_modules
    if _local_modules[0] != len(sys.modules):
        found = [m for name, m in list(sys.modules.items()) if _is_local_module(name)]
        _local_modules = (len(sys.modules), found)
    registered = []
    for module in _local_modules[1]:
        try:
            cloudpickle.register_pickle_by_value(module)
            registered.append(module)
        except ValueError:
            pass  # already registered by the caller
    try:
        yield
    finally:
        for module in registered:
            cloudpickle.unregister_pickle_by_value(module)
