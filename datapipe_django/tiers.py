"""Tiered sources: what a store holds, and what that means for one request.

A fetcher's ``holds`` (a :class:`~datapipe_django.specs.Spec`, or a zero-argument callable
returning one, evaluated once per execution) says which rows its store holds; no ``holds``
means every row. The chain asks this module, per request and per store, one question: how
do the store's rows relate to the rows the request still needs (its *region*: the request's
filters, its cursor and the bounds earlier tiers already took)?

* ``ALL``: the store holds every row of the region: it can serve the region alone, in any
  ordering.
* ``PREFIX``: the store's rows are the beginning of the region in the request's ordering
  (``holds`` is a range on the ordering's first field, on the side that comes first: a
  primary holding ``created_at >= now - 30 days`` for ``-created_at``). It serves them; the
  next tier is asked only for the rest, with ``~holds`` in its query.
* ``NONE``: the store holds none of the region's rows (a filter or a cursor already past
  its boundary): not read.
* ``UNALIGNED``: anything else (``-amount`` over a date window): the store alone would give a
  wrong page.

The reasoning is on intervals of one field and is *sound*, never complete: a ``holds`` it
cannot read (an ``Or``, a leaf on a relation) is ``UNALIGNED`` unless the region is provably
outside or inside it, so a store is only ever skipped or trusted when that is certain.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from datapipe_django.paging import Ordering
from datapipe_django.specs import And, Eq, In, IsNull, MatchAll, MatchNone, Not, Range, Spec

__all__ = ["Interval", "Move", "Plan", "PlanStep", "Relation", "TierWalk", "describe_holds",
           "evaluate_holds", "narrow", "relation"]

HoldsArg = Spec | Callable[[], Spec] | None


class Relation(enum.Enum):
    """How a store's rows relate to a request's region (see the module docstring)."""

    ALL = "all"
    PREFIX = "prefix"
    NONE = "none"
    UNALIGNED = "unaligned"


def check_holds(owner: str, holds: Any) -> HoldsArg:
    """``holds`` as given to a fetcher, validated (``ImproperlyConfigured`` otherwise)."""
    if holds is None or isinstance(holds, Spec) or callable(holds):
        return holds  # type: ignore[no-any-return]
    raise ImproperlyConfigured(
        f"{owner}: `holds` must be a Spec (e.g. Range('created_at', gte=...)) or a "
        f"zero-argument callable returning one, not {holds!r}.")


def evaluate_holds(owner: str, holds: HoldsArg) -> Spec | None:
    """The ``Spec`` a ``holds`` declaration stands for now (calls a callable once)."""
    if holds is None or isinstance(holds, Spec):
        return holds
    value = holds()
    if value is not None and not isinstance(value, Spec):
        raise ImproperlyConfigured(
            f"{owner}: the `holds` callable returned {value!r}; it must return a Spec.")
    return value


@dataclass(frozen=True)
class Interval:
    """The values one field can take in a set of rows: ``values`` (any non-NULL one may
    occur) between ``lo`` and ``hi`` (None: unbounded; ``*_open``: strict), ``nulls`` (NULL
    may occur)."""

    lo: Any = None
    lo_open: bool = False
    hi: Any = None
    hi_open: bool = False
    values: bool = True
    nulls: bool = True

    @property
    def empty(self) -> bool:
        if self.nulls:
            return False
        if not self.values:
            return True
        if self.lo is None or self.hi is None:
            return False
        return bool(self.lo > self.hi) or (self.lo == self.hi and (self.lo_open or self.hi_open))

    def __and__(self, other: Interval) -> Interval:
        lo, lo_open = _tighter(self.lo, self.lo_open, other.lo, other.lo_open, low=True)
        hi, hi_open = _tighter(self.hi, self.hi_open, other.hi, other.hi_open, low=False)
        return Interval(lo, lo_open, hi, hi_open, self.values and other.values,
                        self.nulls and other.nulls)

    def within(self, other: Interval) -> bool:
        """Every row of this interval is in ``other``."""
        if self.empty:
            return True
        if self.nulls and not other.nulls:
            return False
        if not self.values:
            return True
        return other.values and self._above(other) and self._below(other)

    def _above(self, other: Interval) -> bool:
        """No value of this interval is below ``other``'s lower bound."""
        if other.lo is None:
            return True
        if self.lo is None or self.lo < other.lo:
            return False
        return not (self.lo == other.lo and other.lo_open and not self.lo_open)

    def _below(self, other: Interval) -> bool:
        """No value of this interval is above ``other``'s upper bound."""
        if other.hi is None:
            return True
        if self.hi is None or self.hi > other.hi:
            return False
        return not (self.hi == other.hi and other.hi_open and not self.hi_open)


def _tighter(a: Any, a_open: bool, b: Any, b_open: bool, *, low: bool) -> tuple[Any, bool]:
    if a is None:
        return b, b_open
    if b is None or a == b:
        return a, a_open or (b_open if a == b else False)
    if (a > b) == low:
        return a, a_open
    return b, b_open


EVERYTHING = Interval()


def _range(spec: Range) -> Interval:
    return Interval(lo=spec.gt if spec.gt is not None else spec.gte, lo_open=spec.gt is not None,
                    hi=spec.lt if spec.lt is not None else spec.lte, hi_open=spec.lt is not None,
                    nulls=False)


def _eq(spec: Eq) -> Interval:
    if spec.value is None:
        return Interval(values=False)
    return Interval(spec.value, False, spec.value, False, nulls=False)


def _in(spec: In) -> Interval:
    values = [v for v in spec.values if v is not None]
    if not values:
        return Interval(values=False, nulls=False)
    return Interval(min(values), False, max(values), False, nulls=False)


def _is_null(spec: IsNull) -> Interval:
    return Interval(values=False) if spec.value else Interval(nulls=False)


def _not_range(spec: Range) -> Interval:
    """The values outside a one-sided range (a two-sided one's outside is two intervals)."""
    bounds = set(spec.bounds())
    if bounds <= {"gt", "gte"}:
        lo = spec.gt if spec.gt is not None else spec.gte
        return Interval(hi=lo, hi_open=spec.gte is not None)
    if bounds <= {"lt", "lte"}:
        hi = spec.lt if spec.lt is not None else spec.lte
        return Interval(lo=hi, lo_open=spec.lte is not None)
    return EVERYTHING


def _not_is_null(spec: IsNull) -> Interval:
    return Interval(nulls=False) if spec.value else Interval(values=False)


#: The interval of a leaf on the field, by leaf type; of its negation (``Not``), by the
#: negated leaf's type. A leaf on another field, and any other spec, says nothing (EVERYTHING).
_LEAVES: tuple[tuple[type[Spec], Callable[[Any], Interval]], ...] = (
    (Range, _range), (Eq, _eq), (In, _in), (IsNull, _is_null))
_NEGATED_LEAVES: tuple[tuple[type[Spec], Callable[[Any], Interval]], ...] = (
    (Range, _not_range), (IsNull, _not_is_null))


def _leaf(spec: Spec, names: frozenset[str],
          table: tuple[tuple[type[Spec], Callable[[Any], Interval]], ...]) -> Interval:
    if getattr(spec, "field", None) not in names:
        return EVERYTHING
    for kind, read in table:
        if isinstance(spec, kind):
            return read(spec)
    return EVERYTHING


def interval_of(spec: Spec | None, names: frozenset[str]) -> Interval:
    """A sound over-approximation of the values the field (known by ``names``) takes in the
    rows ``spec`` matches."""
    if spec is None or isinstance(spec, MatchAll):
        return EVERYTHING
    if isinstance(spec, MatchNone):
        return Interval(values=False, nulls=False)
    if isinstance(spec, And):
        result = EVERYTHING
        for child in spec.children:
            result = result & interval_of(child, names)
        return result
    if isinstance(spec, Not):
        return _leaf(spec.child, names, _NEGATED_LEAVES)
    return _leaf(spec, names, _LEAVES)


def holds_interval(holds: Spec, names: frozenset[str]) -> Interval | None:
    """The interval ``holds`` is exactly (not approximately), or None when it is not a
    range (or a conjunction of ranges) on that field."""
    parts = holds.children if isinstance(holds, And) else (holds,)
    if not parts or not all(isinstance(p, Range) and p.field in names for p in parts):
        return None
    return interval_of(holds, names)


def cursor_interval(ordering: Ordering, after: Sequence[Any] | None) -> Interval:
    """The values of the ordering's first field in the rows after a cursor position."""
    if after is None:
        return EVERYTHING
    first, value = ordering.fields[0], after[0]
    if value is None:
        return Interval(values=False)  # NULLs sort last: only NULLs remain
    if first.descending:
        return Interval(hi=value, nulls=first.nullable)
    return Interval(lo=value, nulls=first.nullable)


def _names(field: Any) -> frozenset[str]:
    return frozenset({field.name, field.attname})


def relation(holds: Spec | None, region: Spec | None, ordering: Ordering,
             after: Sequence[Any] | None) -> Relation:
    """How a store holding ``holds`` relates to the rows matching ``region`` after ``after``
    in ``ordering`` (``region``: the request's spec and the bounds of earlier tiers)."""
    if holds is None or isinstance(holds, MatchAll):
        return Relation.ALL
    if isinstance(holds, MatchNone):
        return Relation.NONE
    fields = sorted(holds.fields())
    if len(fields) != 1:
        return Relation.UNALIGNED
    first = ordering.fields[0]
    sorted_on = _names(first.field)
    names = sorted_on if fields[0] in sorted_on else frozenset(fields)
    try:
        wanted = interval_of(region, names)
        if names == sorted_on:
            wanted = wanted & cursor_interval(ordering, after)
        return _relate(wanted, holds_interval(holds, names), first.descending,
                       aligned=names == sorted_on)
    except TypeError:  # values that do not compare (naive and aware datetimes...)
        return Relation.UNALIGNED


def _relate(wanted: Interval, exact: Interval | None, descending: bool, *,
            aligned: bool) -> Relation:
    """How rows whose field is in ``exact`` (None: not a range) relate to the ``wanted`` ones;
    ``aligned``: the field is the ordering's first (``descending`` or not)."""
    if wanted.empty:
        return Relation.NONE
    if exact is None:
        return Relation.UNALIGNED
    if (wanted & exact).empty:
        return Relation.NONE
    if wanted.within(exact):
        return Relation.ALL
    if not aligned:
        return Relation.UNALIGNED
    # What of the region lies on the side of `holds` that sorts first? None: a prefix.
    return Relation.PREFIX if (wanted & _sorting_before(exact, descending)).empty \
        else Relation.UNALIGNED


def _sorting_before(exact: Interval, descending: bool) -> Interval:
    """The non-NULL values that sort before every value of ``exact``."""
    if descending:
        if exact.hi is None:
            return Interval(values=False, nulls=False)
        return Interval(lo=exact.hi, lo_open=not exact.hi_open, nulls=False)
    if exact.lo is None:
        return Interval(values=False, nulls=False)
    return Interval(hi=exact.lo, hi_open=not exact.lo_open, nulls=False)


def describe_holds(holds: Spec | None) -> str:
    """``created_at ≥ 2026-01-01 00:00:00+00:00`` for a range; the spec's repr otherwise."""
    if holds is None:
        return "every row"
    parts = holds.children if isinstance(holds, And) else (holds,)
    if all(isinstance(p, Range) for p in parts):
        signs = {"gt": ">", "gte": "≥", "lt": "<", "lte": "≤"}
        return " and ".join(f"{p.field} {signs[k]} {v}" for p in parts  # type: ignore[attr-defined]
                            for k, v in p.bounds().items())  # type: ignore[attr-defined]
    return repr(holds)


def contains(outer: Spec | None, inner: Spec | None) -> bool:
    """Whether a store holding ``outer`` provably holds every row a store holding ``inner``
    holds (None: every row)."""
    if outer is None or isinstance(outer, MatchAll):
        return True
    if inner is None:
        return False
    if isinstance(inner, MatchNone):
        return True
    fields = outer.fields()
    if len(fields) != 1:
        return outer == inner
    names = frozenset(fields)
    exact = holds_interval(outer, names)
    if exact is None:
        return outer == inner
    try:
        return interval_of(inner, names).within(exact)
    except TypeError:
        return False


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
    """The sources a request would read, in order (see ``FetcherChain.plan``).

    ``disjoint``: no row can come from two of the reading steps (each later tier's query
    excludes what the earlier ones hold), so a count over the request is the sum of the
    reading steps' counts over their regions. ``reading``: the steps that read (``serves``,
    ``prefix`` or ``reads``)."""

    steps: list[PlanStep]
    disjoint: bool

    @property
    def reading(self) -> list[PlanStep]:
        return [s for s in self.steps if s.action in ("serves", "prefix", "reads")]


class Move(enum.Enum):
    """What the chain does with one store for the region still to serve (:meth:`TierWalk.next`):
    the tier rules, in one place, for the page and for its plan alike."""

    #: It holds every row of the region (or serves a single-source page that no later store
    #: holds whole): read it, no store after it.
    SERVES = "serves"
    #: It holds the region's first rows in the request's ordering: read them; later stores
    #: are asked only beyond its ``holds``.
    PREFIX = "prefix"
    #: It holds none of the region's rows.
    HOLDS_NONE = "holds_none"
    #: A single-source page (relevance, facets) and a later store holds every row.
    SKIP_SOME = "skip_some"
    #: The ordering is not aligned with its ``holds`` and a later store holds every row.
    SKIP_UNALIGNED = "skip_unaligned"
    #: No store holds every row and the ordering is not aligned: read it and every later
    #: store, merged.
    MERGE = "merge"


def narrow(spec: Spec | None, bounds: Sequence[Spec]) -> Spec | None:
    """``spec`` and every one of ``bounds`` (None stays None: no spec to narrow)."""
    if spec is None:
        return None
    for bound in bounds:
        spec = spec & bound
    return spec


class TierWalk:
    """The walk over declared tiers for one request: :meth:`next` gives each store, in
    priority order, with its :class:`Move` for the region still to serve (the request's spec
    narrowed by ``~holds`` of every tier :meth:`take` was told served its prefix). A store that
    could not answer is simply not taken: the stores after it are decided for the same region.

    ``stores``: objects with a ``holds`` (a Spec, or None for every row)."""

    def __init__(self, stores: Sequence[Any], spec: Spec | None, ordering: Ordering,
                 after: Sequence[Any] | None, *, single_source: bool) -> None:
        self.pending = list(stores)
        self.bounds: list[Spec] = []
        self._spec = spec
        self._ordering = ordering
        self._after = after
        self._single = single_source

    @property
    def region(self) -> Spec | None:
        """The rows still to serve: the request's spec beyond the tiers taken so far."""
        return narrow(self._spec, self.bounds)

    @property
    def beyond(self) -> Spec | None:
        """What a store is asked for beyond the request's own filters (None: nothing)."""
        return narrow(MatchAll(), self.bounds) if self.bounds else None

    def next(self) -> tuple[Any, Move] | None:
        """The next store and what to do with it (None when every store was given)."""
        if not self.pending:
            return None
        store = self.pending.pop(0)
        return store, self._move(store.holds, self.region)

    def take(self, store: Any) -> None:
        """``store`` served its prefix: later stores are asked only beyond its ``holds``."""
        self.bounds.append(~store.holds)

    def drain(self) -> list[Any]:
        """The stores not given yet (the walk ends)."""
        rest, self.pending = self.pending, []
        return rest

    def dry_run(self) -> tuple[dict[str, PlanStep], bool]:
        """The walk as if every store answered: the plan's step of each store (by name), and
        whether the reading steps are disjoint (no store merged with another)."""
        steps: dict[str, PlanStep] = {}
        boundaries: list[str] = []
        while (taken := self.next()) is not None:
            store, move = taken
            text = describe_holds(store.holds)
            if move is Move.MERGE:
                for later in [store, *self.drain()]:
                    steps[later.name] = PlanStep(
                        later.name, describe_holds(later.holds), "reads",
                        "merged: no source holds every matching row, so every one is read "
                        "and merged", self.beyond)
                return steps, False
            if move is Move.SERVES:
                says = ("serves alone: it holds every matching row" if not boundaries
                        else "serves the rest, beyond " + " and ".join(boundaries))
                steps[store.name] = PlanStep(store.name, text, "serves", says, self.beyond)
                for later in self.drain():
                    steps[later.name] = PlanStep(
                        later.name, describe_holds(later.holds), "not_read",
                        "not read: an earlier source serves the page", self.beyond)
            elif move is Move.PREFIX:
                steps[store.name] = PlanStep(
                    store.name, text, "prefix", f"serves the prefix {text}; later sources "
                    f"are asked only beyond it", self.beyond)
                self.take(store)
                boundaries.append(text)
            else:
                action = "not_read" if move is Move.HOLDS_NONE else "skipped"
                steps[store.name] = PlanStep(store.name, text, action, _PLAN_SKIPS[move].format(
                    str(self._ordering.fields[0])))
        return steps, True

    def _relation(self, holds: Spec | None, region: Spec | None) -> Relation:
        return relation(holds, region, self._ordering, self._after)

    def _move(self, holds: Spec | None, region: Spec | None) -> Move:
        found = self._relation(holds, region)
        if found is Relation.NONE:
            return Move.HOLDS_NONE
        if found is Relation.ALL:
            return Move.SERVES
        if not self._single and found is Relation.PREFIX:
            return Move.PREFIX
        # A relevance or facets page is one source's: one that holds every matching row, when
        # a later one does, else the first that holds some serves alone. An unaligned store
        # gives way to a later one holding every row, else every store is read and merged.
        covered = any(self._relation(s.holds, region) is Relation.ALL for s in self.pending)
        if self._single:
            return Move.SKIP_SOME if covered else Move.SERVES
        return Move.SKIP_UNALIGNED if covered else Move.MERGE


#: What the plan says of a store the walk does not read (``PlanStep.verdict``), by move.
_PLAN_SKIPS = {
    Move.HOLDS_NONE: "not read: it holds none of the matching rows",
    Move.SKIP_SOME: "skipped: holds only some of the matching rows, and a relevance or facets "
                    "page comes from one that holds them all",
    Move.SKIP_UNALIGNED: "skipped: {} is not aligned with its holds",
}
