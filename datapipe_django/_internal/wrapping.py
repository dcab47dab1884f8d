"""Seeing an object through a base class it does not subclass: the duck-typed fetcher or
enricher the pipeline is given, wrapped so that every hook of the base exists.

:class:`Wrapper` (first among the wrapper's bases) hands every attribute the wrapper lacks to
``wrapped`` and shows the wrapped object's ``repr``; :func:`adopt_methods` puts the wrapped
object's own methods in front of the base's defaults.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["Wrapper", "adopt_methods"]


class Wrapper:
    """A mixin for a wrapper that sets ``self.wrapped``: an attribute it lacks is the wrapped
    object's; its ``repr`` is the wrapped object's."""

    wrapped: Any

    def __getattr__(self, name: str) -> Any:
        if name == "wrapped":  # not set yet (e.g. while unpickling): never recurse
            raise AttributeError(name)
        return getattr(self.wrapped, name)

    def __repr__(self) -> str:
        return repr(self.wrapped)


def adopt_methods(wrapper: Any, wrapped: Any, names: Iterable[str]) -> None:
    """Each method of ``names`` that ``wrapped`` has (callable) becomes ``wrapper``'s, in front
    of its class's default."""
    for name in names:
        own = getattr(wrapped, name, None)
        if callable(own):
            wrapper.__dict__[name] = own
