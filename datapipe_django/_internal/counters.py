"""Named counters, and the OpenTelemetry counters of the library's background work.

:class:`Counters` is the one stats class: thread-safe integer counters named by ``NAMES``,
read as ``stats["hits"]`` or ``stats.hits``, all at once with ``as_dict()``, zeroed with
``reset()``. ``CacheStats`` (a cached fetcher's or enricher's) and ``SyncStats`` (the index
sync's) are its subclasses.

:func:`otel_counter` gives a counter of the instrumentation scope ``datapipe_django``, made
through :mod:`datapipe_django.otel` once per name (None while the OpenTelemetry API is not
installed), for work that happens outside a pipeline execution (the index sync after commit).
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

__all__ = ["Counters", "otel_counter"]


class Counters:
    """Thread-safe integer counters, one per name of ``NAMES`` (set by a subclass)."""

    NAMES: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **counts: int) -> None:
        self.lock = threading.Lock()
        self._counts = dict.fromkeys(self.NAMES, 0)
        self.add(**counts)

    def incr(self, name: str, value: int = 1) -> None:
        """Add ``value`` to counter ``name`` (``KeyError`` for a name not in ``NAMES``)."""
        with self.lock:
            self._counts[name] += value

    def add(self, **counts: int) -> None:
        """Add to several counters at once: ``stats.add(indexed=3, deleted=1)``."""
        with self.lock:
            for name, value in counts.items():
                self._counts[name] += value

    def __getitem__(self, name: str) -> int:
        return self._counts[name]

    def __getattr__(self, name: str) -> int:
        counts = self.__dict__.get("_counts", {})
        if name in counts:
            return counts[name]  # type: ignore[no-any-return]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def as_dict(self) -> dict[str, int]:
        with self.lock:
            return dict(self._counts)

    def reset(self) -> None:
        with self.lock:
            self._counts = dict.fromkeys(self.NAMES, 0)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.as_dict() == other.as_dict()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.as_dict()})"


_instruments: dict[str, Any] = {}
_instruments_lock = threading.Lock()


def otel_counter(name: str, *, unit: str, description: str) -> Any | None:
    """The OpenTelemetry counter ``name`` (created on first use through
    :func:`datapipe_django.otel.counter`), or None when the OpenTelemetry API is missing."""
    found = _instruments.get(name, _MISSING)
    if found is not _MISSING:
        return found
    with _instruments_lock:
        if name not in _instruments:
            try:
                from datapipe_django import otel
            except ImportError:
                _instruments[name] = None
            else:
                _instruments[name] = otel.counter(name, unit=unit, description=description)
        return _instruments[name]


_MISSING: Any = object()
