"""The fetcher protocol: everything a source is asked, in one class.

A fetcher is any object with ``name``, ``priority``, ``can_handle(request)`` and
``fetch(request) -> FetchResult`` (the :class:`Fetcher` protocol). :class:`BaseFetcher`
declares every other hook the library calls, each with a safe default, so that a new source
is written from this file alone: subclass it and implement :meth:`BaseFetcher.fetch`::

    class LedgerFetcher(BaseFetcher):
        def fetch(self, request):              # rows in request.ordering, at most request.size
            rows = ledger.page(request.full_spec, request.ordering, after=request.after,
                               offset=request.offset, size=request.size + 1)
            return FetchResult(rows[: request.size], has_more=len(rows) > request.size)

The optional hooks, by what they answer:

* what the store holds: ``get_holds()``, ``declares_scope()``, ``database``, ``mirror_of``,
  ``complete``;
* what it can do: ``can_handle(request)`` (call super()), ``can_rank(request)``,
  ``can_facet(request)``, ``count(request)``, ``runs_inline(request)``;
* its declaration: ``contribute_to_pipeline(pipeline)``, ``check(pipeline)``;
* operations: ``explain(request)``, ``health()``; a wrapper names what it wraps in
  ``fetcher``.

A fetcher that does not subclass :class:`BaseFetcher` (duck-typed) keeps working: the
pipeline wraps it with :func:`as_fetcher`, which gives it the defaults of the hooks it lacks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from datapipe_django._internal.wrapping import Wrapper, adopt_methods
from datapipe_django.timeouts import seconds_left

if TYPE_CHECKING:
    from django.core.checks import CheckMessage
    from django.db import models

    from datapipe_django.paging import Ordering
    from datapipe_django.pipeline import Pipeline
    from datapipe_django.request import PipelineRequest
    from datapipe_django.specs import Spec

__all__ = ["HIGHLIGHTS_ATTR", "REQUIRED_MEMBERS", "BaseFetcher", "FetchRequest", "FetchResult",
           "Fetcher", "Verdict", "as_fetcher", "hook", "missing_member", "unknown_database"]

#: The attribute a source sets on each row for ``highlight=true``: ``{field: [fragments]}``.
HIGHLIGHTS_ATTR = "_datapipe_highlights"


@dataclass(frozen=True)
class FetchRequest:
    """What one source is asked for. Built by the fetch stage; fetchers never see HTTP.

    A source returns, in ``ordering``, the rows of ``tenant`` (when ``tenant_field`` is set)
    matching ``spec`` and ``search``, that come strictly after ``after`` (a keyset position, or
    None), skipping ``offset`` and returning at most ``size`` rows. ``pk`` set means "this one
    row". ``deadline`` is a ``time.monotonic()`` instant (None: no deadline).
    """

    request: PipelineRequest
    model: type[models.Model]
    spec: Spec | None
    ordering: Ordering
    size: int
    offset: int = 0
    after: tuple[Any, ...] | None = None
    search: str | None = None
    search_fields: tuple[str, ...] = ()
    tenant_field: str | None = None
    tenant: Any = None
    pk: Any = None
    deadline: float | None = None
    pipeline: str = ""
    #: Why ``spec`` is None: the name of the filter that cannot be compiled.
    uncompilable: str | None = None
    #: To-one relation paths (``select_related()`` form) the enrich stage will expand for this
    #: request and that a SQL source may join into its query (``PrefetchEnricher(join=True)``).
    select_related: tuple[str, ...] = ()
    #: The model field names a source needs to load (``QuerySet.only()``; a search source's
    #: ``_source`` includes), or None for every field. It always holds the pk, the ordering
    #: keys, the tenant field and what the request's enrichers read.
    only: tuple[str, ...] | None = None
    #: The request asks for the total (``?total=true``): a source whose page query can report
    #: it on the way (a search engine's ``track_total_hits``) does.
    total: bool = False
    #: ``highlight=true``: set ``HIGHLIGHTS_ATTR`` on each row, ``{search field: [fragments]}``
    #: with the matched words in ``<em>`` and everything else HTML-escaped.
    highlight: bool = False
    #: ``facets=a,b``: count the rows matching the request (every one, not the page) per value
    #: of each of these fields, into ``FetchResult.meta["facets"]``.
    facets: tuple[str, ...] = ()
    #: The most values a facet lists (the most frequent first).
    facet_size: int = 50
    #: The pipeline's typo tolerance for ``q`` (``search_fuzziness``): None (exact words),
    #: ``"AUTO"`` or a number of edits. A fetcher's own setting wins.
    fuzziness: str | int | None = None

    @property
    def relevance(self) -> bool:
        """Ordered by relevance: only a source that ranks (``can_rank``) can serve it."""
        return bool(getattr(self.ordering, "relevance", False))

    @property
    def single_source(self) -> bool:
        """The page must come from one source: relevance (scores of different sources do not
        compare) or facets (counted by a source that holds every matching row, with the page
        it serves). A source answering such a request answers ``complete``."""
        return self.relevance or bool(self.facets)

    # Convenience pass-throughs, so a ``can_handle`` predicate can read the request directly.
    @property
    def filters(self) -> Any:
        return self.request.filters

    @property
    def auth_type(self) -> str | None:
        return self.request.auth_type

    @property
    def full_spec(self) -> Spec | None:
        """``spec`` with the tenant filter folded in: what a spec-driven source must apply."""
        if self.spec is None or not self.tenant_field:
            return self.spec
        from datapipe_django.specs import Eq

        return Eq(self.tenant_field, self.tenant) & self.spec

    @property
    def remaining(self) -> float | None:
        """Seconds left before the deadline (never negative), or None."""
        return seconds_left(self.deadline)


@dataclass
class FetchResult:
    """Rows a source returned, in the requested ordering, and whether it holds more."""

    items: list[Any]
    has_more: bool = False
    #: Anything the source wants to report (cache hit, query, total hits...). For a request
    #: with ``facets``, ``meta["facets"]`` holds the counts: ``{field: [(value, count), ...]}``
    #: over every row the request matches, most frequent first (then by value).
    meta: dict[str, Any] = field(default_factory=dict)
    #: The source holds every row the request matches (a search index of the whole model),
    #: so no later source can add one: the chain reads no further source for this page.
    complete: bool = False


@dataclass(frozen=True)
class Verdict:
    """A fetcher's answer to ``can_handle`` with the reason when it declines."""

    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


@runtime_checkable
class Fetcher(Protocol):
    """What makes an object a fetcher: the required part of :class:`BaseFetcher`.

    Every optional hook has its default on :class:`BaseFetcher`; the pipeline gives them to a
    fetcher that does not subclass it (:func:`as_fetcher`).
    """

    name: str
    priority: int | None

    def can_handle(self, request: FetchRequest) -> bool | Verdict: ...

    def fetch(self, request: FetchRequest) -> FetchResult: ...


class BaseFetcher:
    """Base class for fetchers: every hook the library calls, with its default.

    ``name`` identifies the source in results, headers and traces; ``priority`` orders the
    chain (lower first; default: position in the pipeline's ``fetchers`` list); ``can_handle``
    is an optional predicate ``(request) -> bool`` that narrows what this source serves.

    ``holds``: which rows the store holds, as a :class:`~datapipe_django.specs.Spec` or a
    zero-argument callable returning one, evaluated once per execution (a sliding window:
    ``holds=lambda: Range("created_at", gte=now() - timedelta(days=30))``). None: every row.
    From it the chain decides which sources serve a request and where the next tier takes
    over (see docs/fetching.md, "Tiered sources"). ``mirror_of``: the fetcher name or database
    alias of the store this one is a copy of (a replica): it then holds what that store holds
    and is read only in its place. An ``ORMFetcher`` on an alias of ``DATAPIPE["REPLICAS"]``
    mirrors ``DATAPIPE["PRIMARY"]`` without being told.

    Required: :meth:`fetch`. Everything else has a default.
    """

    name: str = ""
    priority: int | None = None
    #: The source holds every row any request it serves matches (a search index of the whole
    #: model): its answers are ``complete`` and no later source can add a row. Default: False.
    complete: bool = False
    #: The fetcher this one wraps (a :class:`~datapipe_django.fetchers.CachedFetcher`'s), so
    #: that checks and the management commands see it too; None for a source of its own.
    fetcher: BaseFetcher | None = None

    def __init__(
        self,
        *,
        name: str | None = None,
        priority: int | None = None,
        can_handle: Callable[[FetchRequest], bool] | None = None,
        holds: Spec | Callable[[], Spec] | None = None,
        mirror_of: str | None = None,
    ) -> None:
        from datapipe_django.tiers import check_holds

        if name is not None:
            self.name = name
        if priority is not None:
            self.priority = priority
        self._predicate = can_handle
        self.holds = check_holds(f"{type(self).__name__}({self.name!r})", holds)
        self._mirror_of = mirror_of

    # -- required ----------------------------------------------------------------------------
    def fetch(self, request: FetchRequest) -> FetchResult:
        """The rows ``request`` asks for (see :class:`FetchRequest`: its spec, tenant, search,
        ordering, ``after``, ``offset`` and ``size``), and whether the store holds more. Raise
        :class:`~datapipe_django.errors.SourceUnavailable` when the store is down (the chain
        then falls back); any other exception is a bug and propagates."""
        raise NotImplementedError(f"{type(self).__name__} must implement fetch(request).")

    def can_handle(self, request: FetchRequest) -> bool | Verdict:
        """Whether this source can serve ``request``. Override to add rules; call super()."""
        if request.spec is None:
            return Verdict(False, f"filter {request.uncompilable!r} cannot be compiled")
        if request.relevance and not self.can_rank(request):
            return Verdict(False, "cannot rank by relevance")
        if request.facets and not self.can_facet(request):
            return Verdict(False, "cannot count facets")
        if self._predicate is not None and not self._predicate(request):
            name = getattr(self._predicate, "__name__", "can_handle")
            return Verdict(False, f"declined by {name}")
        return Verdict(True)

    # -- what the store holds -----------------------------------------------------------------
    def get_holds(self) -> Spec | None:
        """The rows this store holds now (``holds`` evaluated; None: every row). The chain
        calls it once per execution."""
        from datapipe_django.tiers import evaluate_holds

        return evaluate_holds(f"{type(self).__name__}({self.name!r})", self.holds)

    @property
    def database(self) -> str | None:
        """The Django database alias this source reads (None: not a database)."""
        return None

    @property
    def mirror_of(self) -> str | None:
        """The fetcher name or database alias this source is a copy of, or None."""
        return self._mirror_of

    def declares_scope(self) -> bool:
        """Whether this source says what it serves (``holds`` or ``can_handle``), so that the
        chain need not assume it holds every row (system check W014)."""
        return self.holds is not None or self._predicate is not None

    # -- what it can do -----------------------------------------------------------------------
    def runs_inline(self, request: FetchRequest) -> bool:
        """True when this fetch must run in the calling thread (e.g. inside its transaction)."""
        return False

    def count(self, request: FetchRequest) -> int | None:
        """How many rows this source holds that match ``request`` (its filters, search and
        tenant; not its page, cursor or ordering), exactly, within ``request.remaining``; or
        None when it cannot count exactly. Raises what ``fetch`` raises when the source is
        unavailable. Used for ``?total=true`` (see :mod:`datapipe_django.totals`) and to push a deep
        offset down to the next tier (``holds``)."""
        return None

    def can_rank(self, request: FetchRequest) -> bool:
        """Whether this source can order ``request`` by relevance: set ``SCORE_ATTR`` on each
        row, return them best first (pk ascending on ties), take a cursor of (score, pk), and
        answer ``complete`` (the page is this source's alone). Default: False."""
        return False

    def can_facet(self, request: FetchRequest) -> bool:
        """Whether this source can count ``request.facets`` over every row the request matches
        (it must hold them all) into ``FetchResult.meta["facets"]``, answering ``complete``.
        Default: False."""
        return False

    # -- its declaration ------------------------------------------------------------------------
    def contribute_to_pipeline(self, pipeline: Pipeline) -> None:
        """Called once by the :class:`~datapipe_django.Pipeline` this fetcher is declared in
        (like Django's ``contribute_to_class``): a source that must know its pipeline (a cache
        watching the model for writes) sets itself up here. Default: nothing."""

    def check(self, pipeline: Pipeline) -> list[CheckMessage]:
        """System-check messages about this source's declaration in ``pipeline`` (``manage.py
        check``, see :mod:`datapipe_django.checks`). Default: none."""
        return []

    # -- operations -------------------------------------------------------------------------------
    def explain(self, request: FetchRequest) -> dict[str, Any]:
        """What this source would run for ``request`` (``manage.py datapipe explain``): its
        query, as ``{label: text}``. Default: nothing to show."""
        return {}

    def health(self) -> tuple[bool, str] | None:
        """``(ok, detail)`` of this source's own store for ``manage.py datapipe health``, or
        None when it has no check of its own (the command then checks its ``database``)."""
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


#: The optional methods a duck-typed fetcher may define; the others take BaseFetcher's.
_METHOD_HOOKS = ("get_holds", "declares_scope", "runs_inline", "count", "can_rank", "can_facet",
                 "contribute_to_pipeline", "check", "explain", "health")


class _DuckFetcher(Wrapper, BaseFetcher):
    """A fetcher that does not subclass :class:`BaseFetcher`, seen through it: its own hooks
    where it has them, the base's defaults elsewhere (``declares_scope()`` says True: nothing
    is known of what it serves, so nothing is warned of). Any other attribute is the wrapped
    object's."""

    def __init__(self, fetcher: Any) -> None:
        self.wrapped = fetcher
        self.name = fetcher.name
        self.priority = getattr(fetcher, "priority", None)
        self.holds, self._predicate = None, None
        self._mirror_of = getattr(fetcher, "mirror_of", None)
        self._database = getattr(fetcher, "database", None)
        self.complete = bool(getattr(fetcher, "complete", False))
        inner = getattr(fetcher, "fetcher", None)
        self.fetcher = as_fetcher(inner) if inner is not None else None
        adopt_methods(self, fetcher, _METHOD_HOOKS)

    def can_handle(self, request: FetchRequest) -> bool | Verdict:
        return self.wrapped.can_handle(request)  # type: ignore[no-any-return]

    def fetch(self, request: FetchRequest) -> FetchResult:
        return self.wrapped.fetch(request)  # type: ignore[no-any-return]

    def declares_scope(self) -> bool:
        return True

    @property
    def database(self) -> str | None:
        return self._database  # type: ignore[no-any-return]


#: What an object needs to be a fetcher (every other hook of :class:`BaseFetcher` has a default).
REQUIRED_MEMBERS = ("name", "can_handle", "fetch")


def missing_member(fetcher: Any) -> str | None:
    """The first of :data:`REQUIRED_MEMBERS` that ``fetcher`` lacks (None: it has them all)."""
    return next((member for member in REQUIRED_MEMBERS if not hasattr(fetcher, member)), None)


def as_fetcher(fetcher: Any) -> BaseFetcher:
    """``fetcher`` as a :class:`BaseFetcher`: itself when it subclasses it, else wrapped so
    that every hook the library calls exists (the ones it lacks take the base's defaults; the
    wrapped object is ``.wrapped``). The pipeline and ``CachedFetcher`` call it on the fetchers
    they are given."""
    if isinstance(fetcher, BaseFetcher):
        return fetcher
    return _DuckFetcher(fetcher)


def unknown_database(pipeline: Pipeline, fetcher: BaseFetcher, alias: str | None
                     ) -> list[CheckMessage]:
    """System check E001 for a ``fetcher.check(pipeline)``: ``alias``, the database the fetcher
    reads, is not in ``settings.DATABASES``."""
    from django.core import checks
    from django.db import connections

    if alias is None or alias in connections.settings:
        return []
    return [checks.Error(
        f"Pipeline {pipeline.name!r}: fetcher {fetcher.name!r} uses database alias {alias!r}, "
        f"which is not in settings.DATABASES.",
        hint="Add the alias to DATABASES or fix the fetcher's `using`.",
        obj=pipeline, id="datapipe_django.E001",
    )]


def hook(fetcher: Any, name: str) -> Any:
    """The hook ``name`` of ``fetcher``, the :class:`BaseFetcher` default when it lacks it.
    Kept for one release: call the hook on ``as_fetcher(fetcher)``."""
    return getattr(as_fetcher(fetcher), name)
