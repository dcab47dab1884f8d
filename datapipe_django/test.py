"""Test doubles for users' own tests (like DRF's ``APIRequestFactory``).

:class:`InMemoryFetcher` is a real fetcher over a list of objects: it applies the request's
specification with ``Spec.matches``, the tenant, the search terms, the keyset cursor and the
total ordering exactly as a database source does, counts facets, and can be switched off to
simulate an outage (it does not rank: ``ordering=relevance`` needs a real search source).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from datapipe_django import registry
from datapipe_django.errors import SourceUnavailable
from datapipe_django.fetchers.base import BaseFetcher, FetchRequest, FetchResult
from datapipe_django.search.database import search_words

__all__ = ["InMemoryFetcher", "count_facets", "matches_search", "unregister_pipeline"]


def matches_search(obj: Any, search: str, fields: Iterable[str]) -> bool:
    """In-memory twin of :func:`datapipe_django.fetchers.orm.search_q` (for plain fields): the
    same words (:func:`~datapipe_django.search.database.search_words`), each in some field."""
    fields = tuple(fields)
    values = [str(getattr(obj, f, "") or "").casefold() for f in fields]
    return all(any(term.casefold() in v for v in values) for term in search_words(search))


class InMemoryFetcher(BaseFetcher):
    """A source backed by a Python list. ``available = False`` makes it raise
    :class:`~datapipe_django.errors.SourceUnavailable`; ``calls`` records each request."""

    def __init__(
        self,
        rows: Iterable[Any] = (),
        *,
        name: str = "memory",
        priority: int | None = None,
        can_handle: Callable[[FetchRequest], bool] | None = None,
        available: bool = True,
        holds: Any = None,
        mirror_of: str | None = None,
    ) -> None:
        super().__init__(name=name, priority=priority, can_handle=can_handle, holds=holds,
                         mirror_of=mirror_of)
        self.rows = list(rows)
        self.available = available
        self.calls: list[FetchRequest] = []

    def _matching(self, request: FetchRequest) -> list[Any]:
        self.calls.append(request)
        if not self.available:
            raise SourceUnavailable(self.name, "switched off")
        tests = _row_tests(request)
        return [r for r in self.rows if all(test(r) for test in tests)]

    def count(self, request: FetchRequest) -> int | None:
        """How many of the rows match ``request`` (``?total=true``): its filters, search and
        tenant, not its page or cursor (as ``BaseFetcher.count``)."""
        return len(self._matching(replace(request, after=None)))

    def fetch(self, request: FetchRequest) -> FetchResult:
        rows = self._matching(request)
        rows.sort(key=request.ordering.key)
        page = rows[request.offset : request.offset + request.size]
        meta = {"facets": count_facets(rows, request)} if request.facets else {}
        return FetchResult(page, has_more=len(rows) > request.offset + request.size,
                           meta=meta, complete=request.single_source)

    def can_facet(self, request: FetchRequest) -> bool:
        return True  # it holds its whole list


def _row_tests(request: FetchRequest) -> list[Callable[[Any], bool]]:
    """What a row must pass to match ``request``, as a database source filters: the spec (the
    tenant included), the pk, the search terms and the cursor."""
    tests: list[Callable[[Any], bool]] = []
    spec = request.full_spec
    if spec is not None:
        tests.append(spec.matches)
    if request.pk is not None:
        # "12" from a URL is the integer 12, as in a database query
        pk = request.model._meta.pk.to_python(request.pk)  # type: ignore[union-attr]
        tests.append(lambda r: r.pk == pk)
    if request.search:
        search, fields = request.search, request.search_fields
        tests.append(lambda r: matches_search(r, search, fields))
    if request.after is not None:
        ordering, after = request.ordering, request.after
        tests.append(lambda r: ordering.is_after(r, after))
    return tests


def count_facets(rows: Iterable[Any], request: FetchRequest) -> dict[str, list[tuple[Any, int]]]:
    """In-memory twin of a source's facet counts: per field of ``request.facets``, ``(value,
    rows)`` over ``rows``, most rows first, then by value, at most ``facet_size``; rows without
    a value are not counted."""
    rows = list(rows)
    found: dict[str, list[tuple[Any, int]]] = {}
    for name in request.facets:
        attname = request.model._meta.get_field(name).attname  # type: ignore[union-attr]
        counts = Counter(v for r in rows if (v := getattr(r, attname)) is not None)
        found[name] = sorted(counts.items(), key=lambda p: (-p[1], p[0]))[: request.facet_size]
    return found


def unregister_pipeline(name: str) -> None:
    """Forget a registered pipeline, so a test can declare one of the same name again."""
    registry.unregister(name)
