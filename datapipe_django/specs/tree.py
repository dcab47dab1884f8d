"""The :class:`Spec` tree: leaves, composites and constants, and their combinators.

Each node compiles itself to a ``Q`` (:meth:`Spec.to_q`, through :mod:`.q`) and evaluates
itself in memory (:meth:`Spec.matches`, through :mod:`.memory`); :meth:`Spec.to_search`
dispatches on the node's class in :mod:`.search`. See :mod:`datapipe_django.specs`.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property
from typing import Any, ClassVar

from django.db.models import Q

from datapipe_django.specs.memory import pg_upper, prepare, target_field, values_at
from datapipe_django.specs.q import leaf_q

__all__ = [
    "And",
    "Contains",
    "EndsWith",
    "Eq",
    "IEq",
    "In",
    "IsNull",
    "Leaf",
    "MatchAll",
    "MatchNone",
    "Not",
    "Or",
    "Range",
    "Spec",
    "StartsWith",
    "Uncompilable",
    "and_all",
]


class Uncompilable(Exception):
    """A filter of a FilterSet cannot be turned into a :class:`Spec`.

    ``filter_name`` is the FilterSet's filter (``None`` when the FilterSet as a whole cannot be
    compiled, e.g. it overrides ``filter_queryset``); ``reason`` says why. This is not a
    :class:`~datapipe_django.errors.PipelineError`: a fetcher that needs a spec catches it and
    declines the request, so the filter is never silently dropped.
    """

    def __init__(self, filter_name: str | None, reason: str) -> None:
        self.filter_name = filter_name
        self.reason = reason
        super().__init__(f"{filter_name or 'FilterSet'}: {reason}")

class Spec:
    """Base of every specification node.

    Subclasses implement :meth:`to_q`, :meth:`matches` and :meth:`fields`; :meth:`to_search`
    dispatches on the node's class (:mod:`datapipe_django.specs.search`), so a custom node
    overrides it only to be searchable. Combine specs with ``&``, ``|`` and ``~``.
    """

    def to_q(self) -> Q:
        """Compile to a Django ``Q`` usable on any database alias."""
        raise NotImplementedError(f"{type(self).__name__}.to_q() is not implemented.")

    def matches(self, obj: Any) -> bool:
        """Evaluate in memory on ``obj`` (a model instance, a mapping or any object)."""
        raise NotImplementedError(f"{type(self).__name__}.matches() is not implemented.")

    def to_search(self, fields: Any = None, *, model: Any = None) -> dict[str, Any]:
        """Compile to an Elasticsearch/OpenSearch query dict (plain dicts, no client needed).

        ``fields`` maps field paths to the engine's field names: a
        :class:`~datapipe_django.search.FieldMap` (built from a Document's mapping) or a dict;
        by default ``owner__name`` is ``owner.name``. ``model`` prepares values with the model
        fields, as :meth:`matches` does. See :mod:`datapipe_django.specs.search`.
        """
        from datapipe_django.specs.search import compile_spec

        return compile_spec(self, fields=fields, model=model)

    def fields(self) -> set[str]:
        """The field paths this spec reads (e.g. ``{"status", "owner__name"}``)."""
        raise NotImplementedError(f"{type(self).__name__}.fields() is not implemented.")

    def children_specs(self) -> tuple[Spec, ...]:
        """The direct sub-specs (empty for a leaf); for compilers walking the tree."""
        return ()

    def __and__(self, other: object) -> Spec:
        if not isinstance(other, Spec):
            return NotImplemented
        return _combine(And, MatchAll, self, other)

    def __or__(self, other: object) -> Spec:
        if not isinstance(other, Spec):
            return NotImplemented
        return _combine(Or, MatchNone, self, other)

    def __invert__(self) -> Spec:
        return Not(self)


@dataclass(frozen=True)
class MatchAll(Spec):
    """Matches every row: the neutral element of ``&``. ``to_q()`` is ``Q()``."""

    def to_q(self) -> Q:
        return Q()

    def matches(self, obj: Any) -> bool:
        return True

    def fields(self) -> set[str]:
        return set()


@dataclass(frozen=True)
class MatchNone(Spec):
    """Matches no row: the neutral element of ``|`` (``~MatchAll()``, ``In(f, [])``)."""

    def to_q(self) -> Q:
        return Q(pk__in=[])

    def matches(self, obj: Any) -> bool:
        return False

    def fields(self) -> set[str]:
        return set()


@dataclass(frozen=True)
class Leaf(Spec):
    """A condition on one field path (``"status"``, ``"owner__name"``).

    ``lookup`` names the Django lookup the leaf compiles to and ``field`` the path it reads, so
    another compiler (the search backend's ``to_search``) can dispatch on them. In memory, the
    path is followed attribute by attribute (across related objects, and any related row of a
    to-many relation); values are compared after the model field prepared them, as Django does.
    """

    field: str
    lookup: ClassVar[str] = "exact"

    def fields(self) -> set[str]:
        return {self.field}

    def _values(self, obj: Any) -> Iterator[Any]:
        return values_at(obj, self.field)

    @cached_property
    def _prepared_by_field(self) -> dict[Any, Any]:
        return {}

    def _prepared(self, obj: Any, lookup: str, value: Any) -> Any:
        field = target_field(obj, self.field)
        if field is None:
            return value
        cache = self._prepared_by_field
        key = (field, lookup)
        try:
            return cache[key]
        except KeyError:
            prepared = cache[key] = prepare(field, lookup, value)
            return prepared
        except TypeError:  # an unhashable field (never for Django fields): no cache
            return prepare(field, lookup, value)


@dataclass(frozen=True)
class Eq(Leaf):
    """``field = value`` (Django ``exact``). ``Eq(field, None)`` is ``IsNull(field)``."""

    value: Any
    lookup: ClassVar[str] = "exact"

    def to_q(self) -> Q:
        return leaf_q(self.field, **{f"{self.field}__exact": self.value})

    def matches(self, obj: Any) -> bool:
        if self.value is None:
            return any(v is None for v in self._values(obj))
        expected = self._prepared(obj, "exact", self.value)
        return any(v is not None and v == expected for v in self._values(obj))


@dataclass(frozen=True)
class IEq(Leaf):
    """Case-insensitive equality (Django ``iexact``; ``UPPER(a) = UPPER(b)`` on PostgreSQL)."""

    value: Any
    lookup: ClassVar[str] = "iexact"

    def to_q(self) -> Q:
        return leaf_q(self.field, **{f"{self.field}__iexact": self.value})

    def matches(self, obj: Any) -> bool:
        if self.value is None:
            return any(v is None for v in self._values(obj))
        expected = pg_upper(str(self.value))
        return any(v is not None and pg_upper(str(v)) == expected for v in self._values(obj))


@dataclass(frozen=True)
class In(Leaf):
    """``field IN values``. An empty ``values`` matches nothing; None in ``values`` is ignored."""

    values: Sequence[Any]  # stored as a tuple
    lookup: ClassVar[str] = "in"

    def __post_init__(self) -> None:
        if isinstance(self.values, str | bytes) or not isinstance(self.values, Iterable):
            raise TypeError(
                f"In({self.field!r}, ...) needs an iterable of values, "
                f"not {type(self.values).__name__}."
            )
        object.__setattr__(self, "values", tuple(self.values))

    def to_q(self) -> Q:
        return leaf_q(self.field, **{f"{self.field}__in": list(self.values)})

    def matches(self, obj: Any) -> bool:
        values = [v for v in self.values if v is not None]
        if not values:
            return False
        prepared = self._prepared(obj, "in", values)
        wanted = [v for v in prepared if v is not None]
        return any(v is not None and v in wanted for v in self._values(obj))


_BOUNDS = (("gt", operator.gt), ("gte", operator.ge), ("lt", operator.lt), ("lte", operator.le))


@dataclass(frozen=True)
class Range(Leaf):
    """Open or closed bounds: ``Range("amount", gte=10, lt=20)``. At least one bound is needed.

    A NULL value never matches. ``to_q()`` adds ``field IS NOT NULL`` when a bound is a number,
    so that an out-of-range integer bound (which Django turns into "no condition" for
    ``gt``/``gte``/``lt``/``lte`` on integer columns) never lets NULL rows in.
    """

    gt: Any = None
    gte: Any = None
    lt: Any = None
    lte: Any = None
    lookup: ClassVar[str] = "range"

    def __post_init__(self) -> None:
        if all(getattr(self, name) is None for name, _ in _BOUNDS):
            raise ValueError(f"Range({self.field!r}) needs at least one of gt, gte, lt, lte.")

    def bounds(self) -> dict[str, Any]:
        """The given bounds, e.g. ``{"gte": 10, "lt": 20}``."""
        return {name: getattr(self, name) for name, _ in _BOUNDS if getattr(self, name) is not None}

    def to_q(self) -> Q:
        bounds = self.bounds()
        lookups = {f"{self.field}__{name}": value for name, value in bounds.items()}
        if any(_is_number(value) for value in bounds.values()):
            lookups[f"{self.field}__isnull"] = False
        return leaf_q(self.field, **lookups)

    def matches(self, obj: Any) -> bool:
        prepared = [
            (getattr(self, name), op, self._prepared(obj, name, getattr(self, name)))
            for name, op in _BOUNDS
            if getattr(self, name) is not None
        ]
        return any(
            v is not None and all(op(v, bound) for _, op, bound in prepared)
            for v in self._values(obj)
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


@dataclass(frozen=True)
class _Pattern(Leaf):
    value: Any
    case_insensitive: bool = False
    base_lookup: ClassVar[str] = ""

    @property
    def lookup(self) -> str:  # type: ignore[override]
        return f"i{self.base_lookup}" if self.case_insensitive else self.base_lookup

    def to_q(self) -> Q:
        return leaf_q(self.field, **{f"{self.field}__{self.lookup}": self.value})

    def _test(self, text: str, needle: str) -> bool:
        raise NotImplementedError

    def matches(self, obj: Any) -> bool:
        if self.value is None:
            raise ValueError("Cannot use None as a query value")
        fold = pg_upper if self.case_insensitive else str
        needle = fold(str(self.value))
        return any(v is not None and self._test(fold(str(v)), needle) for v in self._values(obj))


@dataclass(frozen=True)
class Contains(_Pattern):
    """``value`` occurs in the field's text (``contains``/``icontains``)."""

    base_lookup: ClassVar[str] = "contains"

    def _test(self, text: str, needle: str) -> bool:
        return needle in text


@dataclass(frozen=True)
class StartsWith(_Pattern):
    """The field's text starts with ``value`` (``startswith``/``istartswith``)."""

    base_lookup: ClassVar[str] = "startswith"

    def _test(self, text: str, needle: str) -> bool:
        return text.startswith(needle)


@dataclass(frozen=True)
class EndsWith(_Pattern):
    """The field's text ends with ``value`` (``endswith``/``iendswith``)."""

    base_lookup: ClassVar[str] = "endswith"

    def _test(self, text: str, needle: str) -> bool:
        return text.endswith(needle)


@dataclass(frozen=True)
class IsNull(Leaf):
    """``field IS NULL`` (``value=True``) or ``IS NOT NULL``. A missing related row is NULL."""

    value: bool = True
    lookup: ClassVar[str] = "isnull"

    def __post_init__(self) -> None:
        if not isinstance(self.value, bool):
            raise ValueError("The QuerySet value for an isnull lookup must be True or False.")

    def to_q(self) -> Q:
        return leaf_q(self.field, **{f"{self.field}__isnull": self.value})

    def matches(self, obj: Any) -> bool:
        if self.value:
            return any(v is None for v in self._values(obj))
        return any(v is not None for v in self._values(obj))


class _Composite(Spec):
    children: tuple[Spec, ...]

    def __init__(self, *children: Spec) -> None:
        for child in children:
            if not isinstance(child, Spec):
                raise TypeError(f"{type(self).__name__}() takes specs, not {child!r}.")
        object.__setattr__(self, "children", tuple(children))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable.")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.children == self.children  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.children))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(map(repr, self.children))})"

    def children_specs(self) -> tuple[Spec, ...]:
        return self.children

    def fields(self) -> set[str]:
        return set().union(*(child.fields() for child in self.children))


class And(_Composite):
    """Every child matches. ``And()`` matches everything."""

    def to_q(self) -> Q:
        q = Q()
        for child in self.children:
            q &= child.to_q()
        return q

    def matches(self, obj: Any) -> bool:
        return all(child.matches(obj) for child in self.children)


class Or(_Composite):
    """Some child matches. ``Or()`` matches nothing."""

    def to_q(self) -> Q:
        if not self.children:
            return MatchNone().to_q()
        q = Q()
        for child in self.children:
            child_q = child.to_q()
            if not child_q:  # this child matches everything, so does the disjunction
                return Q()
            q |= child_q
        return q

    def matches(self, obj: Any) -> bool:
        return any(child.matches(obj) for child in self.children)


class Not(Spec):
    """The child does not match. For a NULL value ``Not(Eq(f, 1))`` matches, as in Django."""

    child: Spec

    def __init__(self, child: Spec) -> None:
        if not isinstance(child, Spec):
            raise TypeError(f"Not() takes a spec, not {child!r}.")
        object.__setattr__(self, "child", child)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Not is immutable.")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Not) and other.child == self.child

    def __hash__(self) -> int:
        return hash(("Not", self.child))

    def __repr__(self) -> str:
        return f"Not({self.child!r})"

    def children_specs(self) -> tuple[Spec, ...]:
        return (self.child,)

    def to_q(self) -> Q:
        q = self.child.to_q()
        if not q:  # ~Q() would match everything: the child matches everything
            return MatchNone().to_q()
        return ~q

    def matches(self, obj: Any) -> bool:
        return not self.child.matches(obj)

    def fields(self) -> set[str]:
        return self.child.fields()

    def __invert__(self) -> Spec:
        return self.child


def _combine(cls: type[_Composite], neutral: type[Spec], left: Spec, right: Spec) -> Spec:
    """``left & right`` (or ``|``): flatten nested nodes of ``cls`` and drop the neutral one."""
    parts: list[Spec] = []
    for spec in (left, right):
        for part in spec.children_specs() if type(spec) is cls else (spec,):
            if not isinstance(part, neutral):
                parts.append(part)
    if not parts:
        return neutral()
    return parts[0] if len(parts) == 1 else cls(*parts)


def and_all(specs: list[Spec]) -> Spec:
    if not specs:
        return MatchAll()
    if len(specs) == 1:
        return specs[0]
    return And(*specs)

