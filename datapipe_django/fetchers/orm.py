"""`ORMFetcher`: one Django database alias as a source."""

from __future__ import annotations

import operator
from collections.abc import Callable
from functools import reduce
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connections
from django.db.models import Count, Q, QuerySet

from datapipe_django.conf import datapipe_settings
from datapipe_django.fetchers.base import (
    HIGHLIGHTS_ATTR,
    BaseFetcher,
    FetchRequest,
    FetchResult,
    Verdict,
    unknown_database,
)
from datapipe_django.paging import SCORE_ATTR
from datapipe_django.pinning import is_pinned
from datapipe_django.replicas import replica_status
from datapipe_django.search.database import search_words
from datapipe_django.stores import use_store

if TYPE_CHECKING:
    from django.core.checks import CheckMessage

    from datapipe_django.pipeline import Pipeline

__all__ = ["ORMFetcher", "interpolate_sql", "mark_words", "search_q"]


def search_q(search: str, fields: tuple[str, ...]) -> Q:
    """DRF ``SearchFilter`` semantics: every whitespace-separated term matches some field."""
    terms = search_words(search)
    per_term = [
        reduce(operator.or_, (Q(**{f"{field}__icontains": term}) for field in fields))
        for term in terms
    ]
    return reduce(operator.and_, per_term, Q())


class ORMFetcher(BaseFetcher):
    """Reads the pipeline's model from the Django database alias ``using``.

    Every query carries the tenant filter, the compiled specification, the keyset predicate of
    the cursor and the total ordering (NULLs last, pk tie-break), so the same request gives the
    same rows in the same order on SQLite, PostgreSQL and MySQL/MariaDB.

    Override :meth:`get_queryset` to start from another manager or add ``select_related``.

    ``search`` says how ``q`` matches ``search_fields``: ``"contains"`` (default, DRF
    ``SearchFilter``: every word is a case-insensitive substring of some field) or
    ``"fulltext"``: PostgreSQL full-text search with ``search_config`` on a PostgreSQL alias
    (whole words, like a search engine; see :mod:`datapipe_django.search.database`), and
    ``"contains"`` on any other database.

    With ``"fulltext"`` on PostgreSQL the source also ranks (``ordering=relevance``: best
    ``ts_rank_cd`` first), highlights with ``ts_headline`` and, when ``fuzzy`` (default: when
    the pipeline has a ``search_fuzziness``), matches a word with a one-letter typo by trigram
    similarity. Every alias counts facets (``GROUP BY``); a source that serves a relevance or
    facets request answers it alone.
    """

    def __init__(
        self,
        using: str = "default",
        *,
        name: str | None = None,
        priority: int | None = None,
        can_handle: Callable[[FetchRequest], bool] | None = None,
        queryset: Callable[[FetchRequest], QuerySet[Any]] | None = None,
        search: str = "contains",
        search_config: str = "simple",
        fuzzy: bool | None = None,
        holds: Any = None,
        mirror_of: str | None = None,
    ) -> None:
        super().__init__(name=name or using, priority=priority, can_handle=can_handle,
                         holds=holds, mirror_of=mirror_of)
        if search not in ("contains", "fulltext"):
            raise ImproperlyConfigured(
                f"ORMFetcher({using!r}): search must be 'contains' or 'fulltext', not {search!r}.")
        self.using = using
        self._queryset = queryset
        self.search = search
        self.search_config = search_config
        self.fuzzy = fuzzy

    def can_handle(self, request: FetchRequest) -> bool | Verdict:
        if self.using not in connections.settings:
            return Verdict(False, f"database alias {self.using!r} is not configured")
        if self.using in datapipe_settings.REPLICAS:
            if is_pinned():
                return Verdict(False, "read-your-writes: reads are pinned to the primary")
            status = replica_status(self.using, timeout=request.remaining)
            if not status.healthy:
                return Verdict(False, f"replica skipped: {status.reason}")
        return super().can_handle(request)

    @property
    def database(self) -> str | None:
        return self.using

    @property
    def mirror_of(self) -> str | None:
        """The explicit ``mirror_of``, else ``DATAPIPE["PRIMARY"]`` for a replica alias."""
        if self._mirror_of is not None:
            return self._mirror_of
        primary = str(datapipe_settings.PRIMARY)
        if self.using in datapipe_settings.REPLICAS and self.using != primary:
            return primary
        return None

    def get_queryset(self, request: FetchRequest) -> QuerySet[Any]:
        """The base queryset on this alias, before filters. Override to customise."""
        if self._queryset is not None:
            return self._queryset(request).using(self.using)
        return request.model._default_manager.using(self.using).all()

    # -- search ---------------------------------------------------------------------------------
    def fulltext(self) -> bool:
        """``q`` is PostgreSQL full-text search here (``search="fulltext"`` on PostgreSQL)."""
        return self.search == "fulltext" and connections[self.using].vendor == "postgresql"

    def is_fuzzy(self, request: FetchRequest) -> bool:
        """Whether ``q`` also matches trigram-similar words (``fuzzy``, else the pipeline's
        ``search_fuzziness``)."""
        if self.fuzzy is not None:
            return self.fuzzy
        return request.fuzziness not in (None, 0)

    def can_rank(self, request: FetchRequest) -> bool:
        return self.fulltext()

    def can_facet(self, request: FetchRequest) -> bool:
        return True

    def filtered_queryset(self, request: FetchRequest) -> QuerySet[Any]:
        """Every row ``request`` matches (tenant, filters, pk, ``q``), unordered: what the page
        is cut from and what facets count."""
        qs = self.get_queryset(request)
        if request.tenant_field:
            qs = qs.filter(**{request.tenant_field: request.tenant})
        if request.spec is not None:
            qs = qs.filter(request.spec.to_q())
        if request.pk is not None:
            qs = qs.filter(pk=request.pk)
        if request.search and request.search_fields:
            qs = qs.filter(self.search_filter(request))
        return qs

    def build_queryset(self, request: FetchRequest) -> QuerySet[Any]:
        """The full query this fetcher runs for ``request`` (also used by ``explain``)."""
        qs = self._annotate_search(self.filtered_queryset(request), request)
        if request.after is not None:
            qs = qs.filter(request.ordering.after_q(request.after))
        qs = self._narrow_loading(qs.order_by(*request.ordering.order_by()), request)
        return qs[request.offset : request.offset + request.size]

    def _annotate_search(self, qs: QuerySet[Any], request: FetchRequest) -> QuerySet[Any]:
        """The relevance rank (``ordering=relevance``) and the ``ts_headline`` fragments
        (``highlight=true`` with full-text search) a search request reads."""
        from datapipe_django.search import database

        if request.relevance:
            qs = qs.annotate(**{SCORE_ATTR: database.fulltext_rank(
                request.search or "", request.search_fields, config=self.search_config,
                fuzzy=self.is_fuzzy(request))})
        if request.highlight and request.search and self.fulltext():
            qs = qs.annotate(**{f"{_HEADLINE}{i}": database.headline(
                request.search, path, config=self.search_config)
                for i, path in enumerate(request.search_fields)})
        return qs

    @staticmethod
    def _narrow_loading(qs: QuerySet[Any], request: FetchRequest) -> QuerySet[Any]:
        """The joins or the columns ``request`` loads, unless ``get_queryset`` chose them."""
        if qs.query.deferred_loading != (frozenset(), True):
            return qs
        if request.select_related:
            # Relations the enrichers would load next, joined here instead (not with only()
            # or defer(): a deferred foreign key cannot be followed).
            return qs.select_related(*request.select_related)
        if request.only is not None and not qs.query.select_related:
            # Sparse `fields`: the columns the response and the pipeline read, no others.
            return qs.only(*request.only)
        return qs

    def search_filter(self, request: FetchRequest) -> Any:
        """The condition ``q`` adds (see ``search``). Override to search differently."""
        if self.fulltext():
            from datapipe_django.search.database import fulltext_condition

            return fulltext_condition(request.search or "", request.search_fields,
                                      config=self.search_config,
                                      fuzzy=self.is_fuzzy(request))
        return search_q(request.search or "", request.search_fields)

    def facet_querysets(self, request: FetchRequest) -> dict[str, QuerySet[Any]]:
        """Per field of ``request.facets``, its ``GROUP BY`` query: ``(value, rows)`` over
        every matching row (not the page, not after the cursor), most rows first, then by
        value, at most ``facet_size``; rows without a value are not counted."""
        base = self.filtered_queryset(request).order_by()
        found: dict[str, QuerySet[Any]] = {}
        for name in request.facets:
            column = request.model._meta.get_field(name).attname  # type: ignore[union-attr]
            found[name] = (base.filter(**{f"{column}__isnull": False})
                           .values_list(column).annotate(_datapipe_count=Count("pk"))
                           .order_by("-_datapipe_count", column)[: request.facet_size])
        return found

    def facet_counts(self, request: FetchRequest) -> dict[str, list[tuple[Any, int]]]:
        """The counts of :meth:`facet_querysets`, one query per field."""
        return {name: [(value, count) for value, count in qs]
                for name, qs in self.facet_querysets(request).items()}

    def highlights(self, request: FetchRequest, rows: list[Any]) -> None:
        """Set ``HIGHLIGHTS_ATTR`` on each row: ``ts_headline`` fragments with full-text
        search, else each occurrence of a word of ``q`` marked in the local search fields'
        whole values (related paths are not highlighted there)."""
        from datapipe_django.search import database

        fulltext = self.fulltext()
        words = database.search_words(request.search or "")
        for obj in rows:
            found: dict[str, list[str]] = {}
            for i, path in enumerate(request.search_fields):
                if fulltext:
                    parts = database.fragments(getattr(obj, f"{_HEADLINE}{i}", None))
                elif "__" not in path:
                    parts = mark_words(getattr(obj, path, None), words)
                else:
                    parts = []
                if parts:
                    found[path] = parts
            setattr(obj, HIGHLIGHTS_ATTR, found)

    def check(self, pipeline: Pipeline) -> list[CheckMessage]:
        """E001: its database alias is not in ``settings.DATABASES``."""
        return unknown_database(pipeline, self, self.using)

    def explain(self, request: FetchRequest) -> dict[str, Any]:
        """What this fetcher would run for ``request`` (``manage.py datapipe explain``): the
        database alias and the SQL, with its parameters interpolated by the database driver
        (the statement timeout the deadline sets is not shown)."""
        connection = connections[self.using]
        qs = self.build_queryset(request)
        sql, params = qs.query.get_compiler(using=self.using).as_sql()
        details = {"database": self.using, "sql": interpolate_sql(connection, sql, params)}
        for name, facet in self.facet_querysets(request).items():
            sql, params = facet.query.get_compiler(using=self.using).as_sql()
            details[f"facet sql ({name})"] = interpolate_sql(connection, sql, params)
        return details

    def fetch(self, request: FetchRequest) -> FetchResult:
        # Bounded connection wait, the deadline as statement timeout, and a store known to be
        # down refused at once (datapipe_django.stores).
        facets = None
        with use_store(self.using, request.remaining):
            rows = list(self.build_queryset(request))
            if request.facets:
                facets = self.facet_counts(request)
        if request.highlight:
            self.highlights(request, rows)
        return FetchResult(rows, has_more=len(rows) >= request.size,
                           meta={"facets": facets} if facets is not None else {},
                           complete=request.single_source)

    def count_queryset(self, request: FetchRequest) -> QuerySet[Any]:
        """The query :meth:`count` runs: the page's filters, without cursor, order or slice."""
        return self.filtered_queryset(request).order_by()

    def count(self, request: FetchRequest) -> int | None:
        """``SELECT COUNT(*)`` of the rows matching ``request`` on this alias (through the
        store's bounded wait and statement timeout, as ``fetch``)."""
        with use_store(self.using, request.remaining):
            return int(self.count_queryset(request).count())

    def runs_inline(self, request: FetchRequest) -> bool:
        # Inside a transaction on this alias, only this thread's connection sees its writes.
        return bool(connections[self.using].in_atomic_block)




_HEADLINE = "_datapipe_headline_"


def mark_words(value: Any, words: list[str]) -> list[str]:
    """``value`` HTML-escaped with each case-insensitive occurrence of ``words`` in ``<em>``:
    one fragment (the whole value), or none when no word occurs."""
    import html
    import re

    if value is None or not words:
        return []
    text = str(value)
    pattern = re.compile("|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)),
                         re.IGNORECASE)
    parts, last = [], 0
    for match in pattern.finditer(text):
        parts.append(html.escape(text[last:match.start()]))
        parts.append(f"<em>{html.escape(match.group())}</em>")
        last = match.end()
    if not last:
        return []
    parts.append(html.escape(text[last:]))
    return ["".join(parts)]


def interpolate_sql(connection: Any, sql: str, params: Any) -> str:
    """``sql`` with ``params`` quoted by the database's own driver, for display only (like
    ``connection.queries``). Falls back to the SQL followed by its parameters when the
    database cannot be reached or the driver has no way to quote them."""
    if not params:
        return str(sql)
    try:
        connection.ensure_connection()
        if connection.vendor == "postgresql":
            return str(connection.ops.compose_sql(sql, params))
        if connection.vendor == "sqlite":
            return str(connection.ops.last_executed_query(None, sql, params))
        if connection.vendor == "mysql":
            raw = connection.connection
            return str(sql % tuple(raw.literal(p).decode(raw.encoding) for p in params))
    except (DatabaseError, TypeError, ValueError, AttributeError, UnicodeError):
        pass
    return f"{sql}  -- parameters: {list(params)!r}"
