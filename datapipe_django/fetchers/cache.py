"""`CachedFetcher`: any fetcher behind the Django cache.

``CachedFetcher(ORMFetcher("default", name="appdb"), ttl=30)`` answers a request from the
cache when it can and asks the fetcher underneath otherwise. It keeps the inner fetcher's
``name`` (so ``X-Datapipe-Source`` still says which store the rows are from), its ``priority``,
``can_handle`` and ``runs_inline``; ``FetchResult.meta["cache"]`` (copied into
``Attempt.meta``) says ``hit``, ``stale``, ``miss`` or ``bypass``.

What is stored
    The page's rows as JSON: per row the values of its loaded concrete fields (JSON types for
    Django's built-in fields, ``value_to_string``/``to_python`` for any other, as Django's own
    serializers do), ``has_more``, the generation tokens and when it was computed. Never a pickle
    of a model instance or a queryset. A hit rebuilds the rows with ``Model.from_db`` on the
    inner fetcher's database alias, so they are ordinary unmodified instances whose
    ``_state.db`` is where they came from. Enrichment runs after the fetch stage and is not
    cached; annotations and ``select_related`` caches of the inner queryset are not either.

Keys
    ``<prefix>:<format>:<pipeline>:<fetcher>:<shape>:<request>``: ``shape`` is a digest of what
    the entry's layout depends on (model, table and field list, the inner fetcher's class, name
    and alias, the pipeline's fetchers, ordering, tenant field, search fields and FilterSet, the
    library's entry format and the ``version`` you pass); ``request`` a digest of the tenant,
    auth type, compiled filters, search, ordering, cursor position, offset, size, pk and
    ``vary(request)``. See :mod:`datapipe_django.cache.keys`.

Freshness
    Entries carry the generation tokens of their model (and tenant) read before the source was
    queried, and are served only while those are current (:mod:`datapipe_django.cache.generations`):
    a committed write is never followed by a read of the old rows. ``ttl`` bounds the age of an
    entry otherwise; with ``stale_ttl`` an entry older than ``ttl`` (but of the current
    generation) is served for ``stale_ttl`` more seconds while one caller refreshes it.

Concurrency and outages
    One caller computes a missing entry (a lock taken with ``cache.add``); the others wait for
    it (at most ``lock_timeout`` seconds, or half of what is left of the deadline), or serve the
    stale copy when there is one. A cache error is never the caller's: the fetcher underneath
    answers, a warning is logged, ``stats["errors"]`` counts it and the cache is left alone for
    ``DATAPIPE["CACHE_BREAKER_SECONDS"]``.

This module uses Django's cache API only; it works on any backend (django-redis, Django's
redis and memcached backends, locmem for one process).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import operator
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.core import checks
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import connections, models, transaction

from datapipe_django.cache.dependencies import pipeline_paths, related_models
from datapipe_django.cache.generations import (
    generation_keys,
    invalidate,
    new_token,
    pending_write,
    tenant_attname,
    tenant_value,
    watch,
    write_pending,
)
from datapipe_django.cache.guard import CacheGuard, get_guard, unknown_cache_alias
from datapipe_django.cache.keys import CACHE_FORMAT, Uncacheable, canonical, class_path, digest
from datapipe_django.cache.keys import slug as key_slug

# decode_rows: importable from here for one release (its home is datapipe_django.cache.rows).
from datapipe_django.cache.rows import decode_rows as decode_rows
from datapipe_django.cache.rows import encode_rows, read_entry
from datapipe_django.cache.stats import CacheStats
from datapipe_django.conf import datapipe_settings
from datapipe_django.fetchers.base import (
    BaseFetcher,
    FetchRequest,
    FetchResult,
    Verdict,
    as_fetcher,
    missing_member,
)

if TYPE_CHECKING:
    from datapipe_django.pipeline import Pipeline

__all__ = ["CacheStats", "CachedFetcher", "invalidate"]

logger = logging.getLogger("datapipe_django.cache")


class _CacheDown(Exception):
    """A cache call failed with a cache error (already counted and logged)."""


# -- the fetcher -------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Plan:
    """Where one request's entry lives, and what it depends on."""

    key: str
    lock_key: str
    gen_keys: list[str]
    tenant: Any
    tenant_attname: str | None
    pipeline: str


@dataclass
class _Entry:
    rows: list[models.Model]
    has_more: bool
    stored_at: float
    fresh_until: float


class CachedFetcher(BaseFetcher):
    """Serves ``fetcher``'s pages from the Django cache ``cache`` (default
    ``DATAPIPE["CACHE"]``) for ``ttl`` seconds (default ``DATAPIPE["CACHE_TTL"]``), invalidated
    by writes to the model.

    ``stale_ttl``: seconds an entry older than ``ttl`` may still be served while one caller
    refreshes it (stale-while-revalidate; 0 turns it off). ``lock_timeout``: how long one caller
    may hold the computation of a missing entry, and the longest others wait for it.
    ``vary``: ``(request) -> value`` added to the key, for a fetcher whose answer depends on
    more than the request's parameters (``request.request.context``...). ``depends_on``: models
    whose writes must invalidate these pages too (relations a ``method=`` filter's spec joins;
    the FilterSet's own relation paths and ``search_fields`` are found automatically).
    ``version``: change it to orphan every entry (e.g. when ``get_queryset`` changes meaning).
    ``name``/``priority`` default to the inner fetcher's, and so does what it holds
    (``holds``, given here, wins).
    """

    fetcher: BaseFetcher

    def __init__(
        self,
        fetcher: Any,
        *,
        ttl: float | None = None,
        stale_ttl: float = 0,
        cache: str | None = None,
        name: str | None = None,
        priority: int | None = None,
        lock_timeout: float = 5.0,
        vary: Callable[[FetchRequest], Any] | None = None,
        depends_on: Iterable[type[models.Model]] = (),
        version: Any = None,
        holds: Any = None,
    ) -> None:
        _check_arguments(fetcher, ttl=ttl, stale_ttl=stale_ttl, lock_timeout=lock_timeout)
        inner = as_fetcher(fetcher)
        super().__init__(name=name if name is not None else inner.name,
                         priority=priority if priority is not None else inner.priority,
                         holds=holds)
        self.fetcher = inner
        self._ttl = ttl
        self.stale_ttl = float(stale_ttl)
        self._cache = cache
        self.lock_timeout = float(lock_timeout)
        self.vary = vary
        self.depends_on = tuple(depends_on)
        self.version = version
        self.stats = CacheStats()
        self._pipelines: dict[str, Any] = {}
        self._shapes: dict[str, str] = {}
        self._deps: dict[str, frozenset[type[models.Model]]] = {}
        self._warned: set[str] = set()

    # -- configuration --------------------------------------------------------------------------
    @property
    def ttl(self) -> float:
        return float(self._ttl if self._ttl is not None else datapipe_settings.CACHE_TTL)

    @property
    def cache_alias(self) -> str:
        return self._cache or str(datapipe_settings.CACHE)

    @property
    def using(self) -> str:
        """The inner fetcher's database alias (``AttributeError`` when it has none)."""
        return self.fetcher.using  # type: ignore[attr-defined]  # an ORMFetcher's

    @property
    def guard(self) -> CacheGuard:
        return get_guard(self.cache_alias)

    def contribute_to_pipeline(self, pipeline: Pipeline) -> None:
        """Called by :class:`~datapipe_django.Pipeline` when it is declared: computes the
        pipeline's shape digest and starts watching its model for writes."""
        self.fetcher.contribute_to_pipeline(pipeline)
        self._pipelines[pipeline.name] = pipeline
        self._shapes.pop(pipeline.name, None)
        model = pipeline.model
        deps = {_concrete(m) for m in self.depends_on}
        for path in pipeline_paths(pipeline):
            deps |= related_models(model, path)
        self._deps[pipeline.name] = frozenset(deps)
        watch(model, tenant_field=pipeline.tenant_field, cache=self._cache, depends_on=deps)

    def _ensure_watched(self, request: FetchRequest) -> frozenset[type[models.Model]]:
        deps = self._deps.get(request.pipeline)
        if deps is None:  # used outside a Pipeline declaration (a bare FetcherChain)
            found = {_concrete(m) for m in self.depends_on}
            for path in request.search_fields:
                found |= related_models(request.model, path)
            deps = self._deps[request.pipeline] = frozenset(found)
            watch(request.model, tenant_field=request.tenant_field, cache=self._cache,
                  depends_on=deps)
        return deps

    # -- the fetcher protocol -------------------------------------------------------------------
    def can_handle(self, request: FetchRequest) -> bool | Verdict:
        return self.fetcher.can_handle(request)

    def can_rank(self, request: FetchRequest) -> bool:
        return bool(self.fetcher.can_rank(request))  # served by the inner fetcher, uncached

    def can_facet(self, request: FetchRequest) -> bool:
        return bool(self.fetcher.can_facet(request))

    def runs_inline(self, request: FetchRequest) -> bool:
        return self.fetcher.runs_inline(request)

    # What the store holds is the inner fetcher's: the cache holds copies of its pages.
    def get_holds(self) -> Any:
        """Its own ``holds`` when given, else the wrapped fetcher's."""
        if self.holds is not None:
            return super().get_holds()
        return self.fetcher.get_holds()

    @property
    def database(self) -> str | None:
        return self.fetcher.database

    @property
    def mirror_of(self) -> str | None:
        return self.fetcher.mirror_of

    def declares_scope(self) -> bool:
        return self.holds is not None or self.fetcher.declares_scope()

    def count(self, request: FetchRequest) -> int | None:
        """The inner fetcher's count (not cached: a total must be exact now)."""
        return self.fetcher.count(request)

    @property
    def complete(self) -> bool:  # type: ignore[override]  # read-only here: the inner's
        """The inner fetcher's ``complete`` (it holds every matching row)."""
        return self.fetcher.complete

    def fetch(self, request: FetchRequest) -> FetchResult:
        plan = self._plan_or_reason(request)
        if isinstance(plan, str):
            return self._bypass(request, plan)
        guard = self.guard
        if not guard.allow():
            return self._bypass(request, f"cache {self.cache_alias!r} unavailable")
        cache = caches[self.cache_alias]
        try:
            tokens, raw = self._read(cache, plan)
        except Exception as exc:
            self._failed(guard, exc)
            return self._bypass(request, f"cache error: {type(exc).__name__}", error=True)
        guard.succeeded()
        try:
            return self._serve(request, cache, plan, tokens, raw, guard)
        except _CacheDown as exc:
            return self._bypass(request, f"cache error: {type(exc.__cause__).__name__}",
                                error=True)

    def _plan_or_reason(self, request: FetchRequest) -> _Plan | str:
        """Where ``request``'s page is cached, or why it is not (answered without the cache)."""
        if request.relevance or request.highlight or request.facets:
            # Scores, highlights and counts are not part of a cached row.
            return "relevance, highlights and facets are not cached"
        deps = self._ensure_watched(request)
        try:
            plan = self._plan(request, deps)
        except Uncacheable as exc:
            return str(exc)
        if pending_write(request.model):
            return f"this transaction wrote {request.model._meta.label}"
        return plan

    def _read(self, cache: Any, plan: _Plan) -> tuple[list[Any], Any]:
        """The current generation tokens (started where missing) and the raw entry, in one
        round trip after writing the token changes an outage held back."""
        write_pending(self.cache_alias)
        found = cache.get_many([*plan.gen_keys, plan.key])
        tokens = [found.get(k) for k in plan.gen_keys]
        if None in tokens:
            tokens = self._start_generations(cache, plan, tokens)
        return tokens, found.get(plan.key)

    # -- keys -----------------------------------------------------------------------------------
    def cache_key(self, request: FetchRequest) -> str:
        """The key ``request``'s page is stored under (raises ``Uncacheable``)."""
        return self._plan(request, self._ensure_watched(request)).key

    def check(self, pipeline: Pipeline) -> list[checks.CheckMessage]:
        """E003 (its cache alias is not in ``settings.CACHES``), then the wrapped fetcher's
        own checks."""
        error = unknown_cache_alias(pipeline, f"CachedFetcher {self.name!r}", self.cache_alias)
        return [*([error] if error is not None else []), *self.fetcher.check(pipeline)]

    def explain(self, request: FetchRequest) -> dict[str, Any]:
        """For ``manage.py datapipe explain``: the cache alias, the key ``request``'s page is
        stored under (or why it is not cached), the wrapped fetcher and its explanation."""
        details: dict[str, Any] = {"cache alias": self.cache_alias}
        try:
            details["cache key"] = self.cache_key(request)
        except Exception as exc:  # an uncacheable request: say why
            details["cache key"] = f"(not cached: {exc})"
        details["wraps"] = f"{type(self.fetcher).__name__} {self.fetcher.name!r}"
        details.update({k: v for k, v in self.fetcher.explain(request).items()
                        if k not in details})
        return details

    def key_parts(self, request: FetchRequest, tenant: Any) -> dict[str, Any]:
        """What tells two requests apart. Override (call super()) to add to it."""
        pk = request.pk
        if pk is not None:
            try:
                pk = request.model._meta.pk.to_python(pk)  # type: ignore[union-attr]
            except (ValidationError, TypeError, ValueError) as exc:
                raise Uncacheable(f"pk {request.pk!r} is not valid") from exc
        parts = {
            "tenant": tenant,
            "auth_type": request.auth_type,
            "spec": request.spec,
            "search": request.search,
            "ordering": request.ordering.signature,
            "after": request.after,
            "offset": request.offset,
            "size": request.size,
            "pk": pk,
        }
        if request.only is not None:  # sparse fields: the entry holds those columns only
            parts["only"] = list(request.only)
        if self.vary is not None:
            parts["vary"] = self.vary(request)
        return parts

    def shape(self, request: FetchRequest) -> str:
        """Digest of everything the entries' layout and meaning depend on, besides the request:
        a change of model fields, fetcher, pipeline declaration or library format changes it."""
        found = self._shapes.get(request.pipeline)
        if found is not None:
            return found
        model = request.model
        inner = self.fetcher
        parts: dict[str, Any] = {
            "format": CACHE_FORMAT,
            "model": model._meta.label_lower,
            "table": model._meta.db_table,
            "fields": [[f.attname, class_path(f), f.get_internal_type(), f.null]
                       for f in model._meta.concrete_fields],
            "fetcher": [class_path(inner), inner.name, getattr(inner, "using", None)],
            "tenant_field": request.tenant_field,
            "search_fields": list(request.search_fields),
            "version": canonical(self.version),
        }
        pipeline = self._pipelines.get(request.pipeline)
        if pipeline is not None:
            parts["fetchers"] = [f.name for f in pipeline.fetchers]
            parts["ordering"] = pipeline.default_ordering.signature
            filterset = pipeline.filterset_class
            if filterset is not None:
                parts["filterset"] = [class_path(filterset), sorted(
                    [name, class_path(f), str(f.field_name), str(f.lookup_expr),
                     bool(getattr(f, "exclude", False))]
                    for name, f in getattr(filterset, "base_filters", {}).items()
                )]
        value = self._shapes[request.pipeline] = digest(parts, size=16)
        return value

    def _plan(self, request: FetchRequest, deps: frozenset[type[models.Model]]) -> _Plan:
        if request.spec is not None:
            joined: set[type[models.Model]] = set()
            for path in request.spec.fields():
                joined |= related_models(request.model, path)
            missing = joined - deps
            if missing:
                names = ", ".join(sorted(m._meta.label for m in missing))
                self._warn_once(
                    f"deps:{request.pipeline}:{names}",
                    "CachedFetcher %r: pipeline %r filters through %s, whose writes it does not "
                    "watch; such requests skip the cache. Pass depends_on=[...] to cache them.",
                    self.name, request.pipeline, names,
                )
                raise Uncacheable(f"the filters read {names}, not watched (see depends_on)")
        gen_keys, tenant = generation_keys(request.model, request.tenant_field, request.tenant)
        parts = self.key_parts(request, canonical(tenant))
        prefix = datapipe_settings.CACHE_KEY_PREFIX
        key = (f"{prefix}:{CACHE_FORMAT}:{key_slug(request.pipeline)}:{key_slug(self.name)}:"
               f"{self.shape(request)}:{digest(parts, size=40)}")
        return _Plan(key=key, lock_key=f"{key}:lock", gen_keys=gen_keys, tenant=canonical(tenant),
                     tenant_attname=tenant_attname(request.model, request.tenant_field),
                     pipeline=request.pipeline)

    # -- serving --------------------------------------------------------------------------------
    def _serve(self, request: FetchRequest, cache: Any, plan: _Plan, tokens: list[Any],
               raw: Any, guard: CacheGuard) -> FetchResult:
        entry = self._load(request, plan, tokens, raw)
        now = time.time()
        if entry is not None and now < entry.fresh_until:
            return self._hit(request, entry, "hit", now)
        if entry is not None and self.stale_ttl:
            lock = self._lock(cache, plan, request, guard)
            if lock is None:
                self.stats.incr("stale")
                return self._hit(request, entry, "stale", now)
            return self._compute(request, cache, plan, tokens, guard, lock)
        lock = self._lock(cache, plan, request, guard)
        if lock is not None:
            return self._compute(request, cache, plan, tokens, guard, lock)
        waited = self._wait(request, cache, plan, tokens, guard)
        if waited is not None:
            return waited
        return self._compute(request, cache, plan, tokens, guard, None)

    def _hit(self, request: FetchRequest, entry: _Entry, outcome: str, now: float,
             **meta: Any) -> FetchResult:
        if outcome == "hit":
            self.stats.incr("hits")
        self._emit(request, outcome)
        return FetchResult(entry.rows, entry.has_more,
                           meta={"cache": outcome, "cache_age": round(now - entry.stored_at, 3),
                                 **meta})

    def _compute(self, request: FetchRequest, cache: Any, plan: _Plan, tokens: list[Any],
                 guard: CacheGuard, lock: str | None) -> FetchResult:
        try:
            result = self.fetcher.fetch(request)
        except BaseException:
            if lock is not None:
                with contextlib.suppress(_CacheDown):
                    self._unlock(cache, plan, lock, guard)
            raise
        meta: dict[str, Any] = {"cache": "miss"}
        try:
            if None not in tokens:
                payload = self._dump(request, plan, tokens, result)
                if payload is not None:
                    alias = self._atomic_alias()
                    if alias is None:
                        self._store(cache, plan.key, payload, guard)
                    else:
                        # Rows read inside a transaction are published when it commits, and
                        # never if it rolls back (a test case's transaction, for one).
                        transaction.on_commit(
                            functools.partial(self._store_quietly, self.cache_alias, plan.key,
                                              payload),
                            using=alias, robust=True)
                        meta["cache_store"] = "on_commit"
            if lock is not None:
                self._unlock(cache, plan, lock, guard)
        except _CacheDown as exc:
            meta["cache_error"] = type(exc.__cause__).__name__
        self.stats.incr("misses")
        self._emit(request, "miss")
        return FetchResult(result.items, result.has_more, meta={**result.meta, **meta})

    def _store(self, cache: Any, key: str, payload: str, guard: CacheGuard) -> None:
        self._call(guard, cache.set, key, payload,
                   timeout=self._timeout(self.ttl + self.stale_ttl))

    def _store_quietly(self, alias: str, key: str, payload: str) -> None:
        guard = get_guard(alias)
        if guard.allow():
            with contextlib.suppress(_CacheDown):
                self._store(caches[alias], key, payload, guard)
                guard.succeeded()

    def _atomic_alias(self) -> str | None:
        """The inner fetcher's database alias when this thread is inside a transaction on it."""
        alias = getattr(self.fetcher, "using", None)
        if not isinstance(alias, str) or alias not in connections.settings:
            return None
        return alias if connections[alias].in_atomic_block else None

    def _lock(self, cache: Any, plan: _Plan, request: FetchRequest, guard: CacheGuard
              ) -> str | None:
        token = new_token()
        seconds = self.lock_timeout
        if request.remaining is not None:
            seconds = min(seconds, request.remaining + 1.0)
        if self._call(guard, cache.add, plan.lock_key, token, timeout=self._timeout(seconds)):
            return token
        return None

    def _unlock(self, cache: Any, plan: _Plan, token: str, guard: CacheGuard) -> None:
        if self._call(guard, cache.get, plan.lock_key) == token:
            self._call(guard, cache.delete, plan.lock_key)

    def _wait(self, request: FetchRequest, cache: Any, plan: _Plan, tokens: list[Any],
              guard: CacheGuard) -> FetchResult | None:
        """Another caller computes this entry: poll for it until it appears, its lock goes, or
        the wait budget (``lock_timeout``, at most half of the deadline left) runs out."""
        budget = self.lock_timeout
        if request.remaining is not None:
            budget = min(budget, request.remaining / 2)
        start = time.monotonic()
        delay = 0.002
        while time.monotonic() - start + delay < budget:
            time.sleep(delay)
            delay = min(delay * 1.5, 0.05)
            found = self._call(guard, cache.get_many, [plan.key, plan.lock_key])
            entry = self._load(request, plan, tokens, found.get(plan.key))
            if entry is not None:
                self.stats.incr("waits")
                return self._hit(request, entry, "hit", time.time(),
                                 cache_waited=round(time.monotonic() - start, 3))
            if plan.lock_key not in found:
                break  # the other caller gave up (its source failed) or stored another generation
        return None

    def _start_generations(self, cache: Any, plan: _Plan, tokens: list[Any]) -> list[Any]:
        """First use (or eviction) of a generation key: give it a fresh token."""
        missing = [k for k, t in zip(plan.gen_keys, tokens, strict=True) if t is None]
        for key in missing:
            cache.add(key, new_token(), timeout=None)
        again = cache.get_many(missing)
        return [again.get(k) if t is None else t
                for k, t in zip(plan.gen_keys, tokens, strict=True)]

    # -- entries --------------------------------------------------------------------------------
    def _dump(self, request: FetchRequest, plan: _Plan, tokens: list[Any],
              result: FetchResult) -> str | None:
        model = request.model
        rows = result.items
        if any(type(row) is not model for row in rows):
            self._warn_once(f"type:{request.pipeline}",
                            "CachedFetcher %r: fetcher returned objects that are not %s "
                            "instances; not caching them.", self.name, model._meta.label)
            return None
        if plan.tenant_attname is not None and request.tenant is not None:
            value = _tenant_python(model, plan.tenant_attname, request.tenant)
            getter = operator.attrgetter(plan.tenant_attname)
            if any(getter(row) != value for row in rows):
                self._warn_once(f"tenant:{request.pipeline}",
                                "CachedFetcher %r: fetcher returned rows of another tenant "
                                "than asked; not caching them.", self.name)
                return None
        db = getattr(self.fetcher, "using", None)
        if db is None and rows:
            db = rows[0]._state.db
        now = time.time()
        try:
            fieldsets, records = encode_rows(model, rows, db)
            return json.dumps(
                {"v": CACHE_FORMAT, "g": tokens, "tn": plan.tenant, "at": now,
                 "fu": now + self.ttl, "m": bool(result.has_more), "db": db,
                 "fs": fieldsets, "r": records},
                separators=(",", ":"), ensure_ascii=False,
            )
        except (TypeError, ValueError) as exc:
            self._warn_once(f"encode:{request.pipeline}",
                            "CachedFetcher %r: rows of %s cannot be stored (%s); not caching.",
                            self.name, model._meta.label, exc)
            return None

    def _load(self, request: FetchRequest, plan: _Plan, tokens: list[Any], raw: Any
              ) -> _Entry | None:
        """The entry, if it is of the current generations and this tenant; else None."""
        if raw is None:
            return None
        try:
            found = read_entry(request.model, raw, lambda data: (
                data["v"] == CACHE_FORMAT and data["g"] == tokens and data["tn"] == plan.tenant))
            if found is None:
                return None
            data, rows = found
            return _Entry(rows, bool(data["m"]), float(data["at"]), float(data["fu"]))
        except (TypeError, ValueError, KeyError, IndexError, ValidationError) as exc:
            self._warn_once(f"decode:{request.pipeline}",
                            "CachedFetcher %r: unreadable cache entry (%s: %s); treated as a "
                            "miss.", self.name, type(exc).__name__, exc)
            return None

    # -- outcomes -------------------------------------------------------------------------------
    def _bypass(self, request: FetchRequest, reason: str, *, error: bool = False
                ) -> FetchResult:
        self.stats.incr("bypasses")
        self._emit(request, "bypass")
        result = self.fetcher.fetch(request)
        return FetchResult(result.items, result.has_more,
                           meta={**result.meta, "cache": "bypass", "cache_reason": reason},
                           complete=result.complete)

    def _call(self, guard: CacheGuard, method: Callable[..., Any], *args: Any,
              **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except Exception as exc:
            self._failed(guard, exc)
            raise _CacheDown(str(exc)) from exc

    def _failed(self, guard: CacheGuard, exc: Exception) -> None:
        guard.absorb(exc)
        self.stats.incr("errors")

    def _emit(self, request: FetchRequest, outcome: str) -> None:
        pipeline = self._pipelines.get(request.pipeline)
        if pipeline is not None:  # None: a bare FetcherChain, no pipeline to report to
            pipeline.metrics.cache(request.pipeline, self.name, outcome)

    def _warn_once(self, key: str, message: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message, *args)

    @staticmethod
    def _timeout(seconds: float) -> int:
        # Whole seconds: every backend takes them (Django's redis and memcached truncate).
        return max(1, math.ceil(seconds))

    def __repr__(self) -> str:
        return f"<CachedFetcher {self.name!r} over {self.fetcher!r}>"


def _check_arguments(fetcher: Any, *, ttl: Any, stale_ttl: Any, lock_timeout: Any) -> None:
    """``ImproperlyConfigured`` naming what is wrong with ``CachedFetcher``'s arguments."""
    attr = missing_member(fetcher)
    if attr is not None:
        raise ImproperlyConfigured(
            f"CachedFetcher: {fetcher!r} is not a fetcher (it has no `{attr}`). Wrap an "
            f"ORMFetcher or another object with name, can_handle(request) and "
            f"fetch(request)."
        )
    for label, value in (("ttl", ttl), ("lock_timeout", lock_timeout)):
        if value is not None and not (isinstance(value, int | float) and value > 0):
            raise ImproperlyConfigured(
                f"CachedFetcher({fetcher.name!r}): `{label}` must be positive seconds, "
                f"got {value!r}."
            )
    if not isinstance(stale_ttl, int | float) or stale_ttl < 0:
        raise ImproperlyConfigured(f"CachedFetcher({fetcher.name!r}): `stale_ttl` must be "
                                   f"0 or positive seconds, got {stale_ttl!r}.")


def _concrete(model: type[models.Model]) -> type[models.Model]:
    return model._meta.concrete_model or model


def _tenant_python(model: type[models.Model], attname: str, tenant: Any) -> Any:
    """``tenant`` as the tenant field's value (as given when it is not a valid one)."""
    try:
        return tenant_value(model, attname, tenant)
    except (ValidationError, TypeError, ValueError):
        return tenant


# -- system checks -----------------------------------------------------------------------------

def _cached_fetchers() -> Iterable[tuple[Any, CachedFetcher]]:
    from datapipe_django.registry import all_pipelines

    for pipeline in all_pipelines():
        for fetcher in pipeline.fetchers:
            if isinstance(fetcher, CachedFetcher):
                yield pipeline, fetcher


def check_shared_cache(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W003 (``check --deploy``): a CachedFetcher on a per-process cache (locmem, dummy).
    Registered by :func:`datapipe_django.checks.check_deployment`."""
    from django.conf import settings

    messages: list[checks.CheckMessage] = []
    for pipeline, fetcher in _cached_fetchers():
        backend = str(settings.CACHES.get(fetcher.cache_alias, {}).get("BACKEND", ""))
        if backend.endswith(("LocMemCache", "DummyCache")):
            messages.append(checks.Warning(
                f"Pipeline {pipeline.name!r}: CachedFetcher {fetcher.name!r} uses the "
                f"per-process cache {fetcher.cache_alias!r} ({backend.rsplit('.', 1)[-1]}): a "
                f"write in one process does not invalidate the others' entries.",
                hint="Use a shared cache (django-redis) in production.",
                obj=pipeline, id="datapipe_django.W003",
            ))
    return messages
