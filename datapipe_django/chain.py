"""The fetcher chain: which sources a request consults, and how their rows become one page.

Semantics (see docs/fetching.md):

* Every consulted source is asked, in the pipeline's total ordering, for the first
  ``offset + limit + 1`` rows (after the cursor, when there is one). The answers are merged by
  the ordering key, deduplicated by pk (the higher-priority source's row wins) and sliced.
  ``has_more`` is true when the merged stream holds a row beyond the page.
* ``SEQUENTIAL``: sources in priority order; the next one is consulted only while the merged
  rows are fewer than needed, or when the previous one was unavailable.
* ``FIRST_SUCCESS``: the first source whose page holds any row serves the page alone.
* ``PARALLEL``: every candidate at once, merged.
* A source whose answer is ``complete`` (it holds every matching row, like a search index of
  the whole model) ends the chain: no later source is read to top its page up.

Only a source's own unavailability (:class:`~datapipe_django.errors.SourceUnavailable`,
Django's ``OperationalError``/``InterfaceError``) moves the chain on; any other exception is a
bug and propagates.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass, field, replace
from typing import Any

from django.db import InterfaceError, OperationalError

from datapipe_django.errors import (
    DeadlineExceeded,
    NoFetcher,
    SourcesUnavailable,
    SourceUnavailable,
)
from datapipe_django.executor import submit
from datapipe_django.fetchers.base import FetchRequest, FetchResult, Verdict
from datapipe_django.observability import NullTracer, Tracer, is_recording
from datapipe_django.paging import Ordering

__all__ = [
    "UNAVAILABLE_ERRORS",
    "Attempt",
    "ChainResult",
    "FallbackMode",
    "FetcherChain",
    "merge_streams",
]

#: The exceptions that mean "this source cannot answer now" and move the chain on.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    SourceUnavailable,
    OperationalError,
    InterfaceError,
)


class FallbackMode(enum.Enum):
    """How a chain consults its sources."""

    SEQUENTIAL = "sequential"
    FIRST_SUCCESS = "first_success"
    PARALLEL = "parallel"


@dataclass
class Attempt:
    """What happened when the chain considered one source."""

    source: str
    outcome: str  # ok | declined | unavailable | timeout | not_needed
    reason: str = ""
    count: int = 0
    duration: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class ChainResult:
    items: list[Any]
    has_more: bool
    sources: tuple[str, ...]
    attempts: list[Attempt]


def merge_streams(
    streams: Sequence[Sequence[Any]], ordering: Ordering, *, pk_attr: str = "pk"
) -> list[Any]:
    """Merge ordered streams, given in priority order, into one deduplicated ordered list.

    A pk present in several streams keeps the row of the earliest (highest-priority) stream.
    """
    non_empty = [s for s in streams if s]
    if len(non_empty) <= 1:
        return list(non_empty[0]) if non_empty else []
    winners: dict[Any, Any] = {}
    for stream in non_empty:
        for row in stream:
            winners.setdefault(getattr(row, pk_attr), row)
    return sorted(winners.values(), key=ordering.key)


def _verdict(fetcher: Any, request: FetchRequest) -> Verdict:
    answer = fetcher.can_handle(request)
    if isinstance(answer, Verdict):
        return answer
    return Verdict(bool(answer), "" if answer else "can_handle returned False")


class FetcherChain:
    """Runs one request through a list of fetchers (already in priority order).

    Each read of a source runs in a ``tracer`` span ``datapipe.source.<name>`` (on the worker
    thread that reads it, in PARALLEL mode); ``on_attempt`` is called for every source
    considered.
    """

    def __init__(
        self,
        fetchers: Sequence[Any],
        mode: FallbackMode = FallbackMode.SEQUENTIAL,
        *,
        submit: Callable[..., Future[Any]] = submit,
        on_attempt: Callable[[Attempt], None] | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.fetchers = list(fetchers)
        self.mode = mode
        self._submit = submit
        self._on_attempt = on_attempt
        self._tracer: Tracer = tracer if tracer is not None else NullTracer()

    # -- public -----------------------------------------------------------------------------
    def verdicts(self, request: FetchRequest) -> list[tuple[Any, Verdict]]:
        """Every fetcher, in priority order, with its answer to ``can_handle(request)``."""
        return [(fetcher, _verdict(fetcher, request)) for fetcher in self.fetchers]

    def source_request(self, request: FetchRequest, *, candidates: int, offset: int,
                       limit: int) -> tuple[FetchRequest, int]:
        """What each consulted source is asked for when ``candidates`` sources may answer, and
        how many rows of the merged stream the page then skips."""
        if self.mode is FallbackMode.FIRST_SUCCESS:
            return replace(request, offset=offset, size=limit + 1), 0
        if request.pk is not None:
            # A retrieve: the first source that has the row settles it.
            return replace(request, offset=0, size=1), 0
        if candidates == 1:
            # One source: its own page is the merged page, so the offset is pushed down.
            return replace(request, offset=offset, size=limit + 1), 0
        return replace(request, offset=0, size=offset + limit + 1), offset

    def run(self, request: FetchRequest, *, offset: int, limit: int,
            attempts: list[Attempt] | None = None) -> ChainResult:
        """Serve one page. ``attempts`` (a list the caller keeps) receives every source
        considered, also when the chain raises."""
        attempts = [] if attempts is None else attempts
        candidates = []
        for fetcher, verdict in self.verdicts(request):
            if verdict:
                candidates.append(fetcher)
            else:
                self._record(attempts, Attempt(fetcher.name, "declined", verdict.reason))
        if not candidates:
            raise NoFetcher(
                "No source can serve this request: "
                + "; ".join(f"{a.source}: {a.reason}" for a in attempts),
                reasons={a.source: a.reason for a in attempts},
            )
        if self.mode is FallbackMode.FIRST_SUCCESS:
            return self._first_success(candidates, request, offset, limit, attempts)
        wide, skip = self.source_request(request, candidates=len(candidates), offset=offset,
                                         limit=limit)
        if self.mode is FallbackMode.PARALLEL:
            answers = self._parallel(candidates, wide, attempts)
        else:
            answers = self._sequential(candidates, wide, wide.size, attempts)
        return self._page(answers, request.ordering, skip, limit, attempts)

    # -- modes ------------------------------------------------------------------------------
    def _sequential(
        self, candidates: list[Any], request: FetchRequest, need: int, attempts: list[Attempt]
    ) -> list[tuple[str, list[Any]]]:
        answers: list[tuple[str, list[Any]]] = []
        merged = 0
        why: str | None = None  # why this source is read: the previous one fell short
        for i, fetcher in enumerate(candidates):
            if merged >= need:
                for rest in candidates[i:]:
                    self._record(attempts, Attempt(rest.name, "not_needed", "page already full"))
                break
            self._check_deadline(request, attempts, answered=bool(answers))
            result = self._call(fetcher, request, attempts, fallback=why)
            why = "unavailable" if result is None else "empty" if not result.items \
                else "incomplete"
            if result is not None:
                answers.append((fetcher.name, result.items))
                if result.complete:
                    self._skip_after_complete(fetcher, candidates[i + 1 :], attempts)
                    break
                merged = (
                    len(result.items) if len(answers) == 1
                    else len(merge_streams([a for _, a in answers], request.ordering))
                )
        if not answers:
            self._raise_unavailable(attempts)
        return answers

    def _parallel(
        self, candidates: list[Any], request: FetchRequest, attempts: list[Attempt]
    ) -> list[tuple[str, list[Any]]]:
        futures: dict[Future[Any], Any] = {}
        inline: list[Any] = []
        for fetcher in candidates:
            if fetcher.runs_inline(request) if hasattr(fetcher, "runs_inline") else False:
                inline.append(fetcher)
            else:
                futures[self._submit(self._timed, fetcher, request)] = fetcher
        results: dict[str, FetchResult | None] = {}
        for fetcher in inline:
            results[fetcher.name] = self._call(fetcher, request, attempts)
        done, pending = wait(futures, timeout=request.remaining)
        for future in done:
            fetcher = futures[future]
            results[fetcher.name] = self._collect(fetcher, future, attempts)
        for future in pending:
            future.cancel()
            self._record(attempts, Attempt(futures[future].name, "timeout",
                                           "abandoned at the deadline"))
        answers = []
        for fetcher in candidates:
            result = results.get(fetcher.name)
            if result is not None:
                answers.append((fetcher.name, result.items))
                if result.complete:  # later sources' rows would not be part of its answer
                    break
        if not answers:
            if pending:
                raise DeadlineExceeded("No source answered before the deadline.", stage="fetch")
            self._raise_unavailable(attempts)
        return answers

    def _first_success(
        self, candidates: list[Any], request: FetchRequest, offset: int, limit: int,
        attempts: list[Attempt],
    ) -> ChainResult:
        page_request, _ = self.source_request(request, candidates=len(candidates),
                                              offset=offset, limit=limit)
        answered: list[str] = []
        why: str | None = None
        for i, fetcher in enumerate(candidates):
            self._check_deadline(request, attempts, answered=bool(answered))
            result = self._call(fetcher, page_request, attempts, fallback=why)
            why = "unavailable" if result is None else "empty"
            if result is None:
                continue
            answered.append(fetcher.name)
            if not result.items and not result.complete:
                continue
            items = result.items[:limit]
            has_more = len(result.items) > limit
            if result.complete:
                self._skip_after_complete(fetcher, candidates[i + 1 :], attempts)
                return ChainResult(items, has_more, (fetcher.name,), attempts)
            for rest in candidates[i + 1 :]:
                if has_more:
                    self._record(attempts, Attempt(rest.name, "not_needed", "page served"))
                    continue
                # The page ran out here: ask the later sources whether they hold rows past it.
                probe = replace(request, offset=0, size=1,
                                after=request.ordering.values(items[-1]))
                found = self._call(rest, probe, attempts, probe=True)
                if found is not None and found.items:
                    has_more = True  # a source without such rows says nothing of the next one
                    break
            return ChainResult(items, has_more, (fetcher.name,), attempts)
        if not answered:
            self._raise_unavailable(attempts)
        return ChainResult([], False, tuple(answered), attempts)

    # -- helpers ----------------------------------------------------------------------------
    def _page(
        self, answers: list[tuple[str, list[Any]]], ordering: Ordering, offset: int,
        limit: int, attempts: list[Attempt],
    ) -> ChainResult:
        sources: tuple[str, ...]
        if len(answers) == 1:
            merged = answers[0][1]
            page = merged[offset : offset + limit]
            sources = (answers[0][0],)
        else:
            origin = {id(row): name for name, rows in answers for row in rows}
            merged = merge_streams([rows for _, rows in answers], ordering)
            page = merged[offset : offset + limit]
            on_page = {origin[id(row)] for row in page}
            sources = tuple(n for n, _ in answers if n in on_page) or tuple(n for n, _ in answers)
        return ChainResult(page, len(merged) > offset + limit, sources, attempts)

    def _fetch(self, fetcher: Any, request: FetchRequest, *, fallback: str | None = None,
               probe: bool = False) -> FetchResult:
        """``fetcher.fetch(request)`` in its span (``fallback``: why the chain reads it)."""
        attributes: dict[str, Any] = {"datapipe.pipeline": request.pipeline,
                                      "datapipe.source": fetcher.name,
                                      "datapipe.request.size": request.size}
        if fallback is not None:
            attributes["datapipe.fallback.reason"] = fallback
        if probe:
            attributes["datapipe.probe"] = True  # FIRST_SUCCESS: is there a row past the page?
        remaining = request.remaining
        if remaining is not None:
            attributes["datapipe.deadline.remaining"] = remaining
        with self._tracer.span(f"datapipe.source.{fetcher.name}", attributes) as span:
            try:
                result: FetchResult = fetcher.fetch(request)
            except UNAVAILABLE_ERRORS as exc:
                if is_recording(span):
                    span.set_attribute("datapipe.outcome", "unavailable")
                    span.set_attribute("datapipe.reason", _reason(exc))
                raise
            if is_recording(span):
                span.set_attribute("datapipe.outcome", "ok")
                span.set_attribute("datapipe.item_count", len(result.items))
                span.set_attribute("datapipe.has_more", bool(result.has_more))
                cache = result.meta.get("cache")
                if cache is not None:
                    span.set_attribute("datapipe.cache", str(cache))
                    span.set_attribute("datapipe.cache.hit", cache in ("hit", "stale"))
            return result

    def _timed(self, fetcher: Any, request: FetchRequest) -> tuple[FetchResult, float]:
        start = time.perf_counter()
        return self._fetch(fetcher, request), time.perf_counter() - start

    def _call(
        self, fetcher: Any, request: FetchRequest, attempts: list[Attempt], *,
        fallback: str | None = None, probe: bool = False,
    ) -> FetchResult | None:
        start = time.perf_counter()
        try:
            result = self._fetch(fetcher, request, fallback=fallback, probe=probe)
        except UNAVAILABLE_ERRORS as exc:
            self._record(attempts, Attempt(fetcher.name, "unavailable", _reason(exc),
                                           duration=time.perf_counter() - start))
            return None
        self._record(attempts, Attempt(fetcher.name, "ok", count=len(result.items),
                                       duration=time.perf_counter() - start,
                                       meta=dict(result.meta)))
        return result

    def _collect(
        self, fetcher: Any, future: Future[Any], attempts: list[Attempt]
    ) -> FetchResult | None:
        try:
            result, duration = future.result()
        except UNAVAILABLE_ERRORS as exc:
            self._record(attempts, Attempt(fetcher.name, "unavailable", _reason(exc)))
            return None
        self._record(attempts, Attempt(fetcher.name, "ok", count=len(result.items),
                                       duration=duration, meta=dict(result.meta)))
        return result  # type: ignore[no-any-return]

    def _check_deadline(
        self, request: FetchRequest, attempts: list[Attempt], *, answered: bool
    ) -> None:
        if request.remaining == 0.0:
            raise DeadlineExceeded(
                "The deadline passed before the page could be completed."
                if answered else "The deadline passed before any source answered.",
                stage="fetch",
            )

    def _skip_after_complete(self, fetcher: Any, rest: list[Any],
                             attempts: list[Attempt]) -> None:
        for other in rest:
            self._record(attempts, Attempt(other.name, "not_needed",
                                           f"{fetcher.name} answered completely"))

    def _record(self, attempts: list[Attempt], attempt: Attempt) -> None:
        attempts.append(attempt)
        if self._on_attempt is not None:
            self._on_attempt(attempt)

    @staticmethod
    def _raise_unavailable(attempts: list[Attempt]) -> None:
        failed = {a.source: a.reason for a in attempts if a.outcome in {"unavailable", "timeout"}}
        raise SourcesUnavailable(
            "Every source is unavailable: " + "; ".join(f"{k}: {v}" for k, v in failed.items()),
            reasons=failed,
        )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, SourceUnavailable):
        return exc.reason
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
