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
    ``vary(request)``. See :mod:`datapipe_django.cache_keys`.

Freshness
    Entries carry the generation tokens of their model (and tenant) read before the source was
    queried, and are served only while those are current (:mod:`datapipe_django.invalidation`):
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
import datetime as dt
import decimal
import functools
import inspect
import json
import logging
import math
import operator
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import django
from django.core import checks
from django.core.cache import caches
from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured, ValidationError
from django.db import connections, models, transaction
from django.db.models.base import ModelState
from django.db.models.fields.related_descriptors import ForeignKeyDeferredAttribute
from django.db.models.query_utils import DeferredAttribute
from django.db.models.signals import post_init, pre_init

from datapipe_django.cache_keys import CACHE_FORMAT, Uncacheable, canonical, class_path, digest
from datapipe_django.cache_keys import slug as key_slug
from datapipe_django.conf import datapipe_settings
from datapipe_django.fetchers.base import BaseFetcher, FetchRequest, FetchResult, Verdict, hook
from datapipe_django.invalidation import (
    LOADED_TENANTS,
    CacheGuard,
    generation_keys,
    get_guard,
    invalidate,
    new_token,
    pending_write,
    remember_tenants,
    tenant_attname,
    tenant_attnames,
    watch,
    write_pending,
)

if TYPE_CHECKING:
    from datapipe_django.pipeline import Pipeline

__all__ = ["CacheStats", "CachedFetcher", "invalidate"]

logger = logging.getLogger("datapipe_django.cache")

_UNSET: Any = object()

orjson: Any
try:  # the `fast` extra: entries read twice as fast (they are written by the standard library)
    import orjson
except ImportError:  # pragma: no cover - orjson is in the dev extra
    orjson = None


class CacheStats:
    """Counters of one :class:`CachedFetcher` (thread-safe): ``hits``, ``stale`` (stale copies
    served), ``misses`` (computed and stored), ``waits`` (hits after waiting for another
    caller), ``bypasses`` (answered without the cache) and ``errors`` (cache errors)."""

    NAMES = ("hits", "stale", "misses", "waits", "bypasses", "errors")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(self.NAMES, 0)

    def incr(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def __getitem__(self, name: str) -> int:
        return self._counts[name]

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        with self._lock:
            self._counts = dict.fromkeys(self.NAMES, 0)

    def __repr__(self) -> str:
        return f"CacheStats({self.as_dict()})"


class _CacheDown(Exception):
    """A cache call failed with a cache error (already counted and logged)."""


# -- rows ⇄ JSON -------------------------------------------------------------------------------

_NATIVE = frozenset({
    models.AutoField, models.BigAutoField, models.SmallAutoField, models.IntegerField,
    models.BigIntegerField, models.SmallIntegerField, models.PositiveIntegerField,
    models.PositiveBigIntegerField, models.PositiveSmallIntegerField, models.CharField,
    models.TextField, models.SlugField, models.EmailField, models.URLField, models.BooleanField,
    models.FloatField,
})


def _iso(obj: Any, value: Any) -> Any:
    return value.isoformat()


def _text(obj: Any, value: Any) -> Any:
    return str(value)


_BY_TYPE: dict[type, tuple[Callable[[Any, Any], Any], Callable[[Any], Any]]] = {
    models.DateTimeField: (_iso, dt.datetime.fromisoformat),
    models.DateField: (_iso, dt.date.fromisoformat),
    models.TimeField: (_iso, dt.time.fromisoformat),
    models.DecimalField: (_text, decimal.Decimal),
    models.UUIDField: (_text, uuid.UUID),
}

#: (attname, encoder or None for "as is", decoder or None for "as is")
_Codec = tuple[str, Callable[[Any, Any], Any] | None, Callable[[Any], Any] | None]


def _value_codec(field: Any) -> tuple[Callable[[Any, Any], Any] | None,
                                      Callable[[Any], Any] | None] | None:
    """A codec working on the value alone, for Django's own field classes (None otherwise)."""
    kind = type(field)
    if kind in _NATIVE:
        return None, None
    if kind in _BY_TYPE:
        return _BY_TYPE[kind]
    if kind is models.JSONField and field.encoder is None and field.decoder is None:
        return None, None
    if field.is_relation and (field.many_to_one or field.one_to_one):
        return _value_codec(field.target_field)
    return None


def _field_codec(field: Any) -> _Codec:
    fast = _value_codec(field)
    if fast is not None:
        return (field.attname, *fast)
    # Any other field: the contract Django's serializers rely on.
    return (field.attname, lambda obj, value: field.value_to_string(obj), field.to_python)


@lru_cache(maxsize=256)
def _codecs(model: type[models.Model]) -> tuple[_Codec, ...]:
    return tuple(_field_codec(f) for f in model._meta.concrete_fields)


def encode_rows(model: type[models.Model], rows: Sequence[Any], db: str | None
                ) -> tuple[list[list[str]], list[list[Any]]]:
    """Rows as (field sets, records): a record is ``[field set index, values]`` (plus the
    row's alias when it is not ``db``). Deferred fields are left out, as loaded."""
    codecs = _codecs(model)
    fieldsets: dict[tuple[str, ...], int] = {}
    records: list[list[Any]] = []
    for obj in rows:
        values = obj.__dict__
        present = tuple(c[0] for c in codecs if c[0] in values)
        index = fieldsets.setdefault(present, len(fieldsets))
        encoded = []
        for attname, encode, _ in codecs:
            if attname not in values:
                continue
            value = values[attname]
            encoded.append(value if value is None or encode is None else encode(obj, value))
        record: list[Any] = [index, encoded]
        if obj._state.db != db:
            record.append(obj._state.db)
        records.append(record)
    return [list(fs) for fs in fieldsets], records


def decode_rows(model: type[models.Model], fieldsets: list[list[str]],
                records: list[list[Any]], db: str | None) -> list[models.Model]:
    """Model instances from :func:`encode_rows` output: what ``Model.from_db(db, fields,
    values)`` returns (built without ``__init__`` when :func:`_fast_build` holds, see
    :func:`_record_decoder`)."""
    if _fast_build(model):
        return _decode_generated(model, fieldsets, records, db, checked=False)
    by_attname = {c[0]: c[2] for c in _codecs(model)}
    decoders = [[by_attname[a] for a in fs] for fs in fieldsets]
    build = model.from_db
    rows = []
    for record in records:
        index, values = record[0], record[1]
        decs = decoders[index]
        python = [v if v is None or d is None else d(v) for v, d in zip(values, decs, strict=True)]
        rows.append(build(record[2] if len(record) > 2 else db, fieldsets[index], python))
    return rows


def _decode_generated(model: type[models.Model], fieldsets: list[list[str]],
                      records: list[list[Any]], db: str | None, checked: bool
                      ) -> list[models.Model]:
    """:func:`decode_rows` when :func:`_fast_build` holds: through :func:`_record_decoder`.
    ``checked``: the records were parsed by orjson, which reads an integer past 64 bits as a
    float; such a float in an integer field raises :class:`_WideInteger` (see
    :func:`_orjson_reads`)."""
    tracked = tenant_attnames(model) if post_init.has_listeners(model) else ()
    rebuild = [_record_decoder(model, tuple(fs), tracked, checked) for fs in fieldsets]
    return [rebuild[record[0]](record, db) for record in records]


class _WideInteger(ValueError):
    """orjson read an integer field's value as a float: an integer past 64 bits."""


_INTEGERS = frozenset({
    models.AutoField, models.BigAutoField, models.SmallAutoField, models.IntegerField,
    models.BigIntegerField, models.SmallIntegerField, models.PositiveIntegerField,
    models.PositiveBigIntegerField, models.PositiveSmallIntegerField,
})
_TEXTS = frozenset({models.CharField, models.TextField, models.SlugField, models.EmailField,
                    models.URLField, models.BooleanField})


def _stored_kind(field: Any) -> str:
    """How a field's value is in an entry: ``text`` (a string or a boolean, whoever reads it),
    ``int`` (a JSON integer) or ``other`` (floats, JSON documents...)."""
    if field.is_relation and (field.many_to_one or field.one_to_one):
        return _stored_kind(field.target_field)
    kind = type(field)
    if kind in _INTEGERS:
        return "int"
    codec = _value_codec(field)
    if kind in _TEXTS or codec is None or codec[1] is not None:
        return "text"  # str/bool, or written as text (isoformat, str, value_to_string)
    return "other"


@lru_cache(maxsize=256)
def _orjson_reads(model: type[models.Model]) -> bool:
    """Whether orjson may read ``model``'s entries: every field holds text or an integer (an
    integer past 64 bits, which orjson reads as a float, is caught by the checked decoder), and
    the rows are rebuilt by the generated decoders. Floats (an int in a FloatField) and JSON
    documents are left to the standard library, which wrote them."""
    return orjson is not None and all(_stored_kind(f) != "other"
                                      for f in model._meta.concrete_fields)


@lru_cache(maxsize=1024)
def _record_decoder(model: type[models.Model], names: tuple[str, ...],
                    tracked: tuple[str, ...], checked: bool = False
                    ) -> Callable[[list[Any], str | None], Any]:
    """``(record, db) -> instance`` for the records of one field set, when :func:`_fast_build`
    holds: the instance ``Model.from_db`` builds, made without running ``__init__`` (as
    unpickling does, several times faster), from one function generated for the field set
    (its values unpacked into locals, each decoded where its field needs it, the ``__dict__``
    written as one literal). The generated code names only the model's own
    attnames (a field set naming anything else raises ``KeyError``: an unreadable entry)."""
    decoders = {c[0]: c[2] for c in _codecs(model)}
    kinds = {f.attname: _stored_kind(f) for f in model._meta.concrete_fields}
    env: dict[str, Any] = {"_new": model.__new__, "_model": model, "_State": ModelState,
                           "_TENANTS": LOADED_TENANTS, "_Wide": _WideInteger}
    local = {name: f"a{i}" for i, name in enumerate(names)}  # the last of a repeated name wins
    lines = [f"    [{''.join(f'a{i}, ' for i in range(len(names)))}] = record[1]"]
    for i, name in enumerate(names):
        decode = decoders[name]  # KeyError: not a concrete field of the model
        if decode is not None:
            env[f"d{i}"] = decode
            lines.append(f"    if a{i} is not None: a{i} = d{i}(a{i})")
        elif checked and kinds[name] == "int":
            lines.append(f"    if a{i}.__class__ is float: raise _Wide({name!r})")
    items = "".join(f"{name!r}: {var}, " for name, var in local.items())
    if tracked:  # what remember_tenants records
        seen = "".join(f"{a!r}: {local[a]}, " for a in tracked if a in local)
        items += f"_TENANTS: {{{seen}}}, "
    source = "\n".join([
        "def decode(record, db):",
        *lines,
        "    state = _State()",
        "    state.adding = False",
        "    state.db = record[2] if len(record) > 2 else db",
        "    obj = _new(_model)",
        f"    obj.__dict__ = {{'_state': state, {items}}}",
        "    return obj",
    ])
    exec(compile(source, f"<datapipe cached {model._meta.label} row>", "exec"), env)
    return env["decode"]  # type: ignore[no-any-return]


def read_entry(model: type[models.Model], raw: str | bytes,
               accept: Callable[[dict[str, Any]], bool]
               ) -> tuple[dict[str, Any], list[models.Model]] | None:
    """An entry's JSON and its rows, or None when ``accept(entry)`` says it is not the one
    wanted (its rows are then not rebuilt). orjson reads it when :func:`_orjson_reads` allows;
    what orjson refuses or may misread (NaN, an integer past 64 bits) the standard library,
    which wrote the entry, reads again."""
    fast = _orjson_reads(model) and _fast_build(model)
    if fast:
        try:
            data = orjson.loads(raw)
            if not accept(data):
                return None
            return data, _decode_generated(model, data["fs"], data["r"], data["db"],
                                           checked=True)
        except ValueError:  # orjson.JSONDecodeError, _WideInteger
            pass
    data = json.loads(raw)
    if not accept(data):
        return None
    return data, decode_rows(model, data["fs"], data["r"], data["db"])


_PLAIN_DESCRIPTORS = (DeferredAttribute, ForeignKeyDeferredAttribute)


@lru_cache(maxsize=256)
def _plain_model(model: type[models.Model]) -> bool:
    """Whether ``Model.from_db`` on ``model`` amounts to storing the values in the instance's
    ``__dict__``: Django's own ``__init__`` and ``from_db``, and only Django's plain attribute
    descriptors on the fields (whose ``__set__``, if any, stores the value and nothing else)."""
    if django.VERSION[:2] > (5, 2):
        return False  # from_db and ModelState as known here; a later Django gets from_db()
    if model.__init__ is not models.Model.__init__:
        return False
    if getattr(model.from_db, "__func__", None) is not getattr(models.Model.from_db, "__func__",
                                                               True):
        return False
    return all(type(inspect.getattr_static(model, f.attname, None)) in _PLAIN_DESCRIPTORS
               for f in model._meta.concrete_fields)


def _init_unobserved(model: type[models.Model]) -> bool:
    """No ``pre_init``/``post_init`` receiver for ``model`` but this library's tenant tracker."""
    if pre_init.has_listeners(model):
        return False
    if not post_init.has_listeners(model):
        return True
    try:
        live: Any = post_init._live_receivers(model)
    except Exception:  # an internal API: should it change, take the safe path
        return False
    sync, asynchronous = live if isinstance(live, tuple) else (live, [])
    return not asynchronous and all(r is remember_tenants for r in sync)


def _fast_build(model: type[models.Model]) -> bool:
    """Whether nobody could tell ``Model.from_db`` from storing the values in a new instance
    built without ``__init__`` (a plain model, no ``pre_init``/``post_init`` receiver but this
    library's)."""
    return _plain_model(model) and _init_unobserved(model)


# -- dependencies ------------------------------------------------------------------------------

@lru_cache(maxsize=1024)
def _related_models(model: type[models.Model], path: str) -> frozenset[type[models.Model]]:
    """Models a filter on ``path`` reads besides ``model`` (joins), e.g. ``owner__name`` →
    ``{Owner}``. A path ending at a local foreign key (``owner``) reads no other table."""
    found: set[type[models.Model]] = set()
    meta = model._meta
    parts = path.lstrip("^=@$").split("__")
    for i, part in enumerate(parts):
        try:
            field = meta.pk if part == "pk" else meta.get_field(part)
        except FieldDoesNotExist:
            break
        related: Any = getattr(field, "related_model", None)
        if not getattr(field, "is_relation", False) or not (
                isinstance(related, type) and issubclass(related, models.Model)):
            break
        last = i == len(parts) - 1
        if last and getattr(field, "concrete", False) and not field.many_to_many:
            break  # the local column
        found.add(related._meta.concrete_model or related)
        through = getattr(getattr(field, "remote_field", None), "through", None)
        if field.many_to_many and isinstance(through, type):
            found.add(through)
        meta = related._meta
    return frozenset(found)


def _pipeline_paths(pipeline: Any) -> set[str]:
    paths = {p for p in getattr(pipeline, "search_fields", ()) if p}
    if getattr(pipeline, "tenant_field", None):
        paths.add(pipeline.tenant_field)
    filterset = getattr(pipeline, "filterset_class", None)
    for flt in getattr(filterset, "base_filters", {}).values():
        name = getattr(flt, "field_name", None)
        if isinstance(name, str) and name:
            paths.add(name)
    return paths


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
        for attr in ("name", "can_handle", "fetch"):
            if not hasattr(fetcher, attr):
                raise ImproperlyConfigured(
                    f"CachedFetcher: {fetcher!r} is not a fetcher (it has no `{attr}`). Wrap an "
                    f"ORMFetcher or another object with name, can_handle(request) and "
                    f"fetch(request)."
                )
        for label, value, minimum in (("ttl", ttl, 0), ("lock_timeout", lock_timeout, 0)):
            if value is not None and not (isinstance(value, int | float) and value > minimum):
                raise ImproperlyConfigured(
                    f"CachedFetcher({fetcher.name!r}): `{label}` must be positive seconds, "
                    f"got {value!r}."
                )
        if not isinstance(stale_ttl, int | float) or stale_ttl < 0:
            raise ImproperlyConfigured(f"CachedFetcher({fetcher.name!r}): `stale_ttl` must be "
                                       f"0 or positive seconds, got {stale_ttl!r}.")
        super().__init__(name=name if name is not None else fetcher.name,
                         priority=priority if priority is not None
                         else getattr(fetcher, "priority", None), holds=holds)
        self.fetcher = fetcher
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
        return self.fetcher.using  # type: ignore[no-any-return]

    @property
    def guard(self) -> CacheGuard:
        return get_guard(self.cache_alias)

    def contribute_to_pipeline(self, pipeline: Pipeline) -> None:
        """Called by :class:`~datapipe_django.Pipeline` when it is declared: computes the
        pipeline's shape digest and starts watching its model for writes."""
        inner = getattr(self.fetcher, "contribute_to_pipeline", None)
        if callable(inner):
            inner(pipeline)
        self._pipelines[pipeline.name] = pipeline
        self._shapes.pop(pipeline.name, None)
        model = pipeline.model
        deps = {_concrete(m) for m in self.depends_on}
        for path in _pipeline_paths(pipeline):
            deps |= _related_models(model, path)
        self._deps[pipeline.name] = frozenset(deps)
        watch(model, tenant_field=pipeline.tenant_field, cache=self._cache, depends_on=deps)

    def _ensure_watched(self, request: FetchRequest) -> frozenset[type[models.Model]]:
        deps = self._deps.get(request.pipeline)
        if deps is None:  # used outside a Pipeline declaration (a bare FetcherChain)
            found = {_concrete(m) for m in self.depends_on}
            for path in request.search_fields:
                found |= _related_models(request.model, path)
            deps = self._deps[request.pipeline] = frozenset(found)
            watch(request.model, tenant_field=request.tenant_field, cache=self._cache,
                  depends_on=deps)
        return deps

    # -- the fetcher protocol -------------------------------------------------------------------
    def can_handle(self, request: FetchRequest) -> bool | Verdict:
        return self.fetcher.can_handle(request)  # type: ignore[no-any-return]

    def can_rank(self, request: FetchRequest) -> bool:
        return bool(self.fetcher.can_rank(request))  # served by the inner fetcher, uncached

    def can_facet(self, request: FetchRequest) -> bool:
        return bool(self.fetcher.can_facet(request))

    def runs_inline(self, request: FetchRequest) -> bool:
        return bool(hook(self.fetcher, "runs_inline")(request))

    # What the store holds is the inner fetcher's: the cache holds copies of its pages.
    def get_holds(self) -> Any:
        """Its own ``holds`` when given, else the wrapped fetcher's."""
        if self.holds is not None:
            return super().get_holds()
        return hook(self.fetcher, "get_holds")()

    @property
    def database(self) -> str | None:
        return hook(self.fetcher, "database")  # type: ignore[no-any-return]

    @property
    def mirror_of(self) -> str | None:
        return hook(self.fetcher, "mirror_of")  # type: ignore[no-any-return]

    def declares_scope(self) -> bool:
        return self.holds is not None or bool(hook(self.fetcher, "declares_scope")())

    def count(self, request: FetchRequest) -> int | None:
        """The inner fetcher's count (not cached: a total must be exact now)."""
        return hook(self.fetcher, "count")(request)  # type: ignore[no-any-return]

    @property
    def complete(self) -> bool:
        """The inner fetcher's ``complete`` (it holds every matching row)."""
        return bool(getattr(self.fetcher, "complete", False))

    def fetch(self, request: FetchRequest) -> FetchResult:
        if request.relevance or request.highlight or request.facets:
            # Scores, highlights and counts are not part of a cached row.
            return self._bypass(request, "relevance, highlights and facets are not cached")
        deps = self._ensure_watched(request)
        try:
            plan = self._plan(request, deps)
        except Uncacheable as exc:
            return self._bypass(request, str(exc))
        if pending_write(request.model):
            return self._bypass(request, f"this transaction wrote {request.model._meta.label}")
        guard = self.guard
        if not guard.allow():
            return self._bypass(request, f"cache {self.cache_alias!r} unavailable")
        cache = caches[self.cache_alias]
        try:
            write_pending(self.cache_alias)
            found = cache.get_many([*plan.gen_keys, plan.key])
            tokens = [found.get(k) for k in plan.gen_keys]
            if None in tokens:
                tokens = self._start_generations(cache, plan, tokens)
        except Exception as exc:
            self._failed(guard, exc)
            return self._bypass(request, f"cache error: {type(exc).__name__}", error=True)
        guard.succeeded()
        try:
            return self._serve(request, cache, plan, tokens, found.get(plan.key), guard)
        except _CacheDown as exc:
            return self._bypass(request, f"cache error: {type(exc.__cause__).__name__}",
                                error=True)

    # -- keys -----------------------------------------------------------------------------------
    def cache_key(self, request: FetchRequest) -> str:
        """The key ``request``'s page is stored under (raises ``Uncacheable``)."""
        return self._plan(request, self._ensure_watched(request)).key

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
                joined |= _related_models(request.model, path)
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
        hook = getattr(getattr(pipeline, "metrics", None), "cache", None)
        if callable(hook):
            hook(request.pipeline, self.name, outcome)

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


def _concrete(model: type[models.Model]) -> type[models.Model]:
    return model._meta.concrete_model or model


def _tenant_python(model: type[models.Model], attname: str, tenant: Any) -> Any:
    try:
        return model._meta.get_field(attname).to_python(tenant)  # type: ignore[union-attr]
    except (ValidationError, TypeError, ValueError):
        return tenant


# -- system checks -----------------------------------------------------------------------------

def _cached_fetchers() -> Iterable[tuple[Any, CachedFetcher]]:
    from datapipe_django.registry import all_pipelines

    for pipeline in all_pipelines():
        for fetcher in pipeline.fetchers:
            if isinstance(fetcher, CachedFetcher):
                yield pipeline, fetcher


@checks.register(checks.Tags.caches)
def check_cache_aliases(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E003: a CachedFetcher names a cache alias that is not in settings.CACHES."""
    return [error for pipeline, fetcher in _cached_fetchers()
            if (error := unknown_cache_alias(pipeline, f"CachedFetcher {fetcher.name!r}",
                                             fetcher.cache_alias)) is not None]


def unknown_cache_alias(pipeline: Any, user: str, alias: str) -> checks.Error | None:
    """E003 when ``user`` (what names the cache alias, e.g. ``CachedFetcher 'appdb'``) names
    an ``alias`` that is not in settings.CACHES."""
    from django.conf import settings

    if alias in settings.CACHES:
        return None
    return checks.Error(
        f"Pipeline {pipeline.name!r}: {user} uses cache alias {alias!r}, which is not in "
        f"settings.CACHES.",
        hint="Add it to CACHES, or pass cache='<alias>' / set DATAPIPE['CACHE'].",
        obj=pipeline, id="datapipe_django.E003",
    )


@checks.register(checks.Tags.caches, deploy=True)
def check_shared_cache(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W003 (``check --deploy``): a CachedFetcher on a per-process cache (locmem, dummy)."""
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
