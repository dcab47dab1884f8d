"""The fetcher chain: which sources a request consults, and how their rows become one page.

Semantics (see docs/fetching.md):

* Sources are grouped into *stores*: a fetcher and its mirrors (a replica: ``mirror_of``, or
  an ``ORMFetcher`` on a ``DATAPIPE["REPLICAS"]`` alias). A store is read through one member,
  the next only when the ones before declined or were unavailable: never two.
* When a store declares ``holds`` (or the request asks for one source), the declarations
  plan the page (:mod:`datapipe_django.tiers`): a store holding every matching row (one
  without ``holds`` holds every row) serves alone; a store holding a prefix in the request's
  ordering serves it, and the next one is asked only beyond its boundary (``~holds`` in its
  query), the offset pushed down by the earlier tier's count; a store whose rows are neither
  is skipped for one that holds them all, or, when none does, every store is read and merged.
  The same in every mode.
* Otherwise (no declaration) the pre-tier rules: every consulted source is asked, in the
  pipeline's total ordering, for the first ``offset + limit + 1`` rows (after the cursor,
  when there is one), the answers merged by the ordering key, deduplicated by pk (the
  higher-priority source's row wins) and sliced. ``SEQUENTIAL``: in priority order, the next
  one only while the merged rows are fewer than needed or the previous one was unavailable;
  ``FIRST_SUCCESS``: the first source whose page holds any row serves the page alone;
  ``PARALLEL``: every candidate at once, merged.
* A source whose answer is ``complete`` (it holds every matching row, like a search index of
  the whole model) ends the chain: no later source is read to top its page up.
* A page is ``partial`` when a store that was asked could not answer and no store that holds
  its rows too answered (a later undeclared store, or one whose ``holds`` contain its own); a
  retrieve that did not find the row is then a ``SourcesUnavailable``, not a "not found".

Only a source's own unavailability (:class:`~datapipe_django.errors.SourceUnavailable`,
Django's ``OperationalError``/``InterfaceError``) moves the chain on; any other exception is a
bug and propagates. A database error that the request's own shape caused (a pattern too
complex, an expression too deep, a value the column's type rejects:
:func:`~datapipe_django.errors.caused_by_request`)
is the client's :class:`~datapipe_django.errors.ValidationFailed`: no fallback (every other
source would refuse it too), and no source counted as failing.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

from django.db import DataError, InterfaceError, OperationalError

from datapipe_django.errors import (
    DeadlineExceeded,
    NoFetcher,
    SourcesUnavailable,
    SourceUnavailable,
    ValidationFailed,
    caused_by_request,
    failure_reason,
)
from datapipe_django.executor import Scheduler, submit
from datapipe_django.fetchers.base import Fetcher, FetchRequest, FetchResult, Verdict, as_fetcher
from datapipe_django.observability import NullTracer, Tracer, is_recording
from datapipe_django.paging import Ordering
from datapipe_django.specs import Spec
from datapipe_django.tiers import (
    Move,
    Plan,
    PlanStep,
    Relation,
    TierWalk,
    contains,
    describe_holds,
    narrow,
    relation,
)

__all__ = [
    "UNAVAILABLE_ERRORS",
    "Attempt",
    "ChainResult",
    "FallbackMode",
    "FetcherChain",
    "Plan",
    "PlanStep",
    "Store",
    "caused_by_request",
    "merge_streams",
]

#: The exceptions that mean "this source cannot answer now" and move the chain on.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    SourceUnavailable,
    OperationalError,
    InterfaceError,
)


def _bad_request(request: FetchRequest, exc: BaseException) -> ValidationFailed:
    name = "q" if request.search else "non_field_errors"
    return ValidationFailed(
        {name: ["The databases cannot run a query this large or complex: shorten or "
                "simplify it."]}, stage="fetch", cause=exc)


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
    #: The page may lack rows: a source that could hold some of them was unavailable and no
    #: source that holds them too answered in its place.
    partial: bool = False
    #: What each store holds (``FetcherChain.holds``), as evaluated for this execution.
    holds: dict[str, Spec | None] = field(default_factory=dict)


@dataclass
class Store:
    """One store as the chain sees it: a fetcher, the mirrors that may stand in for it (in
    priority order, read only when the ones before cannot answer) and what it holds (``holds``
    evaluated for this execution; None: not declared, every row)."""

    members: list[Any]
    holds: Spec | None
    #: The name of the fetcher the others mirror.
    primary: str = ""

    @property
    def name(self) -> str:
        return str(self.members[0].name)

    def stand_in_reason(self, answered: str) -> str:
        """Why the other members are not read once ``answered`` did."""
        if answered == self.primary:
            return f"mirror of {answered}, which answered"
        return f"{answered}, a mirror of {self.primary}, answered"

    @property
    def declared(self) -> bool:
        return self.holds is not None


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


def _store_of(name: str, mirrors: dict[str, str]) -> str:
    """The fetcher whose store ``name`` reads (a mirror of a mirror stands in for the same
    store)."""
    while name in mirrors:
        name = mirrors[name]
    return name


def _merged_count(answers: list[tuple[str, list[Any]]], ordering: Ordering) -> int:
    """How many distinct rows the answers so far hold."""
    if len(answers) == 1:
        return len(answers[0][1])
    return len(merge_streams([rows for _, rows in answers], ordering))


def _first_field(request: FetchRequest) -> str:
    return str(request.ordering.fields[0])


def _within(holds: Spec, items: list[Any]) -> list[Any]:
    """The leading rows of ``items`` that ``holds`` matches (a prefix tier's own rows)."""
    cut = next((i for i, row in enumerate(items) if not holds.matches(row)), len(items))
    return items[:cut]


def _names(store: Store) -> set[str]:
    return {m.name for m in store.members}


def _covered(store: Store, later: list[Store], earlier: list[Store], answered: set[str]) -> bool:
    """Whether a store that answered holds every row ``store`` holds: a later one whose holds
    contain its own (an undeclared one holds every row), or an earlier one by declaration."""
    return any(_names(other) & answered and contains(other.holds, store.holds)
               for other in later) or \
        any(_names(other) & answered and other.declared and contains(other.holds, store.holds)
            for other in earlier)


def _span_attributes(fetcher: Any, request: FetchRequest, fallback: str | None,
                     probe: bool) -> dict[str, Any]:
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
    return attributes


def _record_answer(span: Any, result: FetchResult) -> None:
    span.set_attribute("datapipe.outcome", "ok")
    span.set_attribute("datapipe.item_count", len(result.items))
    span.set_attribute("datapipe.has_more", bool(result.has_more))
    cache = result.meta.get("cache")
    if cache is not None:
        span.set_attribute("datapipe.cache", str(cache))
        span.set_attribute("datapipe.cache.hit", cache in ("hit", "stale"))


#: Why the tiered walk does not read a store (``Attempt.reason``), by move.
_WALK_SKIPS = {
    Move.HOLDS_NONE: "holds none of the rows this page needs",
    Move.SKIP_SOME: "holds only some of the matching rows: a relevance or facets page comes "
                    "from one that holds them all",
    Move.SKIP_UNALIGNED: "skipped: {} is not aligned with its holds",
}
@dataclass
class _TierPage:
    """The rows a tiered walk gathered so far: ``need`` more to fill the page (its ``limit``
    + 1), ``skip`` of the region's first rows still to skip (the offset not pushed down yet),
    ``why`` the next source is read (a span's fallback reason)."""

    need: int
    skip: int
    rows: list[Any] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    why: str | None = None
    answered: bool = False

    def add(self, source: str, items: list[Any]) -> None:
        self.rows.extend(items)
        self.need -= len(items)
        if items and source not in self.sources:
            self.sources.append(source)


class FetcherChain:
    """Runs one request through a list of fetchers (already in priority order).

    Each read of a source runs in a ``tracer`` span ``datapipe.source.<name>`` (on the worker
    thread that reads it, in PARALLEL mode); ``on_attempt`` is called for every source
    considered.
    """

    def __init__(
        self,
        fetchers: Sequence[Fetcher],
        mode: FallbackMode = FallbackMode.SEQUENTIAL,
        *,
        submit: Callable[..., Future[Any]] = submit,
        on_attempt: Callable[[Attempt], None] | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.fetchers = [as_fetcher(f) for f in fetchers]
        self.mode = mode
        self._submit = submit
        self._on_attempt = on_attempt
        self._tracer: Tracer = tracer if tracer is not None else NullTracer()
        self._mirrors: dict[str, str] | None = None

    # -- public -----------------------------------------------------------------------------
    def verdicts(self, request: FetchRequest) -> list[tuple[Any, Verdict]]:
        """Every fetcher, in priority order, with its answer to ``can_handle(request)``."""
        return [(fetcher, _verdict(fetcher, request)) for fetcher in self.fetchers]

    def mirrors(self) -> dict[str, str]:
        """``{mirror fetcher name: name of the fetcher it mirrors}`` for this chain: a fetcher
        whose ``mirror_of`` names another fetcher, or that one's database alias (worked out
        once per chain: ``run`` and ``plan`` both ask)."""
        if self._mirrors is not None:
            return self._mirrors
        result: dict[str, str] = {}
        for fetcher in self.fetchers:
            target = fetcher.mirror_of
            if not target:
                continue
            for other in self.fetchers:
                if other is not fetcher and other.name not in result and (
                        other.name == target or other.database == target):
                    result[fetcher.name] = other.name
                    break
        self._mirrors = result
        return result

    def holds(self) -> dict[str, Spec | None]:
        """``{store's fetcher name: what it holds}`` for every store of this chain, each
        ``holds`` evaluated now (once per execution: :meth:`run` keeps them in
        ``ChainResult.holds`` for the plan of the total)."""
        mirrors = self.mirrors()
        keys = dict.fromkeys(_store_of(f.name, mirrors) for f in self.fetchers)
        by_name = {f.name: f for f in self.fetchers}
        return {key: by_name[key].get_holds() for key in keys}

    def stores(self, request: FetchRequest, attempts: list[Attempt] | None = None, *,
               holds: dict[str, Spec | None] | None = None) -> list[Store]:
        """The stores that can serve ``request``, in priority order: each fetcher with the
        mirrors that stand in for it, ``holds`` evaluated once per store (the primary's, which
        its mirrors share; ``holds``: already evaluated, see :meth:`holds`). Fetchers that
        decline are recorded in ``attempts``."""
        mirrors = self.mirrors()
        held = self.holds() if holds is None else holds
        groups = {key: Store([], spec, primary=key) for key, spec in held.items()}
        # Members stay in priority order (a replica listed first takes the reads, its primary
        # stands in for it); either way one of them is read, never two.
        for fetcher, verdict in self.verdicts(request):
            if verdict:
                groups[_store_of(fetcher.name, mirrors)].members.append(fetcher)
            elif attempts is not None:
                self._record(attempts, Attempt(fetcher.name, "declined", verdict.reason))
        return [s for s in groups.values() if s.members]

    def plan(self, request: FetchRequest, *, holds: dict[str, Spec | None] | None = None
             ) -> Plan:
        """What this chain would read for ``request`` if every source answered: per fetcher,
        its ``holds`` and its verdict (see :class:`PlanStep`). ``request`` is the fetch
        stage's request (``stages.fetch_request``); ``holds``: the execution's, when it
        already evaluated them (``ChainResult.holds``)."""
        held = self.holds() if holds is None else holds
        stores = self.stores(request, holds=held)
        steps: dict[str, PlanStep] = {}
        if self._tiered_chain(stores, request):
            steps, disjoint = self._walk(stores, request).dry_run()
        else:
            disjoint = len(stores) <= 1
            for i, store in enumerate(stores):
                steps[store.name] = PlanStep(store.name, describe_holds(store.holds), "reads",
                                             self._legacy_verdict(i, len(stores)))
        mirrors = self.mirrors()
        for store in stores:
            for mirror in store.members[1:]:
                steps[mirror.name] = PlanStep(
                    mirror.name, describe_holds(store.holds), "not_read",
                    f"not read: mirror of {store.name}, which answered"
                    if store.name == store.primary else
                    f"not read: {store.name} is read first; this one only in its place",
                    mirror_of=mirrors.get(mirror.name))
        return Plan(self._declined_steps(request, steps, held), disjoint)

    def _declined_steps(self, request: FetchRequest, steps: dict[str, PlanStep],
                        holds: dict[str, Spec | None]) -> list[PlanStep]:
        """``steps`` in the fetchers' order, with a ``declined`` step for each fetcher that
        is not a member of a store (can_handle is asked again of those only)."""
        mirrors = self.mirrors()
        result = []
        for fetcher in self.fetchers:
            if fetcher.name in steps:  # a member of a store: it accepted the request
                result.append(steps[fetcher.name])
                continue
            verdict = _verdict(fetcher, request)
            if not verdict:
                own = holds[fetcher.name] if fetcher.name in holds else \
                    fetcher.get_holds()
                result.append(PlanStep(fetcher.name, describe_holds(own), "declined",
                                       verdict.reason, mirror_of=mirrors.get(fetcher.name)))
        return result

    def source_request(self, request: FetchRequest, *, candidates: int, offset: int,
                       limit: int) -> tuple[FetchRequest, int]:
        """What each consulted source is asked for when ``candidates`` sources may answer, and
        how many rows of the merged stream the page then skips (undeclared chains)."""
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
        holds = self.holds()
        stores = self.stores(request, attempts, holds=holds)
        if not stores:
            raise NoFetcher(
                "No source can serve this request: "
                + "; ".join(f"{a.source}: {a.reason}" for a in attempts),
                reasons={a.source: a.reason for a in attempts},
            )
        if request.pk is not None:
            result = self._retrieve(stores, request, attempts)
        elif self._tiered_chain(stores, request):
            result = self._tiered(stores, request, offset, limit, attempts)
        else:
            result = self._legacy(stores, request, offset, limit, attempts)
        result.holds = holds
        result.partial = self._partial(stores, attempts)
        if result.partial and not result.has_more and result.items:
            # What the unavailable source holds may come after the page: say there may be
            # more, so that the client can go on (or retry) from next_cursor.
            result.has_more = True
        return result

    # -- planning ---------------------------------------------------------------------------
    @staticmethod
    def _tiered_chain(stores: list[Store], request: FetchRequest) -> bool:
        """Whether the declarations drive this request (else: the pre-tier modes)."""
        return request.single_source or any(s.declared for s in stores)

    @staticmethod
    def _walk(stores: list[Store], request: FetchRequest) -> TierWalk:
        return TierWalk(stores, request.spec, request.ordering, request.after,
                        single_source=request.single_source)

    def _legacy_verdict(self, index: int, count: int) -> str:
        if count == 1:
            return "serves alone"
        if self.mode is FallbackMode.PARALLEL:
            return "read with the others at once, merged"
        if self.mode is FallbackMode.FIRST_SUCCESS:
            return "serves the page if it has rows" if index == 0 else \
                "serves when the sources before it have no rows"
        return "read first; the next sources only while the page is short" if index == 0 \
            else "read only while the page is short or the sources before are unavailable"

    # -- the tiered walk ----------------------------------------------------------------------
    def _tiered(self, stores: list[Store], request: FetchRequest, offset: int, limit: int,
                attempts: list[Attempt]) -> ChainResult:
        """Serve a page from declared tiers: each source is asked only for the rows it holds
        that the page still needs, the offset pushed down as far as the counts allow."""
        walk = self._walk(stores, request)
        page = _TierPage(need=limit + 1, skip=offset)
        while page.need > 0 and (taken := walk.next()) is not None:
            store, move = taken
            if move is Move.MERGE:
                self._merge_tiers([store, *walk.drain()], walk.region, request, page, attempts)
            elif move in _WALK_SKIPS:
                self._not_read(store, attempts,
                               _WALK_SKIPS[move].format(_first_field(request)))
            else:
                self._read_tier(walk, store, move, request, page, attempts)
        self._not_read_all(walk.drain(), attempts, "page already full")
        if not page.answered and any(a.outcome in ("unavailable", "timeout") for a in attempts):
            self._raise_unavailable(attempts)
        return ChainResult(page.rows[:limit], len(page.rows) > limit, tuple(page.sources),
                           attempts)

    def _read_tier(self, walk: TierWalk, store: Store, move: Move, request: FetchRequest,
                   page: _TierPage, attempts: list[Attempt]) -> None:
        """Read one tier that ``SERVES`` or holds a ``PREFIX`` of the region into ``page``;
        take its bound when later tiers are to serve the rest."""
        region = walk.region
        asked = replace(request, spec=region, offset=page.skip, size=page.need)
        self._check_deadline(request, attempts, answered=page.answered)
        got = self._call_store(store, asked, attempts, fallback=page.why)
        if got is None:
            page.why = "unavailable"
            return  # the next sources are planned again for the same region
        page.answered = True
        member, result = got
        items = result.items
        if move is Move.PREFIX:
            assert store.holds is not None  # a PREFIX tier declares holds
            items = _within(store.holds, items)  # rows past its boundary are the next tier's
        page.add(member.name, items)
        if move is Move.SERVES or result.complete:
            self._not_read_all(walk.drain(), attempts,
                               f"{member.name} holds every row of the page")
        elif page.need > 0 and self._push_down(member, store, asked, bool(items), page,
                                               attempts):
            walk.take(store)

    def _push_down(self, member: Any, store: Store, asked: FetchRequest, read: bool,
                   page: _TierPage, attempts: list[Attempt]) -> bool:
        """A prefix tier fell short of the page: what of the offset the next tier still
        skips (the tier's own rows counted when it gave none: all were skipped). False when
        it could not count: the sources after it then serve its rows too."""
        page.why = "incomplete" if read else "empty"
        if read or page.skip == 0:
            page.skip = 0
            return True
        assert store.holds is not None  # a PREFIX tier declares holds
        counted = self._count(member, replace(asked, spec=narrow(asked.spec, [store.holds]),
                                              offset=0), attempts)
        if counted is None:
            return False
        page.skip = max(0, page.skip - counted)
        return True

    def _merge_tiers(self, stores: list[Store], region: Spec | None, request: FetchRequest,
                     page: _TierPage, attempts: list[Attempt]) -> None:
        """No store holds every row of ``region`` in the request's ordering: read every one
        of ``stores`` for ``skip + need`` rows and merge them into ``page``."""
        wide = replace(request, spec=region, offset=0, size=page.skip + page.need)
        merged = self._merged(stores, wide, page.skip, page.need, attempts, why=page.why,
                              fill=False, required=False)
        if merged is not None:
            page.rows.extend(merged.items)
            page.sources.extend(n for n in merged.sources if n not in page.sources)
            page.answered = True

    def _count(self, member: Any, request: FetchRequest, attempts: list[Attempt]
               ) -> int | None:
        """How many rows of ``request`` ``member`` holds: its ``count`` hook, else its rows
        read (None when it became unavailable)."""
        start = time.perf_counter()
        try:
            counted = member.count(request)
            if counted is None:
                held = request.spec
                result = self._fetch(member, replace(request, size=max(request.offset, 1)))
                counted = len([r for r in result.items if held is None or held.matches(r)])
        except UNAVAILABLE_ERRORS as exc:
            self._record(attempts, Attempt(member.name, "unavailable", failure_reason(exc),
                                           duration=time.perf_counter() - start))
            return None
        self._record(attempts, Attempt(member.name, "ok", "count", count=0,
                                       duration=time.perf_counter() - start,
                                       meta={"count": counted}))
        return int(counted)

    # -- retrieve -------------------------------------------------------------------------------
    def _retrieve(self, stores: list[Store], request: FetchRequest,
                  attempts: list[Attempt]) -> ChainResult:
        asked = replace(request, offset=0, size=1)
        why: str | None = None
        for i, store in enumerate(stores):
            if relation(store.holds, request.spec, request.ordering, None) is Relation.NONE:
                self._not_read(store, attempts, "holds none of the matching rows")
                continue
            self._check_deadline(request, attempts, answered=False)
            got = self._call_store(store, asked, attempts, fallback=why)
            if got is None:
                why = "unavailable"
                continue
            member, result = got
            why = "empty"
            if result.items:
                self._not_read_all(stores[i + 1:], attempts, "the row was found")
                return ChainResult(result.items[:1], False, (member.name,), attempts)
            if result.complete:
                self._not_read_all(stores[i + 1:], attempts,
                                   f"{member.name} answered completely")
                break
        if self._partial(stores, attempts):
            # A source that could hold the row was down: "not found" would be a guess.
            self._raise_unavailable(attempts)
        return ChainResult([], False, (), attempts)

    def _partial(self, stores: list[Store], attempts: list[Attempt]) -> bool:
        """Whether a store that was asked could not answer, and no store that holds its rows
        too (after it in priority, or declaring holds that contain its own) answered."""
        answered = {a.source for a in attempts if a.outcome == "ok"}
        failed = {a.source for a in attempts if a.outcome in ("unavailable", "timeout")}
        return any(_names(store) & failed and not _names(store) & answered
                   and not _covered(store, stores[i + 1:], stores[:i], answered)
                   for i, store in enumerate(stores))

    # -- the pre-tier modes (no source declares holds) ------------------------------------------
    def _legacy(self, stores: list[Store], request: FetchRequest, offset: int, limit: int,
                attempts: list[Attempt]) -> ChainResult:
        if self.mode is FallbackMode.FIRST_SUCCESS:
            return self._first_success(stores, request, offset, limit, attempts)
        wide, skip = self.source_request(request, candidates=len(stores), offset=offset,
                                         limit=limit)
        merged = self._merged(stores, wide, skip, limit, attempts)
        assert merged is not None  # required: no answer raised
        return merged

    # -- the one merge ----------------------------------------------------------------------
    def _merged(self, stores: list[Store], wide: FetchRequest, skip: int, limit: int,
                attempts: list[Attempt], *, why: str | None = None, fill: bool = True,
                required: bool = True) -> ChainResult | None:
        """Read ``stores`` for ``wide`` (the first ``skip + limit + 1`` rows, in order), merge
        their answers by the ordering key, deduplicated by pk (the earlier store's row wins),
        and slice the page. PARALLEL: every store at once; else in priority order, the next
        one only while the merged rows are fewer than ``wide.size`` (``fill``; else every
        one). None when no store answered and the page is not ``required`` (which raises)."""
        if self.mode is FallbackMode.PARALLEL:
            answers = self._parallel(stores, wide, attempts, raise_if_none=required)
        else:
            answers = self._sequential(stores, wide, wide.size if fill else None, attempts,
                                       why=why, raise_if_none=required)
        if not answers:
            return None
        return self._page(answers, wide.ordering, skip, limit, attempts)

    def _sequential(
        self, candidates: list[Store], request: FetchRequest, need: int | None,
        attempts: list[Attempt], *, why: str | None = None, raise_if_none: bool = True,
    ) -> list[tuple[str, list[Any]]]:
        """Stores in priority order while the merged rows are fewer than ``need`` (None:
        every store), a ``complete`` answer ending the walk."""
        answers: list[tuple[str, list[Any]]] = []
        merged = 0
        for i, store in enumerate(candidates):
            if need is not None and merged >= need:
                self._not_read_all(candidates[i:], attempts, "page already full")
                break
            self._check_deadline(request, attempts, answered=bool(answers))
            got = self._call_store(store, request, attempts, fallback=why)
            if got is None:
                why = "unavailable"  # why the next source is read: this one fell short
                continue
            member, result = got
            why = "empty" if not result.items else "incomplete"
            answers.append((member.name, result.items))
            if result.complete:
                self._not_read_all(candidates[i + 1 :], attempts,
                                   f"{member.name} answered completely")
                break
            merged = _merged_count(answers, request.ordering)
        if not answers and raise_if_none:
            self._raise_unavailable(attempts)
        return answers

    def _parallel(
        self, candidates: list[Store], request: FetchRequest, attempts: list[Attempt], *,
        raise_if_none: bool = True,
    ) -> list[tuple[str, list[Any]]]:
        """Every store at once; a store whose member fails is retried on its next mirror in a
        second round (a mirror is never read in addition)."""
        results: dict[int, tuple[Any, FetchResult]] = {}
        tries = dict.fromkeys(range(len(candidates)), 0)
        abandoned = False
        while tries:
            answered, timed_out = self._parallel_round(candidates, tries, request, attempts)
            abandoned = abandoned or timed_out
            tries = self._settle_round(candidates, tries, answered, results, request, attempts)
        answers = []
        for index in sorted(results):
            member, result = results[index]
            answers.append((member.name, result.items))
            if result.complete:  # later sources' rows would not be part of its answer
                break
        if not answers and raise_if_none:
            if abandoned:
                raise DeadlineExceeded("No source answered before the deadline.", stage="fetch")
            self._raise_unavailable(attempts)
        return answers

    def _parallel_round(
        self, candidates: list[Store], tries: dict[int, int], request: FetchRequest,
        attempts: list[Attempt],
    ) -> tuple[dict[int, FetchResult | None], bool]:
        """Read member ``tries[i]`` of each store ``i`` at once (an inline one on this
        thread), until the deadline: the answers by store (None: unavailable; missing:
        abandoned at the deadline) and whether one was abandoned."""
        scheduler: Scheduler[tuple[int, Any]] = Scheduler(request.deadline, self._submit)
        inline: list[tuple[int, Any]] = []
        for index, step in tries.items():
            member = candidates[index].members[step]
            if member.runs_inline(request):
                inline.append((index, member))
            else:
                scheduler.start((index, member), self._timed, member, request)
        answered: dict[int, FetchResult | None] = {}
        for index, member in inline:
            answered[index] = self._call(member, request, attempts)
        for (index, member), future in scheduler.wait(every=True):
            answered[index] = self._collect(member, future, attempts)
        pending = scheduler.abandon()  # still running at the deadline
        for _, member in pending:
            self._record(attempts, Attempt(member.name, "timeout", "abandoned at the deadline"))
        return answered, bool(pending)

    def _settle_round(
        self, candidates: list[Store], tries: dict[int, int],
        answered: dict[int, FetchResult | None], results: dict[int, tuple[Any, FetchResult]],
        request: FetchRequest, attempts: list[Attempt],
    ) -> dict[int, int]:
        """Keep each store's answer in ``results`` (its other members not needed); the next
        member to try of each store whose member was unavailable, while time is left."""
        next_tries: dict[int, int] = {}
        for index, step in tries.items():
            result = answered.get(index)
            members = candidates[index].members
            if result is not None:
                results[index] = (members[step], result)
                for mirror in members[step + 1:]:
                    self._record(attempts, Attempt(
                        mirror.name, "not_needed",
                        candidates[index].stand_in_reason(members[step].name)))
            elif index in answered and step + 1 < len(members) and request.remaining != 0.0:
                next_tries[index] = step + 1
        return next_tries

    def _first_success(
        self, candidates: list[Store], request: FetchRequest, offset: int, limit: int,
        attempts: list[Attempt],
    ) -> ChainResult:
        page_request, _ = self.source_request(request, candidates=len(candidates),
                                              offset=offset, limit=limit)
        answered: list[str] = []
        why: str | None = None
        for i, store in enumerate(candidates):
            self._check_deadline(request, attempts, answered=bool(answered))
            got = self._call_store(store, page_request, attempts, fallback=why)
            why = "unavailable" if got is None else "empty"
            if got is None:
                continue
            member, result = got
            answered.append(member.name)
            if not result.items and not result.complete:
                continue
            items = result.items[:limit]
            has_more = len(result.items) > limit
            if result.complete:
                self._not_read_all(candidates[i + 1 :], attempts,
                                   f"{member.name} answered completely")
            elif has_more:
                self._not_read_all(candidates[i + 1 :], attempts, "page served")
            else:
                has_more = self._rows_after(candidates[i + 1 :], request, items, attempts)
            return ChainResult(items, has_more, (member.name,), attempts)
        if not answered:
            self._raise_unavailable(attempts)
        return ChainResult([], False, tuple(answered), attempts)

    def _rows_after(self, later: list[Store], request: FetchRequest, items: list[Any],
                    attempts: list[Attempt]) -> bool:
        """FIRST_SUCCESS: the page ran out at its source; whether a later source holds a row
        past its last one (each asked for one such row, until one has it)."""
        probe = replace(request, offset=0, size=1, after=request.ordering.values(items[-1]))
        for store in later:
            found = self._call_store(store, probe, attempts, probe=True)
            if found is not None and found[1].items:
                return True  # a source without such rows says nothing of the next one
        return False

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

    def _call_store(
        self, store: Store, request: FetchRequest, attempts: list[Attempt], *,
        fallback: str | None = None, probe: bool = False,
    ) -> tuple[Any, FetchResult] | None:
        """Read ``store``: its first member, then each mirror only while the ones before are
        unavailable. None when every member is."""
        for i, member in enumerate(store.members):
            if i and request.remaining == 0.0:
                break
            result = self._call(member, request, attempts, fallback=fallback, probe=probe)
            if result is not None:
                for mirror in store.members[i + 1:]:
                    self._record(attempts, Attempt(mirror.name, "not_needed",
                                                   store.stand_in_reason(member.name)))
                return member, result
            fallback = "unavailable"
        return None

    def _fetch(self, fetcher: Any, request: FetchRequest, *, fallback: str | None = None,
               probe: bool = False) -> FetchResult:
        """``fetcher.fetch(request)`` in its span (``fallback``: why the chain reads it)."""
        attributes = _span_attributes(fetcher, request, fallback, probe)
        with self._tracer.span(f"datapipe.source.{fetcher.name}", attributes) as span:
            try:
                result: FetchResult = fetcher.fetch(request)
            except (SourceUnavailable, OperationalError, InterfaceError, DataError) as exc:
                bad = caused_by_request(exc)
                if not bad and not isinstance(exc, UNAVAILABLE_ERRORS):
                    raise
                if is_recording(span):
                    span.set_attribute("datapipe.outcome", "bad_request" if bad else
                                       "unavailable")
                    span.set_attribute("datapipe.reason", failure_reason(exc))
                if bad:
                    raise _bad_request(request, exc) from exc
                raise
            if is_recording(span):
                _record_answer(span, result)
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
            self._record(attempts, Attempt(fetcher.name, "unavailable", failure_reason(exc),
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
            self._record(attempts, Attempt(fetcher.name, "unavailable", failure_reason(exc)))
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

    def _not_read_all(self, rest: list[Store], attempts: list[Attempt], reason: str) -> None:
        for other in rest:
            self._not_read(other, attempts, reason)

    def _not_read(self, store: Store, attempts: list[Attempt], reason: str) -> None:
        for member in store.members:
            self._record(attempts, Attempt(member.name, "not_needed", reason))

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
