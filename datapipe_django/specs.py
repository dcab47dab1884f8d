"""Specifications: one filter, three compilations.

A :class:`Spec` is a small immutable tree that says *which rows* a request wants, independently
of where the rows come from::

    Spec
    ├── leaves (one field path, one condition)
    │   ├── Eq(field, value)                       field = value          (exact)
    │   ├── IEq(field, value)                      UPPER(field) = UPPER(value)   (iexact)
    │   ├── In(field, values)                      field IN values; empty → nothing
    │   ├── Range(field, gt=, gte=, lt=, lte=)     open bounds
    │   ├── Contains / StartsWith / EndsWith(field, value, case_insensitive=False)
    │   └── IsNull(field, value=True)
    ├── composites: And(*children), Or(*children), Not(child)   (also ``&``, ``|``, ``~``)
    └── constants:  MatchAll() (neutral for ``&``), MatchNone() (neutral for ``|``)

Every spec compiles three ways, and the three agree on any data:

* :meth:`Spec.to_q` — a Django ``Q`` for any database alias;
* :meth:`Spec.to_search` — an Elasticsearch/OpenSearch query dict (no search client needed);
* :meth:`Spec.matches` — evaluated in memory on a model instance (or any object).

The in-memory semantics are SQL's, exactly as Django generates it: a comparison with NULL
never matches (``Eq("score", 1)`` is false for a NULL score), ``Not(child)`` matches iff
``child`` does not (Django adds ``IS NOT NULL`` inside negations, so ``~Q(score=1)`` keeps
NULL rows), ``In(field, [])`` matches nothing, a missing related row (NULL or dangling foreign
key) makes every condition on it false except ``IsNull(..., True)``, and values are prepared
with the model field's own ``get_prep_value`` (an ``IntegerField`` compared with
``Decimal("1.5")`` is compared with ``1``, a ``DateField`` with an aware datetime is compared
with its date in the default time zone). Case-insensitive lookups mirror PostgreSQL's
``UPPER()`` character by character.

:func:`spec_from_filterset` builds a spec from a bound, valid django-filter ``FilterSet`` by
doing exactly what ``FilterSet.filter_queryset`` would do; :func:`compile_filterset` binds
raw parameters first. A filter that cannot be expressed (a ``method=`` filter without a spec
hook, an unknown filter class, an unsupported lookup) raises :class:`Uncompilable`, which makes
a source decline the request instead of silently dropping the filter.

This module imports Django and django-filter only (no DRF, no search client).
"""

from __future__ import annotations

import datetime as dt
import difflib
import functools
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from django import forms
from django.conf import settings
from django.core.exceptions import FieldDoesNotExist, FieldError, ObjectDoesNotExist
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import connections, models
from django.db.models import Exists, OuterRef, Q
from django.db.models.constants import LOOKUP_SEP
from django.db.models.expressions import Col
from django.forms.widgets import MultiWidget
from django.utils import timezone, translation
from django.utils.datastructures import MultiValueDict
from django_filters import filters as df
from django_filters.constants import EMPTY_VALUES
from django_filters.filterset import BaseFilterSet
from django_filters.widgets import BooleanWidget, QueryArrayWidget

from datapipe_django.errors import ValidationFailed
from datapipe_django.request import QUOTE_LIMIT, parameter_key, quote

if TYPE_CHECKING:
    from django.db.models import Field

__all__ = [
    "SUPPORTED_LOOKUPS",
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
    "check_parameters",
    "check_value",
    "compile_filterset",
    "filter_parameters",
    "filterset_parameters",
    "model_field",
    "spec_from_filterset",
]

#: Lookups that :func:`spec_from_filterset` knows how to compile.
SUPPORTED_LOOKUPS = frozenset(
    {
        "exact",
        "iexact",
        "in",
        "gt",
        "gte",
        "lt",
        "lte",
        "range",
        "isnull",
        "contains",
        "icontains",
        "startswith",
        "istartswith",
        "endswith",
        "iendswith",
    }
)

_TEXT_LOOKUPS = frozenset(
    {"iexact", "contains", "icontains", "startswith", "istartswith", "endswith", "iendswith"}
)


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


# --------------------------------------------------------------------------------------------
# Helpers: PostgreSQL-like UPPER(), path resolution, value preparation
# --------------------------------------------------------------------------------------------


def _pg_upper(text: str) -> str:
    """Upper-case ``text`` one character at a time, as PostgreSQL's ``UPPER()`` does.

    PostgreSQL maps each character to a single character (the simple case mapping): ``ß`` stays
    ``ß`` and ``ﬁ`` stays ``ﬁ`` (Python's ``str.upper`` gives ``SS`` and ``FI``), and a Greek
    letter with ypogegrammeni takes its title-case form.
    """
    out = []
    for char in text:
        upper = char.upper()
        if len(upper) != 1:
            title = char.title()
            upper = title if len(title) == 1 else char
        out.append(upper)
    return "".join(out)


class _Step:
    """One precomputed step of a field path over a model class."""

    __slots__ = ("attname", "field", "kind", "name", "related_model")

    def __init__(
        self, kind: str, name: str, attname: str = "", field: Any = None, related_model: Any = None
    ) -> None:
        self.kind = kind  # "value" | "fk" | "reverse_one" | "many" | "attr"
        self.name = name
        self.attname = attname
        self.field = field
        self.related_model = related_model


@functools.lru_cache(maxsize=1024)
def _plan(model: type[models.Model], path: str) -> tuple[tuple[_Step, ...], Field | None]:
    """Compile ``path`` over ``model`` into steps, plus the model field values are prepared by.

    The last step reads a column the way Django's SQL would: a path ending at a foreign key
    (``category``) or at its target (``category__pk``, ``category__id``) reads ``category_id``
    without loading the related row, as Django trims that join.
    """
    parts = path.split(LOOKUP_SEP)
    steps: list[_Step] = []
    current: Any = model
    final: Field | None = None
    index = 0
    while index < len(parts):
        name = parts[index]
        last = index == len(parts) - 1
        if current is None:
            raise FieldError(f"Cannot resolve {path!r}: {name!r} follows a non-relation field.")
        opts = current._meta
        try:
            field = opts.pk if name == "pk" else opts.get_field(name)
        except FieldDoesNotExist:
            # Not a model field (an annotation, a property): read the attribute as is.
            steps.append(_Step("attr", name, attname=name))
            current, final = None, None
            index += 1
            continue
        if not field.is_relation:
            steps.append(_Step("value", name, attname=field.attname, field=field))
            current, final = None, field
        elif field.concrete and (field.many_to_one or field.one_to_one):
            rest = parts[index + 1 :]
            target = field.target_field
            if last:
                steps.append(_Step("value", name, attname=field.attname, field=field))
                current, final = None, field
            elif len(rest) == 1 and (
                rest[0] == target.name or (rest[0] == "pk" and target.primary_key)
            ):
                steps.append(_Step("value", name, attname=field.attname, field=target))
                current, final = None, target
                index += 1
            else:
                steps.append(
                    _Step(
                        "fk",
                        name,
                        attname=field.attname,
                        field=field,
                        related_model=field.related_model,
                    )
                )
                current = field.related_model
        elif field.one_to_one:  # reverse one-to-one
            steps.append(
                _Step(
                    "reverse_one",
                    name,
                    attname=field.get_accessor_name(),
                    field=field,
                    related_model=field.related_model,
                )
            )
            current, final = field.related_model, None
            if last:
                # Django compares the related row's pk.
                steps.append(
                    _Step(
                        "value",
                        "pk",
                        attname=field.related_model._meta.pk.attname,
                        field=field.related_model._meta.pk,
                    )
                )
                final = field.related_model._meta.pk
        elif field.many_to_many or field.one_to_many:
            accessor = field.name if field.concrete else field.get_accessor_name()
            steps.append(
                _Step(
                    "many", name, attname=accessor, field=field, related_model=field.related_model
                )
            )
            current = field.related_model
            if last:
                pk = field.related_model._meta.pk
                steps.append(_Step("value", "pk", attname=pk.attname, field=pk))
                final = pk
        else:
            raise FieldError(f"Cannot follow {name!r} in {path!r} (a generic relation?).")
        index += 1
    return tuple(steps), final


@functools.lru_cache(maxsize=1024)
def _crosses_many(model: type[models.Model], path: str) -> bool:
    """Whether ``path`` over ``model`` follows a to-many relation (False if it does not resolve)."""
    try:
        steps, _ = _plan(model, path)
    except FieldError:
        return False
    return any(step.kind == "many" for step in steps)


@functools.lru_cache(maxsize=4096)
def _maybe_many(path: str) -> bool:
    """Whether some installed model reads ``path`` through a to-many relation.

    :meth:`Spec.to_q` takes no model, so it asks the app registry: a path no model reads
    through a to-many relation compiles to the plain ``Q`` Django would build (same SQL as
    before), any other one to :class:`_SomeRowMatches`, which decides per query.
    """
    from django.apps import apps

    return any(_crosses_many(model, path) for model in apps.get_models(include_auto_created=True))


class _SomeRowMatches:
    """A leaf's own "some related row matches" condition, usable as a child of ``Q``.

    Resolved against the outer query's model: ``EXISTS (SELECT 1 FROM <model> [joins] WHERE
    pk = outer.pk AND <the leaf's lookups>)``. The join lives inside the correlated subquery,
    so two leaves through the same to-many relation never share a join (Django's chained
    ``filter()`` semantics, and :meth:`Spec.matches`'); ``~`` gives ``NOT EXISTS``, which is
    :class:`Not`'s "no related row matches". The subquery is compiled on the outer query's
    connection, so any database alias works.
    """

    conditional = True

    def __init__(self, q: Q) -> None:
        self.q = q

    def __repr__(self) -> str:
        return f"_SomeRowMatches({self.q!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _SomeRowMatches) and other.q == self.q

    def __hash__(self) -> int:
        return hash(("_SomeRowMatches", self.q))

    def __deepcopy__(self, memo: dict[int, Any]) -> _SomeRowMatches:
        return self  # immutable

    def resolve_expression(self, query: Any = None, *args: Any, **kwargs: Any) -> Any:
        model = query.model
        inner = model._base_manager.filter(self.q, pk=OuterRef("pk"))
        return Exists(inner).resolve_expression(query, *args, **kwargs)


def _leaf_q(path: str, **lookups: Any) -> Q:
    q = Q(**lookups)
    return Q(_SomeRowMatches(q)) if _maybe_many(path) else q


def model_field(model: type[models.Model], path: str) -> Field | None:
    """The model field whose column ``path`` (``"merchant_id"``, ``"owner__name"``, ``"pk"``)
    compares, as Django's SQL reads it; None for an attribute that is no field."""
    return _plan(model, path)[1]


def _walk(obj: Any, parts: tuple[str, ...]) -> Iterator[Any]:
    """Yield the value(s) at ``parts`` on a plain object or mapping; None stops the walk."""
    if not parts:
        yield obj
        return
    if obj is None:
        yield None
        return
    if isinstance(obj, models.Model):
        yield from _walk_model(obj, LOOKUP_SEP.join(parts))
        return
    head, rest = parts[0], parts[1:]
    value = obj.get(head) if isinstance(obj, Mapping) else getattr(obj, head)
    if isinstance(value, models.Manager):
        related = list(value.all())
        if not related:
            yield None
        for item in related:
            yield from _walk(item, rest)
        return
    yield from _walk(value, rest)


def _walk_model(obj: models.Model, path: str) -> Iterator[Any]:
    steps, _ = _plan(type(obj), path)
    yield from _walk_steps(obj, steps, 0)


def _walk_steps(obj: Any, steps: tuple[_Step, ...], index: int) -> Iterator[Any]:
    if index == len(steps):
        yield obj
        return
    if obj is None:
        yield None
        return
    step = steps[index]
    if step.kind in ("value", "attr"):
        yield from _walk_steps(getattr(obj, step.attname), steps, index + 1)
    elif step.kind == "fk":
        if getattr(obj, step.attname) is None:
            yield None
            return
        try:
            related = getattr(obj, step.name)
        except ObjectDoesNotExist:  # a dangling foreign key: the SQL join finds no row
            related = None
        yield from _walk_steps(related, steps, index + 1)
    elif step.kind == "reverse_one":
        try:
            related = getattr(obj, step.attname)
        except ObjectDoesNotExist:
            related = None
        yield from _walk_steps(related, steps, index + 1)
    else:  # "many": any related row may satisfy the leaf (Django's join semantics)
        related = list(getattr(obj, step.attname).all())
        if not related:
            yield None
        for item in related:
            yield from _walk_steps(item, steps, index + 1)


def _prepare(field: Field | None, lookup: str, value: Any) -> Any:
    """Prepare ``value`` for ``lookup`` on ``field`` exactly as Django's lookup class does."""
    if field is None:
        return value
    lookup_class = field.get_lookup(lookup)
    if lookup_class is None:
        raise FieldError(f"Unsupported lookup {lookup!r} for {type(field).__name__}.")
    return lookup_class(Col("_", field), value).rhs


def _target_field(obj: Any, path: str) -> Field | None:
    if isinstance(obj, models.Model):
        return _plan(type(obj), path)[1]
    return None


# --------------------------------------------------------------------------------------------
# The Spec tree
# --------------------------------------------------------------------------------------------


class Spec:
    """Base of every specification node.

    Subclasses implement :meth:`to_q`, :meth:`matches` and :meth:`fields`; :meth:`to_search`
    dispatches on the node's class (:mod:`datapipe_django.search.query`), so a custom node
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
        fields, as :meth:`matches` does. See :mod:`datapipe_django.search.query`.
        """
        from datapipe_django.search.query import compile_spec

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
        if isinstance(obj, models.Model):
            return _walk_model(obj, self.field)
        return _walk(obj, tuple(self.field.split(LOOKUP_SEP)))

    @cached_property
    def _prepared_by_field(self) -> dict[Any, Any]:
        return {}

    def _prepared(self, obj: Any, lookup: str, value: Any) -> Any:
        field = _target_field(obj, self.field)
        if field is None:
            return value
        cache = self._prepared_by_field
        key = (field, lookup)
        try:
            return cache[key]
        except KeyError:
            prepared = cache[key] = _prepare(field, lookup, value)
            return prepared
        except TypeError:  # an unhashable field (never for Django fields): no cache
            return _prepare(field, lookup, value)


@dataclass(frozen=True)
class Eq(Leaf):
    """``field = value`` (Django ``exact``). ``Eq(field, None)`` is ``IsNull(field)``."""

    value: Any
    lookup: ClassVar[str] = "exact"

    def to_q(self) -> Q:
        return _leaf_q(self.field, **{f"{self.field}__exact": self.value})

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
        return _leaf_q(self.field, **{f"{self.field}__iexact": self.value})

    def matches(self, obj: Any) -> bool:
        if self.value is None:
            return any(v is None for v in self._values(obj))
        expected = _pg_upper(str(self.value))
        return any(v is not None and _pg_upper(str(v)) == expected for v in self._values(obj))


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
        return _leaf_q(self.field, **{f"{self.field}__in": list(self.values)})

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
        return _leaf_q(self.field, **lookups)

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
        return _leaf_q(self.field, **{f"{self.field}__{self.lookup}": self.value})

    def _test(self, text: str, needle: str) -> bool:
        raise NotImplementedError

    def matches(self, obj: Any) -> bool:
        if self.value is None:
            raise ValueError("Cannot use None as a query value")
        fold = _pg_upper if self.case_insensitive else str
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
        return _leaf_q(self.field, **{f"{self.field}__isnull": self.value})

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


def _and_all(specs: list[Spec]) -> Spec:
    if not specs:
        return MatchAll()
    if len(specs) == 1:
        return specs[0]
    return And(*specs)


# --------------------------------------------------------------------------------------------
# FilterSet → Spec
# --------------------------------------------------------------------------------------------

SpecHook = Callable[[str, Any], Spec]


def _errors_of(form: Any) -> dict[str, list[str]]:
    return {name: [_short(str(message)) for message in messages]
            for name, messages in form.errors.items()}


def _short(message: str) -> str:
    """A form's message with any long quoted value cut (django-filter echoes the value)."""
    if len(message) <= 2 * QUOTE_LIMIT:
        return message
    return f"{message[:QUOTE_LIMIT]}... ({len(message)} characters)"


# --------------------------------------------------------------------------------------------
# Which values a column can hold, and which parameters a FilterSet reads
# --------------------------------------------------------------------------------------------


def _storage_field(field: Any) -> Any:
    while field is not None and getattr(field, "is_relation", False):
        field = field.target_field
    return field


@functools.lru_cache(maxsize=256)
def _integer_range(internal_type: str, aliases: tuple[str, ...]) -> tuple[int | None, int | None]:
    """The integers a column of ``internal_type`` holds on every one of ``aliases``."""
    low: int | None = None
    high: int | None = None
    for alias in aliases:
        try:
            lo, hi = connections[alias].ops.integer_field_range(internal_type)
        except (KeyError, AttributeError, TypeError):
            continue
        if internal_type.startswith("Positive") and hi is not None:
            lo = -hi - 1  # comparing with a negative value is fine, it matches nothing
        low = lo if low is None or (lo is not None and lo > low) else low
        high = hi if high is None or (hi is not None and hi < high) else high
    return low, high


def check_value(field: Any, value: Any) -> str | None:
    """Why the databases cannot compare ``field`` with ``value`` (an integer past the
    column's range on one of ``settings.DATABASES``), or None. Runs no query."""
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    storage = _storage_field(field)
    if not isinstance(storage, models.IntegerField | models.AutoField):
        return None
    low, high = _integer_range(storage.get_internal_type(), tuple(connections.settings))
    if high is not None and value > high:
        return f"Ensure this value is less than or equal to {high}."
    if low is not None and value < low:
        return f"Ensure this value is greater than or equal to {low}."
    return None


def _widget_of(filter_: df.Filter) -> Any:
    widget = filter_.extra.get("widget") or getattr(filter_.field_class, "widget", None)
    return widget if isinstance(widget, type) else type(widget)


@functools.lru_cache(maxsize=256)
def filterset_parameters(filterset_class: type[BaseFilterSet]) -> dict[str, tuple[str, bool]]:
    """Every query parameter ``filterset_class`` reads: name → (filter name, may repeat).

    The names are :func:`filter_parameters`' (``<name>_min``/``_max`` for a range,
    ``_after``/``_before`` for dates, ``<name>_lookup`` for a lookup choice); a query-array
    filter also reads ``<name>[]``, and a multiple-choice or query-array filter may repeat its
    parameter.
    """
    parameters: dict[str, tuple[str, bool]] = {}
    for name, keys in filter_parameters(filterset_class).items():
        filter_ = filterset_class.base_filters[name]
        widget = _widget_of(filter_)
        if isinstance(filter_, df.BaseCSVFilter):
            array = not _is_csv(filter_)
        else:
            array = widget is not None and issubclass(widget, QueryArrayWidget)
        many = array or (widget is not None and issubclass(
            widget, forms.SelectMultiple | forms.MultipleHiddenInput))
        for key in keys:
            parameters[key] = (name, many)
        if array:
            parameters[f"{name}[]"] = (name, True)
    return parameters


def _raw_values(data: Mapping[str, Any], key: str) -> list[Any]:
    if hasattr(data, "getlist"):
        values = data.getlist(key)
    else:
        value = data[key]
        values = list(value) if isinstance(value, list | tuple) else [value]
    return [v for v in values if v is not None and v != ""]


def check_parameters(filterset_class: type[BaseFilterSet] | None, data: Mapping[str, Any], *,
                     unknown: str = "error") -> dict[str, list[str]]:
    """What is wrong with the names and the number of values of ``data`` (raw parameters for
    ``filterset_class``), before anything is bound: an unknown name (unless ``unknown`` is
    ``"ignore"``), a single-valued parameter given twice, a non-boolean for a boolean filter,
    a NUL character. Runs no query."""
    known = filterset_parameters(filterset_class) if filterset_class is not None else {}  # type: ignore[arg-type]
    errors: dict[str, list[str]] = {}
    unknown_names = []
    for key in data:
        values = _raw_values(data, key)
        if key not in known:
            unknown_names.append(key)
            continue
        name, many = known[key]
        if len(values) > 1 and not many:
            errors[key] = ["Give this parameter once."]
        elif any("\x00" in str(v) for v in values):
            errors[key] = ["Null characters are not allowed."]
        elif values and not _boolean_ok(filterset_class.base_filters[name], key,  # type: ignore[union-attr]
                                        values[-1]):
            errors[key] = [f"Must be true or false, not {quote(values[-1])}."]
    if unknown_names and unknown != "ignore":
        for key in unknown_names[:10]:
            close = difflib.get_close_matches(key, list(known), n=1) if len(key) < 100 else []
            errors[parameter_key(key)] = [
                "Unknown parameter." + (f" Did you mean {close[0]!r}?" if close else "")]
        if len(unknown_names) > 10:
            errors["non_field_errors"] = [f"{len(unknown_names)} unknown parameters."]
    return errors


def _boolean_ok(filter_: df.Filter, key: str, raw: Any) -> bool:
    """Whether a boolean filter's widget reads ``raw`` as a boolean (or as "not given"):
    ``true``/``false`` (django-filter's ``BooleanWidget`` also takes ``1``/``0``, in any case);
    not Django's legacy ``2``/``3`` of ``NullBooleanSelect``, nor anything it reads as None."""
    if not issubclass(filter_.field_class, forms.NullBooleanField):
        return True
    text = str(raw)
    if text.lower() == "unknown":
        return True
    widget = _widget_of(filter_)
    if widget is not None and issubclass(widget, BooleanWidget):
        return text.lower() in {"true", "false", "1", "0"}
    if widget is not None and issubclass(widget, forms.NullBooleanSelect):
        return text in {"true", "false", "True", "False"}
    return True


class _KeyChoiceField(forms.Field):
    """A ``ModelChoiceField`` that checks the key's type only: no query.

    Which rows match is the sources' business (within the tenant), so another tenant's id
    reads exactly like a missing one. The value is an unsaved instance carrying the key.
    """

    def __init__(self, original: forms.ModelChoiceField, *, multiple: bool) -> None:
        super().__init__(required=False, widget=original.widget)
        self.model = original.queryset.model  # type: ignore[union-attr]
        self.key = self.model._meta.pk
        self.null_label = getattr(original, "null_label", None)
        self.null_value = getattr(original, "null_value", "null")
        self.multiple = multiple

    def to_python(self, value: Any) -> Any:
        if value in EMPTY_VALUES:
            return [] if self.multiple else None
        values = list(value) if self.multiple and isinstance(value, list | tuple) else [value]
        out: list[Any] = []
        for raw in values:
            if raw in EMPTY_VALUES:
                continue
            if self.null_label is not None and raw == self.null_value:
                out.append(self.null_value)
                continue
            try:
                key = self.key.to_python(raw)
            except DjangoValidationError:
                raise DjangoValidationError(
                    f"Select a valid choice: {quote(raw)} is not a valid key.",
                    code="invalid_choice") from None
            why = check_value(self.key, key)
            if why:
                raise DjangoValidationError(why, code="invalid_choice")
            out.append(self.model(**{self.key.attname: key}))
        if self.multiple:  # in key order, null last (as django-filter's queryset gives them)
            keys = sorted({o.pk for o in out if o != self.null_value})
            return [self.model(**{self.key.attname: k}) for k in keys] + (
                [self.null_value] if self.null_value in out else [])
        return out[0] if out else None


def _key_only_fields(filterset: BaseFilterSet) -> None:
    """Swap the form's model choice fields for :class:`_KeyChoiceField` (no query)."""
    form = filterset.form
    for name, field in list(form.fields.items()):
        if not isinstance(field, forms.ModelChoiceField):
            continue
        to_field = getattr(field, "to_field_name", None)
        model = field.queryset.model  # type: ignore[union-attr]
        if to_field not in (None, model._meta.pk.name, model._meta.pk.attname):
            continue  # keyed by another field: django-filter's own check
        form.fields[name] = _KeyChoiceField(
            field, multiple=isinstance(field, forms.ModelMultipleChoiceField))


def spec_from_filterset(filterset: BaseFilterSet) -> Spec:
    """Build the :class:`Spec` a bound FilterSet applies, filter by filter.

    Walks ``filterset.filters`` and ``form.cleaned_data`` exactly as
    ``FilterSet.filter_queryset`` and each ``Filter.filter()`` would: empty values are
    skipped with each filter's own rule, ``lookup_expr``, ``field_name`` paths and
    ``exclude=True`` are honoured, ``MultipleChoiceFilter`` ORs its values (ANDs them with
    ``conjoined=True``), range filters become :class:`Range`, ``null_value`` becomes
    :class:`IsNull`. Values are prepared by the model field as Django would (an integer column
    compared with ``Decimal("1.5")`` is compared with ``1``; a date column with a datetime,
    with its date).

    A filter declared with ``method=`` compiles only through a hook: a FilterSet method
    ``spec_<filter_name>(self, name, value) -> Spec`` or a ``spec`` attribute on the filter, a
    callable ``(name, value) -> Spec`` (``name`` is the filter's ``field_name``, as for
    ``method=``). A hook also overrides the default compilation of any other filter.

    Raises :class:`~datapipe_django.errors.ValidationFailed` if the FilterSet is invalid
    (``errors`` maps each bad parameter to its messages) and :class:`Uncompilable` for a
    filter that cannot be expressed. An unbound FilterSet filters nothing: :class:`MatchAll`.
    """
    if not filterset.is_bound:
        return MatchAll()
    if not filterset.is_valid():
        raise ValidationFailed(_errors_of(filterset.form))
    cls = type(filterset)
    if cls.filter_queryset is not BaseFilterSet.filter_queryset:
        raise Uncompilable(
            None, f"{cls.__name__} overrides filter_queryset(), which a spec cannot mirror."
        )
    model = filterset.queryset.model
    specs: list[Spec] = []
    for name, value in filterset.form.cleaned_data.items():
        spec = _compile_filter(filterset, model, name, filterset.filters[name], value)
        if spec is not None:
            specs.append(spec)
    return _and_all(specs)


def compile_filterset(
    filterset_class: type[BaseFilterSet],
    data: Mapping[str, Any],
    *,
    request: Any = None,
) -> Spec:
    """Bind raw parameters to ``filterset_class``, validate them and return their spec.

    ``data`` is a ``QueryDict`` (as in a request) or a plain mapping whose values may be lists
    for multi-valued parameters (``{"status__in": ["queued", "processed"]}``); a list given to
    a comma-separated (``BaseInFilter``/``BaseRangeFilter``) parameter is joined with commas.
    Raises :class:`~datapipe_django.errors.ValidationFailed` naming each bad parameter, and
    :class:`Uncompilable` as :func:`spec_from_filterset` does. Runs no query: a
    ``ModelChoiceFilter`` (or ``ModelMultipleChoiceFilter``) keyed by the primary key checks
    the key's type only, and an integer past a column's range on one of the databases is a bad
    parameter.
    """
    model = filterset_class._meta.model
    if model is None:
        raise TypeError(f"{filterset_class.__name__} has no Meta.model.")
    data = _as_multivalue(filterset_class, data)
    filterset = _narrowed(filterset_class, data)(
        data=data,
        queryset=model._default_manager.none(),
        request=request,
    )
    _reuse_form_fields(filterset)
    _key_only_fields(filterset)
    if not filterset.is_valid():
        raise ValidationFailed(_errors_of(filterset.form))
    return spec_from_filterset(filterset)


def filter_parameters(filterset_class: type[BaseFilterSet]) -> dict[str, list[str]]:
    """The query parameters each filter of ``filterset_class`` reads, by filter name.

    Most filters read the parameter of their own name; a filter whose widget has several parts
    reads one parameter per part, named as django-filter names them: ``created_at`` (a
    ``DateTimeFromToRangeFilter``) reads ``created_at_after`` and ``created_at_before``, a
    ``RangeFilter`` ``<name>_min`` and ``<name>_max``, a ``LookupChoiceFilter`` ``<name>`` and
    ``<name>_lookup``. The form is built without a request and without data, as for an empty
    query string; nothing is queried.
    """
    model = filterset_class._meta.model
    queryset = model._default_manager.none() if model is not None else None
    form = filterset_class(data=None, queryset=queryset).form
    parameters: dict[str, list[str]] = {}
    for name in filterset_class.base_filters:
        widget: Any = form.fields[name].widget if name in form.fields else None
        suffixes = getattr(widget, "suffixes", None)
        if suffixes is not None and hasattr(widget, "suffixed"):
            parameters[name] = [widget.suffixed(name, suffix) for suffix in suffixes]
        elif isinstance(widget, MultiWidget):  # Django's own: name_0, name_1...
            parameters[name] = [name + part for part in getattr(widget, "widgets_names", ())]
        else:
            parameters[name] = [name]
    return parameters


# A FilterSet instance deep-copies every filter, and its form every field, on each request:
# most of a request's validation when it names one or two of thirty filters. A filter the
# request does not name contributes nothing (an empty value is skipped by every filter's own
# rule), so the request is bound to a subclass holding only the filters it names, built once
# per FilterSet class and set of names. Filters that would act without a parameter (required
# ones, a field whose empty input cleans to a value) are always kept; a FilterSet that shapes
# itself per instance or validates across fields (its own __init__, form, form class or
# Meta.form) is bound whole.
_NARROWING: dict[type[BaseFilterSet], tuple[dict[str, list[str]], frozenset[str]] | None] = {}
_NARROWED: dict[tuple[type[BaseFilterSet], frozenset[str]], type[BaseFilterSet]] = {}
_MAX_NARROWED = 512
_WHOLE = ("__init__", "get_form_class", "form", "is_valid", "errors")


def _narrowed(cls: type[BaseFilterSet], data: Any) -> type[BaseFilterSet]:
    """``cls``, or its subclass with only the filters ``data`` names (and those that always
    act), when binding that gives the same form errors and the same spec."""
    if cls not in _NARROWING:
        if len(_NARROWING) >= _MAX_NARROWED:  # FilterSet classes made on the fly: bind whole
            return cls
        _NARROWING[cls] = _narrowing_plan(cls)
    plan = _NARROWING[cls]
    if plan is None:
        return cls
    parameters, always = plan
    named = frozenset(name for name, params in parameters.items()
                      if name in always or any(p in data for p in params))
    if len(named) == len(parameters):
        return cls
    key = (cls, named)
    narrowed = _NARROWED.get(key)
    if narrowed is None:
        if len(_NARROWED) >= _MAX_NARROWED:
            return cls
        narrowed = type(cls.__name__, (cls,), {"__module__": cls.__module__,
                                               "__qualname__": cls.__qualname__})
        narrowed.base_filters = {name: f for name, f in cls.base_filters.items()
                                 if name in named}
        narrowed = _NARROWED.setdefault(key, narrowed)
    return narrowed


def _narrowing_plan(cls: type[BaseFilterSet]) -> tuple[dict[str, list[str]],
                                                       frozenset[str]] | None:
    """(each filter's parameters, the filters that act without any), or None when ``cls``
    must be bound whole."""
    from django import forms

    if any(getattr(cls, attr) is not getattr(BaseFilterSet, attr) for attr in _WHOLE) or (
            cls._meta.form is not forms.Form):
        return None
    model = cls._meta.model
    try:
        empty = cls(data=MultiValueDict(), queryset=model._default_manager.none())
        form = empty.form
        form.is_valid()
    except Exception:  # a filter that needs a request to build (a callable queryset...)
        return None
    always = set(form.errors)
    for name, filter_ in cls.base_filters.items():
        if filter_.extra.get("required"):
            always.add(name)
        elif name in form.cleaned_data:
            try:
                acts = _compile_filter(empty, model, name, empty.filters[name],
                                       form.cleaned_data[name]) is not None
            except Exception:  # whatever it is, the filter must be bound
                acts = True
            if acts:
                always.add(name)
    return filter_parameters(cls), frozenset(always)


# django-filter builds a new form class, and every field of it, for each FilterSet instance:
# most of the cost of binding a request's parameters. A field that cannot depend on the
# instance is built once per FilterSet class (and language, for its label) and shared by the
# form classes; Django forms deep-copy their fields per form, so sharing them is safe.
_STATIC_FIELDS: dict[tuple[type[BaseFilterSet], str | None], dict[str, Any]] = {}
_FORM_CLASSES: dict[tuple[type[BaseFilterSet], str | None], type] = {}
_STATIC_FILTERS: dict[type[BaseFilterSet], frozenset[str] | None] = {}
_STATIC_FIELD_OWNERS = (df.Filter, df.NumberFilter, df.LookupChoiceFilter)


def _reuse_form_fields(filterset: BaseFilterSet) -> None:
    cls = type(filterset)
    if cls not in _STATIC_FILTERS:
        _STATIC_FILTERS[cls] = _static_filters(cls)
    static = _STATIC_FILTERS[cls]
    if static is None:
        return
    key = (cls, translation.get_language())
    if len(static) == len(filterset.filters):
        form_class = _FORM_CLASSES.get(key)
        if form_class is None:
            form_class = _FORM_CLASSES.setdefault(key, filterset.get_form_class())
        filterset.get_form_class = lambda: form_class  # type: ignore[method-assign]
        return
    fields = _STATIC_FIELDS.get(key)
    if fields is None:
        fields = {name: filterset.filters[name].field for name in static}
        fields = _STATIC_FIELDS.setdefault(key, fields)

    def get_form_class() -> type:
        form_fields = {}
        for name, filter_ in filterset.filters.items():  # in declaration order
            shared = fields.get(name)
            form_fields[name] = filter_.field if shared is None else shared
        return type(f"{cls.__name__}Form", (cls._meta.form,), form_fields)

    # An instance attribute: ``BaseFilterSet.form`` calls ``self.get_form_class()``.
    filterset.get_form_class = get_form_class  # type: ignore[method-assign]


def _static_filters(cls: type[BaseFilterSet]) -> frozenset[str] | None:
    """The names of ``cls``'s filters whose form field is the same for every instance.

    None when ``cls`` overrides ``__init__`` or ``get_form_class`` (either may shape the
    filters per request). Not static: a filter with a callable ``queryset=`` (it takes the
    request), ``AllValuesFilter`` (its choices come from the database), and any filter with
    its own ``field`` property.
    """
    if cls.__init__ is not BaseFilterSet.__init__ or (
        cls.get_form_class is not BaseFilterSet.get_form_class
    ):
        return None
    static = set()
    for name, filter_ in cls.base_filters.items():
        owner = next(k for k in type(filter_).__mro__ if "field" in vars(k))
        if owner is df.QuerySetRequestMixin:
            if not callable(getattr(filter_, "queryset", None)):
                static.add(name)
        elif owner in _STATIC_FIELD_OWNERS:
            static.add(name)
    return frozenset(static)


def _as_multivalue(filterset_class: type[BaseFilterSet], data: Mapping[str, Any]) -> Any:
    if isinstance(data, MultiValueDict):  # QueryDict included
        return data
    result: MultiValueDict = MultiValueDict()
    for key, value in data.items():
        if isinstance(value, list | tuple):
            if _is_csv(filterset_class.base_filters.get(key)):
                result[key] = ",".join(str(v) for v in value)
            else:
                result.setlist(key, list(value))
        else:
            result[key] = value
    return result


def _is_csv(filter_: df.Filter | None) -> bool:
    """Whether the filter reads one comma-separated string (not a query array)."""
    if not isinstance(filter_, df.BaseCSVFilter):
        return False
    widget = filter_.extra.get("widget")
    widget_class = widget if isinstance(widget, type) else type(widget)
    return not issubclass(widget_class, QueryArrayWidget)


def _hook(filterset: BaseFilterSet, name: str, filter_: df.Filter) -> SpecHook | None:
    hook = getattr(filterset, f"spec_{name}", None)
    if callable(hook):
        return hook
    hook = getattr(filter_, "spec", None)
    return hook if callable(hook) else None


_FILTER_METHODS = {
    df.Filter.filter: "generic",
    df.ChoiceFilter.filter: "choice",
    df.MultipleChoiceFilter.filter: "multiple",
    df.RangeFilter.filter: "range",
    df.LookupChoiceFilter.filter: "lookup_choice",
}


def _compile_filter(
    filterset: BaseFilterSet,
    model: type[models.Model],
    name: str,
    filter_: df.Filter,
    value: Any,
) -> Spec | None:
    hook = _hook(filterset, name, filter_)
    if hook is not None:
        if value in EMPTY_VALUES:
            return None
        spec = hook(filter_.field_name, value)
        if not isinstance(spec, Spec):
            raise TypeError(f"The spec hook of filter {name!r} returned {spec!r}, not a Spec.")
        return spec
    if filter_.method is not None:
        if value in EMPTY_VALUES:  # FilterMethod skips empty values: nothing to compile
            return None
        raise Uncompilable(
            name,
            f"uses method={filter_.method!r} and has no spec: define "
            f"spec_{name}(self, name, value) on the FilterSet.",
        )
    if isinstance(filter_, df.DateRangeFilter) and filter_.filters is df.DateRangeFilter.filters:
        return _date_range(model, name, filter_.field_name, value)
    kind = _FILTER_METHODS.get(type(filter_).filter)
    if kind is None:
        # Its own filter() decides; every filter shipped with django-filter (and every sane
        # custom one) ignores an absent parameter, so only a given value makes it uncompilable.
        if value in EMPTY_VALUES:
            return None
        raise Uncompilable(name, f"{type(filter_).__name__} is not a filter a spec can mirror.")
    wrap = Not if filter_.exclude else None

    def leaf(key: str, val: Any) -> Spec:
        spec = _leaf(model, name, key, val)
        return wrap(spec) if wrap else spec

    field_name = filter_.field_name
    if kind == "choice":
        if value == filter_.null_value:  # type: ignore[attr-defined]
            return leaf(f"{field_name}__{filter_.lookup_expr}", None)
        kind = "generic"
    if kind == "lookup_choice":
        if not value:
            return None
        return leaf(f"{field_name}__{value.lookup_expr}", value.value)
    if kind == "range":
        if not value:
            return None
        if value.start is not None and value.stop is not None:
            return leaf(f"{field_name}__range", (value.start, value.stop))
        if value.start is not None:
            return leaf(f"{field_name}__gte", value.start)
        if value.stop is not None:
            return leaf(f"{field_name}__lte", value.stop)
        return None
    if kind == "multiple":
        if not value or filter_.is_noop(filterset.queryset, value):  # type: ignore[attr-defined]
            return None
        predicates = []
        for v in dict.fromkeys(value):  # Django iterates set(value); keep a stable order
            if v == filter_.null_value:  # type: ignore[attr-defined]
                v = None
            predicate = filter_.get_filter_predicate(v)  # type: ignore[attr-defined]
            leaves = [_leaf(model, name, k, pv) for k, pv in predicate.items()]
            if len(leaves) > 1 and any(
                _crosses_many(model, path) for spec in leaves for path in spec.fields()
            ):
                raise Uncompilable(
                    name,
                    "several lookups in one filter() call through a to-many relation share "
                    "one join, which per-leaf specs cannot express.",
                )
            predicates.append(_and_all(leaves))
        if filter_.conjoined:  # type: ignore[attr-defined]
            return _and_all([Not(p) if wrap else p for p in predicates])
        combined = predicates[0] if len(predicates) == 1 else Or(*predicates)
        return Not(combined) if wrap else combined
    # generic: Filter.filter
    if value in EMPTY_VALUES:
        return None
    return leaf(f"{field_name}__{filter_.lookup_expr}", value)


@functools.lru_cache(maxsize=1024)
def _split(model: type[models.Model], key: str) -> tuple[str, str, Field | None]:
    """Split ``"owner__name__icontains"`` into ``("owner__name", "icontains", <name field>)``.

    Raises ``FieldError`` for an unknown first field, ``LookupError`` (internal) for a relation
    a spec cannot follow (a generic relation). A to-many relation is followed: each leaf through
    it compiles to its own "some related row matches", as each ``filter()`` call of
    django-filter does.
    """
    parts = key.split(LOOKUP_SEP)
    current: Any = model
    used: list[str] = []
    final: Any = None
    for part in parts:
        if current is None:
            break
        opts = current._meta
        try:
            field = opts.pk if part == "pk" else opts.get_field(part)
        except FieldDoesNotExist:
            break
        if field.is_relation and not (
            field.many_to_one or field.one_to_one or field.many_to_many or field.one_to_many
        ):
            raise LookupError(f"{part!r} is not a relation a spec can follow")
        used.append(part)
        current = field.related_model if field.is_relation else None
        final = field
    if not used:
        raise FieldError(f"Cannot resolve keyword {parts[0]!r} into field of {model.__name__}.")
    path = LOOKUP_SEP.join(used)
    lookup = LOOKUP_SEP.join(parts[len(used) :]) or "exact"
    return path, lookup, _plan(model, path)[1] if final is not None else None


def _date_range(model: type[models.Model], name: str, path: str, value: Any) -> Spec | None:
    """django-filter's ``DateRangeFilter`` (today, yesterday, week, month, year) as the
    :class:`Range` its ``filter()`` selects.

    As django-filter does: the day, month and year are those of ``timezone.now()`` (UTC); a
    ``__year``/``__month``/``__day`` lookup on a ``DateTimeField`` reads the column in the
    current time zone, so those bounds are midnights there; the past week's ``__gte``/``__lt``
    dates become midnights in the default time zone, as Django reads a date given for a
    datetime column.
    """
    if value in EMPTY_VALUES:
        return None
    field = model_field(model, path)
    moment = timezone.now()
    today = moment.date()
    if value == "today":
        low, high, zone = today, today + dt.timedelta(days=1), "current"
    elif value == "yesterday":
        low, high, zone = today - dt.timedelta(days=1), today, "current"
    elif value == "week":
        low = (moment - dt.timedelta(days=7)).date()
        high, zone = (moment + dt.timedelta(days=1)).date(), "default"
    elif value == "month":
        low = today.replace(day=1)
        high = (low + dt.timedelta(days=32)).replace(day=1)
        zone = "current"
    elif value == "year":
        low, high, zone = today.replace(month=1, day=1), today.replace(year=today.year + 1,
                                                                         month=1, day=1), "current"
    else:  # pragma: no cover - the form's choices allow nothing else
        raise Uncompilable(name, f"unknown DateRangeFilter choice {value!r}.")
    if isinstance(field, models.DateTimeField):
        tz = timezone.get_current_timezone() if zone == "current" else \
            timezone.get_default_timezone()

        def start(day: dt.date) -> Any:
            naive = dt.datetime.combine(day, dt.time())
            return timezone.make_aware(naive, tz) if settings.USE_TZ else naive

        return Range(path, gte=start(low), lt=start(high))
    if isinstance(field, models.DateField):
        return Range(path, gte=low, lt=high)
    raise Uncompilable(name, f"DateRangeFilter over {path!r}, which is not a date or datetime.")


def _pk_of(value: Any) -> Any:
    if isinstance(value, models.Model):
        return value.pk
    if isinstance(value, list | tuple):
        return type(value)(_pk_of(v) for v in value)
    return value


def _leaf(model: type[models.Model], name: str, key: str, value: Any) -> Spec:
    """One lookup ``key=value`` as Django's ``filter(**{key: value})`` reads it."""
    try:
        path, lookup, field = _split(model, key)
    except LookupError as exc:
        raise Uncompilable(name, str(exc)) from exc
    if lookup not in SUPPORTED_LOOKUPS:
        raise Uncompilable(
            name,
            f"the lookup {lookup!r} on {path!r} is not supported "
            f"(supported: {', '.join(sorted(SUPPORTED_LOOKUPS))}).",
        )
    if value is None:
        if lookup in ("exact", "iexact"):
            return IsNull(path, True)
        raise ValueError("Cannot use None as a query value")
    if lookup == "isnull":
        return IsNull(path, value)
    if lookup in _TEXT_LOOKUPS:
        if not isinstance(field, models.CharField | models.TextField):
            raise Uncompilable(
                name,
                f"the text lookup {lookup!r} on the non-text field "
                f"{path!r} depends on the database's text cast.",
            )
        text = str(value)
        if lookup == "iexact":
            return IEq(path, text)
        pattern = {"contains": Contains, "startswith": StartsWith, "endswith": EndsWith}
        insensitive = lookup.startswith("i")
        return pattern[lookup.removeprefix("i")](path, text, case_insensitive=insensitive)
    if field is not None and not field.is_relation:
        # A path ending at a reverse one-to-one (``detail``) compares the related row's pk:
        # Django reads a model instance given for it as its pk.
        value = _pk_of(value)
    prepared = _prepare(field, lookup, value)
    for item in prepared if isinstance(prepared, list | tuple) else (prepared,):
        why = check_value(field, item)
        if why:
            raise ValidationFailed({name: [why]})
    if lookup == "exact":
        return Eq(path, prepared)
    if lookup == "in":
        return In(path, [v for v in prepared if v is not None])
    if lookup == "range":
        low, high = prepared
        if low is None or high is None:  # BETWEEN NULL AND x: nothing
            return MatchNone()
        return Range(path, gte=low, lte=high)
    return Range(path, **{lookup: prepared})
