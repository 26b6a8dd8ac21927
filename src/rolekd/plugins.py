"""User modules that register models, KD methods or augmentors (``--import my_models.py``).

Imports are remembered as absolute specs so that processes the run starts later — Ray's search
trials — import them again before building anything: a registry lives in one process only.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

_IMPORTED: list[str] = []
_SEARCH_PATH: list[str] = []  # folders added to sys.path for dotted names (the working directory)


def import_user_modules(names: list[str]) -> None:
    """Import each ``path/to/file.py`` or dotted module name (found from the working directory).

    A missing file or a module that cannot be imported is a one-line ``ValueError`` naming it.
    """
    for name in names:
        spec = _absolute(name)
        if spec in _IMPORTED:
            continue
        try:
            if spec.endswith(".py"):
                _import_file(Path(spec))
            else:
                _search_from(os.getcwd())  # `--import my_models` finds ./my_models.py, like `python -m`
                importlib.import_module(spec)
        except Exception as exc:  # ImportError, but also a SyntaxError or NameError in the user's file
            raise ValueError(f"--import {name}: {type(exc).__name__}: {exc}") from None
        _IMPORTED.append(spec)


def plugin_state() -> dict[str, list[str]]:
    """What this process imported, as plain data another process can replay with :func:`load_plugins`."""
    return {"imports": list(_IMPORTED), "sys_path": list(_SEARCH_PATH)}


def load_plugins(state: dict[str, list[str]]) -> None:
    """Replay :func:`plugin_state` of another process (e.g. the driver, inside a Ray trial)."""
    for folder in state.get("sys_path", []):
        _search_from(folder)
    import_user_modules(state.get("imports", []))


def _absolute(name: str) -> str:
    if name.endswith(".py"):
        path = Path(name).expanduser().resolve()
        if not path.is_file():
            raise ValueError(f"--import {name}: file not found; expected a Python file or a dotted module name")
        return str(path)
    return name


def _search_from(folder: str) -> None:
    """Find dotted module names in ``folder`` too, here and in the processes that replay the imports."""
    if folder not in sys.path:
        sys.path.insert(0, folder)
    if folder not in _SEARCH_PATH:
        _SEARCH_PATH.append(folder)


def _import_file(path: Path) -> None:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[path.stem]
        raise
