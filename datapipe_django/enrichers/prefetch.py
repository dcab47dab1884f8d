"""`PrefetchEnricher`: a model relation of the page, loaded prefetch-style on any database alias.

Built on Django's ``prefetch_related_objects`` and ``Prefetch``: one query per relation level
per page (per database alias the page's rows came from), whatever the page size. The query
runs on stand-in copies of the rows, and the loaded relation is attached to the real rows only
on the calling thread (two-phase: ``load`` then ``apply``), so an enrichment abandoned at the
deadline never changes the page after the pipeline returned.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from django.core import checks
from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.db import InterfaceError, OperationalError, connections, router
from django.db.models import Model, Prefetch, QuerySet, prefetch_related_objects
from django.db.models.base import ModelState
from django.db.models.fields.reverse_related import ForeignObjectRel, ManyToManyRel

from datapipe_django.conf import datapipe_settings
from datapipe_django.enrichers.base import (
    BaseEnricher,
    EnrichContext,
    caller_in_transaction,
    parent_path,
)
from datapipe_django.errors import SourceUnavailable
from datapipe_django.pinning import is_pinned
from datapipe_django.replicas import replica_status
from datapipe_django.specs.paths import head
from datapipe_django.stores import mirrors, use_store

__all__ = ["PrefetchEnricher", "cache_name_of", "relation_of"]

_SEGMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TO_ATTR = "_datapipe_prefetched"


@dataclass(frozen=True)
class Relation:
    """One hop of a relation path, as Django's prefetching sees it."""

    model: type[Model]
    name: str  # the attribute / prefetch lookup (accessor name for reverse relations)
    field: Any
    related_model: type[Model]
    single: bool  # forward FK, one-to-one (either side)
    forward: bool

    @cached_property
    def cache_name(self) -> str:
        """Key of the loaded relation in ``_state.fields_cache`` (to-one) or
        ``_prefetched_objects_cache`` (to-many)."""
        return cache_name_of(self.field)

    def is_loaded(self, obj: Any) -> bool:
        if self.single:
            return self.cache_name in obj._state.fields_cache
        return self.cache_name in obj.__dict__.get("_prefetched_objects_cache", {})

    def loaded(self, obj: Any) -> list[Any]:
        """The related objects already loaded on ``obj`` (never a query)."""
        if self.single:
            value = obj._state.fields_cache.get(self.cache_name)
            return [] if value is None else [value]
        cached = obj.__dict__.get("_prefetched_objects_cache", {}).get(self.cache_name)
        return list(cached) if cached is not None else []


def cache_name_of(field: Any) -> str:
    """Where Django keeps relation ``field`` once loaded on an instance: the key in
    ``_state.fields_cache`` of a to-one relation, in ``_prefetched_objects_cache`` of a
    to-many one (each relation kind has its own rule)."""
    if field.many_to_one or field.one_to_one:
        return str(getattr(field, "cache_name", field.name))
    if isinstance(field, ManyToManyRel):
        return str(field.field.related_query_name())
    if isinstance(field, ForeignObjectRel):
        return str(field.get_accessor_name())
    return str(field.name)


def relation_of(model: type[Model], name: str) -> Relation:
    """The relation ``name`` of ``model`` (a field name, or the accessor of a reverse one).

    Raises ``LookupError`` naming the relations there are.
    """
    relations: dict[str, Any] = {}
    for f in model._meta.get_fields():
        if not f.is_relation or f.related_model is None:
            continue  # GenericForeignKey has no single related model to prefetch from
        if isinstance(f, ForeignObjectRel):
            accessor = f.get_accessor_name()
            if f.hidden or accessor is None:
                continue  # related_name="+": no accessor to expand
            relations[accessor] = f
        else:
            relations[f.name] = f
    if name not in relations:
        known = ", ".join(sorted(relations)) or "none"
        raise LookupError(f"{name!r} is not a relation of {model._meta.label} "
                          f"(relations: {known})")
    f = relations[name]
    return Relation(model=model, name=name, field=f, related_model=f.related_model,
                    single=bool(f.many_to_one or f.one_to_one),
                    forward=not isinstance(f, ForeignObjectRel))


#: What makes a read fall over to a mirror: the store is down or refused at once.
UNAVAILABLE = (OperationalError, InterfaceError, SourceUnavailable)


def _may_read(alias: str, context: EnrichContext) -> bool:
    """Whether a mirror may stand in for a row's database now: a replica only while healthy
    (within ``REPLICA_MAX_LAG``) and the caller is not pinned to the primary."""
    if alias not in connections.settings:
        return False
    if alias in datapipe_settings.REPLICAS:
        return not is_pinned() and replica_status(alias, timeout=context.remaining).healthy
    return True


def _relation_path(relation: Any) -> str:
    """``relation`` with dots (``a__b`` is ``a.b``), or ImproperlyConfigured."""
    path = relation.replace("__", ".") if isinstance(relation, str) else ""
    if not path or not all(_SEGMENT.match(s) for s in path.split(".")):
        raise ImproperlyConfigured(
            f"PrefetchEnricher: {relation!r} is not a relation path. Give a relation name "
            f"of the pipeline's model, nested with dots: 'user', 'fund_account.contact'."
        )
    return str(path)


def _check_options(path: str, limit: Any, queryset: Any) -> None:
    if limit is not None and limit is not False and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ImproperlyConfigured(
            f"PrefetchEnricher({path!r}): `limit` must be a positive whole number, None "
            f"(DATAPIPE['EXPAND_LIMIT']) or False (no cap).")
    if queryset is not None and not isinstance(queryset, QuerySet):
        raise ImproperlyConfigured(f"PrefetchEnricher({path!r}): `queryset` must be a "
                                   f"QuerySet of the related model.")


def _refusal(enricher: PrefetchEnricher, model: type[Model],
             segments: Sequence[str]) -> str | None:
    """Why the relation path ``segments`` of ``model`` cannot be joined with
    ``select_related()`` (None: it can)."""
    for segment in segments:
        try:
            rel = enricher._relation(model, segment)
        except ImproperlyConfigured:
            return f"{segment!r} is not a relation of {model._meta.label}"
        if not (rel.single and rel.forward):
            return (f"{segment!r} is not a foreign key or one-to-one field followed "
                    f"forward, which select_related() can join")
        if not rel.field.null and not rel.field.db_constraint:
            # select_related() joins a NOT NULL key with an INNER JOIN: a row whose
            # related row is missing (nothing enforces it) would vanish from the page.
            return (f"{segment!r} is NOT NULL without a database constraint: the inner "
                    f"join would drop rows whose {rel.related_model._meta.label} is missing")
        model = rel.related_model
    return None


def _capped(queryset: QuerySet[Any]) -> bool:
    """Whether ``queryset`` is a to-many relation's capped one: ``[:cap]``, nothing more."""
    query = queryset.query
    return query.low_mark == 0 and query.high_mark is not None and query.high_mark > 0


class _Limited:
    """Mixed into a queryset class: when its rows are fetched, the query gets the LIMIT its
    ``query._datapipe_limit`` says (the query's attributes follow its clones: Django's
    prefetch filters and annotates the queryset it is given before fetching it). A slice
    would not do: Django prefetches a sliced queryset with a window function, per parent."""

    query: Any
    _result_cache: Any

    def _fetch_all(self) -> None:
        limit = getattr(self.query, "_datapipe_limit", None)
        if limit is not None and self._result_cache is None and not self.query.is_sliced:
            self.query.set_limits(high=limit)
        super()._fetch_all()  # type: ignore[misc]


_limited_classes: dict[type, type] = {}


def _limited_class(cls: type) -> type:
    found = _limited_classes.get(cls)
    if found is None:
        found = _limited_classes.setdefault(cls, type(f"Limited{cls.__name__}", (_Limited, cls),
                                                      {}))
    return found


def _clone(obj: Model) -> Model:
    """A stand-in for ``obj``: same class, column values and alias, empty relation caches."""
    cls = type(obj)
    data = dict(obj.__dict__)  # one atomic copy: the caller may be attaching other relations
    clone = cls.__new__(cls)
    attnames = {f.attname for f in cls._meta.concrete_fields}
    clone.__dict__.update({k: v for k, v in data.items() if k in attnames})
    state = ModelState()
    state.db = data["_state"].db
    state.adding = False
    clone._state = state
    return clone


class PrefetchEnricher(BaseEnricher):
    """Expands the model relation ``relation`` of the page's rows: ``"user"`` (forward FK),
    ``"detail"`` (one-to-one, either side), ``"comments"`` (reverse FK), ``"tags"`` (M2M) or a
    nested path ``"fund_account.contact"`` (the ``__`` form is accepted too). The ``expand``
    path is the relation path with dots; a nested path needs an enricher for its parent
    (``PrefetchEnricher("fund_account")``), which runs first.

    * ``using``: the database alias to read the related rows from. Default: the alias each row
      came from (``obj._state.db``; rows of one page may come from several, one query each),
      or the router's choice for rows that came from none.
    * ``limit``: at most this many related rows per parent row for a to-many relation
      (default ``DATAPIPE["EXPAND_LIMIT"]``), in ``queryset``'s order (else the related model's
      ``Meta.ordering``, else pk), with a window function (``Prefetch`` of a sliced queryset).
      ``limit=False``: no cap, a plain prefetch query (cheaper to build and run), for a
      relation known to stay small.
    * ``queryset``: the base queryset of the related model (filters, ``select_related``,
      ordering). It is re-pointed at the alias of each group of rows.
    * ``tenant_field``: a field of the related model that must equal the request's tenant
      (for relations that may reach other tenants' rows, such as reverse or M2M ones).
    * ``join``: for a path of forward to-one relations (foreign keys, one-to-one fields),
      read the relation in a query that runs anyway, as hand-written ``select_related()``
      does: when the request expands it, an ``ORMFetcher`` adds it to its query's
      ``select_related()``, so the rows arrive with it loaded and this enricher has nothing
      left to do (rows from other sources, or from a cache, are still enriched here); below a
      ``PrefetchEnricher`` of a to-many relation (``comments.author``), that enricher's query
      selects it (see :meth:`join_below`). One query fewer per relation; but the join runs
      inside that query, so a failure there is its failure, not this enricher's. Default
      (None): join wherever the relation can be joined (:meth:`join_refusal` says where it
      cannot) and neither ``using``, ``queryset`` nor ``tenant_field`` is given, else
      prefetch. ``join=True`` insists (system check ``E014`` where it cannot be joined, an
      error with ``using``, ``queryset`` or ``tenant_field``: a join reads the related row on
      the row's alias, unfiltered); ``join=False`` always prefetches, in a query of its own.
    * ``auth_types``, ``required``, ``always``: see :class:`BaseEnricher`.
    """

    def __init__(
        self,
        relation: str,
        *,
        auth_types: Iterable[str] | None = None,
        required: bool = False,
        always: bool = False,
        using: str | None = None,
        limit: int | bool | None = None,
        queryset: QuerySet[Any] | None = None,
        tenant_field: str | None = None,
        join: bool | None = None,
    ) -> None:
        path = _relation_path(relation)
        super().__init__(path, auth_types=auth_types, required=required, always=always)
        _check_options(path, limit, queryset)
        self.relation = path
        self.segments = tuple(path.split("."))
        self.lookup = "__".join(self.segments)
        self.using = using
        self.limit = limit
        self.queryset = queryset
        self.tenant_field = tenant_field
        narrowed = using is not None or queryset is not None or tenant_field is not None
        if join is True and narrowed:
            raise ImproperlyConfigured(
                f"PrefetchEnricher({path!r}): `join=True` reads the related rows in the fetch "
                f"query, on the row's own alias and unfiltered; it cannot honour `using`, "
                f"`queryset` or `tenant_field`. Drop one or the other."
            )
        # None: where it can and the request does not narrow the fields (BaseEnricher.join).
        self.join = join if join is not None or not narrowed else False
        self._relations: dict[tuple[type[Model], str], Relation] = {}

    # -- declaration -------------------------------------------------------------------------
    def _relation(self, model: type[Model], name: str) -> Relation:
        key = (model, name)
        if key not in self._relations:
            try:
                self._relations[key] = relation_of(model, name)
            except LookupError as exc:
                raise ImproperlyConfigured(f"PrefetchEnricher({self.relation!r}): {exc}.") \
                    from None
        return self._relations[key]

    def check(self, pipeline: Any) -> list[checks.CheckMessage]:
        owner = f"Pipeline {pipeline.name!r}: PrefetchEnricher({self.relation!r})"
        messages: list[checks.CheckMessage] = []
        model = pipeline.model
        for segment in self.segments:
            try:
                rel = relation_of(model, segment)
            except LookupError as exc:
                messages.append(checks.Error(
                    f"{owner}: {exc}.",
                    hint="Name a relation as you would in prefetch_related(), with dots.",
                    obj=pipeline, id="datapipe_django.E004",
                ))
                return messages
            model = rel.related_model
        if self.using is not None and self.using not in connections.settings:
            messages.append(checks.Error(
                f"{owner}: database alias {self.using!r} is not in settings.DATABASES.",
                hint="Add the alias to DATABASES or fix the enricher's `using`.",
                obj=pipeline, id="datapipe_django.E005",
            ))
        refusal = self.join_refusal(pipeline.model) if self.join is True else None
        if refusal is not None:
            messages.append(checks.Error(
                f"{owner}: `join=True` cannot be honoured: {refusal}.",
                hint="Drop join=True: the relation is then prefetched in one query.",
                obj=pipeline, id="datapipe_django.E014",
            ))
        if self.tenant_field is not None:
            try:
                model._meta.get_field(head(self.tenant_field))
            except FieldDoesNotExist:
                messages.append(checks.Error(
                    f"{owner}: `tenant_field` {self.tenant_field!r} is not a field of "
                    f"{model._meta.label}.", hint="Name the field that holds the tenant.",
                    obj=pipeline, id="datapipe_django.E006",
                ))
        return messages

    def needs(self, model: type[Model]) -> frozenset[str] | None:
        """The fields of ``model``'s rows the first hop is followed from: a forward key's own
        field, the target fields of a reverse relation (the pk, unless ``to_field``), the pk
        for a many-to-many. Only these are loaded when the request has sparse ``fields``."""
        try:
            rel = self._relation(model, self.segments[0])
        except ImproperlyConfigured:
            return None
        if rel.forward and rel.single:
            return frozenset({rel.field.name})
        if isinstance(rel.field, ForeignObjectRel) and not isinstance(rel.field, ManyToManyRel):
            return frozenset(f.name for f in rel.field.field.foreign_related_fields)
        return frozenset({model._meta.pk.name})  # type: ignore[union-attr]

    def join_path(self, model: type[Model]) -> str | None:
        """The ``select_related()`` path that loads this relation in the fetch query of
        ``model``'s rows, or None (see :meth:`join_refusal`)."""
        if self.join is False or self.join_refusal(model) is not None:
            return None
        return self.lookup

    def join_refusal(self, model: type[Model]) -> str | None:
        """Why this relation cannot be joined into the fetch query of ``model``'s rows."""
        if type(self).get_queryset is not PrefetchEnricher.get_queryset:
            return "the enricher overrides get_queryset(), which a join cannot apply"
        return _refusal(self, model, self.segments)

    # -- the rows to load for ----------------------------------------------------------------
    def holders(self, items: list[Any]) -> list[Any]:
        """The objects the last relation hangs from (the items, or what the parent path
        already loaded on them), each once, that do not have it loaded yet."""
        level: list[Any] = items
        for segment in self.segments[:-1]:
            level = self._below(level, segment)
        return self._unloaded(level, self.segments[-1])

    def _below(self, objects: list[Any], segment: str) -> list[Any]:
        """What ``objects`` have loaded of relation ``segment`` (never a query)."""
        below: list[Any] = []
        kind: type | None = None
        rel: Relation | None = None
        for obj in objects:
            if rel is None or type(obj) is not kind:
                kind, rel = type(obj), self._relation(type(obj), segment)
            if rel.single:
                value = obj._state.fields_cache.get(rel.cache_name)
                if value is not None:
                    below.append(value)
                continue
            cached = obj.__dict__.get("_prefetched_objects_cache", {}).get(rel.cache_name)
            if cached is not None:
                rows = getattr(cached, "_result_cache", None)  # a prefetched queryset's rows
                below.extend(rows if rows is not None else cached)
        return below

    def _unloaded(self, objects: list[Any], segment: str) -> list[Any]:
        """The model instances among ``objects``, each once, without ``segment`` loaded."""
        result = []
        seen: set[int] = set()
        kind: type | None = None
        name, single = "", True
        for obj in objects:
            if type(obj) is not kind:
                if not isinstance(obj, Model):
                    continue
                kind = type(obj)
                rel = self._relation(kind, segment)
                name, single = rel.cache_name, rel.single
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if single:
                if name not in obj._state.fields_cache:
                    result.append(obj)
            elif name not in obj.__dict__.get("_prefetched_objects_cache", ()):
                result.append(obj)
        return result

    def alias_for(self, obj: Model, rel: Relation) -> str:
        """Where the related rows of ``obj`` are read from."""
        if self.using is not None:
            return self.using
        if obj._state.db is not None:
            return str(obj._state.db)
        return str(router.db_for_read(rel.related_model, instance=obj))

    #: Its queries carry what is left of the deadline as their statement timeout, and wait
    #: for a connection no longer (``stores.use_store``).
    honours_deadline = True

    def runs_inline(self, items: list[Any], context: EnrichContext) -> bool:
        """On the calling thread when there is nothing to read (every row has the relation
        loaded: the fetch joined it, or the parent's query selected it), or when the caller
        is inside a transaction on an alias it reads (only its connection sees the
        transaction's writes)."""
        holders = self.holders(items)
        if not holders or not caller_in_transaction():
            return not holders
        aliases = {self.alias_for(h, self._relation(type(h), self.segments[-1]))
                   for h in holders}
        return caller_in_transaction(aliases)

    def join_below(self, child: BaseEnricher) -> bool:
        """Whether this enricher's query selects ``child``'s relation too (``comments`` with
        ``comments.author``): ``child`` is a ``PrefetchEnricher`` of the path right below
        this one that may join (``join``, and its own ``get_queryset``). Where that relation
        cannot be joined after all (:func:`_refusal`), or this enricher's queryset defers
        fields, ``child`` prefetches it itself. (Rows that came with this relation joined
        into the fetch have the child's joined too: :meth:`join_path` covers the path.)"""
        return (isinstance(child, PrefetchEnricher) and child.join is not False
                and parent_path(child.relation) == self.relation
                and type(child).get_queryset is PrefetchEnricher.get_queryset)

    # -- two phases --------------------------------------------------------------------------
    def get_queryset(self, rel: Relation, alias: str, context: EnrichContext) -> QuerySet[Any]:
        """The queryset of related rows for one alias. Override to customise per request."""
        if self.queryset is not None:
            qs = self.queryset.all()
        elif rel.single and rel.forward:
            qs = rel.related_model._base_manager.all()  # as Django does for a forward FK
        else:
            qs = rel.related_model._default_manager.all()
        qs = qs.using(alias)
        if self.tenant_field is not None:
            qs = qs.filter(**{self.tenant_field: context.tenant})
        if not rel.single:
            if not qs.ordered:
                qs = qs.order_by(rel.related_model._meta.pk.name)  # type: ignore[union-attr]
            if self.limit is not False:
                limit = self.limit if self.limit is not None else datapipe_settings.EXPAND_LIMIT
                qs = qs[: int(limit)]
        return qs

    def load(self, items: list[Any], context: EnrichContext) -> list[tuple[Any, Any, Any]]:
        """Query the relation for the rows that need it, on stand-ins; touches no item."""
        groups: dict[tuple[str, type[Model]], list[Any]] = defaultdict(list)
        for holder in self.holders(items):
            rel = self._relation(type(holder), self.segments[-1])
            groups[(self.alias_for(holder, rel), type(holder))].append(holder)
        loaded: list[tuple[Any, Any, Any]] = []
        for (alias, model), holders in groups.items():
            rel = self._relation(model, self.segments[-1])
            clones = [_clone(h) for h in holders]
            self._prefetch(clones, rel, alias, context)
            for holder, clone in zip(holders, clones, strict=True):
                loaded.append((holder, dict(clone._state.fields_cache),
                               dict(clone.__dict__.get("_prefetched_objects_cache", {}))))
        return loaded

    def _prefetch(self, clones: list[Model], rel: Relation, alias: str,
                  context: EnrichContext) -> None:
        """Load ``rel`` on ``clones`` from ``alias`` or, while it is down, from a database
        that mirrors it (its replicas, or a replica's primary; see ``stores.mirrors``)."""
        candidates = [alias]
        if self.using is None:
            candidates += mirrors(alias)
        failure: BaseException = SourceUnavailable(alias, "no database holds these rows")
        for candidate in candidates:
            if candidate != alias and not _may_read(candidate, context):
                continue
            try:
                self._prefetch_on(clones, rel, candidate, context)
                return
            except UNAVAILABLE as exc:  # down, or refused at once while known to be down
                failure = exc
        raise failure

    def _prefetch_on(self, clones: list[Model], rel: Relation, alias: str,
                     context: EnrichContext) -> None:
        queryset = self._joined(self.get_queryset(rel, alias, context), rel, context)
        with use_store(alias, context.remaining):
            if not rel.single and _capped(queryset) and self._prefetch_plainly(
                    clones, rel, queryset):
                return
            self._prefetch_with(clones, rel, queryset)

    def _prefetch_plainly(self, clones: list[Model], rel: Relation,
                          queryset: QuerySet[Any]) -> bool:
        """A capped to-many relation read as hand-written ``prefetch_related`` reads it (one
        plain query, no window function to compile and run), with a LIMIT of the cap times
        the parents, plus one: when fewer rows come back, none was cut off, and each parent
        keeps the first ``cap`` of its rows, as the window function would have given it.
        Whether that was so (else the clones are as they were, for the windowed query)."""
        cap = int(queryset.query.high_mark or 0)
        plain = queryset.all()
        plain.query.clear_limits()
        kind = type(plain)
        plain.__class__ = _limited_class(kind)
        plain.query._datapipe_limit = cap * len(clones) + 1  # type: ignore[attr-defined]
        prefetch_related_objects(clones, Prefetch(rel.name, queryset=plain))
        name = rel.cache_name
        loaded = [clone.__dict__["_prefetched_objects_cache"][name] for clone in clones]
        for qs in loaded:  # what the rows' related managers hold: plain querysets again
            qs.__class__ = kind  # (not `qs.query`: reading it would run a deferred filter)
        if sum(len(qs._result_cache) for qs in loaded) < cap * len(clones) + 1:
            for qs in loaded:
                del qs._result_cache[cap:]
            return True
        for clone in clones:  # some parent has more than the cap: the windowed query
            del clone.__dict__["_prefetched_objects_cache"][name]
        return False

    def _prefetch_with(self, clones: list[Model], rel: Relation,
                       queryset: QuerySet[Any]) -> None:
        # A sliced (capped) to-many queryset Django prefetches into `to_attr` only; the
        # related manager's cache is then filled as prefetch_related would fill it.
        to_attr = _TO_ATTR if not rel.single and queryset.query.is_sliced else None
        prefetch_related_objects(clones, Prefetch(rel.name, queryset=queryset,
                                                  to_attr=to_attr))
        if to_attr is not None:
            for clone in clones:
                rows = clone.__dict__.pop(to_attr)
                manager_qs = getattr(clone, rel.name).get_queryset()
                manager_qs._result_cache = rows
                manager_qs._prefetch_done = True
                clone.__dict__.setdefault("_prefetched_objects_cache", {})[rel.cache_name] = \
                    manager_qs

    def _joined(self, queryset: QuerySet[Any], rel: Relation,
                context: EnrichContext) -> QuerySet[Any]:
        """``queryset`` with the relations of ``context.joins`` (the enrichers below this one
        that the request runs) selected, those that can be."""
        if not context.joins or queryset.query.deferred_loading != (frozenset(), True):
            return queryset
        lookups = []
        for name in context.joins:
            child = name[len(self.relation) + 1:].split(".")
            if _refusal(self, rel.related_model, child) is None:
                lookups.append("__".join(child))
        return queryset.select_related(*lookups) if lookups else queryset

    def apply(self, items: list[Any], loaded: list[tuple[Any, Any, Any]],
              context: EnrichContext) -> None:
        """Attach what :meth:`load` read to the real rows (on the calling thread)."""
        for holder, fields_cache, prefetched in loaded:
            holder._state.fields_cache.update(fields_cache)
            if prefetched:
                holder.__dict__.setdefault("_prefetched_objects_cache", {}).update(prefetched)

    def __repr__(self) -> str:
        return f"<PrefetchEnricher {self.relation!r}>"
