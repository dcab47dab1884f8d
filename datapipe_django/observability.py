"""Hooks through which a pipeline reports what it does: metrics and tracing.

``Pipeline(metrics=..., tracer=...)`` accept any object with these methods. The defaults do
nothing and cost nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

__all__ = ["Metrics", "NullMetrics", "NullTracer", "Tracer"]


class Metrics(Protocol):
    def stage(self, pipeline: str, stage: str, duration: float, error: str | None) -> None: ...

    def source(self, pipeline: str, source: str, outcome: str, duration: float) -> None: ...


class Tracer(Protocol):
    def span(self, name: str, attributes: Mapping[str, Any]) -> contextlib.AbstractContextManager[
        Any]: ...


class NullMetrics:
    """Records nothing."""

    def stage(self, pipeline: str, stage: str, duration: float, error: str | None) -> None:
        return None

    def source(self, pipeline: str, source: str, outcome: str, duration: float) -> None:
        return None


class NullTracer:
    """Traces nothing."""

    @contextlib.contextmanager
    def span(self, name: str, attributes: Mapping[str, Any]) -> Iterator[None]:
        yield None
