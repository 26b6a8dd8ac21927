"""Feature taps: capture intermediate outputs by module path with forward hooks (no model rewrites)."""

from __future__ import annotations

from torch import Tensor, nn


class FeatureTaps:
    """Records the outputs of the named submodules on every forward pass.

    Use as a context manager or call :meth:`remove`; hooks never outlive the object that made them.
    ``features`` holds the last forward's outputs in the order of ``paths``.
    """

    def __init__(self, model: nn.Module, paths: list[str]) -> None:
        modules = dict(model.named_modules())
        missing = [p for p in paths if p not in modules]
        if missing:
            raise ValueError(
                f"feature tap {missing[0]!r} is not a submodule of {type(model).__name__}; "
                f"expected a module path such as {next(iter(n for n in modules if n), '<none>')!r}"
            )
        self.paths = list(paths)
        self._out: dict[str, Tensor] = {}
        self._handles = [modules[p].register_forward_hook(_recorder(self._out, p)) for p in self.paths]

    @property
    def features(self) -> list[Tensor]:
        return [self._out[p] for p in self.paths if p in self._out]

    def clear(self) -> None:
        self._out.clear()

    def remove(self) -> None:
        for h in getattr(self, "_handles", []):
            h.remove()
        self._handles = []
        if hasattr(self, "_out"):  # __init__ may have failed before creating it
            self._out.clear()

    def __enter__(self) -> "FeatureTaps":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def __del__(self) -> None:
        self.remove()


def _recorder(store: dict[str, Tensor], path: str):
    """A hook that writes into ``store`` only: capturing ``self`` would let the model keep the taps
    object alive, so ``__del__`` (and hook removal) would never run while the model lives."""

    def record(_module: nn.Module, _inputs, output: Tensor) -> None:
        store[path] = output

    return record
