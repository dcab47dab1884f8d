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
complex, an expression too deep, a value the column's type rejects: :func:`caused_by_request`)
is the client's :class:`~datapipe_django.errors.ValidationFailed`: no fallback (every other
source would refuse it too), and no source counted as failing.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass, field, replace
from typing import Any

from django.db import DataError, InterfaceError, OperationalError

from datapipe_django.errors import (
    DeadlineExceeded,
    NoFetcher,
    SourcesUnavailable,
    SourceUnavailable,
    ValidationFailed,
)
from datapipe_django.executor import submit
from datapipe_django.fetchers.base import FetchRequest, FetchResult, Verdict, hook
from datapipe_django.observability import NullTracer, Tracer, is_recording
from datapipe_django.paging import Ordering
from datapipe_django.specs import MatchAll, Spec
from datapipe_django.tiers import Relation, contains, describe_holds, relation

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


#: SQLite's messages for a statement too large or complex for it.
_SQLITE_LIMITS = ("pattern too complex", "expression tree is too large", "too many sql variables",
                  "parser stack overflow", "string or blob too big", "too many terms",
                  "too many columns")
#: MySQL/MariaDB error codes a statement's own values cause: illegal mix of collations (a
#: character the column's charset lacks), a bad regular expression, a thread stack overrun.
_MYSQL_CODES = frozenset({1267, 1270, 1271, 1139, 1436, 3685, 3692, 3699})


def caused_by_request(exc: BaseException) -> bool:
    """Whether a database error is the request's fault rather than the store's: a value the
    column cannot take (Django's ``DataError``), a statement past the database's limits
    (PostgreSQL's class 54 "program limit exceeded", SQLite's "pattern too complex", MySQL's
    collation and regular-expression errors)."""
    if isinstance(exc, DataError):
        return True
    if not isinstance(exc, OperationalError):
        return False
    cause = exc.__cause__
    sqlstate = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
    if isinstance(sqlstate, str):
        return sqlstate.startswith("54") or sqlstate == "2201B"
    args = getattr(cause, "args", ())
    if args and isinstance(args[0], int):
        return args[0] in _MYSQL_CODES
    text = str(exc).lower()
    return any(limit in text for limit in _SQLITE_LIMITS)


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


@dataclass
class PlanStep:
    """What the chain would do with one source for a request, if every source answered
    (``FetcherChain.plan``; ``manage.py datapipe explain`` prints it).

    ``action``: ``serves`` (it holds every row of ``region``), ``prefix`` (it holds the first
    rows of ``region`` in the request's ordering; later sources are asked only beyond),
    ``reads`` (read the pre-tier way: merged with, or topped up by, the sources after it),
    ``skipped`` / ``not_read`` (not read, ``reason`` says why) or ``declined``.
    ``region``: what the source would be asked for beyond the request's own filters (the
    complementary bounds of earlier tiers, a Spec or None)."""

    source: str
    holds: str
    action: str
    verdict: str
    region: Spec | None = None
    mirror_of: str | None = None


@dataclass
class Plan:
    """The sources a request would read, in order (see :meth:`FetcherChain.plan`).

    ``disjoint``: no row can come from two of the reading steps (each later tier's query
    excludes what the earlier ones hold), so a count over the request is the sum of the
    reading steps' counts over their regions. ``reading``: the steps that read (``serves``,
    ``prefix`` or ``reads``)."""

    steps: list[PlanStep]
    disjoint: bool

    @property
    def reading(self) -> list[PlanStep]:
        return [s for s in self.steps if s.action in ("serves", "prefix", "reads")]


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


def _and(spec: Spec | None, bounds: Sequence[Spec]) -> Spec | None:
    if spec is None:
        return None
    for bound in bounds:
        spec = spec & bound
    return spec


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
            target = hook(fetcher, "mirror_of")
            if not target:
                continue
            for other in self.fetchers:
                if other is not fetcher and other.name not in result and (
                        other.name == target or hook(other, "database") == target):
                    result[fetcher.name] = other.name
                    break
        self._mirrors = result
        return result

    def stores(self, request: FetchRequest, attempts: list[Attempt] | None = None
               ) -> list[Store]:
        """The stores that can serve ``request``, in priority order: each fetcher with the
        mirrors that stand in for it, ``holds`` evaluated once per store (the primary's, which
        its mirrors share). Fetchers that decline are
        recorded in ``attempts``."""
        mirrors = self.mirrors()
        by_name = {f.name: f for f in self.fetchers}

        def store_of(name: str) -> str:
            while name in mirrors:  # a mirror of a mirror stands in for the same store
                name = mirrors[name]
            return name

        groups: dict[str, Store] = {}
        for fetcher in self.fetchers:
            key = store_of(fetcher.name)
            if key not in groups:
                groups[key] = Store([], hook(by_name[key], "get_holds")(), primary=key)
        # Members stay in priority order (a replica listed first takes the reads, its primary
        # stands in for it); either way one of them is read, never two.
        for fetcher, verdict in self.verdicts(request):
            if verdict:
                groups[store_of(fetcher.name)].members.append(fetcher)
            elif attempts is not None:
                self._record(attempts, Attempt(fetcher.name, "declined", verdict.reason))
        return [s for s in groups.values() if s.members]

    def plan(self, request: FetchRequest) -> Plan:
        """What this chain would read for ``request`` if every source answered: per fetcher,
        its ``holds`` and its verdict (see :class:`PlanStep`). ``request`` is the fetch
        stage's request (``stages.fetch_request``)."""
        mirrors = self.mirrors()
        stores = self.stores(request)
        steps: dict[str, PlanStep] = {}
        tiered = self._tiered_chain(stores, request)
        bounds: list[Spec] = []
        boundaries: list[str] = []
        disjoint = True
        done = False
        for i, store in enumerate(stores):
            primary, rest = store.members[0], store.members[1:]
            text = describe_holds(store.holds)
            region = _and(request.spec, bounds) if request.spec is not None else None
            extra = _and(MatchAll(), bounds) if bounds else None
            if done:
                steps[primary.name] = PlanStep(primary.name, text, "not_read",
                                               "not read: an earlier source serves the page",
                                               extra)
            elif not tiered:
                steps[primary.name] = PlanStep(primary.name, text, "reads", self._legacy_verdict(
                    i, len(stores)), extra)
                disjoint = disjoint and len(stores) == 1
            else:
                relation = self._relation(store, region, request)
                some_only = False
                if request.single_source and relation not in (Relation.ALL, Relation.NONE):
                    some_only = self._covered_later(stores[i + 1:], region, request)
                    if not some_only:
                        relation = Relation.ALL  # none holds them all: the first serves alone
                if some_only:
                    steps[primary.name] = PlanStep(
                        primary.name, text, "skipped",
                        "skipped: holds only some of the matching rows, and a relevance or "
                        "facets page comes from one that holds them all")
                elif relation is Relation.ALL:
                    says = ("serves alone: it holds every matching row" if not bounds
                            else "serves the rest, beyond " + " and ".join(boundaries))
                    steps[primary.name] = PlanStep(primary.name, text, "serves", says, extra)
                    done = True
                elif relation is Relation.PREFIX:
                    assert store.holds is not None
                    steps[primary.name] = PlanStep(
                        primary.name, text, "prefix",
                        f"serves the prefix {describe_holds(store.holds)}; later sources are "
                        f"asked only beyond it", extra)
                    bounds.append(~store.holds)
                    boundaries.append(describe_holds(store.holds))
                elif relation is Relation.NONE:
                    steps[primary.name] = PlanStep(primary.name, text, "not_read",
                                                   "not read: it holds none of the matching rows")
                elif self._covered_later(stores[i + 1:], region, request):
                    steps[primary.name] = PlanStep(
                        primary.name, text, "skipped",
                        f"skipped: {self._ordering_text(request)} is not aligned with its "
                        f"holds")
                else:
                    for later in stores[i:]:
                        steps[later.members[0].name] = PlanStep(
                            later.members[0].name, describe_holds(later.holds), "reads",
                            "merged: no source holds every matching row, so every one is "
                            "read and merged", extra)
                    disjoint = False
                    break
            for mirror in rest:
                steps[mirror.name] = PlanStep(
                    mirror.name, text, "not_read",
                    f"not read: mirror of {primary.name}, which answered"
                    if primary.name == store.primary else
                    f"not read: {primary.name} is read first; this one only in its place",
                    mirror_of=mirrors.get(mirror.name))
        result = []
        for fetcher in self.fetchers:
            if fetcher.name in steps:  # a member of a store: it accepted the request
                result.append(steps[fetcher.name])
                continue
            verdict = _verdict(fetcher, request)
            if not verdict:
                result.append(PlanStep(fetcher.name, describe_holds(hook(fetcher, "get_holds")()),
                                       "declined", verdict.reason,
                                       mirror_of=mirrors.get(fetcher.name)))
        return Plan(result, disjoint)

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
        stores = self.stores(request, attempts)
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
    def _relation(store: Store, region: Spec | None, request: FetchRequest) -> Relation:
        return relation(store.holds, region, request.ordering, request.after)

    def _covered_later(self, later: list[Store], region: Spec | None,
                       request: FetchRequest) -> bool:
        return any(self._relation(s, region, request) is Relation.ALL for s in later)

    @staticmethod
    def _ordering_text(request: FetchRequest) -> str:
        return str(request.ordering.fields[0])

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
        need, skip = limit + 1, offset
        rows: list[Any] = []
        sources: list[str] = []
        bounds: list[Spec] = []
        pending = list(stores)
        why: str | None = None
        answered = False
        while need > 0 and pending:
            store = pending[0]
            region = _and(request.spec, bounds)
            rel = self._relation(store, region, request)
            if rel is Relation.NONE:
                self._not_read(store, attempts, "holds none of the rows this page needs")
                pending.pop(0)
                continue
            if request.single_source and rel is not Relation.ALL:
                # A relevance or facets page is one source's: one that holds every matching
                # row, when a later one does; else the first that holds some serves alone.
                if self._covered_later(pending[1:], region, request):
                    self._not_read(store, attempts, "holds only some of the matching rows: a "
                                                    "relevance or facets page comes from one "
                                                    "that holds them all")
                    pending.pop(0)
                    continue
                rel = Relation.ALL
            if rel is Relation.UNALIGNED:
                if self._covered_later(pending[1:], region, request):
                    self._not_read(store, attempts, f"skipped: {self._ordering_text(request)} "
                                                    f"is not aligned with its holds")
                    pending.pop(0)
                    continue
                merged = self._merge_all(pending, replace(request, spec=region), skip, need,
                                         attempts, why=why)
                if merged is not None:
                    items, names = merged
                    rows.extend(items)
                    sources.extend(n for n in names if n not in sources)
                    answered = True
                pending = []
                break
            asked = replace(request, spec=region, offset=skip, size=need)
            self._check_deadline(request, attempts, answered=answered)
            got = self._call_store(store, asked, attempts, fallback=why)
            pending.pop(0)
            if got is None:
                why = "unavailable"
                continue  # the next sources are planned again for the same region
            answered = True
            member, result = got
            items = result.items
            if rel is Relation.PREFIX:
                assert store.holds is not None
                held = store.holds
                cut = next((i for i, row in enumerate(items) if not held.matches(row)),
                           len(items))
                items = items[:cut]  # rows it still has past its boundary are the next tier's
            rows.extend(items)
            need -= len(items)
            if items and member.name not in sources:
                sources.append(member.name)
            if rel is Relation.ALL or result.complete:
                self._not_read_all(pending, attempts,
                                   f"{member.name} holds every row of the page")
                pending = []
                break
            if need <= 0:
                break
            why = "empty" if not items else "incomplete"
            assert store.holds is not None  # a PREFIX tier declares holds
            if items or skip == 0:
                skip = 0
            else:
                counted = self._count(member, replace(asked, spec=_and(region, [store.holds]),
                                                      offset=0), attempts)
                if counted is None:
                    continue  # unavailable: the sources after it serve its rows too
                skip = max(0, skip - counted)
            bounds.append(~store.holds)
        for rest in pending:
            self._not_read(rest, attempts, "page already full")
        if not answered and any(a.outcome in ("unavailable", "timeout") for a in attempts):
            self._raise_unavailable(attempts)
        page = rows[:limit]
        return ChainResult(page, len(rows) > limit, tuple(sources), attempts)

    def _count(self, member: Any, request: FetchRequest, attempts: list[Attempt]
               ) -> int | None:
        """How many rows of ``request`` ``member`` holds: its ``count`` hook, else its rows
        read (None when it became unavailable)."""
        start = time.perf_counter()
        try:
            counted = hook(member, "count")(request)
            if counted is None:
                held = request.spec
                result = self._fetch(member, replace(request, size=max(request.offset, 1)))
                counted = len([r for r in result.items if held is None or held.matches(r)])
        except UNAVAILABLE_ERRORS as exc:
            self._record(attempts, Attempt(member.name, "unavailable", _reason(exc),
                                           duration=time.perf_counter() - start))
            return None
        self._record(attempts, Attempt(member.name, "ok", "count", count=0,
                                       duration=time.perf_counter() - start,
                                       meta={"count": counted}))
        return int(counted)

    def _merge_all(self, stores: list[Store], request: FetchRequest, skip: int, need: int,
                   attempts: list[Attempt], *, why: str | None = None
                   ) -> tuple[list[Any], list[str]] | None:
        """Read every store for ``skip + need`` rows and merge (no store holds them all)."""
        wide = replace(request, offset=0, size=skip + need)
        if self.mode is FallbackMode.PARALLEL:
            answers = self._parallel(stores, wide, attempts, raise_if_none=False)
        else:
            answers = []
            for store in stores:
                self._check_deadline(request, attempts, answered=bool(answers))
                got = self._call_store(store, wide, attempts, fallback=why)
                if got is not None:
                    answers.append((got[0].name, got[1].items))
        if not answers:
            return None
        page = self._page(answers, request.ordering, skip, need, attempts)
        return page.items, list(page.sources)

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
        failed_members = {a.source for a in attempts if a.outcome in ("unavailable", "timeout")}
        for i, store in enumerate(stores):
            names = {m.name for m in store.members}
            if not names & failed_members or names & answered:
                continue
            covered = any(
                {m.name for m in other.members} & answered
                and contains(other.holds, store.holds)
                and (other.declared or j > i)
                for j, other in enumerate(stores) if other is not store)
            if not covered:
                return True
        return False

    # -- the pre-tier modes (no source declares holds) ------------------------------------------
    def _legacy(self, stores: list[Store], request: FetchRequest, offset: int, limit: int,
                attempts: list[Attempt]) -> ChainResult:
        if self.mode is FallbackMode.FIRST_SUCCESS:
            return self._first_success(stores, request, offset, limit, attempts)
        wide, skip = self.source_request(request, candidates=len(stores), offset=offset,
                                         limit=limit)
        if self.mode is FallbackMode.PARALLEL:
            answers = self._parallel(stores, wide, attempts)
        else:
            answers = self._sequential(stores, wide, wide.size, attempts)
        return self._page(answers, request.ordering, skip, limit, attempts)

    def _sequential(
        self, candidates: list[Store], request: FetchRequest, need: int,
        attempts: list[Attempt],
    ) -> list[tuple[str, list[Any]]]:
        answers: list[tuple[str, list[Any]]] = []
        merged = 0
        why: str | None = None  # why this source is read: the previous one fell short
        for i, store in enumerate(candidates):
            if merged >= need:
                for rest in candidates[i:]:
                    self._not_read(rest, attempts, "page already full")
                break
            self._check_deadline(request, attempts, answered=bool(answers))
            got = self._call_store(store, request, attempts, fallback=why)
            if got is None:
                why = "unavailable"
                continue
            member, result = got
            why = "empty" if not result.items else "incomplete"
            answers.append((member.name, result.items))
            if result.complete:
                self._not_read_all(candidates[i + 1 :], attempts,
                                   f"{member.name} answered completely")
                break
            merged = (
                len(result.items) if len(answers) == 1
                else len(merge_streams([a for _, a in answers], request.ordering))
            )
        if not answers:
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
            futures: dict[Future[Any], tuple[int, Any]] = {}
            inline: list[tuple[int, Any]] = []
            for index, step in tries.items():
                member = candidates[index].members[step]
                if hook(member, "runs_inline")(request):
                    inline.append((index, member))
                else:
                    futures[self._submit(self._timed, member, request)] = (index, member)
            answered: dict[int, FetchResult | None] = {}
            for index, member in inline:
                answered[index] = self._call(member, request, attempts)
            done, pending = wait(futures, timeout=request.remaining)
            for future in done:
                index, member = futures[future]
                answered[index] = self._collect(member, future, attempts)
            for future in pending:
                future.cancel()
                abandoned = True
                self._record(attempts, Attempt(futures[future][1].name, "timeout",
                                               "abandoned at the deadline"))
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
                elif index in answered and step + 1 < len(members) \
                        and request.remaining != 0.0:
                    next_tries[index] = step + 1
            tries = next_tries
        answers = []
        for index in range(len(candidates)):
            if index in results:
                member, result = results[index]
                answers.append((member.name, result.items))
                if result.complete:  # later sources' rows would not be part of its answer
                    break
        if not answers and raise_if_none:
            if abandoned:
                raise DeadlineExceeded("No source answered before the deadline.", stage="fetch")
            self._raise_unavailable(attempts)
        return answers

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
                return ChainResult(items, has_more, (member.name,), attempts)
            for rest in candidates[i + 1 :]:
                if has_more:
                    self._not_read(rest, attempts, "page served")
                    continue
                # The page ran out here: ask the later sources whether they hold rows past it.
                probe = replace(request, offset=0, size=1,
                                after=request.ordering.values(items[-1]))
                found = self._call_store(rest, probe, attempts, probe=True)
                if found is not None and found[1].items:
                    has_more = True  # a source without such rows says nothing of the next one
                    break
            return ChainResult(items, has_more, (member.name,), attempts)
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
            except (SourceUnavailable, OperationalError, InterfaceError, DataError) as exc:
                if caused_by_request(exc):
                    if is_recording(span):
                        span.set_attribute("datapipe.outcome", "bad_request")
                        span.set_attribute("datapipe.reason", _reason(exc))
                    raise _bad_request(request, exc) from exc
                if not isinstance(exc, UNAVAILABLE_ERRORS):
                    raise
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


def _reason(exc: BaseException) -> str:
    if isinstance(exc, SourceUnavailable):
        return exc.reason
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
