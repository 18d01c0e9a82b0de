"""Run a function right after a module is imported (or at once if it already is).

The compatibility fixes must reach nerfstudio modules that are imported *after* this package: nerfstudio discovers
dataparser plugins while its own pipeline and model modules are still being imported, so they cannot be imported
from here without a circular import.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Callable, Dict, List

Hook = Callable[[ModuleType], None]

_EXACT: Dict[str, List[Hook]] = {}
_PREFIX: Dict[str, List[Hook]] = {}


class _HookedLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader, hooks: List[Hook]) -> None:
        self._loader = loader
        self._hooks = hooks

    def create_module(self, spec):  # noqa: D102
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:  # noqa: D102
        self._loader.exec_module(module)
        for hook in self._hooks:
            hook(module)

    def __getattr__(self, name):  # get_source, get_filename, ... for tracebacks and inspect
        return getattr(self._loader, name)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):  # noqa: D102
        hooks = list(_EXACT.get(fullname, []))
        hooks += [h for prefix, hs in _PREFIX.items() if fullname.startswith(prefix) for h in hs]
        if not hooks:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None:  # namespace packages have nothing to run
            return spec
        spec.loader = _HookedLoader(spec.loader, hooks)
        return spec


_FINDER = _PostImportFinder()


def _install_finder() -> None:
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def when_imported(name: str, hook: Hook) -> None:
    """Call ``hook(module)`` once the module ``name`` is imported; at once if it already is."""
    if name in sys.modules:
        hook(sys.modules[name])
    _EXACT.setdefault(name, []).append(hook)
    _install_finder()


def when_any_imported(prefix: str, hook: Hook) -> None:
    """Call ``hook(module)`` for every module whose name starts with ``prefix``, already imported or imported later."""
    for name, module in list(sys.modules.items()):
        if name.startswith(prefix) and module is not None:
            hook(module)
    _PREFIX.setdefault(prefix, []).append(hook)
    _install_finder()
