"""Hooks through which a pipeline reports what it does: tracing and metrics.

``Pipeline(tracer=..., metrics=...)`` accept any object with the methods below. The defaults
are OpenTelemetry's (:mod:`datapipe_django.otel`) when ``opentelemetry-api`` is installed,
and do nothing otherwise; the library never configures an OpenTelemetry SDK, so without one
the OpenTelemetry defaults cost a few microseconds and record nothing. See
docs/observability.md for the span tree, the attributes and the instruments.

A **tracer** has one method, ``span(name, attributes)``: a context manager that opens a span
(a child of the current one, in this thread or in a worker that runs in a copy of this
thread's ``contextvars``), sees any exception that leaves the block, and yields an object with
``set_attribute(key, value)``, ``add_event(name, attributes)`` and ``is_recording()`` (an
OpenTelemetry span qualifies), or ``None``.

A **metrics** object has ``stage(...)`` and ``source(...)``; the other methods of
:class:`Metrics` are optional: the pipeline gives the ones it lacks a no-op
(:func:`as_metrics`), so a metrics object written for an older version keeps working.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from django.dispatch import Signal

from datapipe_django.errors import PipelineError

if TYPE_CHECKING:
    from datapipe_django.chain import Attempt

__all__ = [
    "CompleteMetrics",
    "Metrics",
    "NullMetrics",
    "NullSpan",
    "NullTracer",
    "RecordedSpan",
    "RecordingTracer",
    "Span",
    "Tracer",
    "as_metrics",
    "default_metrics",
    "default_tracer",
    "fallbacks",
    "is_recording",
    "pipeline_executed",
]

#: Sent by :meth:`Pipeline.execute` when an execution ends, on the thread that called it:
#: ``sender`` is the pipeline, ``state`` the execution's :class:`~datapipe_django.State`
#: (attempts, timings, enrichments, total...), ``error`` the exception it raised or None,
#: ``duration`` its seconds. For tools that look at one request (the debug-toolbar panel); a
#: receiver must not change the state. Nothing is sent, at no cost, without receivers.
pipeline_executed = Signal()


# -- protocols ----------------------------------------------------------------------------------

class Span(Protocol):
    def set_attribute(self, key: str, value: Any) -> None: ...

    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None) -> None: ...

    def is_recording(self) -> bool: ...


class Tracer(Protocol):
    def span(self, name: str, attributes: Mapping[str, Any]) -> AbstractContextManager[Any]: ...


class Metrics(Protocol):
    """What a pipeline reports. ``stage`` and ``source`` are required; the rest optional.

    * ``stage(pipeline, stage, duration, error)``: a stage ran (``error``: the error code or
      exception class name when it raised, else None).
    * ``source(pipeline, source, outcome, duration)``: the chain considered a source
      (``ok``, ``declined``, ``unavailable``, ``timeout``, ``not_needed``).
    * ``execution(pipeline, duration, error)``: a whole execution ended. *Optional.*
    * ``fallback(pipeline, source, reason)``: a source was read because the one read before it
      did not give the whole page (``unavailable``, ``timeout``, ``incomplete``, ``empty``).
      *Optional.*
    * ``enricher(pipeline, enricher, outcome, duration)``: an enricher ran (``ok``,
      ``failed``, ``deadline_exceeded``...). *Optional.*
    * ``cache(pipeline, source, outcome)``: a cached fetcher answered (``hit``, ``stale``,
      ``miss``, ``bypass``). *Optional.*
    """

    def stage(self, pipeline: str, stage: str, duration: float, error: str | None) -> None: ...

    def source(self, pipeline: str, source: str, outcome: str, duration: float) -> None: ...


class CompleteMetrics(Metrics, Protocol):
    """:class:`Metrics` with its optional methods: what a pipeline holds (:func:`as_metrics`),
    so that the library calls each one without probing for it."""

    def execution(self, pipeline: str, duration: float, error: str | None) -> None: ...

    def fallback(self, pipeline: str, source: str, reason: str) -> None: ...

    def enricher(self, pipeline: str, enricher: str, outcome: str, duration: float) -> None: ...

    def cache(self, pipeline: str, source: str, outcome: str) -> None: ...


def is_recording(span: Any) -> bool:
    """Whether attributes set on ``span`` go anywhere (False for None and no-op spans), so a
    caller can skip computing them."""
    if span is None:
        return False
    check = getattr(span, "is_recording", None)
    return True if check is None else bool(check())


# -- no-op defaults -----------------------------------------------------------------------------

class NullSpan:
    """A span that records nothing."""

    __slots__ = ()

    def set_attribute(self, key: str, value: Any) -> None:
        return None

    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None) -> None:
        return None

    def record_exception(self, exception: BaseException, *args: Any, **kwargs: Any) -> None:
        return None

    def is_recording(self) -> bool:
        return False


NULL_SPAN = NullSpan()


class _NullSpanContext:
    __slots__ = ()

    def __enter__(self) -> NullSpan:
        return NULL_SPAN

    def __exit__(self, *exc: Any) -> None:
        return None


_NULL_CONTEXT = _NullSpanContext()


class NullTracer:
    """Traces nothing."""

    def span(self, name: str, attributes: Mapping[str, Any]) -> _NullSpanContext:
        return _NULL_CONTEXT


class NullMetrics:
    """Records nothing: every method of the metrics protocol, the optional ones included (the
    defaults :func:`as_metrics` gives a metrics object that lacks them)."""

    def stage(self, pipeline: str, stage: str, duration: float, error: str | None) -> None:
        return None

    def source(self, pipeline: str, source: str, outcome: str, duration: float) -> None:
        return None

    def execution(self, pipeline: str, duration: float, error: str | None) -> None:
        return None

    def fallback(self, pipeline: str, source: str, reason: str) -> None:
        return None

    def enricher(self, pipeline: str, enricher: str, outcome: str, duration: float) -> None:
        return None

    def cache(self, pipeline: str, source: str, outcome: str) -> None:
        return None


_OPTIONAL_METRICS = ("execution", "fallback", "enricher", "cache")


class _CompletedMetrics(NullMetrics):
    """A metrics object that lacks some optional methods (one written for an older version),
    seen with :class:`NullMetrics`' no-ops in their place; any other attribute is its own."""

    def __init__(self, metrics: Any) -> None:
        self.wrapped = metrics
        for name in ("stage", "source", *_OPTIONAL_METRICS):
            own = getattr(metrics, name, None)
            if callable(own):
                self.__dict__[name] = own

    def __getattr__(self, name: str) -> Any:
        if name == "wrapped":
            raise AttributeError(name)
        return getattr(self.wrapped, name)


def as_metrics(metrics: Metrics) -> CompleteMetrics:
    """``metrics`` with every method of the protocol: itself when it has them all, else
    wrapped, the optional ones it lacks doing nothing. ``Pipeline`` calls it once."""
    if all(callable(getattr(metrics, name, None)) for name in _OPTIONAL_METRICS):
        return metrics  # type: ignore[return-value]
    return _CompletedMetrics(metrics)


_defaults: dict[str, Any] = {}
_defaults_lock = threading.Lock()


def default_tracer() -> Tracer:
    """OpenTelemetry's tracer when ``opentelemetry-api`` is installed, else a no-op one.

    One instance per process; it follows the global tracer provider, also one set later.
    """
    with _defaults_lock:
        if "tracer" not in _defaults:
            try:
                from datapipe_django.otel import OpenTelemetryTracer
            except ImportError:
                _defaults["tracer"] = NullTracer()
            else:
                _defaults["tracer"] = OpenTelemetryTracer()
        return _defaults["tracer"]  # type: ignore[no-any-return]


def default_metrics() -> CompleteMetrics:
    """OpenTelemetry's instruments when ``opentelemetry-api`` is installed, else no-ops."""
    with _defaults_lock:
        if "metrics" not in _defaults:
            try:
                from datapipe_django.otel import OpenTelemetryMetrics
            except ImportError:
                _defaults["metrics"] = NullMetrics()
            else:
                _defaults["metrics"] = OpenTelemetryMetrics()
        return _defaults["metrics"]  # type: ignore[no-any-return]


# -- a tracer that keeps its spans (``manage.py datapipe explain --execute``, tests) ------------

@dataclass
class RecordedSpan:
    """One span kept by :class:`RecordingTracer`."""

    name: str
    attributes: dict[str, Any]
    parent: RecordedSpan | None = None
    start: float = 0.0
    end: float | None = None
    thread: str = ""
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    error: BaseException | None = None
    children: list[RecordedSpan] = field(default_factory=list)

    @property
    def duration(self) -> float | None:
        """Seconds, once the span has ended."""
        return None if self.end is None else self.end - self.start

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value

    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None) -> None:
        self.events.append((name, dict(attributes or {})))

    def record_exception(self, exception: BaseException, *args: Any, **kwargs: Any) -> None:
        self.error = exception

    def is_recording(self) -> bool:
        return True

    def walk(self, depth: int = 0) -> Iterator[tuple[int, RecordedSpan]]:
        """This span and its descendants, depth first, children by start time."""
        yield depth, self
        for child in sorted(self.children, key=lambda s: s.start):
            yield from child.walk(depth + 1)

    def __repr__(self) -> str:
        return f"<RecordedSpan {self.name!r}>"


class _RecordingContext:
    __slots__ = ("_attributes", "_name", "_span", "_token", "_tracer")

    def __init__(self, tracer: RecordingTracer, name: str, attributes: Mapping[str, Any]) -> None:
        self._tracer, self._name, self._attributes = tracer, name, attributes

    def __enter__(self) -> RecordedSpan:
        parent = self._tracer._current.get()
        span = RecordedSpan(self._name, dict(self._attributes), parent, time.perf_counter(),
                            thread=threading.current_thread().name)
        if parent is not None:
            parent.children.append(span)
        self._tracer.spans.append(span)
        self._span = span
        self._token = self._tracer._current.set(span)
        return span

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._span.end = time.perf_counter()
        if exc is not None:
            self._span.error = exc
            self._span.attributes.setdefault(
                "error.type", exc.code if isinstance(exc, PipelineError) else
                type(exc).__qualname__)
        self._tracer._current.reset(self._token)


class RecordingTracer:
    """Keeps every span in memory, with its parent, attributes, events and error.

    Parents follow ``contextvars``, so spans opened by worker threads of the pipeline's pool
    nest under the span that was current when the work was submitted. ``manage.py datapipe
    explain --execute`` prints its tree; tests can assert on it without an OpenTelemetry SDK.
    """

    def __init__(self) -> None:
        self.spans: list[RecordedSpan] = []
        self._current: contextvars.ContextVar[RecordedSpan | None] = contextvars.ContextVar(
            f"datapipe_recording_span_{id(self)}", default=None)

    def span(self, name: str, attributes: Mapping[str, Any]) -> _RecordingContext:
        return _RecordingContext(self, name, attributes)

    @property
    def roots(self) -> list[RecordedSpan]:
        return [s for s in self.spans if s.parent is None]

    def find(self, name: str) -> list[RecordedSpan]:
        """The spans called ``name``, in start order."""
        return [s for s in self.spans if s.name == name]


# -- what the chain's attempts say about fallback -----------------------------------------------

_CONSULTED = frozenset({"ok", "unavailable", "timeout"})


def fallbacks(attempts: Iterable[Attempt], order: Sequence[str]) -> list[tuple[str, str, str]]:
    """The fallbacks a fetch made: ``(from_source, to_source, reason)`` per source that was
    read because the source read before it (in priority ``order``) did not give the page.

    ``reason``: ``unavailable`` / ``timeout`` (it failed), ``incomplete`` (it answered fewer
    rows than the page needs) or ``empty`` (it answered no row). A source that *declined* the
    request is not a fallback but routing (a replica too far behind, a source that keeps recent
    rows only, a search engine asked no search): the chain never meant to read it.
    """
    rank = {name: i for i, name in enumerate(order)}
    ranked = sorted(attempts, key=lambda a: rank.get(a.source, len(rank)))
    result: list[tuple[str, str, str]] = []
    read: Attempt | None = None
    for attempt in ranked:
        if attempt.outcome in _CONSULTED:
            if read is not None and attempt.source != read.source:
                result.append((read.source, attempt.source, _why(read)))
            read = attempt
    return result


def _why(attempt: Attempt) -> str:
    if attempt.outcome == "ok":
        return "incomplete" if attempt.count else "empty"
    return attempt.outcome
