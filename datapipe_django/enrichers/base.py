"""The enricher protocol and :class:`BaseEnricher` (what runs a page's enrichers is
:class:`~datapipe_django.enrichers.composite.CompositeEnricher`).

An enricher is any object with ``name``, ``required``, ``can_enrich(auth_type)`` and
``enrich(items, context)`` (the :class:`Enricher` protocol). It runs when its name is in the
request's ``expand`` (or always, when declared ``always=True``). A dotted name
(``fund_account.contact``) expands below the enricher named by its parent path
(``fund_account``), which then runs first.

:class:`BaseEnricher` declares every hook the library calls, each with a safe default, so one
class tells the whole protocol: ``always``, ``auth_types``, ``join`` and ``join_path(model)``,
``join_below(child)``, ``honours_deadline``, ``paths()``, ``needs(model)``, ``runs_inline(items,
context)``, ``check(pipeline)``, and the two phases ``load(items, context)`` / ``apply(items,
loaded, context)``. An enricher that does not subclass it (duck-typed) keeps working: the
pipeline wraps it with :func:`as_enricher`, which gives it the defaults of the hooks it lacks.

An enricher may be *two-phase*: ``load(items, context) -> loaded`` reads what it needs
without touching the items (it runs on a worker thread) and ``apply(items, loaded, context)``
attaches it (it runs on the calling thread, only when ``load`` finished in time). The built-in
enrichers are two-phase, so an enricher abandoned at the deadline can never change the items
after the pipeline returned. An enricher with only ``enrich`` mutates the items from its
worker (the default ``load`` calls it, the default ``apply`` does nothing); if it is abandoned,
the view still renders it unexpanded (its path is dropped from the result's ``expand``), but it
may keep writing to the instances it was given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from django.core.exceptions import ImproperlyConfigured
from django.db import connections

from datapipe_django._internal.wrapping import Wrapper, adopt_methods
from datapipe_django.timeouts import seconds_left

__all__ = [
    "BaseEnricher",
    "EnrichContext",
    "Enricher",
    "as_enricher",
    "caller_in_transaction",
    "parent_path",
]


@dataclass(frozen=True)
class EnrichContext:
    """What an enricher knows about the request (never an HTTP object).

    ``deadline`` is a ``time.monotonic()`` instant (None: no deadline); ``remaining`` is what
    is left of it. ``workers`` is this enricher's share of the pipeline's ``max_workers`` (a
    :class:`~datapipe_django.enrichers.BatchEnricher` runs that many chunks at once).
    ``memo`` lives for one execution: enrichers may memoise results in it, never across
    requests or tenants. ``tracer`` is the pipeline's: each enricher runs in a span
    ``datapipe.enricher.<name>`` of it (see :mod:`datapipe_django.observability`).
    ``joins`` names the enrichers below this one, run by the same request, whose relations
    its own query loads as well (see :meth:`BaseEnricher.join_below`); empty by default.
    """

    pipeline: str
    expand: frozenset[str]
    auth_type: str | None = None
    tenant: Any = None
    deadline: float | None = None
    workers: int = 1
    memo: dict[Any, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    tracer: Any = None
    joins: tuple[str, ...] = ()

    @property
    def remaining(self) -> float | None:
        """Seconds left before the deadline (never negative), or None without one."""
        return seconds_left(self.deadline)


@runtime_checkable
class Enricher(Protocol):
    """What makes an object an enricher: the required part of :class:`BaseEnricher`.

    Every optional hook (``always``, ``auth_types``, ``join``, ``join_path``, ``join_below``,
    ``honours_deadline``, ``paths``, ``needs``, ``runs_inline``, ``check``,
    ``load``/``apply``) has its default on :class:`BaseEnricher`;
    the pipeline gives them to an enricher that does not subclass it (:func:`as_enricher`).
    """

    name: str
    required: bool

    def can_enrich(self, auth_type: str | None) -> bool: ...

    def enrich(self, items: list[Any], context: EnrichContext) -> None: ...


def caller_in_transaction(aliases: Iterable[str | None] | None = None) -> bool:
    """Whether the calling thread is inside a transaction on one of ``aliases`` (on any
    connection it opened, when None). Only this thread's connection sees such a transaction's
    writes, so work that reads them must run here (like ``ORMFetcher.runs_inline``)."""
    if aliases is None:
        return any(c.in_atomic_block for c in connections.all(initialized_only=True))
    return any(
        alias in connections.settings and connections[alias].in_atomic_block
        for alias in set(aliases) if alias is not None
    )


def parent_path(path: str) -> str | None:
    """``"a.b.c"`` → ``"a.b"``; ``"a"`` → None."""
    head, dot, _ = path.rpartition(".")
    return head if dot else None


class BaseEnricher:
    """Base class for enrichers: every hook the library calls, with its default.

    Required: a ``name`` (the ``expand`` path it answers), and either ``enrich(items,
    context)``, or ``load(items, context)`` (on a worker: read, never touch the items) and
    ``apply(items, loaded, context)`` (on the calling thread).

    ``auth_types``: the caller auth types allowed to expand it (None: every caller).
    ``required``: its failure fails the request (502; 504 at the deadline) instead of being
    reported in the result's ``errors``.
    ``always``: runs without being asked for in ``expand``.
    ``join``: it reads its relation within the fetch's own query (``select_related``, the
    path its ``join_path(model)`` gives; only
    :class:`~datapipe_django.enrichers.PrefetchEnricher` can): ``True`` whenever the request
    runs it; ``None`` where that is free, so not when the request narrows the rows' fields
    (sparse ``fields``: the query then selects no other table's columns); ``False`` never.
    """

    name: str = ""
    required: bool = False
    always: bool = False
    auth_types: frozenset[str] | None = None
    join: bool | None = False
    #: Its reads give up by the deadline on their own (a statement timeout, a bounded wait for
    #: a connection), so it may run on the calling thread, where nothing could abandon it,
    #: when no other enricher could run meanwhile (see :class:`CompositeEnricher`).
    honours_deadline: bool = False

    def __init__(
        self,
        name: str | None = None,
        *,
        auth_types: Iterable[str] | None = None,
        required: bool = False,
        always: bool = False,
    ) -> None:
        if name is not None:
            self.name = name
        if not self.name or not isinstance(self.name, str):
            raise ImproperlyConfigured(
                f"{type(self).__name__}: give the enricher a name (the `expand` path it answers)."
            )
        if isinstance(auth_types, str):
            raise ImproperlyConfigured(
                f"{type(self).__name__}({self.name!r}): `auth_types` must be a collection of "
                f"auth types, e.g. auth_types={{{auth_types!r}}}, not a string."
            )
        self.auth_types = frozenset(auth_types) if auth_types is not None else None
        self.required = required
        self.always = always

    # -- the work (implement enrich, or load and apply) ------------------------------------------
    def enrich(self, items: list[Any], context: EnrichContext) -> None:
        """Enrich ``items`` in place. Default: ``apply(items, load(items, context), context)``."""
        if type(self).load is BaseEnricher.load:
            raise NotImplementedError(
                f"{type(self).__name__} must implement enrich(items, context), or "
                f"load(items, context) and apply(items, loaded, context)."
            )
        self.apply(items, self.load(items, context), context)

    def load(self, items: list[Any], context: EnrichContext) -> Any:
        """Read what the items need, on a worker thread, without touching them; the result is
        given to :meth:`apply`. Default (a one-phase enricher): run ``enrich`` here, return
        None."""
        if type(self).enrich is BaseEnricher.enrich:
            raise NotImplementedError(
                f"{type(self).__name__} must implement enrich(items, context), or "
                f"load(items, context) and apply(items, loaded, context)."
            )
        self.enrich(items, context)
        return None

    def apply(self, items: list[Any], loaded: Any, context: EnrichContext) -> None:
        """Attach what :meth:`load` returned to ``items``, on the calling thread, only when
        ``load`` finished before the deadline. Default: nothing (``enrich`` did the work)."""

    # -- optional hooks --------------------------------------------------------------------------
    def can_enrich(self, auth_type: str | None) -> bool:
        """Whether a caller of ``auth_type`` may have this expansion."""
        return self.auth_types is None or auth_type in self.auth_types

    def paths(self) -> tuple[str, ...]:
        """The ``expand`` paths this enricher provides. Default: its name."""
        return (self.name,)

    def runs_inline(self, items: list[Any], context: EnrichContext) -> bool:
        """Whether to run on the calling thread rather than the pool. Default: when the caller
        is inside a transaction (its writes are visible to its own connection only). Return
        False in an enricher that never reads the database (a service call)."""
        return caller_in_transaction()

    def join_path(self, model: type[Any]) -> str | None:
        """With ``join``: the ``select_related()`` path that loads this enricher's relation in
        the fetch query of ``model``'s rows, or None when it cannot be joined. Default: None."""
        return None

    def join_below(self, child: BaseEnricher) -> bool:
        """Whether this enricher's own query can load ``child``'s relation too (``child``
        expands below it), so that when a request runs both, the one query does (its
        ``context.joins`` then names ``child``) and ``child`` finds its rows loaded.
        Default: False."""
        return False

    def check(self, pipeline: Any) -> list[Any]:
        """System-check messages (``django.core.checks.CheckMessage``) about this enricher's
        declaration in ``pipeline`` (see :mod:`datapipe_django.checks`). Default: none."""
        return []

    def needs(self, model: type[Any]) -> frozenset[str] | None:
        """The field names of ``model`` (the pipeline's model) this enricher reads from the
        rows it enriches, so that a request with sparse ``fields`` still loads them. Default:
        None, "cannot tell", which makes the sources load every field. Override it when you
        know (a key attribute): ``return frozenset({"customer_id"})``."""
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


#: The optional methods an enricher may define; the others take :class:`BaseEnricher`'s.
_METHOD_HOOKS = ("can_enrich", "paths", "runs_inline", "join_path", "join_below", "check",
                 "needs")
_ATTRIBUTE_HOOKS = ("always", "auth_types", "join", "honours_deadline")


class _DuckEnricher(Wrapper, BaseEnricher):
    """An enricher that does not subclass :class:`BaseEnricher`, seen through it: its own
    hooks where it has them, the base's defaults elsewhere. Any other attribute is the
    wrapped object's."""

    def __init__(self, enricher: Any) -> None:
        self.wrapped = enricher
        self.name = enricher.name
        self.required = enricher.required
        for attr in _ATTRIBUTE_HOOKS:
            if hasattr(enricher, attr):
                setattr(self, attr, getattr(enricher, attr))
        adopt_methods(self, enricher, _METHOD_HOOKS)
        paths = getattr(enricher, "paths", None)
        if paths is not None and not callable(paths):  # ``paths`` given as an attribute
            self.__dict__["paths"] = _constant(tuple(paths))
        load, apply = getattr(enricher, "load", None), getattr(enricher, "apply", None)
        if callable(load) and callable(apply):  # two-phase
            self.__dict__["load"], self.__dict__["apply"] = load, apply

    def enrich(self, items: list[Any], context: EnrichContext) -> None:
        self.wrapped.enrich(items, context)


def _constant(value: tuple[str, ...]) -> Callable[[], tuple[str, ...]]:
    def paths() -> tuple[str, ...]:
        return value

    return paths


def as_enricher(enricher: Any) -> BaseEnricher:
    """``enricher`` as a :class:`BaseEnricher`: itself when it subclasses it, else wrapped so
    that every hook the library calls exists (the ones it lacks take the base's defaults; the
    wrapped object is ``.wrapped``). The pipeline calls it on each of its enrichers."""
    if isinstance(enricher, BaseEnricher):
        return enricher
    return _DuckEnricher(enricher)


def __getattr__(name: str) -> Any:
    # Kept for one release: CompositeEnricher lives in datapipe_django.enrichers.composite
    # (imported on first use: that module imports this one).
    if name == "CompositeEnricher":
        from datapipe_django.enrichers.composite import CompositeEnricher

        return CompositeEnricher
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
