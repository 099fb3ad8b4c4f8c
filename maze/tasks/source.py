"""A task function that travels as its module's source: the workflow builder's workspace tasks.

The head never runs a user's code, so it cannot cloudpickle a workspace task's function. It
pickles a `SourceFunction` instead, which holds only data (the module's source, its file name,
the function's name) and whose class is importable on every worker. The worker's task process
unpickles it like any task code (maze/workers/child.py) and calls it: on the first call it
compiles the module source under its own file name, runs the module in a fresh namespace and
calls the named function; the source is registered with `linecache`, so a traceback names the
user's file and line and shows the line itself.
"""

from __future__ import annotations

import linecache
import types
from typing import Any


class SourceFunction:
    """`func_name` of the module `source`, loaded on its first call (once per task process)."""

    def __init__(self, source: str, filename: str, func_name: str) -> None:
        self.source = source
        self.filename = filename
        self.func_name = func_name
        self.__name__ = func_name
        self._loaded: Any = None

    def __reduce__(self) -> tuple[Any, tuple[str, str, str]]:
        return SourceFunction, (self.source, self.filename, self.func_name)

    def _load(self) -> Any:
        lines = self.source.splitlines(keepends=True)
        # mtime None: linecache.checkcache never drops an entry with no file behind it
        linecache.cache[self.filename] = (len(self.source), None, lines, self.filename)
        code = compile(self.source, self.filename, "exec")
        stem = self.filename.rsplit("/", 1)[-1].removesuffix(".py")
        module = types.ModuleType(stem)
        module.__file__ = self.filename
        exec(code, module.__dict__)  # the user's own task code, on a worker, as any task
        fn = module.__dict__.get(self.func_name)
        if not callable(fn):
            raise LookupError(f"{self.filename} defines no function {self.func_name!r}")
        return fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._loaded is None:
            self._loaded = self._load()
        return self._loaded(*args, **kwargs)
