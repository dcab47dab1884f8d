"""`SearchFetcher`: an Elasticsearch or OpenSearch index as a source.

The request becomes one search (:func:`datapipe_django.search.query.search_body`): the tenant
filter and the spec as non-scoring filters, ``q`` as a ``multi_match`` over the pipeline's
``search_fields``, the total ordering as ``sort`` (missing values last, pk last), an offset
page as ``from``/``size``, a cursor page as ``search_after``, the deadline as both the
client's request timeout and the engine's own ``timeout``. The hits become model instances:
read from a database alias in hit order with one query (``using="default"``), or built from
each hit's ``_source`` (``using=None``).

An engine that cannot answer (connection refused or lost, a timeout, a 5xx or 429, the index
missing, a timed-out or partial search) raises :class:`~datapipe_django.errors.SourceUnavailable`,
so the chain falls back; any other error (a 400 for a bad query) is a bug and propagates.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import connections, models

from datapipe_django._internal.breaker import Breaker, Cooldown
from datapipe_django.errors import SourceUnavailable
from datapipe_django.fetchers.base import (
    HIGHLIGHTS_ATTR,
    BaseFetcher,
    FetchRequest,
    FetchResult,
    Verdict,
    unknown_database,
)
from datapipe_django.paging import SCORE_ATTR
from datapipe_django.search.body import facet_aggregations, facet_buckets, search_body
from datapipe_django.search.documents import DocumentAdapter, adapter_for
from datapipe_django.specs.paths import forward_prefixes, head
from datapipe_django.specs.search import FieldMap, NotSearchable
from datapipe_django.stores import use_store

__all__ = ["SearchFetcher"]

_MISSING = object()


class SearchFetcher(BaseFetcher):
    """Reads the pipeline's model from a search index.

    ``document``: a django-elasticsearch-dsl or django-opensearch-dsl ``Document`` of the
    pipeline's model. ``using``: the database alias the hits are read from (one
    ``in_bulk`` query, in hit order; rows gone from the database are dropped and rows that no
    longer match the filters too, with ``recheck``), or None to build the instances from
    ``_source`` (fields the Document does not store are deferred). ``handles``: ``"search"``
    (default) takes only requests with ``q``; ``"all"`` takes every request, lists and
    retrieves. ``connection``: the library's connection alias. ``track_total_hits``: passed
    to the engine; the total is reported in the attempt's ``meta``. ``max_result_window``:
    the deepest offset page (default: the index setting, else 10,000); deeper offset pages
    are declined (a cursor has no limit). ``complete``: the index holds every row, so when it
    answers no later source is read to top the page up (different matching rules must not
    mix). ``cooldown``: after an outage, seconds during which the engine is not called (the
    source fails at once, so the chain falls back without waiting for timeouts). ``names``:
    engine field names of paths the mapping cannot tell (``{"owner__name": "owner_name"}``).
    ``fuzziness``: typo tolerance of ``q`` (``"AUTO"`` or a number of edits; default: the
    pipeline's ``search_fuzziness``, else none).

    It ranks (``ordering=relevance``: ``_score`` best first, pk ascending, cursor pages by
    ``search_after`` on both), highlights (the engine's highlighter, ``encoder: html``) and,
    when ``complete``, counts facets (``terms`` aggregations in the same search).
    """

    def __init__(
        self,
        document: type[Any],
        *,
        name: str | None = None,
        priority: int | None = None,
        can_handle: Callable[[FetchRequest], bool] | None = None,
        using: str | None = None,
        handles: str = "search",
        connection: str | None = None,
        track_total_hits: bool | int = False,
        max_result_window: int | None = None,
        complete: bool = True,
        recheck: bool = True,
        cooldown: float = 1.0,
        names: dict[str, str] | None = None,
        fuzziness: str | int | None = None,
        holds: Any = None,
    ) -> None:
        if handles not in ("search", "all"):
            raise ImproperlyConfigured(
                f"SearchFetcher({document!r}): handles must be 'search' (requests with q) or "
                f"'all', not {handles!r}.")
        super().__init__(name=name or "search", priority=priority, can_handle=can_handle,
                         holds=holds)
        self.document = document
        self.adapter: DocumentAdapter = adapter_for(document, connection)
        self.using = using
        self.handles = handles
        self.track_total_hits = track_total_hits
        self._max_result_window = max_result_window
        self.complete = complete
        self.recheck = recheck
        self.cooldown = cooldown
        self.names = dict(names or {})
        if fuzziness is not None and not (fuzziness == "AUTO" or (
                isinstance(fuzziness, int) and 0 <= fuzziness <= 2)):
            raise ImproperlyConfigured(f"SearchFetcher({document!r}): fuzziness must be None, "
                                       f"'AUTO', 0, 1 or 2, not {fuzziness!r}.")
        self.fuzziness = fuzziness
        self._field_maps: dict[type[models.Model], FieldMap] = {}
        #: Open for ``cooldown`` seconds after the engine failed: searches are refused at once.
        self.breaker = Breaker(self.name, Cooldown(lambda: self.cooldown))

    # -- configuration ---------------------------------------------------------------------
    @property
    def max_result_window(self) -> int:
        if self._max_result_window is not None:
            return self._max_result_window
        return self.adapter.max_result_window

    def field_map(self, model: type[models.Model]) -> FieldMap:
        """Field names and types of the Document's mapping, for ``model``."""
        found = self._field_maps.get(model)
        if found is None:
            found = self._field_maps[model] = self.adapter.field_map(model, self.names)
        return found

    # -- the protocol -------------------------------------------------------------------------
    def can_handle(self, request: FetchRequest) -> bool | Verdict:
        if self.handles == "search" and not request.search:
            return Verdict(False, "not a search (no q); this source takes searches only")
        if self.using is not None and self.using not in connections.settings:
            return Verdict(False, f"database alias {self.using!r} is not configured")
        if request.model is not self.adapter.model:
            return Verdict(False, f"{self.document.__name__} indexes "
                                  f"{self.adapter.model._meta.label}, not "
                                  f"{request.model._meta.label}")
        verdict = super().can_handle(request)
        if not verdict:
            return verdict
        window = self.max_result_window
        if request.after is None and request.offset + request.size > window:
            return Verdict(False, f"offset {request.offset} + {request.size} rows is past the "
                                  f"index's max_result_window ({window}); pages that deep need "
                                  f"the cursor")
        try:
            self.build_body(request)
        except NotSearchable as exc:
            return Verdict(False, f"not exactly searchable: {exc.reason}")
        return Verdict(True)

    def can_rank(self, request: FetchRequest) -> bool:
        return True

    def can_facet(self, request: FetchRequest) -> bool:
        return self.complete  # an index of some rows only cannot count every matching row

    def get_fuzziness(self, request: FetchRequest) -> str | int | None:
        """The typo tolerance of ``q`` for ``request``: this fetcher's, else the pipeline's."""
        return self.fuzziness if self.fuzziness is not None else request.fuzziness

    def declares_scope(self) -> bool:
        # Searches only, or a complete index: either way later sources never top it up.
        return self.handles == "search" or self.complete or super().declares_scope()

    def get_search_query(self, request: FetchRequest) -> dict[str, Any] | None:
        """The query ``q`` becomes, or None for the default: every word in one of the
        ``search_fields`` (``multi_match``, ``cross_fields``, ``operator: and``). Override to
        search differently (fuzziness, phrase, boosts...)."""
        return None

    def build_body(self, request: FetchRequest, *,
                   timeout: float | None = None) -> dict[str, Any]:
        """The search body for ``request`` (``explain`` shows it)."""
        return search_body(
            spec=request.full_spec,
            size=request.size,
            ordering=request.ordering,
            fields=self.field_map(request.model),
            offset=request.offset,
            after=request.after,
            search=request.search,
            search_fields=request.search_fields,
            search_query=self.get_search_query(request) if request.search else None,
            pk=request.pk,
            track_total_hits=True if request.total else self.track_total_hits,
            source=self.source_includes(request) if self.using is None else False,
            timeout=timeout,
            fuzziness=self.get_fuzziness(request),
            highlight=request.highlight,
            facets=request.facets,
            facet_size=request.facet_size,
        )

    def source_includes(self, request: FetchRequest) -> bool | list[str]:
        """What of ``_source`` the engine returns when the hits become instances: all of it,
        or with sparse ``fields`` (``request.only``) those fields' names only."""
        if request.only is None:
            return True
        meta = request.model._meta
        names = [meta.get_field(name) for name in request.only]
        return sorted({n for f in names for n in (f.name, getattr(f, "attname", f.name))})

    def count(self, request: FetchRequest) -> int | None:
        """The engine's exact hit count for ``request`` (``track_total_hits: true``, no hits
        returned)."""
        self._check_cooldown()
        body = self.build_body(replace(request, after=None, offset=0, total=True),
                               timeout=request.remaining)
        body.update(size=0, _source=False)
        for part in ("sort", "highlight", "aggs"):
            body.pop(part, None)
        total = self._search(body, request)["hits"].get("total")
        if isinstance(total, dict):
            return int(total["value"]) if total.get("relation") == "eq" else None
        return int(total) if isinstance(total, int) else None

    def fetch(self, request: FetchRequest) -> FetchResult:
        self._check_cooldown()
        body = self.build_body(request, timeout=request.remaining)
        response = self._search(body, request)
        hits = response["hits"]["hits"]
        engine_more = len(hits) >= request.size
        items = self.to_instances(request, hits)
        facets = (facet_buckets(response, request.facets, self.field_map(request.model))
                  if request.facets else None)
        rounds = 0
        # Rows dropped while reading them back (deleted, or changed so they no longer match)
        # leave the page short: read the hits after the last one until it is full again.
        while engine_more and len(items) < request.size and rounds < 3 and hits:
            rounds += 1
            more = dict(body, size=request.size - len(items), search_after=hits[-1]["sort"])
            more.pop("from", None)
            more.pop("aggs", None)  # counted already, over every hit
            response = self._search(more, request)
            hits = response["hits"]["hits"]
            engine_more = len(hits) >= more["size"]
            items.extend(self.to_instances(request, hits))
        meta: dict[str, Any] = {"index": self.adapter.index, "took_ms": response.get("took")}
        total = response["hits"].get("total")
        if isinstance(total, dict):
            meta["total_hits"] = total.get("value")
            meta["total_hits_relation"] = total.get("relation")
        if facets is not None:
            meta["facets"] = facets
        return FetchResult(items[: request.size], has_more=engine_more, meta=meta,
                           complete=self.complete or request.single_source)

    # -- the engine ------------------------------------------------------------------------
    def _check_cooldown(self) -> None:
        breaker = self.breaker
        if breaker.allow():
            return
        age = time.monotonic() - (breaker.failed_at or 0.0)
        raise SourceUnavailable(self.name, f"{breaker.last_error} ({age:.1f}s ago; not retried "
                                           f"for {self.cooldown:g}s)")

    def _search(self, body: dict[str, Any], request: FetchRequest) -> dict[str, Any]:
        try:
            response = self.adapter.search(body, timeout=request.remaining)
        except Exception as exc:
            reason = self.adapter.unavailable_reason(exc)
            if reason is None:
                raise  # not an outage: a bad query or mapping is a bug
            self.breaker.failed(reason)
            raise SourceUnavailable(self.name, reason, cause=exc) from exc
        if response.get("timed_out"):
            self.breaker.failed("the search timed out")
            raise SourceUnavailable(self.name, "the search timed out (its hits are partial)")
        shards = response.get("_shards") or {}
        if shards.get("failed"):
            raise SourceUnavailable(self.name, f"{shards['failed']} of {shards.get('total')} "
                                               f"shards failed (the hits are partial)")
        self.breaker.succeeded()
        return response

    def health(self) -> tuple[bool, str]:
        """For ``manage.py datapipe health``: the cluster's status and the index's size."""
        state = self.adapter.cluster_health(timeout=3.0)
        status = state.get("status")
        count = self.adapter.count()
        return (status in ("green", "yellow"),
                f"{self.adapter.flavor} cluster {state.get('cluster_name')!r} {status}; index "
                f"{self.adapter.index!r}: {count} documents")

    def explain(self, request: FetchRequest) -> dict[str, Any]:
        """What this fetcher would send for ``request`` (``manage.py datapipe explain``)."""
        return {"engine": self.adapter.flavor, "index": self.adapter.index,
                "hydrate": f"database {self.using!r}" if self.using else "_source",
                "query": json.dumps(self.build_body(request, timeout=request.remaining),
                                    default=str)}

    # -- checks ----------------------------------------------------------------------------
    def check(self, pipeline: Any) -> list[checks.CheckMessage]:
        """System checks of this source in ``pipeline``: E001 (its ``using`` is unknown), E009
        (its Document indexes another model), E012, W012 and W013 (see
        :func:`check_search_fetchers`)."""
        owner = f"Pipeline {pipeline.name!r}: fetcher {self.name!r}"
        document = self.document.__name__
        messages: list[checks.CheckMessage] = unknown_database(pipeline, self, self.using)
        indexed, label = self.adapter.model, pipeline.model._meta.label
        if indexed is not pipeline.model:
            messages.append(checks.Error(
                f"{owner} searches {document}, which indexes {indexed._meta.label}, not the "
                f"pipeline's model {label}.",
                hint=f"Give the fetcher a Document whose Django.model is {label}.",
                obj=pipeline, id="datapipe_django.E009"))
            return messages
        fields = self.field_map(pipeline.model)
        context = _CheckContext(pipeline, fields, owner, document)
        messages.extend(_check_needed_fields(context))
        if self.handles == "search" or pipeline.search_fields:
            messages.extend(_check_search_fields(context))
        if self.complete:
            messages.extend(_check_facets(context))
        messages.extend(_check_filters(context))
        return messages

    # -- hits → instances --------------------------------------------------------------------
    def to_instances(self, request: FetchRequest, hits: list[dict[str, Any]]) -> list[Any]:
        """Model instances for ``hits``, in hit order."""
        model = request.model
        pk_field: Any = model._meta.pk
        pks = [pk_field.to_python(hit["sort"][-1] if hit.get("sort") else hit["_id"])
               for hit in hits]
        if self.using is None:
            items = [self.from_source(model, hit, pk) for hit, pk in zip(hits, pks, strict=True)]
        else:
            items = self._read_back(request, pks, self.using)
        if request.relevance or request.highlight:
            self.annotate(request, items, dict(zip(pks, hits, strict=True)))
        return items

    def _read_back(self, request: FetchRequest, pks: list[Any], using: str) -> list[Any]:
        """The rows of ``pks`` read from the database ``using``, in hit order, re-checked
        against the spec when ``recheck``; the database's bounded wait, statement timeout and
        breaker (stores.py) apply, as for an ORMFetcher: a down database is refused at once."""
        with use_store(using, request.remaining):
            found = self.get_queryset(request).in_bulk(pks)
        items = [found[pk] for pk in pks if pk in found]
        spec = request.full_spec
        if self.recheck and spec is not None:
            items = [obj for obj in items if spec.matches(obj)]
        return items

    def annotate(self, request: FetchRequest, items: list[Any],
                 hits: dict[Any, dict[str, Any]]) -> None:
        """Set each row's score (``SCORE_ATTR``, the sort value: relevance orderings) and
        highlights (``HIGHLIGHTS_ATTR``, by search field path) from its hit."""
        names = {}
        if request.highlight:
            fields = self.field_map(request.model)
            names = {fields.search_field(path): path for path in request.search_fields}
        for obj in items:
            hit = hits[obj.pk]
            if request.relevance:
                setattr(obj, SCORE_ATTR, float(hit["sort"][0]))
            if request.highlight:
                setattr(obj, HIGHLIGHTS_ATTR, {
                    names.get(name, name): list(parts)
                    for name, parts in (hit.get("highlight") or {}).items()})

    def get_queryset(self, request: FetchRequest) -> models.QuerySet[Any]:
        """The queryset hits are read back from (``using``); it selects the relations the
        spec reads, so re-checking them costs no query per row. Override to add your own."""
        qs = request.model._default_manager.using(self.using).all()
        related = forward_prefixes(request.model, request.full_spec.fields()
                                   if self.recheck and request.full_spec is not None else ())
        if related:
            return qs.select_related(*related)
        if request.only is not None:
            # Sparse `fields`: those columns, and what the re-check reads.
            spec_fields = request.full_spec.fields() if self.recheck and request.full_spec \
                is not None else ()
            concrete = {f.name for f in request.model._meta.concrete_fields}
            read = {head(p) for p in spec_fields} & concrete
            return qs.only(*request.only, *read)
        return qs

    def from_source(self, model: type[models.Model], hit: dict[str, Any], pk: Any) -> Any:
        """An instance built from ``hit["_source"]``: the concrete fields the Document stores
        (a foreign key as its key, or an object holding it), the others deferred."""
        source = hit.get("_source") or {}
        names: list[str] = []
        values: list[Any] = []
        for field in model._meta.concrete_fields:
            if field.primary_key:
                raw: Any = pk
            else:
                raw = _source_value(source, field)
                if raw is _MISSING:
                    continue
            target: Any = getattr(field, "target_field", field) if field.is_relation else field
            names.append(field.attname)
            values.append(None if raw is None else target.to_python(raw))
        return model.from_db(None, names, values)


def _source_value(source: dict[str, Any], field: Any) -> Any:
    for key in (field.attname, field.name):
        if key in source:
            value = source[key]
            if field.is_relation and isinstance(value, dict):
                for inner in (field.target_field.name, "id", "pk"):
                    if inner in value:
                        return value[inner]
                return None if not value else _MISSING
            return value
    return _MISSING


# -- system checks ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _CheckContext:
    """What each of a search source's checks reads: the pipeline, the Document's field map,
    and the names a message starts with."""

    pipeline: Any
    fields: FieldMap
    owner: str
    document: str


def _check_needed_fields(c: _CheckContext) -> list[checks.CheckMessage]:
    """E012 for a tenant or ordering field the engine cannot filter or sort by; W012 for a
    datetime ordering field mapped as ``date`` (milliseconds)."""
    pipeline = c.pipeline
    needed = [("tenant_field", pipeline.tenant_field)] if pipeline.tenant_field else []
    needed += [("ordering", name) for name in sorted(
        {f.name for f in pipeline.default_ordering.fields}
        | (set(pipeline.ordering_fields) - {"pk"}))]
    messages: list[checks.CheckMessage] = []
    for role, path in needed:
        try:
            target = c.fields.filter_field(path)
        except NotSearchable as exc:
            messages.append(checks.Error(
                f"{c.owner}: {c.document} cannot serve the {role} field {path!r}: {exc.reason}",
                hint=f"Map {path!r} in {c.document} as a keyword, number or date field (text "
                     f"needs a keyword sub-field); the pk must be a field to sort by.",
                obj=pipeline, id="datapipe_django.E012"))
            continue
        if role == "ordering" and target.type == "date" and \
                isinstance(c.fields.model_field(path), models.DateTimeField):
            messages.append(checks.Warning(
                f"{c.owner}: {c.document} maps the ordering field {path!r} as 'date', which "
                f"keeps milliseconds: rows less than a millisecond apart sort differently than "
                f"in the database, and cursor pages can skip them.",
                hint="Map it as 'date_nanos' (datapipe_django.search.fields.DateNanosField).",
                obj=pipeline, id="datapipe_django.W012"))
    return messages


def _check_search_fields(c: _CheckContext) -> list[checks.CheckMessage]:
    """E012 for a search field the engine cannot search."""
    messages: list[checks.CheckMessage] = []
    for path in c.pipeline.search_fields:
        try:
            c.fields.search_field(path)
        except NotSearchable as exc:
            messages.append(checks.Error(
                f"{c.owner}: {c.document} cannot search {path!r}: {exc.reason}",
                hint=f"Map {path!r} in {c.document} as a text field.",
                obj=c.pipeline, id="datapipe_django.E012"))
    return messages


def _check_facets(c: _CheckContext) -> list[checks.CheckMessage]:
    """W013 for a facet field the engine cannot count."""
    messages: list[checks.CheckMessage] = []
    for facet in getattr(c.pipeline, "facet_fields", ()):
        try:
            facet_aggregations([facet], c.fields, size=1)
        except NotSearchable as exc:
            messages.append(checks.Warning(
                f"{c.owner}: facet field {facet!r} cannot be counted by {c.document}: "
                f"{exc.reason} Requests for it are declined by this source.",
                hint=f"Map {facet!r} in {c.document} as a keyword, number, boolean or date "
                     f"field (a foreign key as its id).",
                obj=c.pipeline, id="datapipe_django.W013"))
    return messages


def _check_filters(c: _CheckContext) -> list[checks.CheckMessage]:
    """W013 for a filter of the FilterSet the engine cannot serve exactly."""
    messages: list[checks.CheckMessage] = []
    filterset = c.pipeline.filterset_class
    for name, filter_ in sorted(getattr(filterset, "base_filters", {}).items()):
        path = getattr(filter_, "field_name", None)
        if not path or getattr(filter_, "method", None) is not None:
            continue
        try:
            if getattr(filter_, "lookup_expr", "") == "isnull":
                c.fields.exists_field(path)
            else:
                c.fields.filter_field(path)
        except NotSearchable as exc:
            messages.append(checks.Warning(
                f"{c.owner}: filter {name!r} cannot be served by {c.document}: {exc.reason} "
                f"Requests using it are declined by this source.",
                hint=f"Map {path!r} in {c.document} as a keyword, number or date field.",
                obj=c.pipeline, id="datapipe_django.W013"))
    return messages


def check_search_fetchers(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E012: a field the pipeline needs (tenant, ordering, search) is not in the Document's
    mapping the way the engine needs it. W012: a DateTimeField the pipeline orders by is
    mapped as ``date`` (milliseconds). W013: a filter of the FilterSet, or a facet field, the
    engine cannot serve exactly (requests using it go to the next source). The messages of
    every registered pipeline's search fetchers; ``manage.py check`` gets them from each
    fetcher's ``check(pipeline)`` (:mod:`datapipe_django.checks`)."""
    from datapipe_django.registry import all_pipelines

    messages: list[checks.CheckMessage] = []
    for pipeline in all_pipelines():
        for fetcher in pipeline.fetchers:
            for candidate in (fetcher, fetcher.fetcher):
                if isinstance(candidate, SearchFetcher):
                    messages.extend(candidate.check(pipeline))
    return messages
